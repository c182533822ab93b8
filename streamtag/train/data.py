"""The data of a run: the recipe's dataset, its tracks' cached features (or audio) and labels,
split by split (``prepare_data`` gives a ``TrackData``), and a window of any track.

``prepare_data`` loads the dataset (``datasets``; the synthetic benchmark is generated on first
use), fills the cache (``cache.FeatureCache``, or ``cache.AudioCache`` for waveform models),
leaves out tracks that failed, joins high-level track features (``data.features``,
standardised on the training split) and holds every array in memory when they fit.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from streamtag.errors import ConfigError
from streamtag.frontend import LogMelOptions
from streamtag.train.augment import pad_to, silence_value
from streamtag.train.cache import ArrayCache, AudioCache, FeatureCache
from streamtag.train.recipe import Recipe

__all__ = ["PRELOAD_BYTES", "SPLITS", "TrackData", "load_dataset", "prepare_data",
           "synthetic_root"]

SPLITS = ("train", "validation", "test")
PRELOAD_BYTES = 1 << 30  # datasets whose cached arrays fit are held in memory


@dataclasses.dataclass
class TrackData:
    """The tracks of each split with their labels and cached features, ready for windows."""

    tags: list[str]
    tracks: dict[str, list[Any]]
    labels: dict[str, np.ndarray]
    lengths: dict[str, np.ndarray]
    store: ArrayCache  # FeatureCache or AudioCache
    input_kind: str
    fill: float
    wrap: bool
    # High-level track features (data.features), standardised: split -> (tracks, features).
    features: dict[str, np.ndarray] | None = None
    feature_names: tuple[str, ...] = ()
    feature_scaler: Any = None  # track_features.FeatureScaler fitted on the training split
    # A teacher's per-tag thresholds (distill), in ``tags`` order: train.loss = "threshold_bce".
    thresholds: np.ndarray | None = None
    _memory: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)

    def preload(self, budget_bytes: int = PRELOAD_BYTES) -> bool:
        """Holds every cached array in memory (float16) when they fit in ``budget_bytes``."""
        width = 1 if self.input_kind == "waveform" else self.store.options.n_mels
        total = sum(int(n.sum()) for n in self.lengths.values()) * width * 2
        if total > budget_bytes:
            return False
        for split in self.tracks:
            for track in self.tracks[split]:
                if track.id not in self._memory:
                    self._memory[track.id] = self.store.load(track.id).astype(np.float16)
        return True

    def window(self, track_id: str, length: int, start: int, total: int) -> np.ndarray:
        """``length`` frames (or samples) from ``start``, float32, padded when the track is
        shorter; log-mel windows come back mels first ``(n_mels, length)``."""
        stop = min(start + length, total)
        if track_id in self._memory:
            array = self._memory[track_id][start:stop].astype(np.float32)
        else:
            array = self.store.load(track_id, start, stop - start)
        array = pad_to(array, length, self.wrap, self.fill)
        return np.ascontiguousarray(array.T) if array.ndim == 2 else array


def synthetic_root(recipe: Recipe, log: Callable[[str], None]) -> Path:
    """The folder of the recipe's synthetic benchmark (``data.root``, or one named by its settings
    in the cache folder), generated on first use; a folder made with other settings is a
    ``ConfigError``."""
    from streamtag.audio.synthetic import SyntheticConfig
    from streamtag.train import synthetic

    data = recipe.data
    root = Path(data.root).expanduser() if data.root else (
        recipe.train.cache_root() / "synthetic" / data.synthetic_key())
    config = SyntheticConfig.from_dict(data.options["synthetic"])
    wanted = {"seed": data.options["seed"], "n_clips": data.options["n_clips"],
              "splits": list(data.options["split_fractions"]),
              "format": data.options["format"], "config": config.to_dict()}
    info = root / "synthetic.json"
    if info.is_file():
        import json

        stored = json.loads(info.read_text(encoding="utf-8"))
        have = {key: stored.get(key) for key in wanted}
        if have != wanted:
            raise ConfigError(f"{root} holds a synthetic benchmark made with other settings "
                              f"({have}); give another data.root or remove it")
        return root
    log(f"generating {data.options['n_clips']} synthetic clips in {root}")
    started = time.perf_counter()
    synthetic.generate_dataset(root, data.options["n_clips"], config, seed=data.options["seed"],
                               splits=tuple(data.options["split_fractions"]),
                               format=data.options["format"],
                               workers=recipe.train.workers or None)
    log(f"generated in {time.perf_counter() - started:.1f} s")
    return root


def load_dataset(recipe: Recipe, splits: Sequence[str], tags: Sequence[str] | None,
                  log: Callable[[str], None]):
    """The recipe's dataset (``datasets.Dataset``) for ``splits``; ``tags`` fixes the vocabulary
    where the adapter takes one."""
    from streamtag.train import datasets

    data = recipe.data
    o = data.options
    root = Path(data.root).expanduser()
    if data.kind == "distill":
        from streamtag.train.distill import load_distill

        csv_path = data.path("csv") if data.root else (
            recipe.train.cache_root() / "corpus" / o["csv"])
        return load_distill(csv_path, o["teacher"], recipe.train.cache_root(), splits=splits,
                            workers=recipe.train.workers or None, log=log)
    if data.kind != "synthetic" and not data.root:
        raise ConfigError(f"data.root is not set; pass --set data.root=PATH (the {data.kind} "
                          "dataset's folder)")
    if data.kind == "mtg_jamendo":
        return datasets.load_mtg_jamendo(root, o["subset"], o["split_index"],
                                         audio_root=data.path("audio_root"),
                                         mel_root=data.path("mel_root"),
                                         tags=list(tags or o["tags"]) or None, splits=splits)
    if data.kind == "mtat":
        lists = {split: Path(value).expanduser() if Path(value).expanduser().is_absolute()
                 else root / value for split, value in o["split_lists"].items()}
        return datasets.load_magnatagatune(data.path("annotations"),
                                           audio_root=data.path("audio_root") or root,
                                           split_lists=lists or None, top_n=o["top_n"],
                                           tags=list(tags or o["tags"]) or None, splits=splits,
                                           keep_empty=o["keep_empty"])
    if data.kind == "folder_csv":
        return datasets.load_folder_csv(data.path("csv"), tags=list(tags or o["tags"]) or None,
                                        splits=splits)
    if data.kind == "audio_folder":
        return datasets.load_audio_folder(root, extensions=o["extensions"],
                                          validation_fraction=o["validation_fraction"],
                                          splits=splits)
    return datasets.load_synthetic(synthetic_root(recipe, log), splits=splits)


def _note_short_tracks(lengths: dict[str, np.ndarray], window: int, input_kind: str,
                       options: LogMelOptions, wrap: bool, log: Callable[[str], None]) -> None:
    """Says how many tracks are shorter than the model's window: each of their windows is the
    track repeated (``augment.wrap_pad``) or padded with silence, so the model learns from
    fewer distinct seconds than the window holds (synthetic clips of 2 s for a window of 3 s
    trained without a word)."""
    short = sum(int((frames < window).sum()) for frames in lengths.values())
    if not short:
        return
    total = sum(len(frames) for frames in lengths.values())
    step = 1 if input_kind == "waveform" else options.hop_length
    shortest = min(int(frames.min()) for frames in lengths.values() if len(frames))
    unit = "samples" if input_kind == "waveform" else "frames"
    log(f"note: {short} of {total} tracks are shorter than the model's window ({window} "
        f"{unit}, {window * step / options.sample_rate:.2f} s; the shortest "
        f"{shortest * step / options.sample_rate:.2f} s): each window of them is the track "
        + ("repeated" if wrap else "padded with silence") + " to fill it; use longer clips "
        "(for the synthetic data, data.synthetic.clip_seconds) or a shorter model.window")


def prepare_data(recipe: Recipe, *, options: LogMelOptions | None = None,
                 input_kind: str | None = None, tags: Sequence[str] | None = None,
                 splits: Sequence[str] = SPLITS, log: Callable[[str], None] = print,
                 preload: bool = True) -> TrackData:
    """The recipe's dataset with its features cached, for the given splits.

    ``options`` and ``input_kind`` default to the recipe's (a model file's when evaluating one);
    ``tags`` fixes the label columns (a model file's tags), by default the dataset's vocabulary.
    Tracks whose audio cannot be decoded are reported and left out.
    """
    options = options or recipe.frontend_options()
    input_kind = input_kind or recipe.model.input_kind
    dataset = load_dataset(recipe, splits, tags, log)
    cache_root = recipe.train.cache_root()
    if input_kind == "waveform":
        store: ArrayCache = AudioCache(cache_root / "audio", options.sample_rate)
    else:
        store = FeatureCache(cache_root / "features", options)
    report = store.build(dataset.tracks, workers=recipe.train.workers or None)
    log(report.summary())
    if report.failures:
        dataset = dataset.drop(report.failures)
    track_features = None
    if recipe.data.options.get("features"):
        from streamtag.train.track_features import load_track_features

        track_features = load_track_features(recipe.data.path("features"))
        lacking = {t.id: "no high-level features" for t in dataset.tracks
                   if t.id not in track_features.vectors}
        if lacking:
            log(f"{len(lacking)} track(s) have no row in {track_features.source} and are left "
                f"out, e.g. {sorted(lacking)[:3]}")
            dataset = dataset.drop(lacking, reason="no_features")
    columns = list(tags) if tags is not None else list(dataset.tags)
    missing = [t for t in columns if t not in dataset.tags]
    if missing:
        raise ConfigError(f"the dataset has no tag(s) {missing}; the model's tags must be among "
                          f"the dataset's: {dataset.tags}")
    by_split = {split: dataset.split(split) for split in splits}
    for split, tracks in by_split.items():
        if not tracks:
            raise ConfigError(f"no {split} tracks left after featurising; see the report above")
    index = {tag: j for j, tag in enumerate(dataset.tags)}
    labels = {split: dataset.labels(tracks)[:, [index[t] for t in columns]]
              for split, tracks in by_split.items()}
    lengths = {split: np.array([store.n_frames(t.id) for t in tracks], dtype=np.int64)
               for split, tracks in by_split.items()}
    _note_short_tracks(lengths, recipe.model.window, input_kind, options,
                       recipe.augment.wrap_pad, log)
    fill = 0.0 if input_kind == "waveform" else silence_value(options)
    data = TrackData(tags=columns, tracks=by_split, labels=labels, lengths=lengths, store=store,
                     input_kind=input_kind, fill=fill, wrap=recipe.augment.wrap_pad)
    if dataset.thresholds is not None:
        data.thresholds = dataset.thresholds[[index[t] for t in columns]]
    if track_features is not None:
        from streamtag.train.track_features import FeatureScaler

        raw = {split: track_features.matrix([t.id for t in tracks])
               for split, tracks in by_split.items()}
        if "train" not in raw:
            raise ConfigError("data.features are standardised with the training split, which "
                              "is not loaded here")
        data.feature_scaler = FeatureScaler.fit(raw["train"])
        data.features = {split: data.feature_scaler(m) for split, m in raw.items()}
        data.feature_names = track_features.names
        log(f"high-level features: {len(track_features.names)} per track from "
            f"{track_features.source}")
    if preload:
        data.preload()
    counts = ", ".join(f"{split} {len(tracks)}" for split, tracks in by_split.items())
    log(f"data: {dataset.name}, {len(columns)} tags, tracks: {counts}")
    return data
