"""Distributed data-parallel training: ``torchrun --nproc_per_node 2 -m streamtag train`` on the
CPU (gloo) gives what one process gives with the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from support.helpers import tiny_recipe

from streamtag.errors import ConfigError
from streamtag.train.loop import CHECKPOINT
from streamtag.train.recipe import parse_recipe
from streamtag.train.run import train

# 60 clips of 3 s: 42 training tracks × 4 windows = 168 windows = 21 global batches of 8, so
# that neither run has a partial batch. The LSTM tagger has neither batch norm nor dropout,
# and no augmentation is on: the two runs see the same gradients up to summation order.
RECIPE = dict(data={"n_clips": 60, "synthetic": {"clip_seconds": 3.0}},
              frontend={"n_mels": 32},
              model={"architecture": "lstm", "window": 48, "hop": 24},
              model_options={"units": 8, "filters": 8},
              train={"epochs": 1, "batch_size": 8, "windows_per_track": 4, "lr": 3e-3})


def _torchrun(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node", "2", "-m", "streamtag", *args]
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=300)


@pytest.mark.slow
def test_two_processes_equal_one_with_the_same_global_batch(tmp_path: Path,
                                                          synthetic_root) -> None:
    recipe_file = tmp_path / "ddp.toml"
    recipe_file.write_text(tiny_recipe("tiny-ddp", synthetic_root(60, 3.0), tmp_path / "cache",
                                       **RECIPE), encoding="utf-8")
    single = train(parse_recipe(recipe_file.read_text()), tmp_path / "single", echo=False)

    done = _torchrun("train", str(recipe_file), "--out", str(tmp_path / "ddp"), cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "2 processes (DDP)" in done.stdout
    assert done.stdout.count("streamtag train: ") == 1  # only rank 0 reports

    one = torch.load(tmp_path / "single" / CHECKPOINT, weights_only=True)
    two = torch.load(tmp_path / "ddp" / CHECKPOINT, weights_only=True)
    for name, value in one["model"].items():
        torch.testing.assert_close(two["model"][name], value, rtol=1e-4, atol=1e-5)
    history_one, history_two = one["history"][0], two["history"][0]
    assert history_two["train_loss"] == pytest.approx(history_one["train_loss"], rel=1e-5)
    for key in ("val_loss", "val_roc_auc_macro", "val_pr_auc_macro"):
        assert history_two[key] == pytest.approx(history_one[key], rel=1e-4, abs=1e-5), key

    # Only rank 0 wrote: one log line per epoch, one model file with the same test metrics.
    log = (tmp_path / "ddp" / "train.log").read_text(encoding="utf-8")
    assert sum(line.startswith("epoch 1/1") for line in log.splitlines()) == 1
    metrics = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    assert metrics["test"]["roc_auc_macro"] == pytest.approx(
        single.metrics["roc_auc_macro"], abs=1e-4)


def test_the_global_batch_must_split_evenly(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("RANK", "0")
    recipe = parse_recipe(tiny_recipe("tiny-ddp", tmp_path / "s", tmp_path / "c", **RECIPE))
    with pytest.raises(ConfigError, match=r"train.batch_size \(8\) is the global batch and must "
                                          r"be a multiple of the 3 processes"):
        train(recipe, tmp_path / "run", echo=False)
