"""Pre-training the VQ-VAE on unlabeled audio, the first of team TaiInn's two steps.

``pretrain(recipe, run_dir)`` trains ``vqvae`` (``streamtag.nets.vqvae.VQVAE``) to reconstruct
log-mel windows of the recipe's training split: any data kind, labels ignored, or
``audio_folder`` (a folder of audio files, no labels). The pieces are the trainer's
(``streamtag.train.loop``): the feature cache, the random windows, the optimiser and schedule,
the log. The second step is an ordinary ``streamtag train`` of ``vqvae_gru`` or ``vqvae_cnn``
with ``model.encoder`` naming the file written here; ``load_pretrained_encoder`` loads it.

Input scaling: the decoder ends in tanh, so the autoencoder works on log-mel scaled to about
[-1, 1]. Unless the recipe sets ``model.options.input_offset`` / ``input_scale``, they are chosen
here so that the 1st and 99th percentiles of the training features map to -1 and 1; they are
buffers of the model, so the tagger that loads the encoder (and its TorchScript file) scales its
input the same way.

Each epoch the validation split is scored window by window (``[eval]`` windows and hop): the
reconstruction MSE (in the scaled units), the codebook perplexity (exp of the entropy of how
often each code is chosen) and the dead codes (never chosen). The same is logged before the first
epoch. The epoch with the lowest validation MSE is kept (``train.early_stopping`` is not used;
``train.patience`` stops on that MSE, ``schedule = "plateau"`` follows it too).

Run directory: ``recipe.toml`` (the resolved recipe), ``pretrain.log``, ``metrics.json``
(``before``, per-epoch ``history``, the kept epoch's ``final`` metrics, the scaling) and
``vqvae.pt``: ``torch.save`` of a dict with ``format`` ("streamtag-vqvae"), ``version``, the
VQ-VAE ``state_dict`` and ``options``, the ``frontend`` options, the ``scaling``, ``window``,
``hop``, the kept ``epoch``, its ``metrics`` and the ``recipe``; rewritten (atomically) whenever an
epoch improves, so an interrupted run leaves the best epoch so far. One process: no resuming, no
``torchrun``; augmentation is ``augment.gain_db`` only (mixup and masks would be reconstructed).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from streamtag.errors import ConfigError
from streamtag.fsutil import write_text_atomic
from streamtag.train.augment import apply_gain
from streamtag.train.loop import (
    RECIPE_FILE,
    RunLog,
    TrackData,
    _determinism,
    _improved,
    _make_optimizer,
    _progress,
    _save_atomic,
    _WindowDataset,
    evaluation_starts,
    lr_for_epoch,
    optimizer_stage,
    prepare_data,
    resolve_device,
    training_windows,
)
from streamtag.train.recipe import Recipe

__all__ = [
    "FILE_FORMAT",
    "FILE_VERSION",
    "PRETRAINED_FILE",
    "PretrainResult",
    "code_usage",
    "load_pretrained_encoder",
    "pretrain",
    "read_pretrained_encoder",
    "validation_metrics",
]

FILE_FORMAT = "streamtag-vqvae"
FILE_VERSION = 1
PRETRAINED_FILE = "vqvae.pt"
LOG_FILE = "pretrain.log"
METRICS_FILE = "metrics.json"
SPLITS = ("train", "validation")
SCALING_PERCENTILES = (1.0, 99.0)  # mapped to -1 and 1
_SCALING_VALUES = 4_000_000  # feature values sampled from the training split for the scaling
# What a tagger's encoder must share with the pre-trained one.
_ENCODER_OPTIONS = ("vq_type", "channels", "n_codes", "n_mels")
_SCALING_OPTIONS = ("input_offset", "input_scale")


@dataclasses.dataclass
class PretrainResult:
    """What ``pretrain`` did: the run folder, ``vqvae.pt``, the kept epoch's validation metrics
    (``mse``, ``perplexity``, ``dead_codes``) and those before training."""

    run_dir: Path
    path: Path
    metrics: dict[str, Any]
    before: dict[str, Any]
    epochs: int
    best_epoch: int
    train_seconds: float


# --------------------------------------------------------------------------------------------
# Validation metrics


def code_usage(counts: np.ndarray | torch.Tensor) -> dict[str, Any]:
    """From how often each code was chosen: ``perplexity`` (exp of the entropy of the usage
    distribution: 1 when one code does everything, ``n_codes`` when all are used equally),
    ``dead_codes`` (never chosen) and ``used_codes``."""
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    p = counts[counts > 0] / total if total > 0 else np.zeros(0)
    entropy = float(-(p * np.log(p)).sum())
    dead = int((counts == 0).sum())
    return {"perplexity": math.exp(entropy), "dead_codes": dead,
            "used_codes": int(counts.size - dead)}


def _validation_batches(data: TrackData, split: str, window: int, hop: int, mode: str,
                        batch_size: int) -> Iterator[np.ndarray]:
    pending: list[np.ndarray] = []
    for track, total in zip(data.tracks[split], data.lengths[split], strict=True):
        for start in evaluation_starts(int(total), window, hop, mode):
            pending.append(data.window(track.id, window, int(start), int(total)))
            if len(pending) >= batch_size:
                yield np.stack(pending)
                pending = []
    if pending:
        yield np.stack(pending)


def validation_metrics(model: nn.Module, data: TrackData, recipe: Recipe, *,
                       split: str = "validation", device: torch.device | str = "cpu",
                       bf16: bool = False) -> dict[str, Any]:
    """Reconstruction MSE (scaled units, every element of every window alike) and code usage
    (``code_usage``) of ``model`` over the evaluation windows of ``split`` (``[eval]`` windows
    and hop, as the trainer scores tracks); ``windows`` counts them."""
    r = recipe
    device = torch.device(device)
    n_codes = model.codebook.embedding.num_embeddings
    counts = torch.zeros(n_codes, dtype=torch.int64)
    squared, elements, windows = 0.0, 0, 0
    was_training = model.training
    model.eval()
    batches = _validation_batches(data, split, r.model.window, r.eval.eval_hop or r.model.hop,
                                  r.eval.windows, r.eval.batch_size or 2 * r.train.batch_size)
    try:
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16,
                                                     enabled=bf16 and device.type == "cuda"):
            for batch in batches:
                x = torch.from_numpy(batch).to(device)
                reconstruction, _, _, indices = model.forward_vq(x)
                target = model.scale_input(x).float()
                squared += float(((reconstruction.float() - target) ** 2).sum())
                elements += target.numel()
                windows += len(x)
                counts += torch.bincount(indices.flatten().cpu(), minlength=n_codes)
    finally:
        model.train(was_training)
    return {"mse": squared / max(elements, 1), **code_usage(counts.numpy()), "windows": windows}


# --------------------------------------------------------------------------------------------
# Set-up


def _check_recipe(recipe: Recipe) -> None:
    arch = recipe.model.architecture
    from streamtag import nets

    if nets.spec(arch)["task"] != "autoencode":
        raise ConfigError(f"pre-training is for the VQ-VAE autoencoder (model.architecture = "
                          f"\"vqvae\"); this recipe's model.architecture is {arch!r}, a tagger: "
                          "train it with `streamtag train`")
    a = recipe.augment
    if a.mixup_alpha or a.specaugment:
        raise ConfigError("augment.mixup_alpha, augment.freq_masks and augment.time_masks must "
                          "be 0 for pre-training: the autoencoder reconstructs its own input, so "
                          "it would learn to draw the masks and mixtures (augment.gain_db works)")
    window = recipe.model.window
    if window < 2 or window % 2:
        raise ConfigError(f"model.window must be even for vqvae (the encoder halves the frames "
                          f"and the decoder doubles them back), got {window}")


def _scaling(recipe: Recipe, data: TrackData, log: Callable[[str], None]) -> dict[str, Any]:
    """``input_offset`` and ``input_scale``: the recipe's, or mapping the training features'
    ``SCALING_PERCENTILES`` to -1 and 1."""
    from streamtag import nets

    options = recipe.model.options
    if any(key in options for key in _SCALING_OPTIONS):
        defaults = nets.spec("vqvae")["options"]
        scaling = {key: float(options.get(key, defaults[key])) for key in _SCALING_OPTIONS}
        log(f"input scaling from the recipe: offset {scaling['input_offset']:.4g}, scale "
            f"{scaling['input_scale']:.4g}")
        return {**scaling, "source": "recipe"}
    tracks = data.tracks["train"]
    lengths = data.lengths["train"]
    n_mels = data.store.options.n_mels
    # Evenly spaced tracks, and evenly spaced frames within each, up to _SCALING_VALUES values.
    chosen = np.unique(np.linspace(0, len(tracks) - 1, min(len(tracks), 512)).astype(int))
    frames_each = max(1, _SCALING_VALUES // (len(chosen) * n_mels))
    parts = []
    for i in chosen:
        total = int(lengths[i])
        features = data.window(tracks[i].id, total, 0, total)  # (n_mels, frames)
        keep = np.unique(np.linspace(0, total - 1, min(total, frames_each)).astype(int))
        parts.append(features[:, keep].ravel())
    values = np.concatenate(parts)
    low, high = (float(v) for v in np.percentile(values, SCALING_PERCENTILES))
    if not high > low:
        raise ConfigError(f"the training features are constant ({low:g}) between the "
                          f"{SCALING_PERCENTILES} percentiles; check the audio, or set "
                          "model.options.input_offset and input_scale")
    offset, scale = (low + high) / 2, 2 / (high - low)
    outside = float(np.mean(np.abs((values - offset) * scale) > 1))
    log(f"input scaling from {values.size:,} training feature values: percentiles "
        f"{SCALING_PERCENTILES[0]:g}/{SCALING_PERCENTILES[1]:g} = {low:.4g}/{high:.4g} map to "
        f"-1/1 (offset {offset:.4g}, scale {scale:.4g}; {outside:.1%} of values outside)")
    return {"input_offset": offset, "input_scale": scale, "source": "training features",
            "percentiles": list(SCALING_PERCENTILES), "low": low, "high": high,
            "fraction_outside": outside}


def _build(recipe: Recipe, scaling: dict[str, Any]) -> tuple[nn.Module, dict[str, Any]]:
    from streamtag import nets

    options = {**nets.spec("vqvae")["options"], **recipe.model.options,
               **{key: scaling[key] for key in _SCALING_OPTIONS}}
    try:
        model = nets.build("vqvae", 1, **options)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"[model] vqvae: {error}") from None
    shape = (1, recipe.frontend_options().n_mels, recipe.model.window)
    with torch.no_grad():
        out = model.eval()(torch.zeros(shape))
    if tuple(out.shape) != shape:
        raise ConfigError(f"vqvae reconstructs a window of {shape[1:]} as {tuple(out.shape[1:])}; "
                          "give model.window an even number of frames")
    return model.train(), options


def _write_json(data: Any, path: Path) -> None:
    write_text_atomic(path, json.dumps(data, indent=2) + "\n")


# --------------------------------------------------------------------------------------------
# The run


def pretrain(recipe: Recipe, run_dir: str | os.PathLike, echo: bool = True) -> PretrainResult:
    """Pre-trains the recipe's ``vqvae`` in ``run_dir`` (see the module docstring for what it
    writes). A recipe with another architecture, or a folder that already holds ``vqvae.pt``, is
    a ``ConfigError``."""
    _check_recipe(recipe)
    r, t = recipe, recipe.train
    run_dir = Path(run_dir)
    path = run_dir / PRETRAINED_FILE
    if path.exists():
        raise ConfigError(f"{run_dir} already holds a pre-trained model ({PRETRAINED_FILE}); "
                          "give another --out")
    run_dir.mkdir(parents=True, exist_ok=True)
    log = RunLog(run_dir / LOG_FILE, echo=echo)
    device = resolve_device(t.device)
    bf16 = t.bf16 and device.type == "cuda"
    log(f"pretrain {run_dir}: {r.name} (vqvae) on {device}" + (" with bf16" if bf16 else ""))
    data = prepare_data(r, splits=SPLITS, log=log)
    scaling = _scaling(r, data, log)
    torch.manual_seed(t.seed)
    model, options = _build(r, scaling)
    model.to(device)
    (run_dir / RECIPE_FILE).write_text(r.to_toml(), encoding="utf-8")
    n_params = sum(p.numel() for p in model.parameters())
    log(f"model: vqvae {dict(r.model.options)}, {n_params:,} parameters, window "
        f"{r.model.window}, {options['n_codes']} codes")

    frontend = r.frontend_options()
    sampler_rng = np.random.default_rng([t.seed, 1])
    augment_rng = np.random.default_rng([t.seed, 2])
    loader_generator = torch.Generator().manual_seed(t.seed)
    stage = optimizer_stage(t, 0)
    optimizer = _make_optimizer(t, stage, model.parameters())
    plateau: dict[str, Any] = {"scale": 1.0, "best": None, "bad": 0}
    history: list[dict[str, Any]] = []
    best: dict[str, Any] = {"epoch": None, "mse": None, "metrics": None}
    bad_epochs, stopped_early, train_seconds = 0, False, 0.0
    n_codes = options["n_codes"]

    def summary(m: dict[str, Any]) -> str:
        return (f"val_mse {m['mse']:.5f}  perplexity {m['perplexity']:.1f}  dead_codes "
                f"{m['dead_codes']}/{n_codes}")

    def metrics_file() -> dict[str, Any]:
        return {"before": before, "history": history, "best_epoch": best["epoch"],
                "final": best["metrics"], "epochs_trained": len(history),
                "stopped_early": stopped_early, "train_seconds": train_seconds,
                "n_codes": n_codes, "scaling": scaling, "pretrained_file": PRETRAINED_FILE}

    with _determinism(t.deterministic, device):
        before = validation_metrics(model, data, r, device=device, bf16=bf16)
        log(f"before training: {summary(before)}  ({before['windows']} validation windows)")
        for e in range(t.epochs):
            started = time.perf_counter()
            if optimizer_stage(t, e) != stage:
                stage = optimizer_stage(t, e)
                optimizer = _make_optimizer(t, stage, model.parameters())
                log(f"switching to SGD with Nesterov momentum at epoch {e + 1}")
            lr = lr_for_epoch(t, e, plateau["scale"])
            for group in optimizer.param_groups:
                group["lr"] = lr
            items = training_windows(data.lengths["train"], r.model.window,
                                     t.windows_per_track, t.window_position, sampler_rng)
            if len(items) % t.batch_size == 1 and len(items) > 1:
                items = items[:-1]  # a batch of one breaks batch norm in training mode
            loader = torch.utils.data.DataLoader(
                _WindowDataset(data, "train", items, r.model.window), batch_size=t.batch_size,
                shuffle=False, num_workers=t.workers, pin_memory=device.type == "cuda",
                generator=loader_generator)
            model.train()
            total, seen = 0.0, 0
            bar = _progress(total=len(loader), unit="batch", desc=f"epoch {e + 1}/{t.epochs}")
            with bar:
                for x, _ in loader:  # labels, if the dataset has any, are not used
                    x = x.to(device, non_blocking=True)
                    if r.augment.gain_db:
                        x = apply_gain(x, augment_rng.uniform(-r.augment.gain_db,
                                                              r.augment.gain_db, size=len(x)),
                                       frontend)
                    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                        loss = model.pretrain_loss(x)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    if t.grad_clip:
                        nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
                    optimizer.step()
                    total += loss.item() * len(x)
                    seen += len(x)
                    bar.update(1)
                    bar.set_postfix(loss=f"{total / seen:.4f}")
            validation = validation_metrics(model, data, r, device=device, bf16=bf16)
            seconds = time.perf_counter() - started
            train_seconds += seconds
            better = _improved("loss", validation["mse"], best["mse"])
            if better:
                best = {"epoch": e + 1, "mse": validation["mse"], "metrics": validation}
                bad_epochs = 0
                state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
                _save_atomic({"format": FILE_FORMAT, "version": FILE_VERSION,
                              "architecture": "vqvae", "state_dict": state, "options": options,
                              "frontend": frontend.to_dict(), "scaling": scaling,
                              "window": r.model.window, "hop": r.model.hop, "epoch": e + 1,
                              "metrics": validation, "before": before, "recipe": r.to_dict()},
                             path)
            else:
                bad_epochs += 1
            if t.schedule == "plateau":
                if _improved("loss", validation["mse"], plateau["best"]):
                    plateau["best"], plateau["bad"] = validation["mse"], 0
                else:
                    plateau["bad"] += 1
                    if plateau["bad"] >= t.plateau_patience:
                        plateau["scale"] *= t.plateau_factor
                        plateau["bad"] = 0
            history.append({"epoch": e + 1, "lr": lr, "optimizer": stage, "train_loss":
                            total / max(seen, 1), "val_mse": validation["mse"],
                            "val_perplexity": validation["perplexity"],
                            "val_dead_codes": validation["dead_codes"],
                            "val_used_codes": validation["used_codes"], "seconds": seconds,
                            "best": better})
            log(f"epoch {e + 1}/{t.epochs}  loss {total / max(seen, 1):.4f}  "
                f"{summary(validation)}  lr {lr:.2e}  {seconds:.1f} s" + ("  *" if better else ""))
            if t.patience and bad_epochs >= t.patience:
                stopped_early = True
                log(f"early stopping: no improvement of the validation MSE for {t.patience} "
                    f"epochs; best epoch {best['epoch']}")
            _write_json(metrics_file(), run_dir / METRICS_FILE)
            if stopped_early:
                break
    if best["epoch"] is None:
        raise ConfigError("pre-training diverged: the validation MSE was never finite; lower "
                          "train.lr or set train.grad_clip")
    log(f"{path}: epoch {best['epoch']} of {len(history)}, validation MSE {before['mse']:.5f} "
        f"before training, {best['mse']:.5f} after; perplexity {best['metrics']['perplexity']:.1f}"
        f", {best['metrics']['dead_codes']} dead codes of {n_codes}")
    return PretrainResult(run_dir=run_dir, path=path, metrics=best["metrics"], before=before,
                          epochs=len(history), best_epoch=best["epoch"],
                          train_seconds=train_seconds)


# --------------------------------------------------------------------------------------------
# The second step: a tagger starts from the pre-trained encoder


def read_pretrained_encoder(path: str | os.PathLike, recipe: Recipe) -> dict[str, Any]:
    """The contents of ``vqvae.pt`` (``pretrain``), checked against a ``vqvae_gru`` /
    ``vqvae_cnn`` recipe: ``vq_type``, ``channels``, ``n_codes``, ``n_mels``, every frontend
    option, and ``input_offset`` / ``input_scale`` when the recipe sets them must be the file's.
    A missing file, another kind of file or a mismatch is a ``ConfigError`` naming the file and
    what differs. The trainer calls it before featurising, so a wrong file fails at once."""
    from streamtag import nets

    path = Path(path).expanduser()
    where = f"model.encoder {path}"
    if not path.is_file():
        raise ConfigError(f"{where} not found; pre-train one with `streamtag pretrain "
                          "RECIPE.toml`, which writes RUN_DIR/vqvae.pt")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch's own messages talk about weights_only, not the user
        raise ConfigError(f"{where} is not a pre-trained VQ-VAE file (the vqvae.pt of "
                          f"`streamtag pretrain`): torch cannot read it "
                          f"({type(error).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != FILE_FORMAT:
        raise ConfigError(f"{where} is not a pre-trained VQ-VAE file (the vqvae.pt of "
                          "`streamtag pretrain`): it has no 'format': 'streamtag-vqvae' entry")
    if payload.get("version") != FILE_VERSION:
        raise ConfigError(f"{where} has version {payload.get('version')}; this streamtag reads "
                          f"version {FILE_VERSION}")
    arch = recipe.model.architecture
    theirs = payload["options"]
    ours = {**nets.spec(arch)["options"], **recipe.model.options}
    mismatches = [f"model.options.{key} is {ours[key]!r} here, {theirs.get(key)!r} in the file"
                  for key in _ENCODER_OPTIONS if ours[key] != theirs.get(key)]
    mismatches += [f"model.options.{key} is {ours[key]!r} here, {theirs.get(key)!r} in the file "
                   "(leave it out to take the file's)"
                   for key in _SCALING_OPTIONS
                   if key in recipe.model.options and ours[key] != theirs.get(key)]
    frontend, stored = recipe.frontend_options().to_dict(), payload.get("frontend", {})
    mismatches += [f"frontend.{key} is {frontend.get(key)!r} here, {stored.get(key)!r} in the "
                   "file" for key in sorted(set(frontend) | set(stored))
                   if frontend.get(key) != stored.get(key)]
    if mismatches:
        raise ConfigError(f"{where} does not fit this recipe: " + "; ".join(mismatches))
    return payload


def load_pretrained_encoder(model: nn.Module, path: str | os.PathLike, recipe: Recipe, *,
                            log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Loads the encoder, codebook and input scaling of ``vqvae.pt`` (``pretrain``) into a
    ``vqvae_gru`` / ``vqvae_cnn`` ``model`` built from ``recipe``, after the checks of
    ``read_pretrained_encoder``; returns the file's contents. The freeze is the tagger's own
    ``freeze_encoder`` option."""
    payload = read_pretrained_encoder(path, recipe)
    path = Path(path).expanduser()
    where = f"model.encoder {path}"
    arch = recipe.model.architecture
    theirs = payload["options"]
    if not hasattr(model, "load_encoder_state_dict"):
        raise ConfigError(f"{arch} has no VQ-VAE encoder to load {path} into")
    try:
        model.load_encoder_state_dict(payload["state_dict"])
    except (RuntimeError, KeyError) as error:
        raise ConfigError(f"{where}: its weights do not fit {arch}: "
                          f"{str(error).splitlines()[0]}") from None
    if log is not None:
        frozen = getattr(model, "freeze_encoder", False)
        log(f"encoder: {path} (epoch {payload.get('epoch')}, validation MSE "
            f"{payload['metrics']['mse']:.5f}), {'frozen' if frozen else 'trained further'}; "
            f"input scaling offset {theirs['input_offset']:.4g}, scale "
            f"{theirs['input_scale']:.4g}")
    return payload
