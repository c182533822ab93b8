"""One training epoch, the same for the tagger (``loop.TrainingRun``) and the VQ-VAE
pre-training (``pretrain``): the optimiser's stage and learning rate, the epoch's random windows,
the loader, and the batch loop (augmentation, loss, backward pass, gradient clipping, step).

What differs between the two is the loss of a batch, which the caller gives. Under ``torchrun``
each process takes every world-th window of each whole global batch (``DistributedSampler``) and
the epoch's loss is summed over the processes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from streamtag.train.augment import Augmenter
from streamtag.train.data import TrackData
from streamtag.train.optim import StagedOptimizer
from streamtag.train.progress import progress
from streamtag.train.recipe import Recipe
from streamtag.train.runtime import Distributed
from streamtag.train.windows import WindowDataset, training_windows

__all__ = ["EpochResult", "run_epoch"]


@dataclasses.dataclass(frozen=True)
class EpochResult:
    """What an epoch did: its learning rate and its mean training loss per window."""

    lr: float
    train_loss: float


def run_epoch(model: nn.Module, optimisation: StagedOptimizer, data: TrackData, recipe: Recipe,
              epoch: int, *, loss: Callable[[Sequence[torch.Tensor]], torch.Tensor],
              sampler_rng: np.random.Generator, loader_generator: torch.Generator,
              device: torch.device, augmenter: Augmenter | None = None,
              plateau_scale: float = 1.0, dist: Distributed | None = None, bf16: bool = False,
              in_training_mode: Callable[[nn.Module], None] | None = None,
              log: Callable[[str], None] = print) -> EpochResult:
    """Trains ``model`` for 0-based ``epoch`` on windows of the training split. ``loss`` gives
    the loss of a batch (the window, the labels and, with track features, the features, on
    ``device`` and augmented); it runs under bf16 autocast with ``bf16``. ``in_training_mode``
    runs once the model is in training mode, before the first batch (fine-tuning freezes its
    body there)."""
    t = recipe.train
    dist = dist or Distributed()
    lr, switched = optimisation.begin_epoch(epoch, plateau_scale)
    if switched:
        log(f"switching to SGD with Nesterov momentum at epoch {epoch + 1}")
    items = training_windows(data.lengths["train"], recipe.model.window, t.windows_per_track,
                             t.window_position, sampler_rng)
    dataset = WindowDataset(data, "train", items, recipe.model.window)
    sampler = None
    if dist.active:
        # Whole global batches only, each process taking every world-th window of each.
        dataset.items = dataset.items[:len(items) - len(items) % t.batch_size]
        sampler = torch.utils.data.distributed.DistributedSampler(
            dataset, num_replicas=dist.world, rank=dist.rank, shuffle=False)
    elif len(items) % t.batch_size == 1 and len(items) > 1:
        dataset.items = dataset.items[:-1]  # a batch of one breaks batch norm in training
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=t.batch_size // dist.world, sampler=sampler, shuffle=False,
        num_workers=t.workers, pin_memory=device.type == "cuda", generator=loader_generator)
    model.train()
    if in_training_mode is not None:
        in_training_mode(model)
    total, seen = 0.0, 0
    bar = progress(total=len(loader), unit="batch", desc=f"epoch {epoch + 1}/{t.epochs}")
    with bar:
        for batch in loader:
            x = batch[0].to(device, non_blocking=True)
            y = batch[1].to(device, non_blocking=True)
            f = batch[2].to(device, non_blocking=True) if len(batch) > 2 else None
            if augmenter is not None and augmenter.active:
                x, y, f = augmenter(x, y, f)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                value = loss((x, y) if f is None else (x, y, f))
            optimizer = optimisation.optimizer
            optimizer.zero_grad(set_to_none=True)
            value.backward()
            if t.grad_clip:
                nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
            optimizer.step()
            total += value.item() * len(x)
            seen += len(x)
            bar.update(1)
            bar.set_postfix(loss=f"{total / seen:.4f}")
    total, summed = dist.sum(total, float(seen))
    return EpochResult(lr=lr, train_loss=total / max(int(summed), 1))
