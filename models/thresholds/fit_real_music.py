"""Fits the installed models' default thresholds on real music, at development time.

streamtag stores only the numbers this script prints into
``streamtag/catalog/real_music_thresholds.json`` (no audio): per model, the thresholds, the
checkpoint hashes they belong to, the recordings they were fitted on and the counts of active
tags before and after. ``streamtag models install`` applies them when the converted
checkpoints have those hashes (docs/models.md, "Thresholds").

The recordings are freely licensed music that Debian ships in game packages, chosen for a
spread of styles (metal and rock songs, orchestral and folk scores, electronic and ambient
soundtracks, chiptune-like and children's music):

    apt-get install fretsonfire-songs-muldjord fretsonfire-songs-sectoid wesnoth-1.16-music \
        warzone2100-music planetblupi-music-ogg drascula-music singularity-music asc-music \
        hyperrogue-music
    python models/thresholds/fit_real_music.py musicnn-msd musicnn-mtt vgg-msd vgg-mtt \
        --write streamtag/catalog/real_music_thresholds.json
    python models/thresholds/fit_real_music.py music --max-active 5 \
        --write streamtag/catalog/real_music_thresholds.json   # 92 tags: room for five

From each package at most ``--per-package`` recordings of at least 40 s (evenly spread over
its sorted file list) give one excerpt of ``--seconds`` from 0:15 each. Fret's on Fire songs
come as stems; their song and guitar stems are mixed. The excerpts are split in two by their
order (even, odd): the rule (streamtag.catalog.calibration, with at most ``--max-active`` tags
on) is fitted on one half and the active-tag counts are measured on the other, for the
synthetic-music default and for the real-music fit; the stored thresholds are then fitted on
all of them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import av
import numpy as np

from streamtag.catalog import installed
from streamtag.catalog.calibration import (
    ThresholdRule,
    Track,
    active_counts,
    choose_thresholds,
    default_calibration,
    file_chunks,
    score_tracks,
)
from streamtag.model.inference import InferenceModel
from streamtag.model.manifest import read_manifest

PACKAGES = ("fretsonfire-songs-muldjord", "fretsonfire-songs-sectoid", "wesnoth-1.16-music",
            "warzone2100-music", "planetblupi-music-ogg", "drascula-music", "singularity-music",
            "asc-music", "hyperrogue-music")
SUFFIXES = (".ogg", ".opus", ".mp3", ".flac")
START_S = 15.0
MIN_LENGTH_S = 40.0


def package_files(package: str) -> list[Path]:
    listing = subprocess.run(["dpkg", "-L", package], capture_output=True, text=True)
    if listing.returncode != 0:
        sys.exit(f"{package} is not installed: apt-get install {package}")
    return sorted(Path(line) for line in listing.stdout.splitlines()
                  if line.endswith(SUFFIXES) and Path(line).is_file())


def length_s(path: Path) -> float:
    try:
        with av.open(str(path)) as container:
            return (container.duration or 0) / 1e6
    except av.error.FFmpegError:
        return 0.0


def recordings(package: str, per_package: int) -> list[tuple[str, list[Path]]]:
    """(name, files to mix) of the package's chosen recordings."""
    files = package_files(package)
    if package.startswith("fretsonfire"):
        songs = sorted({f.parent for f in files if f.name == "song.ogg"})
        items = [(s.name, [f for f in (s / "song.ogg", s / "guitar.ogg") if f.is_file()])
                 for s in songs]
    else:
        items = [(f.stem, [f]) for f in files]
    items = [item for item in items if length_s(item[1][0]) >= MIN_LENGTH_S]
    if len(items) > per_package:
        pick = np.linspace(0, len(items) - 1, per_package).round().astype(int)
        items = [items[i] for i in sorted(set(pick))]
    return items


def excerpt(files: list[Path], sample_rate: float, seconds: float) -> np.ndarray:
    parts = []
    for path in files:
        audio = np.concatenate(list(file_chunks(path, sample_rate)))
        first = int(min(START_S, max(0.0, len(audio) / sample_rate - seconds)) * sample_rate)
        parts.append(audio[first:first + int(seconds * sample_rate)])
    length = min(len(p) for p in parts)
    mix = np.sum([p[:length] for p in parts], axis=0) / len(parts)
    return mix.astype(np.float32)


def summary(tracks: list[Track], thresholds: np.ndarray) -> dict:
    counts = np.concatenate([active_counts(t, thresholds) for t in tracks])
    return {"windows": int(len(counts)), "mean_active": round(float(counts.mean()), 2),
            "share_0": round(float(np.mean(counts == 0)), 3),
            "share_1_to_4": round(float(np.mean((counts >= 1) & (counts <= 4))), 3),
            "share_over_4": round(float(np.mean(counts > 4)), 3)}


def tags_on(track: Track, thresholds: np.ndarray, names: tuple[str, ...]) -> list[str]:
    """Tags on for at least a third of the excerpt's windows."""
    from streamtag.engine.smoothing import Smoother

    smoother = Smoother(list(names), thresholds)
    on = np.zeros(len(names))
    for scores, time_s in zip(track.raw, track.times_s, strict=True):
        smoother.update(scores, float(time_s))
        on += smoother.active
    return [names[i] for i in np.argsort(-on) if on[i] >= len(track.raw) / 3]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", help="installed model names")
    parser.add_argument("--per-package", type=int, default=12)
    parser.add_argument("--seconds", type=float, default=45.0)
    parser.add_argument("--max-active", type=int, default=4)
    parser.add_argument("--write", type=Path, help="the JSON file to write the results to")
    args = parser.parse_args()
    rule = ThresholdRule(max_active=args.max_active)
    chosen = [(p, name, files) for p in PACKAGES for name, files in recordings(p, args.per_package)]
    print(f"{len(chosen)} recordings from {len(PACKAGES)} packages", flush=True)
    results = {}
    for model_name in args.models:
        path = installed.resolve_model(model_name)
        manifest = read_manifest(path)
        model = InferenceModel.load(path, device="cpu")
        audio = [excerpt(files, model.sample_rate, args.seconds) for _, _, files in chosen]
        tracks = score_tracks(model, ([a] for a in audio))
        fit, check = tracks[0::2], tracks[1::2]
        synthetic = np.asarray(default_calibration(path)["thresholds"])
        held_out = choose_thresholds(fit, rule).thresholds
        final = choose_thresholds(tracks, rule)
        by_package: dict[str, Counter] = {}
        for (package, _, _), track in zip(chosen, tracks, strict=True):
            by_package.setdefault(package, Counter()).update(
                tags_on(track, final.thresholds, manifest.tags))
        report = {
            "checkpoint_sha256": manifest.recipe["checkpoint_sha256"],
            "tags": list(manifest.tags),
            "thresholds": [round(float(t), 5) for t in final.thresholds],
            "record": final.record(rule, f"real music: {len(chosen)} excerpts of "
                                   f"{args.seconds:g} s from the Debian packages "
                                   f"{', '.join(PACKAGES)} (models/thresholds/"
                                   "fit_real_music.py)"),
            "recordings": [f"{package}: {name}" for package, name, _ in chosen],
            "audio_sha256": hashlib.sha256(b"".join(a.tobytes() for a in audio)).hexdigest(),
            "check": {"synthetic_default": summary(check, synthetic),
                      "real_music_fit_on_other_half": summary(check, held_out)},
            "tags_on_by_package": {p: c.most_common(6) for p, c in by_package.items()},
        }
        results[model_name] = report
        print(f"== {model_name}: active tags per window on the held-out half", flush=True)
        for what, figures in report["check"].items():
            print(f"  {what:30} {json.dumps(figures)}")
        print("  tags on for a third of an excerpt or more (excerpts), by package:")
        for package, counts in report["tags_on_by_package"].items():
            print(f"  {package:28} " + ", ".join(f"{t} {n}" for t, n in counts), flush=True)
    if args.write:
        previous = json.loads(args.write.read_text()) if args.write.is_file() else {}
        previous.update(results)
        args.write.write_text(json.dumps(previous, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
