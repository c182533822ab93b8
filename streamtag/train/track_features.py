"""High-level track features: one vector per track from a CSV or JSON file keyed by track id.

The CRNN runs 4 and 5 of team TaiInn (MediaEval 2019) concatenate such a vector (they used
AcousticBrainz/Essentia descriptors) to the recurrent part's output inside the model
(``streamtag.nets.crnn``, option ``n_features``). The recipe names the file as
``data.features``; ``model.options.n_features`` must equal its number of features.

Formats (the id is the dataset's track id, ``Track.id``):

- CSV: a header whose first column is ``track_id`` (or ``id``) and whose other columns name
  the features; one row per track, every value a finite number.
- JSON: an object mapping each track id to a list of numbers, or to an object of named numbers
  (every track with the same names; the first track's order is the features' order).

``load_track_features`` reads and checks the file (errors name the file, the row or track and
the column); ``FeatureScaler`` standardises each feature with the training split's mean and
standard deviation, kept with the run so that evaluation applies the same transform.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from streamtag.errors import ConfigError

__all__ = ["FeatureScaler", "TrackFeatures", "load_track_features"]

_ID_COLUMNS = ("track_id", "id")


@dataclasses.dataclass(frozen=True)
class TrackFeatures:
    """Feature names and one float32 vector per track id."""

    names: tuple[str, ...]
    vectors: Mapping[str, np.ndarray]
    source: str

    def __len__(self) -> int:
        return len(self.vectors)

    def matrix(self, ids: Sequence[str]) -> np.ndarray:
        """``(len(ids), n_features)`` float32; every id must have a vector."""
        missing = [i for i in ids if i not in self.vectors]
        if missing:
            raise ConfigError(f"{self.source} has no features for track(s) {missing[:5]}"
                              + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""))
        if not ids:
            return np.zeros((0, len(self.names)), dtype=np.float32)
        return np.stack([self.vectors[i] for i in ids]).astype(np.float32)


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool):
        raise ConfigError(f"{where}: {value!r} is not a number")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: {value!r} is not a number") from None
    if not math.isfinite(number):
        raise ConfigError(f"{where}: {value!r} is not finite; fill or drop missing features "
                          "before training")
    return number


def _read_csv(path: Path) -> TrackFeatures:
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = csv.reader(f)
        header = next(rows, None)
        if not header or header[0].strip() not in _ID_COLUMNS or len(header) < 2:
            raise ConfigError(f"{path}: the header must be track_id (or id) followed by one "
                              f"column per feature, got {header}")
        names = tuple(h.strip() for h in header[1:])
        vectors: dict[str, np.ndarray] = {}
        for line, row in enumerate(rows, start=2):
            if not row or not any(cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                raise ConfigError(f"{path}, line {line}: {len(row)} columns, the header has "
                                  f"{len(header)}")
            track = row[0].strip()
            if track in vectors:
                raise ConfigError(f"{path}, line {line}: track {track!r} appears twice")
            vectors[track] = np.array(
                [_number(v, f"{path}, line {line}, column {names[j]!r}")
                 for j, v in enumerate(row[1:])], dtype=np.float32)
    return TrackFeatures(names, vectors, str(path))


def _read_json(path: Path) -> TrackFeatures:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ConfigError(f"{path} is not valid JSON: {error}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected an object mapping track ids to features, got "
                          f"{type(data).__name__}")
    names: tuple[str, ...] | None = None
    vectors: dict[str, np.ndarray] = {}
    for track, value in data.items():
        where = f"{path}, track {track!r}"
        if isinstance(value, dict):
            these = tuple(value)
            if names is None:
                names = these
            elif set(these) != set(names):
                raise ConfigError(f"{where}: features {sorted(these)} differ from the first "
                                  f"track's {sorted(names)}")
            values = [_number(value[n], f"{where}, feature {n!r}") for n in names]
        elif isinstance(value, list):
            if names is None:
                names = tuple(f"f{j}" for j in range(len(value)))
            elif len(value) != len(names):
                raise ConfigError(f"{where}: {len(value)} features, the first track has "
                                  f"{len(names)}")
            values = [_number(v, f"{where}, feature {j}") for j, v in enumerate(value)]
        else:
            raise ConfigError(f"{where}: expected a list of numbers or an object of named "
                              f"numbers, got {type(value).__name__}")
        vectors[str(track)] = np.array(values, dtype=np.float32)
    if not names:
        raise ConfigError(f"{path} holds no features")
    return TrackFeatures(names, vectors, str(path))


def load_track_features(path: str | os.PathLike) -> TrackFeatures:
    """Reads a ``.csv`` or ``.json`` feature file; ``ConfigError`` names what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"data.features: {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        features = _read_csv(path)
    elif suffix == ".json":
        features = _read_json(path)
    else:
        raise ConfigError(f"data.features: {path} must be a .csv or .json file")
    if not features.vectors:
        raise ConfigError(f"{path} holds no tracks")
    return features


@dataclasses.dataclass(frozen=True)
class FeatureScaler:
    """Standardisation fitted on the training split: ``(v − mean) / std`` per feature (a
    constant feature keeps std 1, so it becomes 0)."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, matrix: np.ndarray) -> FeatureScaler:
        mean = matrix.mean(axis=0).astype(np.float32)
        std = matrix.std(axis=0).astype(np.float32)
        std[std < 1e-12] = 1.0
        return cls(mean, std)

    def __call__(self, matrix: np.ndarray) -> np.ndarray:
        return ((matrix - self.mean) / self.std).astype(np.float32)

    def to_dict(self) -> dict[str, list[float]]:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}
