"""How the weights move and when a run has learnt enough: the learning-rate schedules, the
optimisers and their stage switch, early stopping, the plateau schedule's bookkeeping and per-tag
best epochs.

The objects that carry state across epochs (``StagedOptimizer``, ``EarlyStopping``,
``Plateau``, ``PerTagBest``) have ``state_dict`` / ``load_state_dict``, whose dicts are the
entries a checkpoint has always stored (``optimizer`` and ``optimizer_stage``, ``best`` and
``bad_epochs``, ``plateau``, ``tag_best``), so checkpoints of earlier runs still load.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from streamtag.train.recipe import TrainConfig

__all__ = [
    "EarlyStopping",
    "PerTagBest",
    "Plateau",
    "StagedOptimizer",
    "best_epoch_per_tag",
    "improved",
    "lr_for_epoch",
    "make_optimizer",
    "optimizer_stage",
    "warmup_linear_lr",
]


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


def make_optimizer(train: TrainConfig, stage: str, params: Any) -> torch.optim.Optimizer:
    """A fresh optimiser of ``stage`` (``optimizer_stage``) over ``params``."""
    if stage == "sgd":
        lr = train.sgd_lr if train.optimizer == "adam_sgd" else train.lr
        return torch.optim.SGD(params, lr=lr, momentum=train.momentum, nesterov=True,
                               weight_decay=train.weight_decay)
    return torch.optim.Adam(params, lr=train.lr, weight_decay=train.weight_decay,
                            amsgrad=train.optimizer == "amsgrad")


class StagedOptimizer:
    """The optimiser of ``model`` epoch by epoch: ``begin_epoch`` switches Adam to SGD where the
    recipe says (a fresh optimiser, as ``adam_sgd`` prescribes) and sets the epoch's learning
    rate."""

    def __init__(self, train: TrainConfig, model: nn.Module) -> None:
        self.train = train
        self.model = model
        self.stage = optimizer_stage(train, 0)
        self.optimizer = make_optimizer(train, self.stage, model.parameters())

    def begin_epoch(self, epoch: int, plateau_scale: float = 1.0) -> tuple[float, bool]:
        """Readies 0-based ``epoch``; returns its learning rate and whether the optimiser
        switched to SGD."""
        stage = optimizer_stage(self.train, epoch)
        switched = stage != self.stage
        if switched:
            self.stage = stage
            self.optimizer = make_optimizer(self.train, stage, self.model.parameters())
        lr = lr_for_epoch(self.train, epoch, plateau_scale)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr, switched

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "optimizer_stage": self.stage}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.stage = state["optimizer_stage"]
        self.optimizer = make_optimizer(self.train, self.stage, self.model.parameters())
        self.optimizer.load_state_dict(state["optimizer"])


# --------------------------------------------------------------------------------------------
# When to stop, when to lower the rate, which epochs to keep


def improved(metric: str, value: float | None, best: float | None) -> bool:
    """Whether ``value`` of ``metric`` beats ``best`` (None: nothing yet): lower for
    ``"loss"``, higher for every other metric; a missing or non-finite value never does."""
    if value is None or not math.isfinite(value):
        return False
    if best is None:
        return True
    return value < best if metric == "loss" else value > best


class EarlyStopping:
    """The best epoch by ``metric`` so far (``best``: ``{"metric", "value", "epoch"}``) and the
    epochs since (``bad_epochs``); ``should_stop`` after ``patience`` of them (0: never)."""

    def __init__(self, metric: str, patience: int) -> None:
        self.metric = metric
        self.patience = patience
        self.best: dict[str, Any] = {"metric": metric, "value": None, "epoch": None}
        self.bad_epochs = 0

    def update(self, value: float | None, epoch: int) -> bool:
        """Records ``epoch``'s ``value``; True when it is the best so far."""
        if improved(self.metric, value, self.best["value"]):
            self.best = {"metric": self.metric, "value": value, "epoch": epoch}
            self.bad_epochs = 0
            return True
        self.bad_epochs += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.patience > 0 and self.bad_epochs >= self.patience

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best = dict(state["best"])
        self.bad_epochs = int(state["bad_epochs"])


class Plateau:
    """The ``plateau`` schedule's factor (``scale``): times ``plateau_factor`` after
    ``plateau_patience`` epochs without improvement of ``metric``; 1 for other schedules."""

    def __init__(self, train: TrainConfig, metric: str) -> None:
        self.enabled = train.schedule == "plateau"
        self.patience = train.plateau_patience
        self.factor = train.plateau_factor
        self.metric = metric
        self.scale = 1.0
        self.best: float | None = None
        self.bad = 0

    def update(self, value: float | None) -> None:
        if not self.enabled:
            return
        if improved(self.metric, value, self.best):
            self.best, self.bad = value, 0
        else:
            self.bad += 1
            if self.bad >= self.patience:
                self.scale *= self.factor
                self.bad = 0

    def state_dict(self) -> dict[str, Any]:
        return {"scale": self.scale, "best": self.best, "bad": self.bad}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.scale, self.best, self.bad = state["scale"], state["best"], state["bad"]


class PerTagBest:
    """Per-tag early stopping: each tag's lowest validation loss so far and its epoch
    (1-based), tag by tag (empty lists before the first epoch)."""

    def __init__(self) -> None:
        self.loss: list[float | None] = []
        self.epoch: list[int | None] = []

    def update(self, tag_loss: Sequence[float], epoch: int) -> bool:
        """Records ``epoch``'s loss of each tag; True when the epoch is best for any tag."""
        if not self.loss:
            self.loss, self.epoch = [None] * len(tag_loss), [None] * len(tag_loss)
        any_better = False
        for j, value in enumerate(tag_loss):
            if improved("loss", value, self.loss[j]):
                self.loss[j] = float(value)
                self.epoch[j] = epoch
                any_better = True
        return any_better

    def state_dict(self) -> dict[str, list[Any]]:
        return {"loss": self.loss, "epoch": self.epoch}

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        state = state or {"loss": [], "epoch": []}
        self.loss, self.epoch = list(state["loss"]), list(state["epoch"])


def best_epoch_per_tag(losses: Sequence[Sequence[float]]) -> list[int]:
    """For a ``(epochs, tags)`` table of validation losses, each tag's best epoch (1-based):
    the first epoch with that tag's lowest finite loss (later ties do not replace it), as
    per-tag early stopping picks it epoch by epoch."""
    table = [list(row) for row in losses]
    best_epoch: list[int] = []
    for j in range(len(table[0]) if table else 0):
        best, epoch = None, 1
        for e, row in enumerate(table, start=1):
            if improved("loss", row[j], best):
                best, epoch = row[j], e
        best_epoch.append(epoch)
    return best_epoch
