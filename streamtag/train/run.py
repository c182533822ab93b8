"""``train(recipe, run_dir)``: a whole training run, from the recipe to the model file — the
training run (``loop.TrainingRun``) and then its export (``export.export_run``)."""

from __future__ import annotations

import os

import torch

from streamtag.train.export import RunResult, export_run
from streamtag.train.loop import LOG_FILE, TrainingRun
from streamtag.train.recipe import Recipe
from streamtag.train.runtime import no_folder_left_if_refused

__all__ = ["RunResult", "train"]


def train(recipe: Recipe, run_dir: str | os.PathLike, *, resume: bool = False,
          echo: bool = True) -> RunResult | None:
    """Trains ``recipe`` in ``run_dir`` (or continues there, ``resume=True``), then exports:
    thresholds, test metrics, plots and ``model.pt`` (``streamtag.train.export``). Under
    ``torchrun`` every process trains and rank 0 exports; the others return None."""
    with no_folder_left_if_refused(run_dir, LOG_FILE):
        return _train(recipe, run_dir, resume, echo)


def _train(recipe: Recipe, run_dir: str | os.PathLike, resume: bool,
           echo: bool) -> RunResult | None:
    run = TrainingRun(recipe, run_dir, resume=resume, echo=echo)
    try:
        run.setup()
        run.fit()
        return export_run(run) if run.dist.main else None
    finally:
        if run.dist.active and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
