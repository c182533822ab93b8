"""Training recipes: one TOML file says what to train on what, and how.

A recipe has the sections ``[data]``, ``[frontend]``, ``[model]`` (with ``[model.options]``),
``[train]``, ``[augment]`` and ``[eval]``, plus an optional top-level ``name`` and
``description``. Every section is a frozen dataclass below; its field comments are the reference
for each key. An unknown key is a ``ConfigError`` naming ``section.key`` and the keys allowed
there; a bad value is a ``ConfigError`` naming the key, the value and what is allowed.

``load_recipe(path, overrides)`` reads a file and applies ``section.key=value`` overrides (the
command line's ``--set``), whose values are read as TOML (``3``, ``1e-4``, ``true``,
``"text"``, ``[1, 2]``) or, when that fails, taken as a plain string (``--set
data.root=/data/mtg``). ``Recipe.to_toml()`` writes the resolved recipe (every key, defaults
filled in) that the trainer stores in the run directory, so a run can be repeated or resumed from
its own folder.

Relative paths in ``[data]`` are relative to ``data.root``; ``data.root`` and
``train.cache_dir`` are relative to the working directory.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from streamtag import values
from streamtag.errors import ConfigError
from streamtag.model import DEVICES
from streamtag.text import utf8_file_text
from streamtag.train.metrics import THRESHOLD_METHODS

__all__ = [
    "AugmentConfig",
    "DataConfig",
    "EvalConfig",
    "FrontendConfig",
    "ModelConfig",
    "Recipe",
    "TrainConfig",
    "apply_overrides",
    "default_cache_dir",
    "load_recipe",
    "parse_recipe",
]

DATA_KINDS = ("mtg_jamendo", "mtat", "folder_csv", "synthetic", "audio_folder", "distill")
OPTIMIZERS = ("adam", "amsgrad", "adam_sgd", "sgd")
SCHEDULES = ("none", "plateau", "warmup_linear")
STOPPING_METRICS = ("pr_auc_macro", "roc_auc_macro", "loss")
LOSSES = ("bce", "logit_mse", "threshold_bce")
WINDOW_POSITIONS = ("random", "centre")
EVAL_WINDOWS = ("average", "centre")
# Data kinds without labels: for pre-training only.
UNLABELED_DATA_KINDS = ("audio_folder",)


# A recipe's messages: "train.epochs must be a whole number >= 1", "one of 'adam', 'sgd'".
_WORDS = values.Words(integer="a whole number", quoted=True)


def default_cache_dir() -> Path:
    """Where features (and generated synthetic data) go when ``train.cache_dir`` is empty:
    ``$XDG_CACHE_HOME/streamtag`` or ``~/.cache/streamtag``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "streamtag"


# --------------------------------------------------------------------------------------------
# [data]

# Kind-specific keys of [data]: name -> (check, default). Paths are relative to data.root.
_PATH = "path"
_STRINGS = "strings"
_DATA_KEYS: dict[str, dict[str, tuple[str, Any]]] = {
    "mtg_jamendo": {
        "subset": ("str", "moodtheme"),  # all, moodtheme, top50tags, genre, instrument
        "split_index": ("int", 0),  # splits/split-N
        "audio_root": (_PATH, ""),  # mp3 folders; "" = none
        "mel_root": (_PATH, ""),  # precomputed (96, T) .npy mels; "" = none
        "tags": (_STRINGS, []),  # fixes the vocabulary; [] = every tag in the split files
    },
    "mtat": {
        "annotations": (_PATH, "annotations_final.csv"),
        "audio_root": (_PATH, ""),  # "" = data.root
        "split_lists": ("table", {}),  # {train = "train.txt", ...}; {} = the folder split
        "top_n": ("int", 50),
        "tags": (_STRINGS, []),
        "keep_empty": ("bool", False),
    },
    "folder_csv": {
        "csv": (_PATH, "tags.csv"),
        "tags": (_STRINGS, []),
    },
    "synthetic": {
        "n_clips": ("int", 1000),
        "seed": ("int", 0),
        "format": ("str", "flac"),
        "split_fractions": ("numbers", [0.7, 0.15, 0.15]),
        "synthetic": ("table", {}),  # streamtag.audio.synthetic.SyntheticConfig fields
    },
    "audio_folder": {
        "extensions": (_STRINGS, [".flac", ".wav", ".mp3", ".ogg", ".opus", ".m4a", ".aiff"]),
        "validation_fraction": ("fraction", 0.1),  # held out by a hash of each file's path
    },
    "distill": {
        "csv": (_PATH, "corpus.csv"),  # path, split (train, validation, test) of every clip
        "teacher": ("str", "music"),  # an installed model's name or a model file
    },
}


# Keys of [data] every kind takes.
_COMMON_DATA_KEYS: dict[str, tuple[str, Any]] = {
    # One high-level feature vector per track, CSV or JSON keyed by track id
    # (streamtag.train.track_features); "" = none.
    "features": (_PATH, ""),
}


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """``[data]``: which dataset, where. ``kind`` and ``root`` plus the kind's own keys:

    - ``mtg_jamendo``: ``root`` holds ``splits/`` (or ``data/splits/``) of the MTG-Jamendo
      repository; ``subset``, ``split_index``, ``audio_root`` (mp3), ``mel_root`` (npy), ``tags``.
    - ``mtat``: ``root`` holds ``annotations_final.csv`` and the mp3 folders; ``annotations``,
      ``audio_root``, ``split_lists`` (a table ``train``/``validation``/``test`` → list file),
      ``top_n``, ``tags``, ``keep_empty``.
    - ``folder_csv``: ``root`` holds ``csv`` (``path,tags,split``); ``tags``.
    - ``synthetic``: ``root`` is where the benchmark is written on first use (empty: a folder
      under the cache directory named by the generator settings); ``n_clips``, ``seed``,
      ``format``, ``split_fractions``, ``synthetic`` (a table of ``SyntheticConfig`` fields,
      e.g. ``clip_seconds``).
    - ``audio_folder`` (``streamtag pretrain`` only: no labels): every file under ``root``, found
      recursively, whose suffix is one of ``extensions`` (any case); ``validation_fraction`` of
      them, chosen by a hash of their paths (the same files every time), are the validation
      split; there is no test split.
    - ``distill``: a student learns ``teacher``'s scores (an installed model's name or a model
      file) on the clips listed in ``csv`` (``path`` and ``split`` columns; the corpus of
      ``benchmarks/corpus.py``); ``root`` empty is the cache folder's ``corpus/``. The targets
      are the teacher's probabilities in training and its thresholded tags in validation and
      test (``streamtag.train.distill``).

    Every kind also takes ``features``: a CSV or JSON file of one high-level feature vector
    per track id (``streamtag.train.track_features``), fed to a ``crnn`` built with
    ``n_features`` equal to the file's number of features.
    """

    kind: str = values.field("synthetic", choices=DATA_KINDS)
    root: str = ""
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        values.check_fields(self, "data", ConfigError, _WORDS)
        keys = {**_DATA_KEYS[self.kind], **_COMMON_DATA_KEYS}
        options = values.table(self.options, "data options", ConfigError)
        values.check_keys(options, ["kind", "root", *keys], "data", ConfigError)
        resolved = {}
        for key, (check, default) in keys.items():
            value = options.get(key, copy.deepcopy(default))
            resolved[key] = _check_data_value(f"data.{key}", check, value)
        if self.kind == "mtg_jamendo" and not (resolved["audio_root"] or resolved["mel_root"]):
            raise ConfigError("data.audio_root or data.mel_root must be set for mtg_jamendo "
                              "(the mp3 folders, the precomputed npy mels, or both)")
        if self.kind == "synthetic":
            if resolved["format"] not in ("flac", "wav"):
                raise values.must_be(resolved["format"], "data.format", ConfigError,
                                     "'flac' or 'wav'")
            fractions = resolved["split_fractions"]
            if len(fractions) != 3 or min(fractions) < 0 or not math.isclose(sum(fractions), 1):
                raise values.must_be(fractions, "data.split_fractions", ConfigError,
                                     "three fractions (train, validation, test) summing to 1")
            if resolved["n_clips"] < 3:
                raise values.must_be(resolved["n_clips"], "data.n_clips", ConfigError,
                                     "a whole number >= 3")
            from streamtag.audio.synthetic import SyntheticConfig

            SyntheticConfig.from_dict(resolved["synthetic"])  # ConfigError naming the option
        if self.kind == "audio_folder":
            if not resolved["extensions"]:
                raise values.must_be([], "data.extensions", ConfigError,
                                     "a non-empty list of file suffixes")
            if not 0 < resolved["validation_fraction"] < 1:
                raise values.must_be(resolved["validation_fraction"],
                                     "data.validation_fraction", ConfigError,
                                     "a number between 0 and 1 (exclusive)")
        values.set_field(self, "options", resolved)

    def table(self) -> dict[str, Any]:
        return {"kind": self.kind, "root": self.root, **copy.deepcopy(dict(self.options))}

    @classmethod
    def from_table(cls, table: Any) -> DataConfig:
        table = values.table(table, "[data]", ConfigError)
        kind = table.pop("kind", "synthetic")
        root = table.pop("root", "")
        return cls(kind=kind, root=root, options=table)

    def path(self, key: str) -> Path | None:
        """A kind-specific path key resolved against ``root``; None when empty."""
        value = self.options.get(key, "")
        if not value:
            return None
        path = Path(value).expanduser()
        return path if path.is_absolute() else Path(self.root).expanduser() / path

    def synthetic_key(self) -> str:
        """Names the generated benchmark by everything that decides its content."""
        text = json.dumps({k: self.options[k] for k in ("n_clips", "seed", "format",
                                                        "split_fractions", "synthetic")},
                          sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def _check_data_value(where: str, check: str, value: Any) -> Any:
    if check in ("str", _PATH):
        return values.text(value, where, ConfigError)
    if check == "int":
        return values.integer(value, where, ConfigError, minimum=0, expected="a whole number >= 0",
                              words=_WORDS)
    if check == "bool":
        return values.boolean(value, where, ConfigError)
    if check == "fraction":
        return values.number(value, where, ConfigError)
    if check == "table":
        return values.table(value, where, ConfigError)
    # lists stay lists: as the written recipe and the synthetic data's key give them back
    if check == _STRINGS:
        return list(values.texts(value, where, ConfigError, empty=False))
    if check == "numbers":
        return list(values.numbers(value, where, ConfigError))
    raise ValueError(f"{where}: no check named {check!r}")


# --------------------------------------------------------------------------------------------
# [frontend]


@dataclasses.dataclass(frozen=True)
class FrontendConfig:
    """``[frontend]``: ``preset`` (``LogMelOptions.preset_names()``) and any ``LogMelOptions``
    field as an override (``n_mels = 128``); ``"none"`` sets an option that may be None
    (``frontend.NULLABLE_OPTIONS``: ``win_length``, ``fmax``, ``norm``) to None. These options
    go into the model file, and the daemon computes exactly these features."""

    preset: str = "musicnn"
    overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        from streamtag.frontend import LogMelOptions

        values.choice(self.preset, "frontend.preset", ConfigError, LogMelOptions.preset_names(),
                      words=_WORDS)
        overrides = values.table(self.overrides, "frontend overrides", ConfigError)
        fields = [f.name for f in dataclasses.fields(LogMelOptions)]
        values.check_keys(overrides, ["preset", *fields], "frontend", ConfigError)
        values.set_field(self, "overrides", overrides)
        self.options()  # every value checked now

    def options(self):  # -> LogMelOptions (imported lazily: the recipe module stays light)
        from streamtag.frontend import NULLABLE_OPTIONS, LogMelOptions

        base = LogMelOptions.preset(self.preset)
        # TOML has no null: "none" stands for None where an option takes it.
        changes = {k: None if k in NULLABLE_OPTIONS and v == "none" else v
                   for k, v in self.overrides.items()}
        try:
            return base.replace(**changes)
        except (TypeError, ValueError) as error:
            message = str(error)
            if message.split(" ")[0] in self.overrides or message.split(" ")[0] in (
                    f.name for f in dataclasses.fields(base)):
                raise ConfigError(f"frontend.{message}") from None
            raise ConfigError(f"[frontend] {message}") from None

    def table(self) -> dict[str, Any]:
        return {"preset": self.preset, **copy.deepcopy(dict(self.overrides))}

    @classmethod
    def from_table(cls, table: Any) -> FrontendConfig:
        table = values.table(table, "[frontend]", ConfigError)
        preset = table.pop("preset", "musicnn")
        return cls(preset=preset, overrides=table)


# --------------------------------------------------------------------------------------------
# [model]


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """``[model]``: ``architecture`` (a ``streamtag.nets`` name), ``options`` (the
    ``[model.options]`` table, as the architecture documents them), ``window`` (the model's
    input: frames for log-mel models, samples for waveform models) and ``hop`` (the daemon's
    default step between windows, same unit).

    ``vqvae`` (the VQ-VAE autoencoder) is trained by ``streamtag pretrain``, not ``streamtag
    train``. ``encoder`` (``vqvae_gru`` and ``vqvae_cnn`` only; "" = none): the ``vqvae.pt``
    that ``streamtag pretrain`` wrote (relative to the working directory); its encoder, codebook
    and input scaling start the tagger, trained further or frozen (``options.freeze_encoder``).
    ``init`` ("" = none): fine-tune from a model file or an installed model's name (its body's
    weights, a new head; ``streamtag.train.init_from``), the body frozen for the first
    ``freeze_body_epochs`` epochs.
    """

    architecture: str = "mel_cnn"
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    window: int = values.field(96, minimum=1)
    hop: int = values.field(32, minimum=1)
    encoder: str = ""
    init: str = ""
    freeze_body_epochs: int = values.field(0, minimum=0)

    def __post_init__(self) -> None:
        from streamtag import nets

        values.check_fields(self, "model", ConfigError, _WORDS)
        values.choice(self.architecture, "model.architecture", ConfigError, nets.names(),
                      words=_WORDS)
        options = values.table(self.options, "[model.options]", ConfigError)
        known = list(nets.spec(self.architecture)["options"])
        unknown = [k for k in options if k not in known]
        if unknown:
            raise ConfigError(f"unknown key model.options.{unknown[0]} for "
                              f"{self.architecture}; its options: {', '.join(known) or '(none)'}")
        values.set_field(self, "options", options)
        if self.freeze_body_epochs and not self.init:
            raise ConfigError("model.freeze_body_epochs needs model.init (the model file or "
                              "installed model whose body is frozen); a frozen random body "
                              "would never learn")
        if self.encoder and nets.spec(self.architecture)["encoder_from"] is None:
            takers = [n for n in nets.names() if nets.spec(n)["encoder_from"]]
            raise ConfigError(f"model.encoder (a pre-trained VQ-VAE) is for "
                              f"{' and '.join(takers)}; {self.architecture} has "
                              "no VQ-VAE encoder: leave model.encoder out")

    @property
    def input_kind(self) -> str:
        from streamtag import nets

        return nets.spec(self.architecture)["input_kind"]


# --------------------------------------------------------------------------------------------
# [train]


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """``[train]``: the loop.

    Windows: each epoch draws ``windows_per_track`` windows per training track, at random
    positions (``window_position = "random"``) or the centre one (``"centre"``).

    Optimiser: ``adam``, ``amsgrad`` (Adam with the AMSGrad fix), ``sgd`` (Nesterov momentum
    ``momentum``, at ``lr``) or ``adam_sgd`` (Adam at ``lr``, then SGD with Nesterov momentum
    from epoch ``sgd_epoch`` (0-based) at ``sgd_lr``); ``weight_decay`` is L2 added to the
    gradient.

    Schedule (per epoch): ``none``; ``plateau`` (multiply by ``plateau_factor`` after
    ``plateau_patience`` epochs without improvement of the ``early_stopping`` metric, down to
    ``min_lr``); ``warmup_linear``: ``warmup_epochs`` rising linearly to ``lr``, then
    ``constant_epochs`` at ``lr``, then ``decay_epochs`` falling linearly to ``final_lr``, then
    ``final_lr``. After an Adam-to-SGD switch the schedule's factor applies to ``sgd_lr``.

    Loss: ``bce``, binary cross-entropy of the logits against the targets (0/1 tags, or a
    teacher's probabilities); ``logit_mse`` (distillation only), the squared difference between
    the student's logits and the teacher's (its probabilities clipped to [1e-4, 1 - 1e-4]), which
    weighs a rare tag's 0.01 against 0.05 as much as 0.5 against 0.8, where cross-entropy on
    probabilities near 0 hardly tells them apart; ``threshold_bce`` (distillation only),
    binary cross-entropy with the student's and the teacher's logits each less the logit of the
    teacher's threshold for the tag and divided by ``temperature``: still least where the
    student's logits are the teacher's, but its pull is strongest where the teacher decides (a
    score near the teacher's threshold), which is what agreement with the teacher's tags and
    headlines measures, and below 1 ``temperature`` sharpens it towards the decision.

    Early stopping: ``early_stopping`` names the validation metric that picks the best epoch
    (``pr_auc_macro``, ``roc_auc_macro`` or ``loss``); training stops after ``patience`` epochs
    without improvement (0: never stops early).

    ``seed`` seeds the weights, the window sampler and the augmentations; ``deterministic`` makes
    the run repeatable bit for bit (``torch.use_deterministic_algorithms``). ``device``:
    ``auto`` (CUDA when present), ``cpu`` or ``cuda``; ``bf16`` autocasts to bfloat16 on the GPU
    (ignored on the CPU). ``workers``: data-loading processes (0: in the training process) and
    feature-cache threads (0: every core). ``cache_dir``: features and generated data (empty:
    ``default_cache_dir()``). ``grad_clip``: max gradient norm (0: off).

    What is exported (CP-JKU's and AMLAG's techniques; by default the best epoch's weights):

    - ``swa``: stochastic weight averaging (``torch.optim.swa_utils``). The weights after epoch
      ``swa_start`` (1-based) and every ``swa_every`` epochs after it are averaged; before
      export the average's batch-norm statistics are recomputed over the training windows, and
      the average is the exported model.
    - ``snapshots`` (needs ``swa``; 0: off): snapshot averaging, the mean of the probabilities
      of the best validation epoch's model and the last ``snapshots − 1`` SWA averages (each
      with its own batch-norm statistics), exported as one model file.
    - ``per_tag_best``: per-tag early stopping. For every tag the epoch with the lowest
      validation loss on that tag is kept; the exported model answers each tag with that
      epoch's weights.
    """

    epochs: int = values.field(30, minimum=1)
    batch_size: int = values.field(16, minimum=1)
    windows_per_track: int = values.field(1, minimum=1)
    window_position: str = values.field("random", choices=WINDOW_POSITIONS)
    optimizer: str = values.field("adam", choices=OPTIMIZERS)
    lr: float = values.field(1e-3, positive=True)
    weight_decay: float = values.field(0.0, minimum=0)
    momentum: float = values.field(0.9, minimum=0, maximum=1)
    sgd_epoch: int = values.field(0, minimum=0)
    sgd_lr: float = values.field(1e-3, positive=True)
    schedule: str = values.field("none", choices=SCHEDULES)
    warmup_epochs: int = values.field(0, minimum=0)
    constant_epochs: int = values.field(0, minimum=0)
    decay_epochs: int = values.field(0, minimum=0)
    final_lr: float = values.field(1e-5, minimum=0)
    plateau_factor: float = values.field(0.5, minimum=0, maximum=1)
    plateau_patience: int = values.field(3, minimum=1)
    min_lr: float = values.field(1e-6, minimum=0)
    loss: str = values.field("bce", choices=LOSSES)
    temperature: float = values.field(1.0, positive=True)
    early_stopping: str = values.field("roc_auc_macro", choices=STOPPING_METRICS)
    patience: int = values.field(10, minimum=0)
    grad_clip: float = values.field(0.0, minimum=0)
    seed: int = values.field(0, minimum=0)
    deterministic: bool = False
    device: str = values.field("auto", choices=DEVICES)
    bf16: bool = False
    workers: int = values.field(0, minimum=0)
    cache_dir: str = ""
    swa: bool = False
    swa_start: int = values.field(1, minimum=1)
    swa_every: int = values.field(3, minimum=1)
    snapshots: int = values.field(0, minimum=0)
    per_tag_best: bool = False

    def __post_init__(self) -> None:
        values.check_fields(self, "train", ConfigError, _WORDS)
        if self.optimizer == "sgd" and self.momentum == 0.0:
            raise ConfigError("train.momentum must be > 0 for Nesterov SGD")
        if self.snapshots and not self.swa:
            raise ConfigError("train.snapshots averages SWA models: set train.swa = true too, "
                              "or train.snapshots = 0")
        if self.snapshots == 1:
            raise ConfigError("train.snapshots must be 0 (off) or >= 2: the best epoch's model "
                              "and at least one SWA average")
        if self.per_tag_best and self.swa:
            raise ConfigError("train.per_tag_best and train.swa each choose the exported "
                              "weights; set one of them to false")
        if self.swa and self.swa_start > self.epochs:
            raise ConfigError(f"train.swa_start ({self.swa_start}) is after the last epoch "
                              f"(train.epochs = {self.epochs}); no weights would be averaged")

    def cache_root(self) -> Path:
        return Path(self.cache_dir).expanduser() if self.cache_dir else default_cache_dir()


# --------------------------------------------------------------------------------------------
# [augment]


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """``[augment]``: each augmentation is off at its zero value.

    - ``mixup_alpha``: mixup with λ ~ Beta(α, α) per example (0: off); ``mixup_max`` uses
      max(λ, 1 − λ), so each mixed example stays closer to its own.
    - SpecAugment: ``freq_masks`` masks of up to ``freq_width`` mel bands and ``time_masks`` masks
      of up to ``time_width`` frames, set to the window's mean (log-mel models only).
    - ``gain_db``: a random gain in [−gain_db, +gain_db] dB per example, applied as the frontend's
      log compression transforms it (exactly, not as an additive shift of the features).
    - ``wrap_pad``: a track shorter than the window is repeated to fill it (else padded with
      silence, the frontend's value for no signal).
    """

    mixup_alpha: float = values.field(0.0, minimum=0)
    mixup_max: bool = False
    freq_masks: int = values.field(0, minimum=0)
    freq_width: int = values.field(0, minimum=0)
    time_masks: int = values.field(0, minimum=0)
    time_width: int = values.field(0, minimum=0)
    gain_db: float = values.field(0.0, minimum=0, maximum=60)
    wrap_pad: bool = True

    def __post_init__(self) -> None:
        values.check_fields(self, "augment", ConfigError, _WORDS)
        if self.freq_masks and not self.freq_width:
            raise ConfigError("augment.freq_width must be > 0 when augment.freq_masks is")
        if self.time_masks and not self.time_width:
            raise ConfigError("augment.time_width must be > 0 when augment.time_masks is")

    @property
    def specaugment(self) -> bool:
        return bool(self.freq_masks or self.time_masks)


# --------------------------------------------------------------------------------------------
# [eval]


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """``[eval]``: how a track is scored and thresholds are chosen (validation every epoch, the
    final test, ``streamtag eval``).

    ``windows = "average"``: the mean of the model's probabilities over evenly spaced windows
    covering the whole track, ``eval_hop`` apart at most (0: the model's hop); ``"centre"``: the
    centre window only. ``threshold_method``: ``f1``, ``roc_elbow``, ``tpr_tnr`` or
    ``prevalence`` (see ``streamtag.train.metrics``). ``batch_size``: windows per forward pass
    (0: twice the training batch).
    """

    windows: str = values.field("average", choices=EVAL_WINDOWS)
    eval_hop: int = values.field(0, minimum=0)
    threshold_method: str = values.field("f1", choices=THRESHOLD_METHODS)
    batch_size: int = values.field(0, minimum=0)

    def __post_init__(self) -> None:
        values.check_fields(self, "eval", ConfigError, _WORDS)


# --------------------------------------------------------------------------------------------
# The recipe


_SECTIONS = ("data", "frontend", "model", "train", "augment", "eval")
_TOP_LEVEL = ("name", "description")


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A whole recipe. ``model.options`` comes back resolved: an architecture's ``n_mels`` and
    ``n_frames`` options, when it has them and the recipe leaves them out, are the frontend's
    ``n_mels`` and the window."""

    name: str = "model"
    description: str = ""
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    frontend: FrontendConfig = dataclasses.field(default_factory=FrontendConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    augment: AugmentConfig = dataclasses.field(default_factory=AugmentConfig)
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        from streamtag import nets

        values.check_fields(self, "recipe", ConfigError, _WORDS)
        if not self.name.strip():
            raise ConfigError("name must not be empty")
        options = dict(self.model.options)
        known = nets.spec(self.model.architecture)["options"]
        frontend = self.frontend.options()
        kind = self.model.input_kind
        for key, value in (("n_mels", frontend.n_mels), ("n_frames", self.model.window)):
            if key not in known:
                continue
            if key not in options:
                options[key] = value
            elif options[key] != value:
                source = "frontend.n_mels" if key == "n_mels" else "model.window"
                raise ConfigError(f"model.options.{key} = {options[key]} disagrees with "
                                  f"{source} = {value}; leave it out to take {source}")
        values.set_field(self, "model", dataclasses.replace(self.model, options=options))
        if self.train.loss in ("logit_mse", "threshold_bce"):
            loss = self.train.loss
            if self.data.kind != "distill":
                raise ConfigError(f"train.loss = \"{loss}\" fits a teacher's scores: it needs "
                                  "data.kind = \"distill\"; use train.loss = \"bce\" for tags")
            own_loss = nets.spec(self.model.architecture)["loss"]
            if own_loss != "bce":
                raise ConfigError(f"train.loss = \"{loss}\" needs one head of logits; "
                                  f"{self.model.architecture} trains with its own loss "
                                  f"({own_loss}): leave train.loss out")
        if self.train.temperature != 1.0 and self.train.loss != "threshold_bce":
            raise ConfigError(f"train.temperature = {self.train.temperature} only shapes "
                              f"train.loss = \"threshold_bce\" (this recipe's is "
                              f"\"{self.train.loss}\"); leave train.temperature out")
        minimum = nets.spec(self.model.architecture)["min_input"]
        segment_option = nets.spec(self.model.architecture)["segment_option"]
        if kind == "logmel":
            # An axis the architecture takes as an option (n_mels, n_frames) is checked by the
            # model itself when it is built; min_input holds for its default options only.
            least_mels = 1 if "n_mels" in known else minimum[0]
            least_frames = 1 if "n_frames" in known else minimum[1]
            if segment_option:  # whole segments: checked below
                least_frames = options.get(segment_option, known[segment_option])
            if frontend.n_mels < least_mels or self.model.window < least_frames:
                raise ConfigError(
                    f"{self.model.architecture} needs at least {least_mels} mels and "
                    f"{least_frames} frames; the recipe gives frontend.n_mels = {frontend.n_mels} "
                    f"and model.window = {self.model.window}")
        else:
            if self.model.window < minimum[0]:
                raise ConfigError(f"{self.model.architecture} needs model.window >= "
                                  f"{minimum[0]} samples, got {self.model.window}")
            if self.augment.specaugment:
                raise ConfigError(f"augment.freq_masks and augment.time_masks must be 0: "
                                  f"{self.model.architecture} takes a waveform, not a "
                                  "spectrogram")
        n_features = options.get("n_features", 0) if "n_features" in known else 0
        if self.data.options.get("features") and not n_features:
            raise ConfigError(f"data.features is set but {self.model.architecture} takes no "
                              "track features: use architecture crnn with "
                              "model.options.n_features = the file's number of features")
        if n_features and not self.data.options.get("features"):
            raise ConfigError(f"model.options.n_features = {n_features} needs data.features: a "
                              "CSV or JSON file of one feature vector per track id")
        if n_features and (self.train.swa or self.train.per_tag_best):
            raise ConfigError("train.swa, train.snapshots and train.per_tag_best export "
                              "log-mel-only models; turn them off with data.features")
        if segment_option:
            segment = options.get(segment_option, known[segment_option])
            most = options.get("n_segments", known["n_segments"])
            if self.model.window % segment or not 1 <= self.model.window // segment <= most:
                raise ConfigError(f"model.window ({self.model.window}) must be a whole number "
                                  f"of segments of {segment} frames, at most {most} of them")

    # -- reading -----------------------------------------------------------------------------

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], name: str = "model") -> Recipe:
        """From a parsed TOML document; ``name`` is used when the document has none."""
        data = values.table(data, "the recipe", ConfigError)
        for key, value in data.items():
            if key not in _SECTIONS and key not in _TOP_LEVEL:
                raise ConfigError(f"unknown key {key!r} at the top of the recipe; allowed: "
                                  f"sections {', '.join('[' + s + ']' for s in _SECTIONS)} and "
                                  f"the keys {', '.join(_TOP_LEVEL)}")
            if key in _SECTIONS and not isinstance(value, Mapping):
                raise values.must_be(value, f"[{key}]", ConfigError, "a table")
        model = values.table(data.get("model", {}), "[model]", ConfigError)
        values.check_keys(model, [f.name for f in dataclasses.fields(ModelConfig)], "model",
                          ConfigError)
        return cls(
            name=data.get("name", name),
            description=data.get("description", ""),
            data=DataConfig.from_table(data.get("data", {})),
            frontend=FrontendConfig.from_table(data.get("frontend", {})),
            model=ModelConfig(**model),
            train=values.from_table(TrainConfig, data.get("train", {}), "train", ConfigError,
                                    _WORDS),
            augment=values.from_table(AugmentConfig, data.get("augment", {}), "augment",
                                      ConfigError, _WORDS),
            eval=values.from_table(EvalConfig, data.get("eval", {}), "eval", ConfigError, _WORDS),
        )

    # -- writing -----------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Every key of every section (defaults included): what ``from_dict`` reads back."""
        return {
            "name": self.name,
            "description": self.description,
            "data": self.data.table(),
            "frontend": self.frontend.table(),
            "model": {"architecture": self.model.architecture, "window": self.model.window,
                      "hop": self.model.hop, "encoder": self.model.encoder,
                      "init": self.model.init,
                      "freeze_body_epochs": self.model.freeze_body_epochs,
                      "options": copy.deepcopy(dict(self.model.options))},
            "train": dataclasses.asdict(self.train),
            "augment": dataclasses.asdict(self.augment),
            "eval": dataclasses.asdict(self.eval),
        }

    def to_toml(self) -> str:
        """The resolved recipe as TOML text."""
        return _dump_toml(self.to_dict())

    def frontend_options(self):  # -> LogMelOptions
        return self.frontend.options()

    def replace(self, **changes: Any) -> Recipe:
        return dataclasses.replace(self, **changes)


def parse_recipe(text: str, overrides: Sequence[str] = (), name: str = "model",
                 source: str = "recipe") -> Recipe:
    """A recipe from TOML text with ``section.key=value`` overrides."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{source} is not valid TOML: {error}") from None
    return Recipe.from_dict(apply_overrides(data, overrides), name=name)


def load_recipe(path: str | os.PathLike, overrides: Sequence[str] = ()) -> Recipe:
    """A recipe file with ``section.key=value`` overrides; its name defaults to the file's stem
    (``models/recipes/crnn.toml`` is ``crnn``)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"recipe {path} not found") from None
    except OSError as error:
        raise ConfigError(f"recipe {path} cannot be read: {error}") from None
    return parse_recipe(utf8_file_text(data, f"recipe {path}"), overrides, name=path.stem,
                        source=str(path))


_OVERRIDE = re.compile(r"\s*([A-Za-z0-9_\-]+(?:\.[A-Za-z0-9_\-]+)*)\s*=(.*)", re.DOTALL)


def apply_overrides(data: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """A copy of ``data`` with each ``section.key=value`` (or ``model.options.key=value``, or a
    top-level ``name=value``) set. Values are TOML (numbers, booleans, strings, arrays) or,
    when they do not parse as TOML, plain strings."""
    data = copy.deepcopy(dict(data))
    for override in overrides:
        match = _OVERRIDE.fullmatch(override)
        if match is None:
            raise ConfigError(f"--set {override!r}: expected section.key=value, e.g. "
                              "train.epochs=5 or data.root=/data/mtg-jamendo")
        path, value = match.group(1).split("."), values.toml_value(match.group(2))
        if len(path) == 1 and path[0] not in _TOP_LEVEL:
            raise ConfigError(f"--set {override!r}: name a section and a key (section.key=value)"
                              f"; sections: {', '.join(_SECTIONS)}")
        table = data
        for i, part in enumerate(path[:-1]):
            table = table.setdefault(part, {})
            if not isinstance(table, dict):
                raise ConfigError(f"--set {override!r}: {'.'.join(path[:i + 1])} is not a table")
        table[path[-1]] = value
    return data


# --------------------------------------------------------------------------------------------
# TOML writing (tomllib only reads)

_BARE_KEY = re.compile(r"[A-Za-z0-9_\-]+")


def _key(name: str) -> str:
    return name if _BARE_KEY.fullmatch(name) else json.dumps(name, ensure_ascii=False)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a valid TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(v) for v in value if v is not None) + "]"
    if isinstance(value, Mapping):
        items = [f"{_key(k)} = {_value(v)}" for k, v in value.items() if v is not None]
        return "{" + ", ".join(items) + "}"
    raise TypeError(f"cannot write {value!r} as TOML")


def _dump_toml(data: Mapping[str, Any]) -> str:
    lines: list[str] = []
    tables = []
    for key, value in data.items():
        if isinstance(value, Mapping):
            tables.append((key, value))
        elif value is not None:
            lines.append(f"{_key(key)} = {_value(value)}")

    def table(prefix: str, body: Mapping[str, Any]) -> None:
        lines.append("")
        lines.append(f"[{prefix}]")
        nested = []
        for key, value in body.items():
            # Sub-tables of a section (model.options) get their own header; deeper ones and
            # tables inside data (split_lists, synthetic) are inline.
            if isinstance(value, Mapping) and prefix in ("model",):
                nested.append((key, value))
            elif value is not None:
                lines.append(f"{_key(key)} = {_value(value)}")
        for key, value in nested:
            table(f"{prefix}.{_key(key)}", value)

    for key, value in tables:
        table(_key(key), value)
    return "\n".join(lines).lstrip("\n") + "\n"
