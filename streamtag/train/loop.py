"""The training loop: data from a recipe, windows, augmentation, optimisation, checkpoints.

``train(recipe, run_dir)`` runs a whole recipe: it loads the dataset (``datasets``), computes the
features once with the daemon's C++ frontend (``cache.FeatureCache``; waveform models get
``AudioCache`` below), trains with one checkpoint per epoch, then hands over to
``export.export_run`` (thresholds on validation, test metrics, plots, ``model.pt``).
``train(recipe, run_dir, resume=True)`` continues from ``run_dir/checkpoint.pt``.

Windows: each epoch every training track gives ``windows_per_track`` windows, at random
positions or its centre; a track shorter than the window is repeated (``augment.wrap_pad``) or
padded with silence. A track is scored by the mean of the model's probabilities over evenly
spaced windows covering it (at most ``eval.eval_hop`` apart) or by its centre window.

Repeatability: ``train.seed`` seeds the weights (torch), the window sampler and the augmentations
(two numpy generators); the checkpoint stores all three states, the global torch and numpy
states, the optimiser, the schedule and the early-stopping counters, so a resumed run continues
exactly as an uninterrupted one would. With ``train.deterministic`` the result is the same bit
for bit on the same machine (``torch.use_deterministic_algorithms``).

Run directory: ``recipe.toml`` (the resolved recipe), ``train.log`` (one line per epoch, also
printed), ``checkpoint.pt`` (the last epoch), ``best.pt`` (the best epoch's weights), ``swa/``
(the SWA averages kept for snapshot averaging), ``per_tag/`` (the weights of each epoch that is
some tag's best, for per-tag early stopping), then what ``export`` writes.

Distributed data-parallel training: under ``torchrun --nproc_per_node N -m streamtag train ...``
(``WORLD_SIZE`` > 1 in the environment) every process trains a replica with
``DistributedDataParallel`` (gloo on the CPU, NCCL on CUDA, one GPU per process, batch norm
synchronised there) on its share of each global batch of ``train.batch_size`` windows
(``DistributedSampler``), so the run equals a single-process run with the same batch up to
rounding, except for per-process batch-norm statistics on the CPU, dropout masks and mixup
partners. Every process validates (the same weights give the same decisions); only rank 0
writes the run directory and exports.

What is exported (``TrainingRun.final_model``): the best epoch's weights; or with ``train.swa``
the SWA average, its batch-norm statistics recomputed over the training windows; with
``train.snapshots`` the mean of the probabilities of the best epoch's model and the last SWA
averages; with ``train.per_tag_best`` each tag answered by the weights of its own best epoch.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel, update_bn

from streamtag.errors import ConfigError
from streamtag.frontend import LogMelOptions
from streamtag.train import combine, init_from
from streamtag.train.augment import Augmenter, pad_to, silence_value
from streamtag.train.recipe import Recipe, TrainConfig

__all__ = [
    "AudioCache",
    "RunLog",
    "TrainingRun",
    "TrackData",
    "best_epoch_per_tag",
    "evaluation_starts",
    "lr_for_epoch",
    "prepare_data",
    "predict",
    "train",
    "warmup_linear_lr",
]

SPLITS = ("train", "validation", "test")
CHECKPOINT = "checkpoint.pt"
BEST = "best.pt"
SWA_DIR = "swa"
PER_TAG_DIR = "per_tag"
RECIPE_FILE = "recipe.toml"
LOG_FILE = "train.log"
_CHECKPOINT_FORMAT = 1
_PRELOAD_BYTES = 1 << 30  # datasets whose cached arrays fit are held in memory
_EPS = 1e-7


# --------------------------------------------------------------------------------------------
# Logging


class RunLog:
    """One line per event to stdout and, once the run has a folder, to ``train.log``."""

    def __init__(self, path: Path | None = None, echo: bool = True) -> None:
        self.path = path
        self.echo = echo

    def __call__(self, message: str) -> None:
        if self.echo:
            print(message, flush=True)
        if self.path is not None:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(message + "\n")


def _progress(**kwargs: Any):
    from tqdm import tqdm

    quiet = not sys.stderr.isatty() or os.environ.get("RANK", "0") != "0"
    return tqdm(disable=quiet, leave=False, dynamic_ncols=True, **kwargs)


# --------------------------------------------------------------------------------------------
# Audio for waveform models


class AudioCache:
    """Decoded mono audio at ``sample_rate`` for waveform models (SampleCNN), one float16 1-D
    ``.npy`` per track under ``root/audio-<rate>/`` — the waveform counterpart of
    ``FeatureCache`` (same ``build``/``has``/``n_frames``/``load``; a "frame" is a sample here).
    Decoding and resampling are the daemon's (``streamtag.audio.load_audio``)."""

    def __init__(self, root: str | os.PathLike, sample_rate: float) -> None:
        self.sample_rate = float(sample_rate)
        self.directory = Path(root) / f"audio-{self.sample_rate:g}"

    def path(self, track_id: str) -> Path:
        from urllib.parse import quote

        return self.directory / f"{quote(track_id, safe='')}.npy"

    def n_frames(self, track_id: str) -> int:
        return int(np.load(self.path(track_id), mmap_mode="r").shape[0])

    def has(self, track_id: str) -> bool:
        try:
            array = np.load(self.path(track_id), mmap_mode="r")
        except (OSError, ValueError):
            return False
        return array.ndim == 1 and array.dtype == np.float16

    def load(self, track_id: str, start_frame: int = 0, n_frames: int | None = None) -> np.ndarray:
        array = np.load(self.path(track_id), mmap_mode="r")
        stop = None if n_frames is None else start_frame + n_frames
        return np.array(array[start_frame:stop], dtype=np.float32)

    def build(self, tracks: Sequence[Any], workers: int | None = None, progress: bool = True):
        from streamtag.audio import load_audio
        from streamtag.train.cache import CacheReport

        started = time.perf_counter()
        tracks = list({t.id: t for t in tracks}.values())
        workers = workers or os.cpu_count() or 1
        report = CacheReport(total=len(tracks), workers=workers)
        self.directory.mkdir(parents=True, exist_ok=True)
        todo = [t for t in tracks if not self.has(t.id)]
        report.cached = len(tracks) - len(todo)
        lock = threading.Lock()

        def decode(track: Any) -> float:
            if track.audio_path is None:
                raise ValueError("waveform models need the audio files; this track has only "
                                 "precomputed features")
            audio, _ = load_audio(track.audio_path, self.sample_rate)
            final = self.path(track.id)
            temporary = final.with_name(f".{final.name}.{os.getpid()}.{threading.get_ident()}"
                                        ".tmp")
            try:
                with open(temporary, "wb") as f:
                    np.save(f, np.clip(audio, -65504, 65504).astype(np.float16))
                os.replace(temporary, final)
            finally:
                temporary.unlink(missing_ok=True)
            return len(audio) / self.sample_rate

        bar = _progress(total=len(todo), unit="track", desc="audio")
        with bar, ThreadPoolExecutor(max_workers=workers) as pool:
            futures = {pool.submit(decode, t): t for t in todo}
            for future in as_completed(futures):
                try:
                    seconds = future.result()
                except Exception as error:  # one bad file never stops the build
                    with lock:
                        report.failures[futures[future].id] = f"{type(error).__name__}: {error}"
                else:
                    report.computed += 1
                    report.audio_seconds += seconds
                bar.update(1)
        report.wall_seconds = time.perf_counter() - started
        return report


# --------------------------------------------------------------------------------------------
# Data


@dataclasses.dataclass
class TrackData:
    """The tracks of each split with their labels and cached features, ready for windows."""

    tags: list[str]
    tracks: dict[str, list[Any]]
    labels: dict[str, np.ndarray]
    lengths: dict[str, np.ndarray]
    store: Any  # FeatureCache or AudioCache
    input_kind: str
    fill: float
    wrap: bool
    # High-level track features (data.features), standardised: split -> (tracks, features).
    features: dict[str, np.ndarray] | None = None
    feature_names: tuple[str, ...] = ()
    feature_scaler: Any = None  # track_features.FeatureScaler fitted on the training split
    _memory: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)

    def preload(self, budget_bytes: int = _PRELOAD_BYTES) -> bool:
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


def _synthetic_root(recipe: Recipe, log: Callable[[str], None]) -> Path:
    from streamtag.train import synthetic

    data = recipe.data
    root = Path(data.root).expanduser() if data.root else (
        recipe.train.cache_root() / "synthetic" / data.synthetic_key())
    config = synthetic.SyntheticConfig.from_dict(data.options["synthetic"])
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


def _load_dataset(recipe: Recipe, splits: Sequence[str], tags: Sequence[str] | None,
                  log: Callable[[str], None]):
    from streamtag.train import datasets

    data = recipe.data
    o = data.options
    root = Path(data.root).expanduser()
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
    return datasets.load_synthetic(_synthetic_root(recipe, log), splits=splits)


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
    dataset = _load_dataset(recipe, splits, tags, log)
    cache_root = recipe.train.cache_root()
    if input_kind == "waveform":
        store = AudioCache(cache_root / "audio", options.sample_rate)
    else:
        from streamtag.train.cache import FeatureCache

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
    fill = 0.0 if input_kind == "waveform" else silence_value(options)
    data = TrackData(tags=columns, tracks=by_split, labels=labels, lengths=lengths, store=store,
                     input_kind=input_kind, fill=fill, wrap=recipe.augment.wrap_pad)
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


# --------------------------------------------------------------------------------------------
# Windows


def evaluation_starts(total: int, window: int, hop: int, mode: str = "average") -> np.ndarray:
    """Start positions of the windows that score a track of ``total`` frames: its centre window
    (``"centre"``), or evenly spaced windows from its start to its end at most ``hop`` apart
    (``"average"``); one window at 0 when the track is not longer than the window."""
    if total <= window:
        return np.zeros(1, dtype=np.int64)
    if mode == "centre":
        return np.array([(total - window) // 2], dtype=np.int64)
    count = math.ceil((total - window) / hop) + 1
    return np.round(np.linspace(0, total - window, count)).astype(np.int64)


def training_windows(lengths: np.ndarray, window: int, per_track: int, position: str,
                     rng: np.random.Generator) -> np.ndarray:
    """One epoch's ``(track index, start)`` pairs in a random order: ``per_track`` windows per
    track, at uniformly random starts (``"random"``) or the centre."""
    tracks = np.repeat(np.arange(len(lengths)), per_track)
    room = np.maximum(lengths[tracks] - window, 0)
    if position == "centre":
        starts = room // 2
    else:
        starts = rng.integers(0, room + 1)
    order = rng.permutation(len(tracks))
    return np.stack([tracks[order], starts[order]], axis=1)


class _WindowDataset(torch.utils.data.Dataset):
    def __init__(self, data: TrackData, split: str, items: np.ndarray, window: int) -> None:
        self.data, self.split, self.items, self.window = data, split, items, window

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[np.ndarray, ...]:
        track, start = (int(v) for v in self.items[i])
        x = self.data.window(self.data.tracks[self.split][track].id, self.window, start,
                             int(self.data.lengths[self.split][track]))
        if self.data.features is not None:  # the track's high-level features
            return x, self.data.labels[self.split][track], self.data.features[self.split][track]
        return x, self.data.labels[self.split][track]


def predict(model: Callable[[torch.Tensor], torch.Tensor], data: TrackData, split: str,
            window: int, hop: int, *, mode: str = "average", batch_size: int = 32,
            device: torch.device | str = "cpu", outputs: str = "logits",
            bf16: bool = False) -> np.ndarray:
    """Per-track probabilities ``(tracks, tags)`` of ``split``: the mean over the track's
    evaluation windows (``evaluation_starts``) of ``sigmoid(model(x))`` (``outputs="logits"``)
    or of ``model(x)`` (``"probabilities"``: a model file's module). With high-level track
    features (``data.features``) the model is called as ``model(x, features)``."""
    device = torch.device(device)
    tracks = data.tracks[split]
    lengths = data.lengths[split]
    sums: np.ndarray | None = None
    counts = np.zeros(len(tracks))
    pending: list[tuple[int, np.ndarray]] = []

    def flush() -> None:
        nonlocal sums
        x = torch.from_numpy(np.stack([a for _, a in pending])).to(device)
        owners = np.array([i for i, _ in pending])
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16,
                                                     enabled=bf16 and device.type == "cuda"):
            if data.features is None:
                out = model(x)
            else:
                out = model(x, torch.from_numpy(data.features[split][owners]).to(device))
        out = out.float()
        p = (torch.sigmoid(out) if outputs == "logits" else out).cpu().numpy().astype(np.float64)
        if sums is None:
            sums = np.zeros((len(tracks), p.shape[1]))
        np.add.at(sums, owners, p)
        np.add.at(counts, owners, 1)
        pending.clear()

    bar = _progress(total=len(tracks), unit="track", desc=f"scoring {split}")
    with bar:
        for i, track in enumerate(tracks):
            total = int(lengths[i])
            for start in evaluation_starts(total, window, hop, mode):
                pending.append((i, data.window(track.id, window, int(start), total)))
                if len(pending) >= batch_size:
                    flush()
            bar.update(1)
        if pending:
            flush()
    assert sums is not None  # every split has at least one track
    return sums / counts[:, None]


def bce(y: np.ndarray, p: np.ndarray) -> float:
    """Mean binary cross-entropy of probabilities ``p`` against 0/1 targets ``y``."""
    return float(np.mean(bce_per_tag(y, p)))


def bce_per_tag(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Binary cross-entropy of each tag (column), averaged over the tracks (rows)."""
    p = np.clip(p, _EPS, 1 - _EPS)
    return -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p), axis=0)


# --------------------------------------------------------------------------------------------
# Schedules and optimisers


def warmup_linear_lr(train: TrainConfig, epoch: int) -> float:
    """The ``warmup_linear`` learning rate of 0-based ``epoch``: warm-up epochs rise linearly
    (``lr·(e+1)/(warmup+1)``, so the first constant epoch is the first at ``lr``), constant
    epochs hold ``lr``, decay epochs fall linearly to ``final_lr`` (reached on the last of
    them), and every later epoch stays at ``final_lr``."""
    w, c, d = train.warmup_epochs, train.constant_epochs, train.decay_epochs
    if epoch < w:
        return train.lr * (epoch + 1) / (w + 1)
    if epoch < w + c:
        return train.lr
    if epoch < w + c + d:
        return train.lr + (train.final_lr - train.lr) * (epoch - w - c + 1) / d
    return train.final_lr if d else train.lr


def optimizer_stage(train: TrainConfig, epoch: int) -> str:
    """``"adam"`` or ``"sgd"``: which optimiser runs 0-based ``epoch``."""
    if train.optimizer == "sgd" or (train.optimizer == "adam_sgd" and epoch >= train.sgd_epoch):
        return "sgd"
    return "adam"


def lr_for_epoch(train: TrainConfig, epoch: int, plateau_scale: float = 1.0) -> float:
    """The learning rate of 0-based ``epoch``: the base rate (``lr``, or ``sgd_lr`` after an
    ``adam_sgd`` switch to SGD) times the schedule's factor (``plateau_scale`` for ``plateau``)."""
    switched = train.optimizer == "adam_sgd" and optimizer_stage(train, epoch) == "sgd"
    base = train.sgd_lr if switched else train.lr
    if train.schedule == "warmup_linear":
        return base * warmup_linear_lr(train, epoch) / train.lr
    if train.schedule == "plateau":
        return max(base * plateau_scale, min(train.min_lr, base))
    return base


def _make_optimizer(train: TrainConfig, stage: str, params: Any) -> torch.optim.Optimizer:
    if stage == "sgd":
        lr = train.sgd_lr if train.optimizer == "adam_sgd" else train.lr
        return torch.optim.SGD(params, lr=lr, momentum=train.momentum, nesterov=True,
                               weight_decay=train.weight_decay)
    return torch.optim.Adam(params, lr=train.lr, weight_decay=train.weight_decay,
                            amsgrad=train.optimizer == "amsgrad")


def _improved(metric: str, value: float | None, best: float | None) -> bool:
    if value is None or not math.isfinite(value):
        return False
    if best is None:
        return True
    return value < best if metric == "loss" else value > best


def best_epoch_per_tag(losses: Sequence[Sequence[float]]) -> list[int]:
    """For a ``(epochs, tags)`` table of validation losses, each tag's best epoch (1-based):
    the first epoch with that tag's lowest finite loss (later ties do not replace it), as
    per-tag early stopping picks it epoch by epoch."""
    table = [list(row) for row in losses]
    best_epoch: list[int] = []
    for j in range(len(table[0]) if table else 0):
        best, epoch = None, 1
        for e, row in enumerate(table, start=1):
            if _improved("loss", row[j], best):
                best, epoch = row[j], e
        best_epoch.append(epoch)
    return best_epoch


# --------------------------------------------------------------------------------------------
# Distributed training


@dataclasses.dataclass(frozen=True)
class Distributed:
    """This process's place in a ``torchrun`` job (one process, rank 0 of 1, without one)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.active:
            torch.distributed.barrier()


def distributed_from_env() -> Distributed:
    """Reads ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` (set by ``torchrun``)."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError as error:
        raise ConfigError(f"WORLD_SIZE, RANK and LOCAL_RANK must be whole numbers: {error}") \
            from None
    if world < 1 or not 0 <= rank < world:
        raise ConfigError(f"RANK {rank} is not within WORLD_SIZE {world}")
    return Distributed(rank=rank, world=world, local_rank=local_rank)


def _start_process_group(dist: Distributed, device: torch.device) -> None:
    if not dist.active or torch.distributed.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    torch.distributed.init_process_group(backend=backend, rank=dist.rank, world_size=dist.world)


class _Heads(nn.Module):
    """``forward`` giving both heads of a two-head network, so that DDP sees the forward
    pass the two-head loss needs."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> Any:
        return self.model.forward_heads(x)


# --------------------------------------------------------------------------------------------
# Device and determinism


def resolve_device(name: str) -> torch.device:
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ConfigError("train.device is 'cuda' but no CUDA device is available; use "
                              "'auto' or 'cpu'")
        return torch.device("cuda")
    return torch.device("cpu")


@contextlib.contextmanager
def _determinism(enabled: bool, device: torch.device) -> Iterator[None]:
    """Deterministic algorithms for the run, restoring the process's settings afterwards."""
    previous = (torch.are_deterministic_algorithms_enabled(),
                torch.is_deterministic_algorithms_warn_only_enabled(),
                torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    if enabled:
        # An op without a deterministic implementation (some CUDA backward passes) warns
        # instead of stopping the run; every op the CPU path uses is deterministic.
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cudnn.benchmark = device.type == "cuda"
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = previous[2:]


def _save_atomic(obj: Any, path: Path) -> None:
    """Written beside ``path`` and renamed into place: a crash never leaves half a checkpoint."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(obj, temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


# The legacy global numpy generator is saved too: the trainer draws from its own generators, but
# code it calls (a model, a library) may use the global one.
def _numpy_state() -> list[Any]:
    name, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002
    return [name, keys.tolist(), int(pos), int(has_gauss), float(cached)]


def _set_numpy_state(state: Sequence[Any]) -> None:
    name, keys, pos, has_gauss, cached = state
    np.random.set_state(  # noqa: NPY002
        (name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))


# --------------------------------------------------------------------------------------------
# The run


def _check_trainable(recipe: Recipe, resume: bool) -> None:
    """``streamtag train`` needs a tagger and labels; the VQ-VAE and unlabeled audio are for
    ``streamtag pretrain`` (``streamtag.train.pretrain``). A pre-trained encoder is checked
    before any featurising."""
    from streamtag.train.recipe import PRETRAIN_ARCHITECTURES, UNLABELED_DATA_KINDS

    if recipe.model.architecture in PRETRAIN_ARCHITECTURES:
        raise ConfigError(f"model.architecture {recipe.model.architecture!r} is the autoencoder "
                          "the vqvae_* taggers start from and has no tags to train: run "
                          "`streamtag pretrain RECIPE.toml`, then train vqvae_gru or vqvae_cnn "
                          "with --set model.encoder=RUN_DIR/vqvae.pt")
    if recipe.data.kind in UNLABELED_DATA_KINDS:
        raise ConfigError(f"data.kind {recipe.data.kind!r} has no labels to train a tagger on; "
                          "use it with `streamtag pretrain`, and a labelled dataset (mtg_jamendo, "
                          "mtat, folder_csv, synthetic) with `streamtag train`")
    if recipe.model.options.get("freeze_encoder") and not recipe.model.encoder:
        raise ConfigError("model.options.freeze_encoder = true needs model.encoder (the vqvae.pt "
                          "of `streamtag pretrain`): a frozen random encoder would never learn; "
                          "--set model.encoder=RUN_DIR/vqvae.pt")
    if recipe.model.encoder and not resume:
        from streamtag.train.pretrain import read_pretrained_encoder

        read_pretrained_encoder(recipe.model.encoder, recipe)


class TrainingRun:
    """One training run of a recipe in ``run_dir``; ``fit()`` trains, ``export.export_run``
    finishes. Built by ``train``; its attributes are what the export needs."""

    def __init__(self, recipe: Recipe, run_dir: str | os.PathLike, *, resume: bool = False,
                 echo: bool = True) -> None:
        _check_trainable(recipe, resume)
        self.recipe = recipe
        self.run_dir = Path(run_dir)
        self.dist = distributed_from_env()
        if recipe.train.batch_size % self.dist.world:
            raise ConfigError(f"train.batch_size ({recipe.train.batch_size}) is the global batch "
                              f"and must be a multiple of the {self.dist.world} processes")
        if self.dist.main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log = RunLog(self.run_dir / LOG_FILE if self.dist.main else None,
                          echo=echo and self.dist.main)
        self.device = resolve_device(recipe.train.device)
        if self.dist.active and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
            torch.cuda.set_device(self.device)
        _start_process_group(self.dist, self.device)
        if recipe.train.deterministic and self.device.type == "cuda":
            # cuBLAS is deterministic only with a fixed workspace, set before its first use.
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        self.bf16 = recipe.train.bf16 and self.device.type == "cuda"
        self.two_heads = recipe.model.architecture == "mobilenet_attn"
        self.options = recipe.frontend_options()
        self.epoch = 0  # epochs completed
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] = {"metric": recipe.train.early_stopping, "value": None,
                                     "epoch": None}
        self.bad_epochs = 0
        self.plateau = {"scale": 1.0, "best": None, "bad": 0}
        self.stopped_early = False
        self.train_seconds = 0.0
        self.swa_model: AveragedModel | None = None
        self.swa_epochs: list[int] = []  # epochs whose weights are in the SWA average
        # Per-tag early stopping: each tag's lowest validation loss and its epoch (1-based).
        self.tag_best: dict[str, list[Any]] = {"loss": [], "epoch": []}
        self._resume = resume
        self._check_run_dir()
        self.dist.barrier()  # no rank writes a checkpoint before every rank has checked

    # -- set-up ------------------------------------------------------------------------------

    def _check_run_dir(self) -> None:
        checkpoint = self.run_dir / CHECKPOINT
        if self._resume and not checkpoint.is_file():
            raise ConfigError(f"cannot resume: {checkpoint} does not exist")
        if not self._resume and checkpoint.is_file():
            raise ConfigError(f"{self.run_dir} already holds a run ({CHECKPOINT}); resume it "
                              "with --resume, or give another --out")

    def setup(self) -> None:
        r = self.recipe
        self.log(f"run {self.run_dir}: {r.name} ({r.model.architecture}) on {self.device}"
                 + (" with bf16" if self.bf16 else "")
                 + (f", {self.dist.world} processes (DDP)" if self.dist.active else ""))
        if not self.dist.main:
            self.dist.barrier()  # rank 0 generates the data and fills the caches first
        self.data = prepare_data(r, options=self.options, log=self.log)
        if self.dist.main:
            self.dist.barrier()
        torch.manual_seed(r.train.seed)
        self.model = self._build_model().to(self.device)
        if self.dist.active and self.device.type == "cuda":
            self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        self.forward_module: nn.Module = _Heads(self.model) if self.two_heads else self.model
        if self.dist.active:
            from torch.nn.parallel import DistributedDataParallel

            self.forward_module = DistributedDataParallel(
                self.forward_module,
                device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.sampler_rng = np.random.default_rng([r.train.seed, 1])
        # Each process mixes and masks its own examples with its own draws.
        augment_seed = ([r.train.seed, 2, self.dist.rank] if self.dist.active
                        else [r.train.seed, 2])
        self.augmenter = Augmenter(r.augment, self.options if r.model.input_kind == "logmel"
                                   else None, np.random.default_rng(augment_seed))
        self.loader_generator = torch.Generator().manual_seed(r.train.seed)
        self.stage = optimizer_stage(r.train, 0)
        self.optimizer = _make_optimizer(r.train, self.stage, self.model.parameters())
        if r.train.swa:
            self.swa_model = AveragedModel(self.model)
        if self._resume:
            self._load_checkpoint()
        # Written once the recipe is known to fit the run (a refused resume leaves it alone).
        if self.dist.main:
            (self.run_dir / RECIPE_FILE).write_text(r.to_toml(), encoding="utf-8")
        n_params = sum(p.numel() for p in self.model.parameters())
        self.log(f"model: {r.model.architecture} {dict(r.model.options)}, {n_params:,} "
                 f"parameters, window {r.model.window}, hop {r.model.hop}")

    def _build_model(self) -> nn.Module:
        from streamtag import nets

        r = self.recipe
        try:
            model = nets.build(r.model.architecture, len(self.data.tags), **r.model.options)
        except (TypeError, ValueError) as error:
            raise ConfigError(f"[model] {r.model.architecture}: {error}") from None
        shape = ((1, r.model.window) if r.model.input_kind == "waveform"
                 else (1, self.options.n_mels, r.model.window))
        probe: tuple[torch.Tensor, ...] = (torch.zeros(shape),)
        if self.data.features is not None:
            n_features = int(r.model.options.get("n_features", 0))
            if n_features != len(self.data.feature_names):
                raise ConfigError(f"model.options.n_features is {n_features} but data.features "
                                  f"has {len(self.data.feature_names)} features per track")
            probe += (torch.zeros(1, n_features),)
        try:
            with torch.no_grad():
                model.eval()(*probe)
        except Exception as error:  # the architecture rejects the window
            raise ConfigError(f"{r.model.architecture} cannot take a window of {shape[1:]}: "
                              f"{str(error).splitlines()[0]}") from None
        if r.model.encoder and not self._resume:  # a resumed run's checkpoint holds it
            from streamtag.train.pretrain import load_pretrained_encoder

            load_pretrained_encoder(model, r.model.encoder, r, log=self.log)
        self.head = init_from.start(model, r.model, self.options, len(self.data.tags),
                                    resume=self._resume, log=self.log)
        return model.train()

    # -- checkpoints -------------------------------------------------------------------------

    def _state(self) -> dict[str, Any]:
        return {
            "format": _CHECKPOINT_FORMAT,
            "epoch": self.epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "optimizer_stage": self.stage,
            "sampler_rng": self.sampler_rng.bit_generator.state,
            "augment_rng": self.augmenter.rng.bit_generator.state,
            "loader_rng": self.loader_generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else [],
            "numpy_rng": _numpy_state(),
            "history": self.history,
            "best": self.best,
            "bad_epochs": self.bad_epochs,
            "plateau": self.plateau,
            "stopped_early": self.stopped_early,
            "train_seconds": self.train_seconds,
            "swa_model": None if self.swa_model is None else self.swa_model.state_dict(),
            "swa_epochs": self.swa_epochs,
            "tag_best": self.tag_best,
            "tags": self.data.tags,
            "recipe": self.recipe.to_dict(),
        }

    def _load_checkpoint(self) -> None:
        path = self.run_dir / CHECKPOINT
        state = torch.load(path, map_location="cpu", weights_only=True)
        if state.get("format") != _CHECKPOINT_FORMAT:
            raise ConfigError(f"{path} has checkpoint format {state.get('format')}, this "
                              f"streamtag reads {_CHECKPOINT_FORMAT}")
        old = state["recipe"]
        new = self.recipe.to_dict()
        for section in ("data", "frontend", "model"):
            if old[section] != new[section]:
                raise ConfigError(f"cannot resume {self.run_dir}: [{section}] differs from the "
                                  f"run's ({old[section]} vs {new[section]}); only [train], "
                                  "[augment] and [eval] may change")
        if list(state["tags"]) != self.data.tags:
            raise ConfigError(f"cannot resume {self.run_dir}: the dataset's tags changed")
        self.model.load_state_dict(state["model"])
        self.epoch = int(state["epoch"])
        self.stage = state["optimizer_stage"]
        self.optimizer = _make_optimizer(self.recipe.train, self.stage, self.model.parameters())
        self.optimizer.load_state_dict(state["optimizer"])
        self.sampler_rng.bit_generator.state = state["sampler_rng"]
        self.augmenter.rng.bit_generator.state = state["augment_rng"]
        self.loader_generator.set_state(state["loader_rng"])
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"] and self.device.type == "cuda":
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        _set_numpy_state(state["numpy_rng"])
        self.history = list(state["history"])
        self.best = dict(state["best"])
        self.bad_epochs = int(state["bad_epochs"])
        self.plateau = dict(state["plateau"])
        self.stopped_early = bool(state["stopped_early"])
        self.train_seconds = float(state["train_seconds"])
        if self.swa_model is not None and state.get("swa_model") is not None:
            self.swa_model.load_state_dict(state["swa_model"])
            self.swa_epochs = list(state["swa_epochs"])
        elif self.swa_model is not None and self.epoch >= self.recipe.train.swa_start:
            raise ConfigError(f"cannot resume {self.run_dir} with train.swa: the run did not "
                              f"average weights, and epoch {self.recipe.train.swa_start} "
                              "(train.swa_start) is already past")
        tag_best = state.get("tag_best") or {"loss": [], "epoch": []}
        self.tag_best = {"loss": list(tag_best["loss"]), "epoch": list(tag_best["epoch"])}
        self.log(f"resumed after epoch {self.epoch}")

    def save_checkpoint(self) -> None:
        if self.dist.main:
            _save_atomic(self._state(), self.run_dir / CHECKPOINT)

    def load_best(self) -> int:
        """Puts the best epoch's weights into ``model``; returns that epoch (1-based)."""
        path = self.run_dir / BEST
        if not path.is_file():
            return self.epoch
        state = torch.load(path, map_location="cpu", weights_only=True)
        self.model.load_state_dict(state["model"])
        return int(state["epoch"])

    # -- training ----------------------------------------------------------------------------

    def _should_stop(self) -> bool:
        patience = self.recipe.train.patience
        return patience > 0 and self.bad_epochs >= patience

    def fit(self) -> None:
        t = self.recipe.train
        with _determinism(t.deterministic, self.device):
            if self.epoch >= t.epochs or self.stopped_early or self._should_stop():
                self.log(f"training already done ({self.epoch} epochs)")
                return
            while self.epoch < t.epochs:
                self._epoch()
                if self._should_stop():
                    self.stopped_early = True
                    self.save_checkpoint()
                    self.log(f"early stopping: no {t.early_stopping} improvement for "
                             f"{t.patience} epochs; best epoch {self.best['epoch']}")
                    break

    def _loss(self, x: torch.Tensor, y: torch.Tensor,
              features: torch.Tensor | None = None) -> torch.Tensor:
        output = self.forward_module(x) if features is None else self.forward_module(x, features)
        if self.two_heads:
            from streamtag.nets import two_head_loss

            return two_head_loss(output, y)
        return F.binary_cross_entropy_with_logits(output.float(), y)

    def _epoch(self) -> None:
        r = self.recipe
        t = r.train
        e = self.epoch  # 0-based index of the epoch about to run
        started = time.perf_counter()
        stage = optimizer_stage(t, e)
        if stage != self.stage:
            self.stage = stage
            self.optimizer = _make_optimizer(t, stage, self.model.parameters())
            self.log(f"switching to SGD with Nesterov momentum at epoch {e + 1}")
        lr = lr_for_epoch(t, e, self.plateau["scale"])
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        items = training_windows(self.data.lengths["train"], r.model.window,
                                 t.windows_per_track, t.window_position, self.sampler_rng)
        dataset = _WindowDataset(self.data, "train", items, r.model.window)
        sampler = None
        if self.dist.active:
            # Whole global batches only, each process taking every world-th window of each.
            dataset.items = dataset.items[:len(items) - len(items) % t.batch_size]
            sampler = torch.utils.data.distributed.DistributedSampler(
                dataset, num_replicas=self.dist.world, rank=self.dist.rank, shuffle=False)
        elif len(items) % t.batch_size == 1 and len(items) > 1:
            dataset.items = dataset.items[:-1]  # a batch of one breaks batch norm in training
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=t.batch_size // self.dist.world, sampler=sampler,
            shuffle=False, num_workers=t.workers, pin_memory=self.device.type == "cuda",
            generator=self.loader_generator)
        self.model.train()
        init_from.freeze_for_epoch(self.model, self.head, r.model, e)
        total, seen = 0.0, 0
        bar = _progress(total=len(loader), unit="batch", desc=f"epoch {e + 1}/{t.epochs}")
        with bar:
            for batch in loader:
                x = batch[0].to(self.device, non_blocking=True)
                y = batch[1].to(self.device, non_blocking=True)
                f = batch[2].to(self.device, non_blocking=True) if len(batch) > 2 else None
                if self.augmenter.active:
                    x, y, f = self.augmenter(x, y, f)
                with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                    loss = self._loss(x, y, f)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if t.grad_clip:
                    nn.utils.clip_grad_norm_(self.model.parameters(), t.grad_clip)
                self.optimizer.step()
                total += loss.item() * len(x)
                seen += len(x)
                bar.update(1)
                bar.set_postfix(loss=f"{total / seen:.4f}")
        if self.dist.active:
            sums = torch.tensor([total, float(seen)], dtype=torch.float64)
            torch.distributed.all_reduce(sums)
            total, seen = float(sums[0]), int(sums[1])
        train_loss = total / max(seen, 1)
        validation = self.validate()
        self.epoch = e + 1
        self.train_seconds += time.perf_counter() - started
        self._after_epoch(lr, train_loss, validation, time.perf_counter() - started)

    def validate(self) -> dict[str, Any]:
        """Validation loss and macro AUCs, and ``tag_loss``: each tag's loss (a list)."""
        from streamtag.train.metrics import evaluate

        p = self.predict("validation")
        y = self.data.labels["validation"]
        result = evaluate(y, p, np.full(y.shape[1], 0.5), self.data.tags)
        tag_loss = bce_per_tag(y, p)
        return {"loss": float(np.mean(tag_loss)), "roc_auc_macro": result["roc_auc_macro"],
                "pr_auc_macro": result["pr_auc_macro"], "tag_loss": tag_loss.tolist()}

    def predict(self, split: str, model: nn.Module | None = None) -> np.ndarray:
        """Per-track probabilities of ``split`` by ``model`` (default: the model in training)."""
        r = self.recipe
        network = self.model if model is None else model
        network.eval()
        try:
            return predict(network, self.data, split, r.model.window,
                           r.eval.eval_hop or r.model.hop, mode=r.eval.windows,
                           batch_size=r.eval.batch_size or 2 * r.train.batch_size,
                           device=self.device, outputs="logits", bf16=self.bf16)
        finally:
            if model is None:
                self.model.train()

    def _after_epoch(self, lr: float, train_loss: float, validation: dict[str, Any],
                     seconds: float) -> None:
        t = self.recipe.train
        tag_loss = validation.pop("tag_loss")
        if t.swa and self.epoch >= t.swa_start and (self.epoch - t.swa_start) % t.swa_every == 0:
            self._average_weights()
        if t.per_tag_best:
            self._keep_per_tag_best(tag_loss)
        metric = t.early_stopping
        value = validation[metric]
        better = _improved(metric, value, self.best["value"])
        if better:
            self.best = {"metric": metric, "value": value, "epoch": self.epoch}
            self.bad_epochs = 0
            if self.dist.main:
                _save_atomic({"epoch": self.epoch, "model": self.model.state_dict(),
                              "metric": metric, "value": value}, self.run_dir / BEST)
        else:
            self.bad_epochs += 1
        if t.schedule == "plateau":
            if _improved(metric, value, self.plateau["best"]):
                self.plateau["best"], self.plateau["bad"] = value, 0
            else:
                self.plateau["bad"] += 1
                if self.plateau["bad"] >= t.plateau_patience:
                    self.plateau["scale"] *= t.plateau_factor
                    self.plateau["bad"] = 0
        entry = {"epoch": self.epoch, "lr": lr, "optimizer": self.stage,
                 "train_loss": train_loss, **{f"val_{k}": v for k, v in validation.items()},
                 "seconds": seconds, "best": better, "val_tag_loss": tag_loss}
        self.history.append(entry)
        self.save_checkpoint()

        def number(v: float | None) -> str:
            return "-" if v is None else f"{v:.4f}"

        self.log(f"epoch {self.epoch}/{t.epochs}  loss {train_loss:.4f}  "
                 f"val_loss {number(validation['loss'])}  "
                 f"val_roc_auc_macro {number(validation['roc_auc_macro'])}  "
                 f"val_pr_auc_macro {number(validation['pr_auc_macro'])}  lr {lr:.2e}  "
                 f"{seconds:.1f} s" + ("  *" if better else ""))

    # -- what is exported --------------------------------------------------------------------

    def _average_weights(self) -> None:
        """Adds this epoch's weights to the SWA average; keeps the average for snapshots."""
        assert self.swa_model is not None
        self.swa_model.update_parameters(self.model)
        self.swa_epochs.append(self.epoch)
        self.log(f"SWA: averaged the weights of epochs {self.swa_epochs}")
        keep = self.recipe.train.snapshots - 1  # the best epoch's model is the other member
        if keep <= 0 or not self.dist.main:
            return
        folder = self.run_dir / SWA_DIR
        folder.mkdir(exist_ok=True)
        _save_atomic({"epoch": self.epoch, "epochs": list(self.swa_epochs),
                      "model": self.swa_model.module.state_dict()},
                     folder / f"average-{self.epoch}.pt")
        for old in self._snapshot_files()[:-keep]:
            old.unlink()

    def _snapshot_files(self) -> list[Path]:
        folder = self.run_dir / SWA_DIR
        files = folder.glob("average-*.pt") if folder.is_dir() else []
        return sorted(files, key=lambda f: int(f.stem.split("-")[1]))

    def _keep_per_tag_best(self, tag_loss: Sequence[float]) -> None:
        """Records the tags this epoch is best for and keeps its weights while any tag is."""
        if not self.tag_best["loss"]:
            self.tag_best = {"loss": [None] * len(tag_loss), "epoch": [None] * len(tag_loss)}
        improved = False
        for j, value in enumerate(tag_loss):
            if _improved("loss", value, self.tag_best["loss"][j]):
                self.tag_best["loss"][j] = float(value)
                self.tag_best["epoch"][j] = self.epoch
                improved = True
        if not self.dist.main:
            return
        folder = self.run_dir / PER_TAG_DIR
        folder.mkdir(exist_ok=True)
        if improved:
            _save_atomic({"epoch": self.epoch, "model": self.model.state_dict()},
                         folder / f"epoch-{self.epoch}.pt")
        needed = {f"epoch-{e}.pt" for e in self.tag_best["epoch"] if e is not None}
        for path in folder.glob("epoch-*.pt"):
            if path.name not in needed:
                path.unlink()

    def _network_with(self, state: dict[str, Any]) -> nn.Module:
        network = copy.deepcopy(self.model)
        network.load_state_dict(state)
        return network.eval()

    def _recompute_batch_norm(self, network: nn.Module) -> nn.Module:
        """Batch-norm statistics of ``network`` recomputed over one pass of training windows
        (positions drawn as in training, from their own generator; no augmentation)."""
        r = self.recipe
        rng = np.random.default_rng([r.train.seed, 3])
        items = training_windows(self.data.lengths["train"], r.model.window,
                                 r.train.windows_per_track, r.train.window_position, rng)
        loader = torch.utils.data.DataLoader(
            _WindowDataset(self.data, "train", items, r.model.window),
            batch_size=r.train.batch_size, shuffle=False, num_workers=r.train.workers)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            update_bn(loader, network, device=self.device)
        return network.eval()

    def final_model(self) -> tuple[nn.Module, dict[str, Any]]:
        """The network to export (giving logits) and how it was made: ``{"export": "best" |
        "swa" | "snapshots" | "per_tag_best", "best_epoch": ..., ...}``. Puts the best epoch's
        weights into ``model``."""
        t = self.recipe.train
        best_epoch = self.load_best()
        info: dict[str, Any] = {"export": "best", "best_epoch": best_epoch}
        if t.per_tag_best and self.tag_best["epoch"]:
            epochs = sorted(set(self.tag_best["epoch"]))
            members = [self._network_with(torch.load(
                self.run_dir / PER_TAG_DIR / f"epoch-{e}.pt", map_location=self.device,
                weights_only=True)["model"]) for e in epochs]
            member_of_tag = [epochs.index(e) for e in self.tag_best["epoch"]]
            self.log(f"per-tag early stopping: {len(epochs)} epoch(s) answer the tags: "
                     + ", ".join(f"{tag} {e}" for tag, e in zip(self.data.tags,
                                                                 self.tag_best["epoch"],
                                                                 strict=True)))
            info.update(export="per_tag_best", tag_epochs=dict(zip(
                self.data.tags, self.tag_best["epoch"], strict=True)))
            return combine.PerTagSelect(members, member_of_tag), info
        if t.swa and self.swa_epochs:
            assert self.swa_model is not None
            info.update(export="swa", swa_epochs=list(self.swa_epochs))
            if not t.snapshots:
                average = self._recompute_batch_norm(copy.deepcopy(self.swa_model.module))
                self.log(f"exporting the SWA average of epochs {self.swa_epochs} (batch-norm "
                         "statistics recomputed)")
                return average, info
            # The last snapshot is the current average: every member is read from its file.
            snapshots = []
            for path in self._snapshot_files():
                state = torch.load(path, map_location=self.device, weights_only=True)
                snapshots.append((int(state["epoch"]), self._recompute_batch_norm(
                    self._network_with(state["model"]))))
            members = [self._network_with(self.model.state_dict())] + [n for _, n in snapshots]
            info.update(export="snapshots", snapshot_epochs=[e for e, _ in snapshots])
            self.log(f"exporting the snapshot average of the best epoch ({best_epoch}) and the "
                     f"SWA averages after epochs {info['snapshot_epochs']}")
            return combine.MeanOfProbabilities(members), info
        if t.swa:
            self.log(f"SWA averaged nothing (training ended before epoch {t.swa_start}); "
                     "exporting the best epoch's weights")
        return self.model, info


@dataclasses.dataclass
class RunResult:
    """What ``train`` did: the run directory, the model file, the test metrics."""

    run_dir: Path
    model_path: Path
    metrics: dict[str, Any]
    epochs: int
    best_epoch: int
    train_seconds: float


def train(recipe: Recipe, run_dir: str | os.PathLike, *, resume: bool = False,
          echo: bool = True) -> RunResult | None:
    """Trains ``recipe`` in ``run_dir`` (or continues there, ``resume=True``), then exports:
    thresholds, test metrics, plots and ``model.pt`` (``streamtag.train.export``). Under
    ``torchrun`` every process trains and rank 0 exports; the others return None."""
    from streamtag.train.export import export_run

    run = TrainingRun(recipe, run_dir, resume=resume, echo=echo)
    try:
        run.setup()
        run.fit()
        return export_run(run) if run.dist.main else None
    finally:
        if run.dist.active and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
