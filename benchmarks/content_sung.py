"""Sung vocals through the engine's content decision: what a window of singing is called, with
silero-vad's detector and with the content network alone.

    streamtag models install speech          # or music, which installs the detector too
    python benchmarks/content_sung.py [--root DIR]

The material is the sung recordings found in Debian packages outside #67's acceptance set and
#55's programme, fetched with ``apt-get download`` and unpacked with ``dpkg -x`` under ``DIR``
(default: the trainer's cache folder, ``sung/``), never installed (triplea would pull a Java
runtime) and never in the repository:

- scratch's ``Media/Sounds/Vocals`` (CC-BY-SA-3.0): short phrases sung a cappella by one
  voice ("Come and play", "Sing me a song", held notes), a quarter second apart, and its two
  human-beatbox loops (mouth percussion, no words) played three times;
- triplea's anthem intros (GPL-2+): ``Germans_Anthem_Intro_with_singing`` (an old recording;
  the file's name says it is sung) and, for comparison, the twelve other intros beside it,
  each played three times.

Every window goes through the engine with the shipped model, as ``tests/engine/
test_speech.py`` feeds it: the share of windows per class, and which classes are right (music)
for each item. Nothing here is fitted: it measures.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import corpus  # noqa: E402  (fetch, decode: the distillation corpus's)

RATE = 16000
CHUNK = 4000
SCRATCH = "usr/share/scratch/Media/Sounds"
TRIPLEA = "usr/share/games/triplea/assets/sounds"


def kinds(audio: np.ndarray, model, plan) -> list[str | None]:
    """Each window's content from the engine with ``model``, fed in blocks."""
    from streamtag.engine.batching import Engine, EngineSink
    from streamtag.engine.config import SmoothingConfig

    found: list = []

    class Sink(EngineSink):
        def on_window(self, result) -> None:
            found.append(result.content)

        def on_stream_end(self, stream_id: str, events: list, end_s: float) -> None:
            pass

    engine = Engine(model, Sink(), smoothing=SmoothingConfig(time_constant_s=0), speech=plan)
    engine.add_stream("radio")
    for i in range(0, len(audio), CHUNK):
        engine.accept("radio", audio[i:i + CHUNK])
    engine.finish_stream("radio")
    engine.drain()
    return found


def material(root: Path) -> list[tuple[str, str, np.ndarray]]:
    """(source, item, audio at 16 kHz) of the sung and comparison recordings."""
    scratch = corpus.fetch("scratch", root)
    triplea = corpus.fetch("triplea", root)
    work = root / "decoding"  # corpus.decode's scratch folder
    work.mkdir(exist_ok=True)
    vocals = sorted(p for p in (scratch / SCRATCH / "Vocals").iterdir()
                    if not p.name.startswith(("BeatBox", "Ya.")))
    # one folder's phrases, a quarter second apart, as the corpus joins short sounds
    [(_, sung)] = corpus.joined([(f"Vocals/{p.stem}", corpus.decode(p, work)) for p in vocals])
    beatbox = np.concatenate([corpus.decode(p, work) for p in
                              sorted((scratch / SCRATCH / "Music Loops").glob("HumanBeatbox*"))]
                             * 3)
    items = [("scratch", "vocals sung a cappella", sung),
             ("scratch", "human beatbox loops", beatbox)]
    for path in sorted((triplea / TRIPLEA).rglob("*Anthem_Intro*.mp3")):
        audio = corpus.decode(path, work)
        items.append(("triplea", path.stem, np.concatenate([audio] * 3)))
    return items


def main() -> None:
    from streamtag.catalog.shipped import default_model_path
    from streamtag.engine.speech import SpeechPlan
    from streamtag.model.inference import InferenceModel
    from streamtag.train.recipe import default_cache_dir

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=default_cache_dir() / "sung")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    args.root.mkdir(parents=True, exist_ok=True)
    detector = SpeechPlan.installed()
    if detector.detector is None:
        raise SystemExit(f"{detector.note}: streamtag models install speech")
    model = InferenceModel.load(str(default_model_path()), device="cpu")
    plans = {"detector": detector, "network alone": SpeechPlan(None, "measured without it")}
    rows = []
    for source, item, audio in material(args.root):
        for way, plan in plans.items():
            found = kinds(audio, model, plan)
            shares = {k: round(sum(f == k for f in found) / len(found), 2)
                      for k in ("music", "speech", "noise", "tone", "silence")}
            rows.append({"source": source, "item": item, "decided_by": way,
                         "seconds": round(len(audio) / RATE, 1), "windows": len(found),
                         **shares})
            print(f"{source:8s} {item:44s} {way:14s} {len(found):3d} windows  "
                  + "  ".join(f"{k} {v:.2f}" for k, v in shares.items()))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
