"""The trainer end to end on the synthetic benchmark (CPU), resuming, augmentations, schedules
and early stopping."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from support.helpers import cp_resnet_recipe

from streamtag.commands.train import main
from streamtag.errors import ConfigError
from streamtag.frontend import LogMelOptions, compute_logmel
from streamtag.model import modelfile
from streamtag.train import plots
from streamtag.train.augment import (
    Augmenter,
    apply_gain,
    mixup,
    pad_to,
    silence_value,
    spec_augment,
)
from streamtag.train.loop import Heads as _Heads
from streamtag.train.loop import TrainingRun
from streamtag.train.optim import lr_for_epoch, optimizer_stage, warmup_linear_lr
from streamtag.train.recipe import AugmentConfig, TrainConfig, parse_recipe
from streamtag.train.windows import evaluation_starts, training_windows


# 100 clips of 4 s (70 train, 15 validation, 15 test), 64 mels at 31 frames per second, 2 s
# windows; a CP-ResNet with 8 base channels learns the acoustic tags in a few epochs.
@pytest.fixture(scope="module")
def tiny_recipe_file(tmp_path_factory: pytest.TempPathFactory, synthetic_root) -> Path:
    folder = tmp_path_factory.mktemp("trainer")
    path = folder / "tiny.toml"
    path.write_text(cp_resnet_recipe("tiny", synthetic_root, folder / "cache", n_clips=100,
                                     clip_seconds=4.0, n_mels=64, window=64, base_channels=8,
                                     batch_size=16, windows_per_track=4), encoding="utf-8")
    return path


def _recipe(path: Path, *overrides: str):
    return parse_recipe(path.read_text(encoding="utf-8"), overrides, name="tiny")


# --------------------------------------------------------------------------------------------
# End to end


def test_train_writes_a_servable_model(tiny_recipe_file: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    assert main(["train", str(tiny_recipe_file), "--out", str(run)]) == 0
    out = capsys.readouterr().out
    assert "epoch 4/4" in out

    for name in ("recipe.toml", "train.log", "checkpoint.pt", "best.pt", "metrics.json",
                 "predictions.npz", "model.pt"):
        assert (run / name).is_file(), name
    if plots.available():
        for name in ("curves.png", "per_tag_auc.png", "pr_curves.png"):
            assert (run / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    log = (run / "train.log").read_text(encoding="utf-8")
    assert sum(line.startswith("epoch ") for line in log.splitlines()) == 4

    metrics = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    test = metrics["test"]
    assert test["roc_auc_macro"] > 0.75, test["roc_auc_macro"]
    assert test["n_examples"] == 15
    assert len(test["per_tag"]) == 13
    assert len(metrics["history"]) == 4

    # The resolved recipe reproduces the run's recipe.
    resolved = parse_recipe((run / "recipe.toml").read_text(encoding="utf-8"))
    assert resolved == _recipe(tiny_recipe_file)

    loaded = modelfile.load(run / "model.pt", device="cpu")
    recipe = _recipe(tiny_recipe_file)
    assert loaded.frontend_options == recipe.frontend_options()
    assert loaded.input_kind == "logmel" and (loaded.window, loaded.hop) == (64, 32)
    assert len(loaded.thresholds) == len(loaded.tags) == 13
    assert list(loaded.thresholds) == pytest.approx(list(metrics["thresholds"].values()))
    assert loaded.manifest.architecture == {"name": "cp_resnet", "base_channels": 8}
    assert loaded.manifest.metrics["roc_auc_macro"] == pytest.approx(test["roc_auc_macro"])
    assert loaded.manifest.recipe["train"]["epochs"] == 4

    # streamtag eval on the model file reproduces the test metrics of the run.
    scores = tmp_path / "eval.json"
    assert main(["eval", str(run / "model.pt"), str(tiny_recipe_file), "--json",
                 str(scores)]) == 0
    evaluated = json.loads(scores.read_text(encoding="utf-8"))
    assert evaluated["roc_auc_macro"] == pytest.approx(test["roc_auc_macro"], abs=1e-6)
    assert evaluated["f1_macro"] == pytest.approx(test["f1_macro"], abs=1e-6)
    # --json - prints the same metrics alone on standard output, for a pipe
    capsys.readouterr()
    assert main(["eval", str(run / "model.pt"), str(tiny_recipe_file), "--json", "-"]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("{"), (captured.out[:300], captured.err[:300])
    assert json.loads(captured.out) == evaluated


def test_resume_continues_exactly(tiny_recipe_file: Path, tmp_path: Path) -> None:
    # Every source of randomness on: windows, dropout-free net, mixup, masks, gain.
    settings = ("model.options.base_channels=4", "train.windows_per_track=1",
                "augment.mixup_alpha=0.4", "augment.freq_masks=1", "augment.freq_width=8",
                "augment.time_masks=1", "augment.time_width=8", "augment.gain_db=6.0")
    straight = TrainingRun(_recipe(tiny_recipe_file, *settings, "train.epochs=2"),
                           tmp_path / "straight", echo=False)
    straight.setup()
    straight.fit()

    first = TrainingRun(_recipe(tiny_recipe_file, *settings, "train.epochs=1"),
                        tmp_path / "stopped", echo=False)
    first.setup()
    first.fit()
    assert first.epoch == 1
    # The command line resumes from the run folder's own recipe with a new epoch count.
    assert main(["train", "--resume", str(tmp_path / "stopped"), "--set",
                 "train.epochs=2"]) == 0
    resumed = torch.load(tmp_path / "stopped" / "checkpoint.pt", weights_only=True)
    assert resumed["epoch"] == straight.epoch == 2
    assert [h["train_loss"] for h in resumed["history"]] == [
        h["train_loss"] for h in straight.history]
    expected = straight.model.state_dict()
    for name, tensor in resumed["model"].items():
        assert torch.allclose(tensor.float(), expected[name].cpu().float(), atol=1e-6,
                              rtol=0), name

    with pytest.raises(ConfigError, match="already holds a run"):
        TrainingRun(_recipe(tiny_recipe_file, *settings), tmp_path / "stopped", echo=False)
    with pytest.raises(ConfigError, match=r"\[model\] differs"):
        run = TrainingRun(_recipe(tiny_recipe_file, "model.options.base_channels=8"),
                          tmp_path / "stopped", resume=True, echo=False)
        run.setup()


def test_early_stopping_after_patience_and_plateau_schedule(
        tiny_recipe_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    values = iter([0.60, 0.70, 0.65, 0.66, 0.90, 0.95])

    def validate(self: TrainingRun) -> dict[str, object]:
        return {"loss": 0.5, "roc_auc_macro": next(values), "pr_auc_macro": 0.5,
                "tag_loss": [0.5] * len(self.data.tags)}

    monkeypatch.setattr(TrainingRun, "validate", validate)
    recipe = _recipe(tiny_recipe_file, "model.options.base_channels=4",
                     "train.windows_per_track=1", "train.epochs=10", "train.patience=2",
                     "train.schedule=plateau", "train.plateau_patience=1",
                     "train.plateau_factor=0.5", "train.lr=1e-3")
    run = TrainingRun(recipe, tmp_path / "run", echo=False)
    run.setup()
    run.fit()
    # Best at epoch 2; epochs 3 and 4 do not improve: patience 2 stops after epoch 4.
    assert run.epoch == 4 and run.stopped_early
    assert run.best["epoch"] == 2 and run.best["value"] == 0.70
    assert [h["best"] for h in run.history] == [True, True, False, False]
    # The plateau halves the rate after each epoch without improvement (patience 1).
    assert [h["lr"] for h in run.history] == pytest.approx([1e-3, 1e-3, 1e-3, 5e-4])
    assert torch.load(tmp_path / "run" / "best.pt", weights_only=True)["epoch"] == 2


@pytest.mark.slow
def test_waveform_model_trains_on_cached_audio(tiny_recipe_file: Path, tmp_path: Path) -> None:
    # SampleCNN takes 59,049 samples (3.7 s of the 4 s clips): the cache holds decoded audio.
    recipe = _recipe(tiny_recipe_file, "model.architecture=samplecnn", "model.window=59049",
                     "model.hop=16000", "model.options={}", "train.epochs=1",
                     "train.windows_per_track=1", "train.workers=2", "augment.gain_db=6.0")
    run = TrainingRun(recipe, tmp_path / "run", echo=False)
    run.setup()
    assert type(run.data.store).__name__ == "AudioCache"
    assert run.data.window(run.data.tracks["test"][0].id, 59049, 0, 64000).shape == (59049,)
    run.fit()
    loaded_scores = run.predict("test")
    assert loaded_scores.shape == (15, 13) and np.isfinite(loaded_scores).all()


def test_mobilenet_attn_trains_with_the_two_head_loss() -> None:
    from streamtag import nets

    run = TrainingRun.__new__(TrainingRun)  # only the loss: no data, no run folder
    run.two_heads = True
    run.model = nets.build("mobilenet_attn", 3, segment_frames=65, n_segments=2,
                           intermediate=64).eval()
    run.forward_module = _Heads(run.model)  # what setup() gives DDP to wrap
    x, y = torch.randn(2, 65, 130), torch.tensor([[1.0, 0, 1], [0, 1, 0]])
    with torch.no_grad():
        expected = nets.two_head_loss(run.model.forward_heads(x), y)
        assert torch.allclose(run._loss(x, y), expected)
        plain = torch.nn.functional.binary_cross_entropy_with_logits(run.model(x), y)
    assert not torch.allclose(expected, plain)


def test_each_data_kind_reaches_its_adapter(tmp_path: Path) -> None:
    from streamtag.audio.files import write_audio
    from streamtag.train.data import prepare_data

    tone = 0.1 * np.sin(np.arange(16000) * 0.05).astype(np.float32)
    splits = {"train": "0", "validation": "c", "test": "d"}
    for split, folder in splits.items():
        (tmp_path / folder).mkdir()
        write_audio(tmp_path / folder / f"{split}.wav", tone, 16000)
    base = ["model.window=50", "model.hop=25", f"train.cache_dir={tmp_path / 'cache'}",
            "train.workers=1", "frontend.n_mels=64"]

    # Folder + CSV
    (tmp_path / "tags.csv").write_text("path,tags,split\n" + "".join(
        f"{folder}/{split}.wav,a;b,{split}\n" for split, folder in splits.items()))
    data = prepare_data(_recipe_text(*base, "data.kind=folder_csv", f"data.root={tmp_path}"),
                        log=lambda _: None)
    assert data.tags == ["a", "b"] and data.lengths["test"].tolist() == [63]
    # 1-s tracks for a window of 100 frames (1.6 s at this frontend's 16-ms hop): said
    said: list[str] = []
    prepare_data(_recipe_text(*base[1:], "model.window=100", "data.kind=folder_csv",
                              f"data.root={tmp_path}", "augment.wrap_pad=false"),
                 log=said.append)
    notes = [line for line in said if "shorter than the model's window" in line]
    assert notes == ["note: 3 of 3 tracks are shorter than the model's window (100 frames, "
                     "1.60 s; the shortest 1.01 s): each window of them is the track padded "
                     "with silence to fill it; use longer clips (for the synthetic data, "
                     "data.synthetic.clip_seconds) or a shorter model.window"], said
    assert not [line for line in said if "shorter" in line and "50 frames" in line]

    # MagnaTagATune: tab-separated annotations, the folder split.
    (tmp_path / "annotations_final.csv").write_text("clip_id\ta\tb\tmp3_path\n" + "".join(
        f"{i}\t1\t{i % 2}\t{folder}/{split}.wav\n"
        for i, (split, folder) in enumerate(splits.items())), encoding="utf-8")
    data = prepare_data(_recipe_text(*base, "data.kind=mtat", f"data.root={tmp_path}",
                                     "data.top_n=2"), log=lambda _: None)
    assert data.tags == ["a", "b"] and len(data.tracks["validation"]) == 1
    assert data.labels["validation"].tolist() == [[1.0, 1.0]]

    # MTG-Jamendo: split files and precomputed (96, T) mels, read as they are.
    header = "TRACK_ID\tARTIST_ID\tALBUM_ID\tPATH\tDURATION\tTAGS\n"
    (tmp_path / "splits" / "split-0").mkdir(parents=True)
    (tmp_path / "mels" / "00").mkdir(parents=True)
    for i, split in enumerate(splits):
        (tmp_path / "splits" / "split-0" / f"autotagging_moodtheme-{split}.tsv").write_text(
            header + f"track_{i:07d}\tartist_1\talbum_1\t00/{i}.mp3\t30.0\t"
                     f"mood/theme---happy\tmood/theme---{'sad' if i else 'calm'}\n")
        np.save(tmp_path / "mels" / "00" / f"{i}.npy", np.full((96, 120), float(i), np.float32))
    data = prepare_data(_recipe_text("model.window=100", "model.hop=50", "data.mel_root=mels",
                                     "data.kind=mtg_jamendo", f"data.root={tmp_path}",
                                     f"train.cache_dir={tmp_path / 'cache'}",
                                     "frontend.preset=mtg_jamendo"), log=lambda _: None)
    assert data.tags == ["calm", "happy", "sad"]
    assert data.lengths["train"].tolist() == [120]
    assert data.window("track_0000002", 100, 0, 120).shape == (96, 100)


def _recipe_text(*overrides: str):
    return parse_recipe('[model]\narchitecture = "mel_cnn"\n', overrides)


# --------------------------------------------------------------------------------------------
# Windows


def test_evaluation_windows_cover_the_track_evenly() -> None:
    starts = evaluation_starts(1000, 100, 30)
    assert starts[0] == 0 and starts[-1] == 900
    assert np.diff(starts).max() <= 30 and np.diff(starts).min() >= 29
    assert list(evaluation_starts(50, 100, 30)) == [0]
    assert list(evaluation_starts(100, 100, 30)) == [0]
    assert list(evaluation_starts(1000, 100, 30, mode="centre")) == [450]


def test_training_windows_per_track_and_centre() -> None:
    lengths = np.array([100, 300, 50])
    items = training_windows(lengths, 80, 5, "random", np.random.default_rng(0))
    assert sorted(np.bincount(items[:, 0])) == [5, 5, 5]
    for track, start in items:
        assert 0 <= start <= max(lengths[track] - 80, 0)
    centre = training_windows(lengths, 80, 1, "centre", np.random.default_rng(0))
    assert sorted(map(tuple, centre)) == [(0, 10), (1, 110), (2, 0)]


def test_pad_to_wraps_or_pads_with_silence() -> None:
    frames = np.arange(6, dtype=np.float32).reshape(3, 2)
    assert pad_to(frames, 7, wrap=True, fill=-1)[:, 0].tolist() == [0, 2, 4, 0, 2, 4, 0]
    padded = pad_to(frames, 5, wrap=False, fill=-100.0)
    assert padded[3:].tolist() == [[-100, -100], [-100, -100]]
    assert pad_to(frames, 2, wrap=False, fill=0) is frames
    options = LogMelOptions.preset("mtg_jamendo")
    assert silence_value(options) == pytest.approx(compute_logmel(
        np.zeros(4096, np.float32), options).min())


# --------------------------------------------------------------------------------------------
# Augmentations


def test_mixup_is_a_convex_combination() -> None:
    rng = np.random.default_rng(1)
    x = torch.randn(8, 4, 10)
    y = torch.randint(0, 2, (8, 3)).float()
    mixed_x, mixed_y, lam, perm = mixup(x, y, 0.4, np.random.default_rng(1))
    assert sorted(perm) == list(range(8)) and ((lam >= 0) & (lam <= 1)).all()
    for i in range(8):
        assert torch.allclose(mixed_x[i], lam[i] * x[i] + (1 - lam[i]) * x[perm[i]], atol=1e-6)
        assert torch.allclose(mixed_y[i], lam[i] * y[i] + (1 - lam[i]) * y[perm[i]], atol=1e-6)
    _, _, lam, _ = mixup(x, y, 0.4, rng, use_max=True)
    assert (lam >= 0.5).all()


def test_spec_augment_masks_bands_and_spans_with_the_mean() -> None:
    x = torch.randn(16, 20, 50) + 3.0
    out = spec_augment(x, np.random.default_rng(0), 2, 5, 1, 10, )
    changed = out != x
    mean = x.mean(dim=(1, 2))
    assert changed.any()
    for b in range(16):
        assert torch.allclose(out[b][changed[b]], mean[b].expand(int(changed[b].sum())))
        rows = changed[b].all(dim=1)  # masked mel bands
        columns = changed[b].all(dim=0)  # masked frames
        # Every changed value lies in a masked band or span; at most 2 x 5 bands, 10 frames.
        assert bool((changed[b] == (rows[:, None] | columns[None, :])).all())
        assert int(rows.sum()) <= 10 and int(columns.sum()) <= 10
    same = spec_augment(x, np.random.default_rng(0), 0, 0, 0, 0)
    assert torch.equal(same, x)


@pytest.mark.parametrize("log", ["db", "log1p", "ln"])
def test_gain_is_applied_in_the_frontend_log_domain(log: str) -> None:
    options = LogMelOptions.preset("musicnn").replace(log=log)
    audio = 0.1 * np.random.default_rng(0).standard_normal(16000).astype(np.float32)
    frames = compute_logmel(audio, options)
    for gain_db in (-9.0, 6.0):
        want = compute_logmel(audio * np.float32(10 ** (gain_db / 20)), options)
        got = apply_gain(torch.from_numpy(frames.T[None]), np.array([gain_db]), options)
        assert np.allclose(got[0].numpy().T, want, atol=1e-3, rtol=1e-4), (log, gain_db)
    # A dB-domain shift is exact where log1p is not additive: check the two differ.
    if log == "log1p":
        shifted = frames + 6.0 / 10
        assert not np.allclose(shifted, compute_logmel(audio * np.float32(10 ** 0.3), options),
                               atol=1e-2)


def test_gain_on_waveforms_and_switches() -> None:
    x = torch.ones(2, 5)
    assert torch.allclose(apply_gain(x, np.array([20.0, -20.0]), None)[:, 0],
                          torch.tensor([10.0, 0.1]))
    silent = torch.full((1, 4, 3), silence_value(LogMelOptions.preset("librosa")))
    assert torch.equal(apply_gain(silent, np.array([12.0]), LogMelOptions.preset("librosa")),
                       silent)  # silence stays silence
    off = Augmenter(AugmentConfig(), LogMelOptions.preset("musicnn"), np.random.default_rng(0))
    assert not off.active
    on = Augmenter(AugmentConfig(gain_db=6.0), LogMelOptions.preset("musicnn"),
                   np.random.default_rng(0))
    batch = torch.rand(4, 96, 20)
    out, labels, features = on(batch, torch.ones(4, 2))
    assert on.active and not torch.equal(out, batch) and torch.equal(labels, torch.ones(4, 2))
    assert features is None


# --------------------------------------------------------------------------------------------
# Schedules


def test_warmup_linear_schedule() -> None:
    t = TrainConfig(lr=0.3, schedule="warmup_linear", warmup_epochs=2, constant_epochs=2,
                    decay_epochs=2, final_lr=0.1)
    lrs = [lr_for_epoch(t, e) for e in range(8)]
    assert lrs == pytest.approx([0.1, 0.2, 0.3, 0.3, 0.2, 0.1, 0.1, 0.1])
    assert [warmup_linear_lr(t, e) for e in range(8)] == pytest.approx(lrs)
    no_decay = TrainConfig(lr=0.3, schedule="warmup_linear", warmup_epochs=1)
    assert [lr_for_epoch(no_decay, e) for e in range(3)] == pytest.approx([0.15, 0.3, 0.3])


def test_adam_to_sgd_switch_and_constant_schedules() -> None:
    t = TrainConfig(optimizer="adam_sgd", lr=1e-4, sgd_lr=1e-3, sgd_epoch=3)
    assert [optimizer_stage(t, e) for e in range(5)] == ["adam"] * 3 + ["sgd"] * 2
    assert [lr_for_epoch(t, e) for e in range(5)] == pytest.approx([1e-4] * 3 + [1e-3] * 2)
    assert lr_for_epoch(TrainConfig(lr=0.01), 7) == 0.01
    plateau = TrainConfig(lr=1e-3, schedule="plateau", min_lr=1e-4)
    assert lr_for_epoch(plateau, 5, plateau_scale=0.25) == pytest.approx(2.5e-4)
    assert lr_for_epoch(plateau, 5, plateau_scale=0.01) == pytest.approx(1e-4)
    assert optimizer_stage(TrainConfig(optimizer="sgd"), 0) == "sgd"
    assert not math.isnan(lr_for_epoch(TrainConfig(schedule="warmup_linear"), 0))


def test_cli_reports_recipe_errors(tiny_recipe_file: Path, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", str(tiny_recipe_file), "--out", str(tmp_path / "r"), "--set",
                 "train.epoch=3"]) == 2
    assert "unknown key train.epoch" in capsys.readouterr().err
    assert main(["train", str(tmp_path / "missing.toml")]) == 2
    assert "not found" in capsys.readouterr().err
