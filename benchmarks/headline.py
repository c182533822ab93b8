"""Headline tags that contradict the music, before and after the rule of streamtag.engine.tracks.

    python benchmarks/headline.py [--model music] [--seconds 60] [--start 20] [--folder NAME=DIR]
                                  [--only NAME]

Tags an excerpt of each piece (``--seconds`` from ``--start``, or the first ``--seconds`` of a
shorter piece) as `streamtag tag` does, and counts per set the excerpts whose headline holds a
tag of the rock family (``engine.tracks.ROCK_TAGS``) where the music is orchestral or played on
piano or strings, and a classical-family tag where it is rock. "Before" is the tags on in more
than half of the windows (the track's ``active_share``); "after" is the headline the engine gives.
Where every part is one instrument, it also counts the headlines that name a guitar (an
instrument, which the rule leaves).

- ``wesnoth`` (wesnoth-1.16-music, orchestral): what ``CONTRADICTION_SHARE`` was chosen on;
- ``openmsx piano``, ``openmsx strings`` (openttd-openmsx's tunes, every part on one instrument,
  rendered with FluidR3 GM: tests/support/midi_programs.py): held out;
- ``openmsx``, ``singularity``, ``fretsonfire`` (rock) and each ``--folder``: what the rule changes
  where the music is not one family (a folder's every .ogg, .opus, .mp3, .flac and .wav).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from support import content_material  # noqa: E402
from support.midi_programs import PIANO, STRINGS, tune  # noqa: E402

from streamtag.audio.files import load_audio, write_audio  # noqa: E402
from streamtag.catalog.installed import resolve_model  # noqa: E402
from streamtag.engine.tagging import tag_files  # noqa: E402
from streamtag.engine.tracks import CLASSICAL_TAGS, ROCK_TAGS, TRACK_ACTIVE_SHARE  # noqa: E402
from streamtag.model.inference import InferenceModel  # noqa: E402

RATE = content_material.RATE
WESNOTH = Path("/usr/share/games/wesnoth/1.16/data/core/music")
AUDIO = (".ogg", ".opus", ".mp3", ".flac", ".wav")
# what each set is, where it is one thing: the family its headline must not name
EXPECTED = {"wesnoth": "orchestral", "openmsx piano": "piano", "openmsx strings": "strings",
            "fretsonfire": "rock"}


def excerpt(audio: np.ndarray, seconds: float, start_s: float) -> np.ndarray:
    if len(audio) < round((start_s + seconds) * RATE):
        start_s = 0.0
    return audio[round(start_s * RATE): round((start_s + seconds) * RATE)]


def pieces(folder: Path, extra: list[str], only: list[str]
           ) -> dict[str, list[tuple[str, np.ndarray]]]:
    """Each set's pieces (those of ``only``, where given), by name, at full length."""
    sets: dict[str, list[tuple[str, np.ndarray]]] = {}
    if only and not {"wesnoth", "openmsx piano", "openmsx strings", "openmsx", "singularity",
                     "fretsonfire"} & set(only):
        return {name: _folder(path) for name, _, path in (f.partition("=") for f in extra)}
    if WESNOTH.is_dir():
        sets["wesnoth"] = [(p.stem, load_audio(p, RATE)[0]) for p in sorted(WESNOTH.glob("*.ogg"))
                           if p.stem != "silence"]
    if content_material.OPENMSX.is_dir() and content_material.SOUNDFONT.is_file():
        names = [p.stem for p in sorted(content_material.OPENMSX.glob("*.mid"))]
        for label, program in (("openmsx piano", PIANO), ("openmsx strings", STRINGS)):
            sets[label] = [(n, tune(folder, n, program, 1e6, 0.0)) for n in names]
        sets["openmsx"] = []
        for n in names:
            out = folder / f"{n}.wav"
            content_material.run("fluidsynth", "-ni", "-g", "0.6", "-r", str(RATE), "-F",
                                 str(out), str(content_material.SOUNDFONT),
                                 str(content_material.OPENMSX / f"{n}.mid"))
            sets["openmsx"].append((n, load_audio(out, RATE)[0]))
    if content_material.SINGULARITY.is_dir():
        sets["singularity"] = [(p.stem, load_audio(p, RATE)[0])
                               for p in sorted(content_material.SINGULARITY.rglob("*.ogg"))]
    if content_material.FRETSONFIRE.is_dir():
        sets["fretsonfire"] = []
        for song in sorted(p.parent for p in content_material.FRETSONFIRE.rglob("song.ogg")):
            parts = [load_audio(song / f"{part}.ogg", RATE)[0] for part in ("song", "guitar")]
            n = min(len(p) for p in parts)
            sets["fretsonfire"].append((song.name, (parts[0][:n] + parts[1][:n]) / 2))
    for spec in extra:
        name, _, path = spec.partition("=")
        sets[name] = _folder(path)
    return sets


def _folder(path: str) -> list[tuple[str, np.ndarray]]:
    return [(p.stem, load_audio(p, RATE)[0]) for p in sorted(Path(path).rglob("*"))
            if p.suffix.lower() in AUDIO]


def contradicts(tags: list[str], kind: str | None) -> bool:
    names = {t.lower() for t in tags}
    if kind == "rock":
        return bool(names & CLASSICAL_TAGS)
    if kind is not None:
        return bool(names & ROCK_TAGS)
    return bool(names & CLASSICAL_TAGS) and bool(names & ROCK_TAGS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="music")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--start", type=float, default=20.0)
    parser.add_argument("--folder", action="append", default=[], metavar="NAME=DIR")
    parser.add_argument("--only", action="append", default=[], metavar="NAME",
                        help="only this set (repeatable)")
    parser.add_argument("-v", "--verbose", action="store_true", help="every changed headline")
    args = parser.parse_args()
    model = InferenceModel.load(resolve_model(args.model))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        print("| set | excerpts | contradicting before | after | headlines changed "
              "| guitar named, after |")
        print("|---|---:|---:|---:|---:|---:|")
        for label, items in pieces(folder, args.folder, args.only).items():
            if args.only and label not in args.only:
                continue
            paths = []
            for i, (_, audio) in enumerate(items):
                paths.append(folder / f"{label.replace(' ', '-')}-{i}.wav")
                write_audio(paths[-1], excerpt(audio, args.seconds, args.start), RATE)
            kind = EXPECTED.get(label)
            before = after = changed = guitar = 0
            for (name, _), result in zip(items, tag_files(paths, model), strict=True):
                track = result.track or {"tags": [], "active_share": []}
                old = [t for t, s in zip(track["tags"], track["active_share"], strict=True)
                       if s > TRACK_ACTIVE_SHARE]
                before += contradicts(old, kind)
                after += contradicts(result.tags, kind)
                changed += set(old) != set(result.tags)
                guitar += "guitar" in result.tags
                if args.verbose and set(old) != set(result.tags):
                    print(f"  {label} {name}: {', '.join(old)} -> {', '.join(result.tags)}",
                          file=sys.stderr)
            one = kind in ("piano", "strings")
            print(f"| {label} ({kind or 'mixed'}) | {len(items)} | {before} | {after} "
                  f"| {changed} | {guitar if one else '-'} |", flush=True)


if __name__ == "__main__":
    main()
