"""Pre-training the VQ-VAE on unlabeled audio, the first of team TaiInn's two steps.

``pretrain(recipe, run_dir)`` trains ``vqvae`` (``streamtag.nets.vqvae.VQVAE``) to reconstruct
log-mel windows of the recipe's training split: any data kind, labels ignored, or
``audio_folder`` (a folder of audio files, no labels). The pieces are the trainer's: the data
and feature cache (``data``), the epoch (``epoch.run_epoch``), the optimiser, schedule and early
stopping (``optim``), the log (``runtime``). The second step is an ordinary ``streamtag train``
of ``vqvae_gru`` or ``vqvae_cnn`` with ``model.encoder`` naming the file written here;
``encoder_file`` reads and loads it.

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
``vqvae.pt`` (its format: ``encoder_file``), rewritten (atomically) whenever an epoch
improves, so an interrupted run leaves the best epoch so far. One process: no resuming, no
``torchrun``; augmentation is ``augment.gain_db`` only (mixup and masks would be reconstructed).
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from streamtag.errors import ConfigError
from streamtag.fsutil import write_json_atomic, write_text_atomic
from streamtag.train.augment import Augmenter
from streamtag.train.data import TrackData, prepare_data
from streamtag.train.encoder_file import (
    FILE_FORMAT,
    PRETRAINED_FILE,
    SCALING_OPTIONS,
    write_pretrained_encoder,
)
from streamtag.train.epoch import run_epoch
from streamtag.train.optim import EarlyStopping, Plateau, StagedOptimizer
from streamtag.train.recipe import Recipe
from streamtag.train.runtime import (
    RECIPE_FILE,
    RunLog,
    determinism,
    no_folder_left_if_refused,
    resolve_device,
)
from streamtag.train.windows import evaluation_batches

# FILE_FORMAT and PRETRAINED_FILE are encoder_file's, named here too: what ``pretrain`` writes.
__all__ = ["FILE_FORMAT", "PRETRAINED_FILE", "PretrainResult", "code_usage", "pretrain",
           "validation_metrics"]

LOG_FILE = "pretrain.log"
METRICS_FILE = "metrics.json"
SPLITS = ("train", "validation")
SCALING_PERCENTILES = (1.0, 99.0)  # mapped to -1 and 1
_SCALING_VALUES = 4_000_000  # feature values sampled from the training split for the scaling


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
    batches = evaluation_batches(data, split, r.model.window, r.eval.eval_hop or r.model.hop,
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
    if any(key in options for key in SCALING_OPTIONS):
        defaults = nets.spec("vqvae")["options"]
        scaling = {key: float(options.get(key, defaults[key])) for key in SCALING_OPTIONS}
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
               **{key: scaling[key] for key in SCALING_OPTIONS}}
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


# --------------------------------------------------------------------------------------------
# The run


def pretrain(recipe: Recipe, run_dir: str | os.PathLike, echo: bool = True) -> PretrainResult:
    """Pre-trains the recipe's ``vqvae`` in ``run_dir`` (see the module docstring for what it
    writes). A recipe with another architecture, or a folder that already holds ``vqvae.pt``, is
    a ``ConfigError``."""
    _check_recipe(recipe)
    run_dir = Path(run_dir)
    if (run_dir / PRETRAINED_FILE).exists():
        raise ConfigError(f"{run_dir} already holds a pre-trained model ({PRETRAINED_FILE}); "
                          "give another --out")
    with no_folder_left_if_refused(run_dir, LOG_FILE):
        return _pretrain(recipe, run_dir, echo)


def _pretrain(recipe: Recipe, run_dir: Path, echo: bool) -> PretrainResult:
    r, t = recipe, recipe.train
    path = run_dir / PRETRAINED_FILE
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
    write_text_atomic(run_dir / RECIPE_FILE, r.to_toml())
    n_params = sum(p.numel() for p in model.parameters())
    log(f"model: vqvae {dict(r.model.options)}, {n_params:,} parameters, window "
        f"{r.model.window}, {options['n_codes']} codes")

    frontend = r.frontend_options()
    sampler_rng = np.random.default_rng([t.seed, 1])
    augmenter = Augmenter(r.augment, frontend, np.random.default_rng([t.seed, 2]))
    loader_generator = torch.Generator().manual_seed(t.seed)
    optimisation = StagedOptimizer(t, model)
    stopping = EarlyStopping("loss", t.patience)  # on the validation MSE
    plateau = Plateau(t, "loss")
    history: list[dict[str, Any]] = []
    best: dict[str, Any] = {"epoch": None, "mse": None, "metrics": None}
    stopped_early, train_seconds = False, 0.0
    n_codes = options["n_codes"]

    def summary(m: dict[str, Any]) -> str:
        return (f"val_mse {m['mse']:.5f}  perplexity {m['perplexity']:.1f}  dead_codes "
                f"{m['dead_codes']}/{n_codes}")

    def metrics_file() -> dict[str, Any]:
        return {"before": before, "history": history, "best_epoch": best["epoch"],
                "final": best["metrics"], "epochs_trained": len(history),
                "stopped_early": stopped_early, "train_seconds": train_seconds,
                "n_codes": n_codes, "scaling": scaling, "pretrained_file": PRETRAINED_FILE}

    with determinism(t.deterministic, device):
        before = validation_metrics(model, data, r, device=device, bf16=bf16)
        log(f"before training: {summary(before)}  ({before['windows']} validation windows)")
        for e in range(t.epochs):
            started = time.perf_counter()
            # Labels, if the dataset has any, are not used: the loss is the reconstruction's.
            epoch = run_epoch(model, optimisation, data, r, e,
                              loss=lambda batch: model.pretrain_loss(batch[0]),
                              sampler_rng=sampler_rng, loader_generator=loader_generator,
                              device=device, augmenter=augmenter, plateau_scale=plateau.scale,
                              bf16=bf16, log=log)
            validation = validation_metrics(model, data, r, device=device, bf16=bf16)
            seconds = time.perf_counter() - started
            train_seconds += seconds
            better = stopping.update(validation["mse"], e + 1)
            if better:
                best = {"epoch": e + 1, "mse": validation["mse"], "metrics": validation}
                write_pretrained_encoder(path, model, options, frontend, scaling, r,
                                         epoch=e + 1, metrics=validation, before=before)
            plateau.update(validation["mse"])
            history.append({"epoch": e + 1, "lr": epoch.lr, "optimizer": optimisation.stage,
                            "train_loss": epoch.train_loss, "val_mse": validation["mse"],
                            "val_perplexity": validation["perplexity"],
                            "val_dead_codes": validation["dead_codes"],
                            "val_used_codes": validation["used_codes"], "seconds": seconds,
                            "best": better})
            log(f"epoch {e + 1}/{t.epochs}  loss {epoch.train_loss:.4f}  "
                f"{summary(validation)}  lr {epoch.lr:.2e}  {seconds:.1f} s"
                + ("  *" if better else ""))
            if stopping.should_stop:
                stopped_early = True
                log(f"early stopping: no improvement of the validation MSE for {t.patience} "
                    f"epochs; best epoch {best['epoch']}")
            # a validation figure may be NaN (a split without windows): written, not refused
            write_json_atomic(run_dir / METRICS_FILE, metrics_file(), allow_nan=True)
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
