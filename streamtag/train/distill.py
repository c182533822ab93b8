"""Distillation: a student learns an installed model's scores on real audio, which has no labels.

``data.kind = "distill"`` reads a corpus CSV (``path, split`` and any other columns; the
corpus of ``benchmarks/corpus.py``: 3 s clips of Debian packages' music and non-music, split
by package) and names a teacher (``data.teacher``: an installed model's name or a model file).
``load_distill`` makes it a ``TagDataset`` whose tags are the teacher's, in its order, and whose
targets are the teacher's scores:

- each clip's teacher score is the mean of the teacher's probabilities over the windows that
  cover it (one window for a clip of the teacher's window), computed from the teacher's own
  features, which the feature cache keeps under the teacher's frontend options (``FeatureCache``:
  another key than the student's, so both are computed once and never mix), and kept in
  ``TeacherScores`` under the teacher's weights hash and that options key;
- the training split's targets are those probabilities (binary cross-entropy on soft targets);
  the validation and test splits' are the teacher's tags, its probabilities at its own
  per-tag thresholds, so that ROC-AUC, PR-AUC and the student's per-tag thresholds (chosen on
  validation) measure agreement with what the teacher says where users look.
"""

from __future__ import annotations

import csv
import hashlib
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from streamtag.errors import ConfigError
from streamtag.train.cache import ArrayCache, FeatureCache, options_key
from streamtag.train.datasets import (
    MALFORMED,
    MISSING_FILE,
    SPLITS,
    DatasetReport,
    TagDataset,
    Track,
)

__all__ = ["TeacherScores", "load_distill", "teacher_windows"]

_SPLIT_NAMES = {"train": "train", "fit": "train", "validation": "validation",
                "valid": "validation", "val": "validation", "test": "test",
                "held-out": "test", "held_out": "test"}


def teacher_windows(frames: np.ndarray, window: int, hop: int, fill: float) -> np.ndarray:
    """The teacher's windows ``(n, n_mels, window)`` covering ``frames`` ``(T, n_mels)``:
    evenly spaced from start to end at most ``hop`` apart, one (padded with ``fill``) when the
    track is not longer than a window."""
    from streamtag.train.augment import pad_to

    frames = pad_to(frames, window, False, fill)
    # as windows.evaluation_starts places them (which sits above the data this module feeds)
    count = math.ceil((len(frames) - window) / hop) + 1
    starts = np.round(np.linspace(0, len(frames) - window, count)).astype(np.int64)
    return np.stack([frames[s:s + window].T for s in starts]).astype(np.float32)


class TeacherScores(ArrayCache):
    """The teacher's mean probabilities per track, one ``(1, n_tags)`` float16 row under
    ``root/teacher/<key>/``; the key names the teacher's weights and frontend options, so a new
    teacher or other features never reuse old scores. The teacher's features come from
    ``features`` (a ``FeatureCache`` with the teacher's options), built first."""

    def __init__(self, root: str | Path, teacher, features: FeatureCache) -> None:
        # teacher: streamtag.model.inference.InferenceModel
        if features.options != teacher.frontend:
            raise ValueError("the teacher's features must be cached with its own frontend "
                             "options")
        self.teacher = teacher
        self.features = features
        key = hashlib.sha256(f"{teacher.hash}:{options_key(teacher.frontend)}".encode())
        self.key = key.hexdigest()[:16]
        self.directory = Path(root) / "teacher" / self.key
        self.row_shape = (len(teacher.tags),)
        self.description = f"teacher {teacher.name}"

    def compute(self, track: Track) -> tuple[float, bool]:
        from streamtag.train.augment import silence_value

        frames = self.features.load(track.id)
        windows = teacher_windows(frames, self.teacher.window, self.teacher.hop,
                                  silence_value(self.teacher.frontend))
        probabilities = self.teacher.forward(windows).mean(axis=0, keepdims=True)
        self._write(track.id, probabilities)
        options = self.teacher.frontend
        return len(frames) * options.hop_length / options.sample_rate, False

    def scores(self, track_id: str) -> np.ndarray:
        return self.load(track_id)[0]


def _read_corpus(csv_path: Path, splits: Sequence[str], report: DatasetReport) -> list[Track]:
    if not csv_path.is_file():
        raise ConfigError(f"{csv_path} not found; make the corpus first (python "
                          "benchmarks/corpus.py) or set data.root and data.csv")
    tracks, seen = [], set()
    with open(csv_path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in ("path", "split") if c not in (reader.fieldnames or [])]
        if missing:
            raise ConfigError(f"{csv_path}: missing column(s) {missing}; a corpus names each "
                              "clip's path and split")
        for row in reader:
            where = f"{csv_path.name}:{reader.line_num}"
            rel = (row.get("path") or "").strip()
            split = _SPLIT_NAMES.get((row.get("split") or "").strip().lower())
            if not rel or split is None:
                report.add(MALFORMED, f"{where}: path {rel!r}, split {row.get('split')!r}")
                continue
            track_id = Path(rel).with_suffix("").as_posix()
            if track_id in seen or split not in splits:
                continue
            seen.add(track_id)
            path = Path(rel) if Path(rel).is_absolute() else csv_path.parent / rel
            if not path.is_file():
                report.add(MISSING_FILE, f"{where}: {path} not found")
                continue
            tracks.append(Track(id=track_id, tags=(), split=split, audio_path=path))
    return tracks


def load_distill(csv_path: str | Path, teacher: str, cache_root: str | Path, *,
                 splits: Sequence[str] = SPLITS, workers: int | None = None,
                 log: Callable[[str], None] = print) -> TagDataset:
    """The corpus ``csv_path`` with the teacher's scores as targets (the module's docstring);
    ``teacher`` is an installed model's name or a model file. The teacher's features and scores
    are cached under ``cache_root``; a clip that cannot be decoded is reported and left out."""
    from streamtag.catalog.installed import resolve_model
    from streamtag.model.inference import InferenceModel

    csv_path = Path(csv_path)
    report = DatasetReport(source=f"distillation corpus ({csv_path})")
    tracks = _read_corpus(csv_path, splits, report)
    model = InferenceModel.load(resolve_model(teacher) or teacher, device="cpu")
    if model.input_kind != "logmel":
        raise ConfigError(f"data.teacher {teacher!r} takes a waveform; a teacher must take "
                          "log-mel windows")
    features = FeatureCache(Path(cache_root) / "features", model.frontend)
    built = features.build(tracks, workers=workers)
    log(f"teacher features: {built.summary().removeprefix('features: ')}")
    scores = TeacherScores(cache_root, model, features)
    scored = scores.build([t for t in tracks if t.id not in built.failures], workers=workers)
    log(f"teacher scores ({model.name}): {scored.summary().removeprefix('features: ')}")
    failures = {**built.failures, **scored.failures}
    thresholds = np.asarray(model.thresholds, dtype=np.float32)
    targets = {}
    kept = []
    for track in tracks:
        if track.id in failures:
            report.add("unreadable_audio", f"{track.id}: {failures[track.id]}")
            continue
        p = scores.scores(track.id)
        targets[track.id] = p if track.split == "train" else (p >= thresholds).astype(np.float32)
        kept.append(track)
    for split in splits:
        report.kept[split] = sum(1 for t in kept if t.split == split)
        if report.kept[split] == 0:
            raise ConfigError(f"{csv_path}: no usable {split} clips; check the corpus")
    report.log()
    return TagDataset(name=f"distill:{model.name}", tags=list(model.tags), tracks=kept,
                      report=report, targets=targets, thresholds=thresholds)
