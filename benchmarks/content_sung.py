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

And from elsewhere, also fetched under ``DIR``:

- two excerpts of vocadito (CC-BY-4.0; solo singers recorded a cappella, 9 and 12 s, each
  played three times), which basic-pitch's source distribution on PyPI carries among its test
  files: ``pip download --no-deps --no-binary :all: basic-pitch==0.4.0``, never installed;
- festival's singing mode (``text2wave -mode singing``) on the songs among festival's own
  examples (``/usr/share/doc/festival/examples/songs``: its diphone voice held on each note,
  synthesised singing as espeak-ng's is synthesised speech), each played twice.

Every window goes through the engine with the shipped model, as ``tests/engine/
test_speech.py`` feeds it: the share of windows per class, and which classes are right (music)
for each item. Nothing here is fitted: it measures.

``--holds CACHE`` measures the check the engine makes where the detector hears a voice
(streamtag.engine.singing): each window's share of held notes, on the sung items above and on
content_fit.py's recorded speech (asterisk's prompts and words in seven voices, warzone2100's
voice actors, gcin-voice's syllables; material cached in ``CACHE``), alone and with singularity's
music under it (as loud as the voice, 6 and 12 dB under). It prints the highest share of any
window of the speech ``SUNG_SHARE`` was chosen above (asterisk's US English, Mexican Spanish and
Italian, with their mixtures), then per item the share of windows the detector calls speech and
of those the check calls sung, at ``SUNG_SHARE`` and either side of it.

``--cost`` measures what the check costs a talking stream: 16 streams of warzone2100's tutorial
(recorded speech) through the detector's tracks, with the pitch track and without it,
alternating, three times: CPU milliseconds per second of audio.

``--fit-check CACHE`` measures instead whether the content features tell singing from speech
where the detector hears a voice: a logistic regression (scikit-learn) of the fourteen features,
fitted on festival's songs against festival's speech, content_fit.py's fit speech and its
mixtures (material cached in ``CACHE``, as content_speech.py's ``--cache``), then the share of
windows it calls sung on the real singing and on every held-out voice. It was measured and not kept
(docs/models.md, "Content").
"""

from __future__ import annotations

import argparse
import json
import shutil
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
    for path in corpus.vocadito(root):
        items.append(("vocadito", f"{path.stem} sung a cappella",
                      np.concatenate([corpus.decode(path, work)] * 3)))
    songs = corpus.festival_songs(work) if shutil.which("text2wave") else []
    if songs:
        items.append(("festival", f"{len(songs)} songs sung by its diphone voice",
                      np.concatenate([audio for _, audio in songs] * 2)))
    return items


def main() -> None:
    from streamtag.catalog.shipped import default_model_path
    from streamtag.engine.speech import SpeechPlan
    from streamtag.model.inference import InferenceModel
    from streamtag.train.recipe import default_cache_dir

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=default_cache_dir() / "sung")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--fit-check", type=Path, default=None, metavar="CACHE")
    parser.add_argument("--holds", type=Path, default=None, metavar="CACHE")
    parser.add_argument("--cost", action="store_true")
    args = parser.parse_args()
    if args.cost:
        cost()
        return
    args.root.mkdir(parents=True, exist_ok=True)
    if args.fit_check is not None:
        fit_check(args.root, args.fit_check)
        return
    if args.holds is not None:
        holds(args.root, args.holds)
        return
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


# The speech SUNG_SHARE was chosen above (content_fit.FIT_SPEECH's packages)
CHOSEN_ON = ("asterisk-core-sounds-en-wav", "asterisk-core-sounds-es-wav",
             "asterisk-core-sounds-it-wav")
BEDS_DB = (0, 6, 12)  # the music under the recorded prompts, this far under the voice


def held_shares(audio: np.ndarray, detector) -> list[float | None]:
    """Each 3-s window's (one a second) share of held notes where the detector calls it
    speech (None where it does not), from a SpeechTrack fed as the engine feeds it."""
    from streamtag.engine.speech import SPEECH_SHARE, SpeechTrack, run_tracks

    track, out = SpeechTrack(RATE), []
    width, hop = 3 * RATE, RATE
    end = width
    for i in range(0, len(audio), CHUNK):
        track.accept(audio[i:i + CHUNK])
        run_tracks(detector, [track])
        while end <= i + CHUNK:
            share = track.share(end - width, end)
            if share is None or share < SPEECH_SHARE:
                out.append(None)
            else:  # what SpeechTrack.sung compares with SUNG_SHARE
                out.append(track.held(end) or 0.0)
            end += hop
    return out


def cost(streams: int = 16, repeats: int = 3) -> None:
    """CPU milliseconds per second of a talking stream's audio for the detector's tracks, with
    the pitch track and without it (``--cost``)."""
    import time

    import content_fit  # benchmarks/content_fit.py, beside this script

    from streamtag.engine import singing
    from streamtag.engine.speech import SpeechPlan, SpeechTrack, run_tracks

    plan = SpeechPlan.installed()
    if plan.detector is None:
        raise SystemExit(f"{plan.note}: streamtag models install speech")
    [(_, talk)] = [v for v in content_fit.recorded_voices(Path(".")) if "tutorial" in v[0]]
    measured = singing.pitch_frames

    def unmeasured(blocks: np.ndarray) -> np.ndarray:
        return np.full((len(blocks), singing.FRAMES_PER_STEP, 3), np.nan, np.float32)

    def run() -> float:
        tracks = [SpeechTrack(RATE) for _ in range(streams)]
        start = time.process_time()
        for i in range(0, len(talk), RATE):
            for track in tracks:
                track.accept(talk[i:i + RATE])
            run_tracks(plan.detector, tracks)
        return 1000 * (time.process_time() - start) / (streams * len(talk) / RATE)

    for _ in range(repeats):
        singing.pitch_frames = measured
        with_pitch = run()
        singing.pitch_frames = unmeasured
        without = run()
        singing.pitch_frames = measured
        print(f"ms of CPU per second of speech: detector {without:.3f}, with the pitch track "
              f"{with_pitch:.3f} (the pitch track {with_pitch - without:.3f}, "
              f"{with_pitch / without:.2f}x)")


def holds(root: Path, cache: Path) -> None:
    """The held-note check on singing and on recorded speech (``--holds``)."""
    import content_fit  # benchmarks/content_fit.py, beside this script

    from streamtag.engine.singing import SUNG_SHARE
    from streamtag.engine.speech import SpeechPlan

    plan = SpeechPlan.installed()
    if plan.detector is None:
        raise SystemExit(f"{plan.note}: streamtag models install speech")
    cache.mkdir(parents=True, exist_ok=True)
    items = [(source, item, audio) for source, item, audio in material(root)
             if "a cappella" in item or source == "festival"]
    speech = content_fit.recorded_speech(cache, content_fit.FIT_SPEECH + content_fit.HELD_SPEECH)
    speech += content_fit.recorded_voices(cache)
    items += [("speech", name, audio) for name, audio in speech]
    music = np.concatenate([content_fit.decoded(cache, path)[5 * RATE: 65 * RATE]
                            for path in sorted(content_fit.SINGULARITY.glob("*.ogg"))[:8]])
    for i, (name, audio) in enumerate(speech):
        if "prompts" in name or "warzone" in name:
            talk = audio[: 200 * RATE]
            start = (i * 977 * RATE) % (len(music) - len(talk))
            for db in BEDS_DB:
                items.append(("speech", f"{name} + music {db} dB under",
                              content_fit.mix(talk, music[start: start + len(talk)], db)))
    rows = [(source, item, held_shares(audio, plan.detector)) for source, item, audio in items]
    chosen = [x for source, item, found in rows if item.startswith(CHOSEN_ON)
              for x in found if x is not None]
    print(f"highest share of held notes in a window of {', '.join(CHOSEN_ON)} (with their "
          f"music under them): {max(chosen):.3f}; SUNG_SHARE {SUNG_SHARE}")
    steps = (SUNG_SHARE - 0.05, SUNG_SHARE, SUNG_SHARE + 0.05)
    print("| source | item | windows | detector: speech | " + " | ".join(
        f"sung at {t:.2f}" for t in steps) + " |")
    for source, item, found in rows:
        voiced = np.array([x for x in found if x is not None])
        print(f"| {source} | {item} | {len(found)} | {100 * len(voiced) / len(found):.1f} % | "
              + " | ".join(f"{100 * np.count_nonzero(voiced >= t) / len(found):.1f} %"
                           for t in steps) + " |")


def fit_check(root: Path, cache: Path) -> None:
    """A sung-or-spoken check fitted on synthesised singing, measured on real singing and
    held-out voices (``--fit-check``)."""
    import content_fit  # benchmarks/content_fit.py, beside this script
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    cache.mkdir(parents=True, exist_ok=True)
    rows: dict[tuple[str, str], np.ndarray] = {}  # (split, group): feature rows
    for source, item, audio in material(root):
        if source == "festival" or "a cappella" in item:
            split = "fit" if source == "festival" else "held"
            rows[(split, f"sung: {source}")] = content_fit.windows(audio, extended=True)
    for kind, split, name, audio in content_fit.material(cache):
        if kind == "speech":
            if name.startswith("festival"):  # the same voice on both sides: fitted on its
                split = "fit"  # speech too, the check has to learn the singing, not the voice
            group = ("speech: " + content_fit.source_of(kind, name) if " + " not in name
                     else "speech: " + name.split(" + ")[1].split()[0] + " under it")
            x = content_fit.windows(audio, extended=True)
            old = rows.get((split, group))
            rows[(split, group)] = x if old is None else np.concatenate([old, x])
    fit = [(x, g.startswith("sung")) for (split, g), x in rows.items() if split == "fit"]
    x = np.concatenate([f for f, _ in fit])
    y = np.concatenate([np.full(len(f), sung) for f, sung in fit])
    scaler = StandardScaler().fit(x)
    for c in (0.01, 0.1, 1.0):
        check = LogisticRegression(C=c, class_weight="balanced", max_iter=2000)
        check.fit(scaler.transform(x), y)
        print(f"C={c}: windows called sung, held out")
        for (split, group), z in sorted(rows.items()):
            if split == "held":
                sung = check.predict(scaler.transform(z)).mean()
                print(f"  {group:48s} {len(z):5d} windows  {100 * sung:5.1f} %")


if __name__ == "__main__":
    main()
