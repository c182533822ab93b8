"""A run folder written by an earlier trainer (``tests/data/resume_run``, made by
``tests/data/make_resume_run.py`` before the trainer's restructure) resumes with today's code:
checkpoints and run folders stay readable across versions."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from streamtag.model import modelfile
from streamtag.train.loop import CHECKPOINT
from streamtag.train.recipe import load_recipe
from streamtag.train.run import train
from streamtag.train.runtime import RECIPE_FILE

STORED = Path(__file__).resolve().parents[1] / "data" / "resume_run"

# TorchScript is how streamtag ships models; torch >= 2.9 marks torch.jit deprecated.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:torch.jit")


def test_a_stored_run_resumes_for_one_more_epoch(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(STORED, run_dir)
    stored = torch.load(run_dir / CHECKPOINT, map_location="cpu", weights_only=True)
    assert stored["epoch"] == 2
    stored_log = (run_dir / "train.log").read_text(encoding="utf-8")

    # The stored recipe names a relative cache folder; the synthetic data is made again there
    # from its seed (only [train] may change on a resume).
    recipe = load_recipe(run_dir / RECIPE_FILE,
                         ["train.epochs=3", f"train.cache_dir={tmp_path / 'cache'}"])
    result = train(recipe, run_dir, resume=True, echo=False)

    assert result is not None and result.epochs == 3
    state = torch.load(run_dir / CHECKPOINT, map_location="cpu", weights_only=True)
    assert state["epoch"] == 3 and len(state["history"]) == 3
    assert state["history"][:2] == stored["history"]  # the earlier epochs are kept as they were
    assert [h["optimizer"] for h in state["history"]] == ["adam", "adam", "sgd"]
    assert state["swa_epochs"] == [1, 2, 3]
    assert state["tags"] == stored["tags"]

    log = (run_dir / "train.log").read_text(encoding="utf-8")
    assert log.startswith(stored_log)
    added = log[len(stored_log):].splitlines()
    assert "resumed after epoch 2" in added
    assert "switching to SGD with Nesterov momentum at epoch 3" in added
    assert [line.split()[1] for line in log.splitlines() if line.startswith("epoch ")] == [
        "1/2", "2/2", "3/3"]
    assert sorted(p.name for p in (run_dir / "swa").iterdir()) == ["average-3.pt"]

    loaded = modelfile.load(result.model_path, device="cpu")
    assert list(loaded.tags) == stored["tags"]
    assert loaded.manifest.options["export"] == "snapshots"
    assert loaded.manifest.options["epochs_trained"] == 3
    x = torch.zeros(2, 32, 48)
    with torch.no_grad():
        p = loaded(x)
    assert p.shape == (2, len(stored["tags"])) and torch.isfinite(p).all()
