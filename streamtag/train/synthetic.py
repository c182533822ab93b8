"""The synthetic music benchmark as a data set: clips of ``streamtag.audio.synthetic`` written in
the Folder+CSV layout the trainer reads, with exact split sizes and every clip's parameters."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from streamtag.audio.synthetic import RULES_VERSION, SyntheticConfig, generate_clip
from streamtag.errors import ConfigError
from streamtag.fsutil import atomic_path

__all__ = ["generate_dataset"]


def _split_counts(n: int, fractions: Sequence[float]) -> list[int]:
    if len(fractions) != 3 or any(f < 0 for f in fractions) or sum(fractions) <= 0:
        raise ConfigError(f"splits must be three non-negative fractions (train, validation, "
                          f"test), got {tuple(fractions)!r}")
    total = float(sum(fractions))
    counts = [int(round(n * f / total)) for f in fractions[:2]]
    counts.append(n - sum(counts))
    # A split asked for gets at least one clip when there are enough clips.
    for i, f in enumerate(fractions):
        if f > 0 and counts[i] == 0 and n >= sum(1 for x in fractions if x > 0):
            donor = int(np.argmax(counts))
            counts[donor] -= 1
            counts[i] += 1
    return counts


def generate_dataset(root: str | Path, n_clips: int, config: SyntheticConfig | None = None,
                     seed: int = 0, splits: Sequence[float] = (0.7, 0.15, 0.15),
                     format: str = "flac", workers: int | None = None) -> Path:
    """Writes ``n_clips`` clips in the Folder+CSV layout and returns the CSV's path.

    Layout: ``root/audio/clip_00000.flac`` …, ``root/tags.csv`` (columns ``path`` relative to the
    CSV, ``tags`` joined by ``;``, ``split``), ``root/clips.jsonl`` (each clip's seed and
    parameters) and ``root/synthetic.json`` (config, seed, rules version). Clip ``i`` uses seed
    ``SeedSequence([seed, i])``'s first 32-bit word, so clip ``i`` is the same whatever
    ``n_clips``; the split of each clip is a seeded shuffle with exact split sizes. ``format``:
    ``"flac"`` (lossless, 16-bit) or ``"wav"``.
    """
    from streamtag.audio.files import write_audio

    config = config or SyntheticConfig()
    if format not in ("flac", "wav"):
        raise ConfigError(f"format must be 'flac' or 'wav', got {format!r}")
    if n_clips < 1:
        raise ConfigError(f"n_clips must be >= 1, got {n_clips!r}")
    root = Path(root)
    (root / "audio").mkdir(parents=True, exist_ok=True)
    counts = _split_counts(n_clips, splits)
    order = np.random.default_rng([seed, 2]).permutation(n_clips)
    split_of = np.empty(n_clips, dtype=object)
    names = ("train", "validation", "test")
    split_of[order] = np.repeat(names, counts)
    clip_seeds = [int(np.random.SeedSequence([seed, i]).generate_state(1)[0])
                  for i in range(n_clips)]

    def make(i: int) -> tuple[str, list[str], dict[str, Any]]:
        audio, tags, params = generate_clip(clip_seeds[i], config)
        rel = f"audio/clip_{i:05d}.{format}"
        with atomic_path(root / rel) as temporary:
            write_audio(temporary, audio, config.sample_rate)
        return rel, tags, params

    workers = workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(make, range(n_clips)))

    import csv

    csv_path = root / "tags.csv"
    _write_atomic(csv_path, lambda f: _write_rows(csv, f, results, split_of))
    _write_atomic(root / "clips.jsonl", lambda f: f.writelines(
        json.dumps({"path": rel, "split": str(split_of[i]), "tags": tags, "params": params})
        + "\n" for i, (rel, tags, params) in enumerate(results)))
    _write_atomic(root / "synthetic.json", lambda f: json.dump(
        {"rules_version": RULES_VERSION, "seed": seed, "n_clips": n_clips,
         "splits": list(splits), "format": format, "config": config.to_dict(),
         "tags": list(config.tags)}, f, indent=2))
    return csv_path


def _write_rows(csv: Any, f: Any, results: list, split_of: np.ndarray) -> None:
    writer = csv.writer(f, lineterminator="\n")
    writer.writerow(["path", "tags", "split"])
    for i, (rel, tags, _) in enumerate(results):
        writer.writerow([rel, ";".join(tags), split_of[i]])


def _write_atomic(path: Path, write: Any) -> None:
    with atomic_path(path) as temporary, open(temporary, "w", encoding="utf-8",
                                              newline="") as f:
        write(f)
