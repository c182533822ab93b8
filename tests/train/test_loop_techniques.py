"""The papers' training techniques on the synthetic benchmark (CPU, tiny models): stochastic
weight averaging, snapshot averaging, multi-model averaging (``streamtag ensemble``) and
per-tag early stopping."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from support.helpers import cp_resnet_recipe, run_streamtag, tiny_model_file
from torch import nn

from streamtag.errors import ConfigError
from streamtag.model import modelfile
from streamtag.train import combine
from streamtag.train.export import export_run
from streamtag.train.loop import PER_TAG_DIR, SWA_DIR, TrainingRun
from streamtag.train.optim import best_epoch_per_tag
from streamtag.train.recipe import parse_recipe
from streamtag.train.windows import training_windows


# 60 clips of 3 s (42 train, 9 validation, 9 test), 32 mels, 1.5 s windows; a CP-ResNet with 4
# base channels (batch norm in every block) trains an epoch in about a second.
@pytest.fixture(scope="module")
def recipe_text(tmp_path_factory: pytest.TempPathFactory, synthetic_root) -> str:
    return cp_resnet_recipe("tiny-techniques", synthetic_root,
                            tmp_path_factory.mktemp("techniques") / "cache", n_clips=60,
                            clip_seconds=3.0, n_mels=32, window=48, base_channels=4,
                            batch_size=8, windows_per_track=2)


def _run(text: str, run_dir: Path, *overrides: str) -> TrainingRun:
    run = TrainingRun(parse_recipe(text, overrides), run_dir, echo=False)
    run.setup()
    return run


def _first_batch_norm(network: nn.Module) -> nn.BatchNorm2d:
    return next(m for m in network.modules() if isinstance(m, nn.BatchNorm2d))


def _windows(run: TrainingRun, split: str) -> torch.Tensor:
    r = run.recipe
    rng = np.random.default_rng(5)
    items = training_windows(run.data.lengths[split], r.model.window, 1, "centre", rng)
    tracks = run.data.tracks[split]
    return torch.from_numpy(np.stack([
        run.data.window(tracks[i].id, r.model.window, int(start), int(run.data.lengths[split][i]))
        for i, start in items]))


def _assert_file_serves_the_exported_network(run: TrainingRun, path: Path, export: str) -> None:
    """The model file says how it was made and gives the probabilities of ``final_model``."""
    loaded = modelfile.load(path, device="cpu")
    assert loaded.manifest.options["export"] == export
    network, _ = run.final_model()
    x = _windows(run, "test")
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), torch.sigmoid(network(x)), rtol=0, atol=1e-5)


# --------------------------------------------------------------------------------------------
# Stochastic weight averaging


def test_swa_averages_the_chosen_epochs_and_recomputes_batch_norm(recipe_text: str,
                                                                  tmp_path: Path) -> None:
    run = _run(recipe_text, tmp_path / "run", "train.swa=true", "train.swa_start=2",
               "train.swa_every=2")
    weights = []
    for _ in range(4):
        run._epoch()
        weights.append(copy.deepcopy(run.model.state_dict()))
    assert run.swa_epochs == [2, 4]

    network, made = run.final_model()
    assert made["export"] == "swa" and made["swa_epochs"] == [2, 4]
    averaged = dict(network.named_parameters())
    for name, _ in run.model.named_parameters():
        expected = (weights[1][name] + weights[3][name]) / 2
        torch.testing.assert_close(averaged[name], expected, rtol=1e-5, atol=1e-6)
        assert not torch.equal(averaged[name], weights[3][name]), name  # not the last epoch

    # The first batch norm's statistics are those of its input over the training windows
    # under the averaged weights (recomputed as update_bn does: the mean of batch means).
    norm = _first_batch_norm(network)
    stale = _first_batch_norm(run.swa_model.module)
    assert not torch.allclose(norm.running_mean, stale.running_mean)
    inputs: list[torch.Tensor] = []
    hook = norm.register_forward_hook(lambda m, args, out: inputs.append(args[0].detach()))
    r = run.recipe
    items = training_windows(run.data.lengths["train"], r.model.window, r.train.windows_per_track,
                             r.train.window_position, np.random.default_rng([r.train.seed, 3]))
    tracks = run.data.tracks["train"]
    batch_means = []
    with torch.no_grad():
        for begin in range(0, len(items), r.train.batch_size):
            x = torch.from_numpy(np.stack([
                run.data.window(tracks[i].id, r.model.window, int(start),
                                int(run.data.lengths["train"][i]))
                for i, start in items[begin:begin + r.train.batch_size]]))
            network(x)
            batch_means.append(inputs[-1].mean(dim=(0, 2, 3)))
    hook.remove()
    torch.testing.assert_close(norm.running_mean, torch.stack(batch_means).mean(0),
                               rtol=1e-4, atol=1e-5)


def test_swa_model_is_exported_and_resumes(recipe_text: str, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run = _run(recipe_text, run_dir, "train.swa=true", "train.swa_start=2", "train.swa_every=1",
               "train.epochs=2")
    run.fit()
    resumed = TrainingRun(parse_recipe(recipe_text, ["train.swa=true", "train.swa_start=2",
                                                     "train.swa_every=1", "train.epochs=3"]),
                          run_dir, resume=True, echo=False)
    resumed.setup()
    assert resumed.swa_epochs == [2]
    resumed.fit()
    assert resumed.swa_epochs == [2, 3]
    result = export_run(resumed)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["exported"]["export"] == "swa"
    _assert_file_serves_the_exported_network(resumed, result.model_path, "swa")


# --------------------------------------------------------------------------------------------
# Snapshot averaging


@pytest.mark.slow
def test_snapshot_average_is_one_file_giving_the_mean_of_its_members(recipe_text: str,
                                                                     tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run = _run(recipe_text, run_dir, "train.swa=true", "train.swa_start=1", "train.swa_every=1",
               "train.snapshots=3")
    run.fit()
    # The best epoch's model and the last two SWA averages: three members.
    assert sorted(p.name for p in (run_dir / SWA_DIR).iterdir()) == ["average-3.pt",
                                                                     "average-4.pt"]
    result = export_run(run)
    network, made = run.final_model()
    assert made["export"] == "snapshots" and made["snapshot_epochs"] == [3, 4]
    assert isinstance(network, combine.MeanOfProbabilities) and len(network.members) == 3
    best = torch.load(run_dir / "best.pt", weights_only=True)["model"]
    for name, value in best.items():
        torch.testing.assert_close(network.members[0].state_dict()[name], value)
    average = torch.load(run_dir / SWA_DIR / "average-4.pt", weights_only=True)["model"]
    for name, value in network.members[2].named_parameters():
        torch.testing.assert_close(value, average[name])

    loaded = modelfile.load(result.model_path, device="cpu")
    x = _windows(run, "test")
    with torch.no_grad():
        expected = torch.stack([torch.sigmoid(m(x)) for m in network.members]).mean(0)
        single = torch.sigmoid(network.members[0](x))
        got = loaded(x)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    assert (got - single).abs().max() > 1e-4  # the average, not one member


def test_technique_options_are_checked(recipe_text: str) -> None:
    with pytest.raises(ConfigError, match=r"train\.snapshots averages SWA models"):
        parse_recipe(recipe_text, ["train.snapshots=5"])
    with pytest.raises(ConfigError, match=r"train\.snapshots must be 0 \(off\) or >= 2"):
        parse_recipe(recipe_text, ["train.swa=true", "train.snapshots=1"])
    with pytest.raises(ConfigError, match=r"train\.swa_start \(9\) is after the last epoch"):
        parse_recipe(recipe_text, ["train.swa=true", "train.swa_start=9"])
    with pytest.raises(ConfigError, match=r"train\.per_tag_best and train\.swa"):
        parse_recipe(recipe_text, ["train.swa=true", "train.per_tag_best=true"])
    with pytest.raises(ConfigError, match=r"train\.swa_every"):
        parse_recipe(recipe_text, ["train.swa_every=0"])


# --------------------------------------------------------------------------------------------
# Per-tag early stopping


def test_best_epoch_per_tag_of_a_constructed_table() -> None:
    losses = [[0.50, 0.90, 0.30, float("nan")],
              [0.40, 1.00, 0.30, 0.70],   # tag 2 ties epoch 1: epoch 1 stays
              [0.60, 0.80, 0.20, 0.70],
              [0.45, 0.85, 0.25, 0.65]]
    assert best_epoch_per_tag(losses) == [2, 3, 3, 4]


def test_per_tag_early_stopping_keeps_each_tags_epoch(recipe_text: str, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run = _run(recipe_text, run_dir, "train.per_tag_best=true", "train.epochs=3")
    n_tags = len(run.data.tags)
    # A constructed case through the trainer's own bookkeeping: three epochs of weights and
    # validation losses chosen so that tag 0 is best at epoch 2, tag 1 at epoch 3 and the
    # others at epoch 1 (tag 2 ties at epoch 3, which does not replace epoch 1).
    table = np.full((3, n_tags), 0.5)
    table[1:, :] = 0.6
    table[1, 0] = 0.1
    table[2, 1] = 0.1
    table[2, 2] = 0.5
    weights = []
    for e in range(3):
        with torch.no_grad():
            for p in run.model.parameters():
                p.add_(0.01 * torch.randn_like(p))
        weights.append(copy.deepcopy(run.model.state_dict()))
        run.epoch = e + 1
        run._keep_per_tag_best(table[e].tolist())
    expected = [2, 3] + [1] * (n_tags - 2)
    assert run.tag_best["epoch"] == expected == best_epoch_per_tag(table.tolist())
    assert sorted(p.name for p in (run_dir / PER_TAG_DIR).iterdir()) == [
        "epoch-1.pt", "epoch-2.pt", "epoch-3.pt"]

    network, made = run.final_model()
    assert made["export"] == "per_tag_best"
    assert list(made["tag_epochs"].values()) == expected
    x = _windows(run, "validation")
    reference = copy.deepcopy(run.model).eval()
    with torch.no_grad():
        got = network.eval()(x)
        for j, epoch in enumerate(expected):
            reference.load_state_dict(weights[epoch - 1])
            torch.testing.assert_close(got[:, j], reference(x)[:, j])

    # An epoch that no tag needs any more is deleted.
    run.epoch = 4
    run._keep_per_tag_best([0.05] * n_tags)
    assert [p.name for p in (run_dir / PER_TAG_DIR).iterdir()] == ["epoch-4.pt"]


@pytest.mark.slow
def test_per_tag_early_stopping_end_to_end(recipe_text: str, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run = _run(recipe_text, run_dir, "train.per_tag_best=true", "train.epochs=3")
    run.fit()
    result = export_run(run)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    losses = [h["val_tag_loss"] for h in metrics["history"]]
    expected = best_epoch_per_tag(losses)
    assert list(metrics["exported"]["tag_epochs"].values()) == expected
    _assert_file_serves_the_exported_network(run, result.model_path, "per_tag_best")


# --------------------------------------------------------------------------------------------
# Multi-model averaging: streamtag ensemble


def test_ensemble_command_writes_the_mean_of_its_members(tmp_path: Path) -> None:
    a = tiny_model_file(tmp_path / "a.pt", seed=1, name="a")
    b = tiny_model_file(tmp_path / "b.pt", seed=2, name="b")
    c = tiny_model_file(tmp_path / "c.pt", seed=3, name="c")
    out = tmp_path / "e.pt"
    done = run_streamtag("ensemble", str(a), str(b), str(c), "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert "mean of the probabilities of 3 models (a, b, c)" in done.stdout
    ensemble = modelfile.load(out, device="cpu")
    assert ensemble.manifest.architecture["name"] == "ensemble"
    members = [modelfile.load(p, device="cpu") for p in (a, b, c)]
    x = torch.randn(5, ensemble.frontend_options.n_mels, ensemble.window)
    with torch.no_grad():
        expected = torch.stack([m(x) for m in members]).mean(0)
        torch.testing.assert_close(ensemble(x), expected, rtol=0, atol=1e-6)


@pytest.mark.slow  # 5-6 s; the default run keeps the ensemble that is written
def test_ensemble_command_refuses_members_that_do_not_match(tmp_path: Path) -> None:
    a = tiny_model_file(tmp_path / "a.pt", seed=1)
    other = tiny_model_file(tmp_path / "other.pt", seed=2, tags=("x", "y", "z"))
    done = run_streamtag("ensemble", str(a), str(other), "--out", str(tmp_path / "e.pt"))
    assert done.returncode == 2
    assert "differ in tags" in done.stderr and "must share tags" in done.stderr
    assert not (tmp_path / "e.pt").exists()
    done = run_streamtag("ensemble", str(a), str(a), "--out", str(a))
    assert done.returncode == 2 and "is one of the members" in done.stderr
