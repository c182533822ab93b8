"""The training run of a tagger (``TrainingRun``): its model, its epochs, its checkpoints, and
what it exports.

``run.train(recipe, run_dir)`` makes one: ``setup()`` loads the data (``data.prepare_data``:
the dataset, its features cached once with the daemon's C++ frontend) and builds the model
(``build_model``), ``fit()`` trains with one checkpoint per epoch (each epoch is
``epoch.run_epoch``; windows: ``windows``; schedules and early stopping: ``optim``), then
``export.export_run`` writes the thresholds, test metrics, plots and ``model.pt``. With
``resume=True`` the run continues from ``run_dir/checkpoint.pt``.

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
(``WORLD_SIZE`` > 1 in the environment; ``runtime.Distributed``) every process trains a replica with
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

import copy
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, update_bn

from streamtag.errors import ConfigError
from streamtag.fsutil import write_text_atomic
from streamtag.train import combine, init_from
from streamtag.train.augment import Augmenter
from streamtag.train.data import prepare_data
from streamtag.train.encoder_file import load_pretrained_encoder, read_pretrained_encoder
from streamtag.train.epoch import run_epoch
from streamtag.train.metrics import bce_per_tag, evaluate, training_loss
from streamtag.train.optim import EarlyStopping, PerTagBest, Plateau, StagedOptimizer
from streamtag.train.recipe import Recipe
from streamtag.train.runtime import (
    RECIPE_FILE,
    RunLog,
    determinism,
    distributed_from_env,
    numpy_state,
    resolve_device,
    save_atomic,
    set_numpy_state,
    start_process_group,
)
from streamtag.train.windows import WindowDataset, predict, training_windows

__all__ = ["BEST", "CHECKPOINT", "LOG_FILE", "PER_TAG_DIR", "SWA_DIR", "Heads", "TrainingRun"]

CHECKPOINT = "checkpoint.pt"
BEST = "best.pt"
SWA_DIR = "swa"
PER_TAG_DIR = "per_tag"
LOG_FILE = "train.log"
_CHECKPOINT_FORMAT = 1


class Heads(nn.Module):
    """``forward`` giving both heads of a two-head network, so that DDP sees the forward
    pass the two-head loss needs."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> Any:
        return self.model.forward_heads(x)


def _check_trainable(recipe: Recipe, resume: bool) -> None:
    """``streamtag train`` needs a tagger and labels; the VQ-VAE and unlabeled audio are for
    ``streamtag pretrain`` (``streamtag.train.pretrain``). A pre-trained encoder is checked
    before any featurising."""
    from streamtag import nets
    from streamtag.train.recipe import UNLABELED_DATA_KINDS

    if nets.spec(recipe.model.architecture)["task"] != "tag":
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
        start_process_group(self.dist, self.device)
        if recipe.train.deterministic and self.device.type == "cuda":
            # cuBLAS is deterministic only with a fixed workspace, set before its first use.
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        self.bf16 = recipe.train.bf16 and self.device.type == "cuda"
        from streamtag import nets

        self.two_heads = nets.spec(recipe.model.architecture)["loss"] == "two_head_bce"
        self.options = recipe.frontend_options()
        self.epoch = 0  # epochs completed
        self.history: list[dict[str, Any]] = []
        self.stopping = EarlyStopping(recipe.train.early_stopping, recipe.train.patience)
        self.plateau = Plateau(recipe.train, recipe.train.early_stopping)
        self.stopped_early = False
        self.train_seconds = 0.0
        self.swa_model: AveragedModel | None = None
        self.swa_epochs: list[int] = []  # epochs whose weights are in the SWA average
        self.per_tag = PerTagBest()  # per-tag early stopping
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
        self.model = self.build_model().to(self.device)
        if self.dist.active and self.device.type == "cuda":
            self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        self.forward_module: nn.Module = Heads(self.model) if self.two_heads else self.model
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
        self.optimisation = StagedOptimizer(r.train, self.model)
        if r.train.swa:
            self.swa_model = AveragedModel(self.model)
        if self._resume:
            self._load_checkpoint()
        # Written once the recipe is known to fit the run (a refused resume leaves it alone).
        if self.dist.main:
            write_text_atomic(self.run_dir / RECIPE_FILE, r.to_toml())
        n_params = sum(p.numel() for p in self.model.parameters())
        self.log(f"model: {r.model.architecture} {dict(r.model.options)}, {n_params:,} "
                 f"parameters, window {r.model.window}, hop {r.model.hop}")

    def build_model(self) -> nn.Module:
        """A fresh network of the recipe for the run's data, checked against a window (and the
        track features), with the pre-trained encoder loaded where the recipe names one. The one
        place a run's model is made: whatever starts it from other weights belongs here."""
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
            **self.optimisation.state_dict(),  # "optimizer", "optimizer_stage"
            "sampler_rng": self.sampler_rng.bit_generator.state,
            "augment_rng": self.augmenter.rng.bit_generator.state,
            "loader_rng": self.loader_generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else [],
            "numpy_rng": numpy_state(),
            "history": self.history,
            **self.stopping.state_dict(),  # "best", "bad_epochs"
            "plateau": self.plateau.state_dict(),
            "stopped_early": self.stopped_early,
            "train_seconds": self.train_seconds,
            "swa_model": None if self.swa_model is None else self.swa_model.state_dict(),
            "swa_epochs": self.swa_epochs,
            "tag_best": self.per_tag.state_dict(),
            "tags": self.data.tags,
            "recipe": self.recipe.to_dict(),
        }

    def _load_checkpoint(self) -> None:
        path = self.run_dir / CHECKPOINT
        state = torch.load(path, map_location="cpu", weights_only=True)
        if state.get("format") != _CHECKPOINT_FORMAT:
            raise ConfigError(f"{path} has checkpoint format {state.get('format')}, this "
                              f"streamtag reads {_CHECKPOINT_FORMAT}")
        # Read back through the recipe, so that keys recipes gained since the run was made
        # (model.init, ...) take their defaults and compare equal.
        old = Recipe.from_dict(state["recipe"]).to_dict()
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
        self.optimisation.load_state_dict(state)
        self.sampler_rng.bit_generator.state = state["sampler_rng"]
        self.augmenter.rng.bit_generator.state = state["augment_rng"]
        self.loader_generator.set_state(state["loader_rng"])
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"] and self.device.type == "cuda":
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        set_numpy_state(state["numpy_rng"])
        self.history = list(state["history"])
        self.stopping.load_state_dict(state)
        self.plateau.load_state_dict(state["plateau"])
        self.stopped_early = bool(state["stopped_early"])
        self.train_seconds = float(state["train_seconds"])
        if self.swa_model is not None and state.get("swa_model") is not None:
            self.swa_model.load_state_dict(state["swa_model"])
            self.swa_epochs = list(state["swa_epochs"])
        elif self.swa_model is not None and self.epoch >= self.recipe.train.swa_start:
            raise ConfigError(f"cannot resume {self.run_dir} with train.swa: the run did not "
                              f"average weights, and epoch {self.recipe.train.swa_start} "
                              "(train.swa_start) is already past")
        self.per_tag.load_state_dict(state.get("tag_best"))
        self.log(f"resumed after epoch {self.epoch}")

    def save_checkpoint(self) -> None:
        if self.dist.main:
            save_atomic(self._state(), self.run_dir / CHECKPOINT)

    def load_best(self) -> int:
        """Puts the best epoch's weights into ``model``; returns that epoch (1-based)."""
        path = self.run_dir / BEST
        if not path.is_file():
            return self.epoch
        state = torch.load(path, map_location="cpu", weights_only=True)
        self.model.load_state_dict(state["model"])
        return int(state["epoch"])

    # -- training ----------------------------------------------------------------------------

    @property
    def best(self) -> dict[str, Any]:
        """The best epoch by ``train.early_stopping``: ``{"metric", "value", "epoch"}``."""
        return self.stopping.best

    @property
    def bad_epochs(self) -> int:
        return self.stopping.bad_epochs

    @property
    def tag_best(self) -> dict[str, list[Any]]:
        """Per-tag early stopping: each tag's lowest validation ``loss`` and its ``epoch``."""
        return self.per_tag.state_dict()

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return self.optimisation.optimizer

    @property
    def stage(self) -> str:
        return self.optimisation.stage

    def fit(self) -> None:
        t = self.recipe.train
        with determinism(t.deterministic, self.device):
            if self.epoch >= t.epochs or self.stopped_early or self.stopping.should_stop:
                self.log(f"training already done ({self.epoch} epochs)")
                return
            while self.epoch < t.epochs:
                self._epoch()
                if self.stopping.should_stop:
                    self.stopped_early = True
                    self.save_checkpoint()
                    self.log(f"early stopping: no {t.early_stopping} improvement for "
                             f"{t.patience} epochs; best epoch {self.best['epoch']}")
                    break

    def _loss(self, x: torch.Tensor, y: torch.Tensor,
              features: torch.Tensor | None = None) -> torch.Tensor:
        output = self.forward_module(x) if features is None else self.forward_module(x, features)
        if self.two_heads:
            return training_loss(output, y, "two_head_bce")
        t = self.recipe.train
        return training_loss(output, y, t.loss, thresholds=self.data.thresholds,
                             temperature=t.temperature)

    def _epoch(self) -> None:
        e = self.epoch  # 0-based index of the epoch about to run
        started = time.perf_counter()
        result = run_epoch(self.model, self.optimisation, self.data, self.recipe, e,
                           loss=lambda batch: self._loss(*batch), sampler_rng=self.sampler_rng,
                           loader_generator=self.loader_generator, device=self.device,
                           augmenter=self.augmenter, plateau_scale=self.plateau.scale,
                           dist=self.dist, bf16=self.bf16, log=self.log,
                           in_training_mode=lambda model: init_from.freeze_for_epoch(
                               model, self.head, self.recipe.model, e))
        validation = self.validate()
        self.epoch = e + 1
        self.train_seconds += time.perf_counter() - started
        self._after_epoch(result.lr, result.train_loss, validation,
                          time.perf_counter() - started)

    def validate(self) -> dict[str, Any]:
        """Validation loss and macro AUCs, and ``tag_loss``: each tag's loss (a list)."""
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
        better = self.stopping.update(value, self.epoch)
        if better and self.dist.main:
            save_atomic({"epoch": self.epoch, "model": self.model.state_dict(),
                         "metric": metric, "value": value}, self.run_dir / BEST)
        self.plateau.update(value)
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
        save_atomic({"epoch": self.epoch, "epochs": list(self.swa_epochs),
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
        improved = self.per_tag.update(tag_loss, self.epoch)
        if not self.dist.main:
            return
        folder = self.run_dir / PER_TAG_DIR
        folder.mkdir(exist_ok=True)
        if improved:
            save_atomic({"epoch": self.epoch, "model": self.model.state_dict()},
                        folder / f"epoch-{self.epoch}.pt")
        needed = {f"epoch-{e}.pt" for e in self.per_tag.epoch if e is not None}
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
            WindowDataset(self.data, "train", items, r.model.window),
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
