"""VQ-VAE pre-training (``streamtag pretrain``) and the taggers that start from its encoder, on a
tiny synthetic benchmark; the ``audio_folder`` dataset adapter."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from support.helpers import tiny_recipe

from streamtag import cli, nets
from streamtag.errors import ConfigError
from streamtag.train.data import prepare_data
from streamtag.train.datasets import load_audio_folder
from streamtag.train.encoder_file import (
    FILE_FORMAT,
    load_pretrained_encoder,
    read_pretrained_encoder,
)
from streamtag.train.loop import TrainingRun
from streamtag.train.pretrain import pretrain
from streamtag.train.recipe import load_recipe, parse_recipe
from streamtag.train.windows import evaluation_starts

# TorchScript is how streamtag ships models; torch >= 2.9 marks torch.jit deprecated.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:torch.jit")

RECIPES = Path(__file__).resolve().parents[2] / "models" / "recipes"

# 40 clips of 3 s (28 train, 6 validation, 6 test), 80 mels (the fewest vq_type 1 takes) at
# 31 frames per second, 1 s windows; 8 channels and 16 codes: a few seconds an epoch on 2 cores.
SYNTHETIC_DATA = {"n_clips": 40, "synthetic": {"clip_seconds": 3.0}}
# The audio_folder adapter takes none of the synthetic benchmark's keys.
FOLDER_DATA = {"kind": "audio_folder", "n_clips": None, "synthetic": None}
TINY = dict(frontend={"n_mels": 80},
            model={"architecture": "vqvae", "window": 32, "hop": 16},
            model_options={"channels": 8, "n_codes": 16},
            train={"epochs": 4, "batch_size": 16, "windows_per_track": 4, "lr": 3e-3})


def tiny(root, cache, data: dict) -> str:
    return tiny_recipe("tiny-vqvae", root, cache, data=data, **TINY)
# The same recipe as a tagger on the pre-trained encoder.
TAGGER = ("model.architecture=vqvae_cnn", "model.options.conv_channels=8", "train.epochs=1",
          "name=tiny-vqvae-cnn")
ENCODER_PREFIXES = ("encoder.", "codebook.")


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pretrain")


@pytest.fixture(scope="module")
def recipe_file(folder: Path, synthetic_root) -> Path:
    path = folder / "tiny.toml"
    path.write_text(tiny(synthetic_root(40, 3.0), folder / "cache", SYNTHETIC_DATA),
                    encoding="utf-8")
    return path


def _recipe(path: Path, *overrides: str):
    return parse_recipe(path.read_text(encoding="utf-8"), overrides, name="tiny")


@pytest.fixture(scope="module")
def pretrained(recipe_file: Path, folder: Path):
    result = pretrain(_recipe(recipe_file), folder / "run", echo=False)
    return result


def _tagger(recipe_file: Path, encoder: Path, *overrides: str):
    return _recipe(recipe_file, *TAGGER, f"model.encoder={encoder}", *overrides)


def _payload(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


# --------------------------------------------------------------------------------------------
# Pre-training


def test_pretraining_lowers_the_reconstruction_error(pretrained, recipe_file: Path) -> None:
    run = pretrained.run_dir
    for name in ("vqvae.pt", "pretrain.log", "recipe.toml", "metrics.json"):
        assert (run / name).is_file(), name
    assert parse_recipe((run / "recipe.toml").read_text(encoding="utf-8")) == _recipe(recipe_file)

    log = (run / "pretrain.log").read_text(encoding="utf-8")
    before = float(re.search(r"^before training: val_mse (\S+)", log, re.MULTILINE).group(1))
    epochs = re.findall(r"^epoch (\d)/4 .* val_mse (\S+)  perplexity (\S+)  dead_codes (\d+)/16",
                        log, re.MULTILINE)
    assert [int(e[0]) for e in epochs] == [1, 2, 3, 4]
    after = float(epochs[-1][1])
    assert after < 0.6 * before, (before, after)

    metrics = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["before"]["mse"] == pytest.approx(before, abs=1e-5)
    assert [h["epoch"] for h in metrics["history"]] == [1, 2, 3, 4]
    for entry in metrics["history"]:
        assert {"train_loss", "val_mse", "val_perplexity", "val_dead_codes"} <= set(entry)
    best = min(metrics["history"], key=lambda h: h["val_mse"])
    assert metrics["best_epoch"] == best["epoch"] == pretrained.best_epoch
    assert metrics["final"]["mse"] == best["val_mse"] == pretrained.metrics["mse"]


def test_code_usage_metrics_match_a_direct_count(pretrained, recipe_file: Path) -> None:
    payload = _payload(pretrained.path)
    assert payload["format"] == FILE_FORMAT and payload["window"] == 32
    recipe = _recipe(recipe_file)
    assert payload["frontend"] == recipe.frontend_options().to_dict()
    model = nets.build("vqvae", 1, **payload["options"])
    model.load_state_dict(payload["state_dict"])
    model.eval()

    # The scaling maps the training features' 1st and 99th percentiles to -1 and 1, and lives
    # in the weights.
    scaling = payload["scaling"]
    assert (scaling["low"] - scaling["input_offset"]) * scaling["input_scale"] == pytest.approx(-1)
    assert (scaling["high"] - scaling["input_offset"]) * scaling["input_scale"] == pytest.approx(1)
    assert float(payload["state_dict"]["input_offset"]) == pytest.approx(scaling["input_offset"])
    assert float(payload["state_dict"]["input_scale"]) == pytest.approx(scaling["input_scale"])

    data = prepare_data(recipe, splits=("validation",), log=lambda message: None)
    windows = [data.window(track.id, 32, int(start), int(total))
               for track, total in zip(data.tracks["validation"], data.lengths["validation"],
                                       strict=True)
               for start in evaluation_starts(int(total), 32, recipe.model.hop)]
    x = torch.from_numpy(np.stack(windows))
    with torch.no_grad():
        _, indices = model.encode(x)
        mse = float(((model(x) - (x - scaling["input_offset"]) * scaling["input_scale"]) ** 2)
                    .mean())
    counts = np.bincount(indices.flatten().numpy(), minlength=16)
    p = counts[counts > 0] / counts.sum()
    perplexity = math.exp(-(p * np.log(p)).sum())
    dead = int((counts == 0).sum())

    metrics = json.loads((pretrained.run_dir / "metrics.json").read_text(encoding="utf-8"))
    final = metrics["final"]
    assert final["windows"] == len(windows)
    assert final["perplexity"] == pytest.approx(perplexity, rel=1e-9)
    assert final["dead_codes"] == dead and final["used_codes"] == 16 - dead
    assert final["mse"] == pytest.approx(mse, rel=1e-4)
    assert payload["metrics"]["perplexity"] == final["perplexity"]
    best = metrics["history"][metrics["best_epoch"] - 1]
    assert (best["val_perplexity"], best["val_dead_codes"]) == (final["perplexity"], dead)
    assert 1 <= perplexity <= 16

    # TorchScript keeps the scaling with the weights.
    scripted = torch.jit.script(model)
    assert float(scripted.input_offset) == float(model.input_offset)


def test_pretrain_refuses_a_tagger_recipe_and_nonsense_settings(recipe_file: Path,
                                                                  tmp_path: Path,
                                                                  capsys) -> None:
    out = tmp_path / "run"
    assert cli.main(["pretrain", str(recipe_file), "--out", str(out), "--set",
                     "model.architecture=vqvae_cnn"]) == 2
    err = capsys.readouterr().err
    assert "pre-training is for the VQ-VAE autoencoder" in err
    assert "'vqvae_cnn', a tagger: train it with `streamtag train`" in err
    assert not out.exists()
    with pytest.raises(ConfigError, match=r"augment\.mixup_alpha.* must be 0"):
        pretrain(_recipe(recipe_file, "augment.mixup_alpha=0.4"), out, echo=False)
    with pytest.raises(ConfigError, match=r"model\.window must be even for vqvae"):
        pretrain(_recipe(recipe_file, "model.window=33"), out, echo=False)


def test_pretrain_does_not_overwrite_a_run(pretrained, recipe_file: Path) -> None:
    with pytest.raises(ConfigError, match=r"already holds a pre-trained model"):
        pretrain(_recipe(recipe_file), pretrained.run_dir, echo=False)


# --------------------------------------------------------------------------------------------
# The tagger on the pre-trained encoder


def test_tagger_with_a_frozen_encoder_keeps_it_bit_for_bit(pretrained, recipe_file: Path,
                                                          tmp_path: Path) -> None:
    # Weight decay on: the optimiser must still leave the frozen parameters alone.
    recipe = _tagger(recipe_file, pretrained.path, "model.options.freeze_encoder=true",
                     "train.weight_decay=1e-3", "train.epochs=2")
    run = TrainingRun(recipe, tmp_path / "frozen", echo=False)
    run.setup()
    head = {k: v.clone() for k, v in run.model.state_dict().items()
            if not k.startswith(ENCODER_PREFIXES)}
    run.fit()

    pretrained_state = _payload(pretrained.path)["state_dict"]
    state = run.model.state_dict()
    encoder_keys = [k for k in state if k.startswith(ENCODER_PREFIXES)]
    assert any("running_mean" in k for k in encoder_keys)  # batch-norm statistics included
    for key in [*encoder_keys, "input_offset", "input_scale"]:
        assert torch.equal(state[key], pretrained_state[key]), key
    assert any(not torch.equal(state[k], v) for k, v in head.items() if k.startswith("dense"))
    assert run.model.training and not run.model.encoder.training
    log = (tmp_path / "frozen" / "train.log").read_text(encoding="utf-8")
    assert f"encoder: {pretrained.path}" in log and "frozen" in log


def test_tagger_with_a_trained_encoder_changes_it(pretrained, recipe_file: Path,
                                                  tmp_path: Path, capsys) -> None:
    # Through the command line, with the export: the model file keeps the input scaling.
    out = tmp_path / "trained"
    assert cli.main(["train", str(recipe_file), "--out", str(out), "--set",
                     f"model.encoder={pretrained.path}",
                     *(arg for override in TAGGER for arg in ("--set", override))]) == 0
    assert "trained further" in capsys.readouterr().out

    pretrained_state = _payload(pretrained.path)["state_dict"]
    state = torch.load(out / "checkpoint.pt", weights_only=True)["model"]
    weights = [k for k in state if k.startswith("encoder.") and k.endswith("weight")]
    assert any(not torch.equal(state[k], pretrained_state[k]) for k in weights)
    # The codebook gets no gradient through the straight-through codes.
    assert torch.equal(state["codebook.embedding.weight"],
                       pretrained_state["codebook.embedding.weight"])
    buffers = dict(torch.jit.load(out / "model.pt").named_buffers())
    offsets = [v for k, v in buffers.items() if k.endswith("input_offset")]
    assert offsets and all(torch.equal(v, pretrained_state["input_offset"]) for v in offsets)


def test_a_mismatched_encoder_file_is_named(pretrained, recipe_file: Path,
                                            tmp_path: Path) -> None:
    path = pretrained.path
    cases = {
        "model.options.n_codes=32": r"model\.options\.n_codes is 32 here, 16 in the file",
        "model.options.channels=16": r"model\.options\.channels is 16 here, 8 in the file",
        "model.options.vq_type=2": r"model\.options\.vq_type is 2 here, 1 in the file",
        "frontend.fmin=50.0": r"frontend\.fmin is 50\.0 here, 0\.0 in the file",
        "model.options.input_scale=1.0": r"model\.options\.input_scale is 1\.0 here, \S+ in the "
                                         r"file \(leave it out to take the file's\)",
    }
    for override, message in cases.items():
        with pytest.raises(ConfigError, match=rf"model\.encoder {re.escape(str(path))} does "
                                              rf"not fit this recipe: {message}"):
            read_pretrained_encoder(path, _tagger(recipe_file, path, override))
    # The trainer checks before it featurises or makes the run folder.
    with pytest.raises(ConfigError, match=r"n_codes is 32 here"):
        TrainingRun(_tagger(recipe_file, path, "model.options.n_codes=32"), tmp_path / "run")
    assert not (tmp_path / "run").exists()

    missing = tmp_path / "missing.pt"
    with pytest.raises(ConfigError, match=r"missing\.pt not found; pre-train one with "
                                          r"`streamtag pretrain"):
        read_pretrained_encoder(missing, _tagger(recipe_file, missing))
    other = tmp_path / "other.pt"
    torch.save({"model": {}, "epoch": 3}, other)
    with pytest.raises(ConfigError, match=r"other\.pt is not a pre-trained VQ-VAE file"):
        read_pretrained_encoder(other, _tagger(recipe_file, other))
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(ConfigError, match=r"garbage\.pt is not a pre-trained VQ-VAE file.*"
                                          r"torch cannot read it"):
        read_pretrained_encoder(garbage, _tagger(recipe_file, garbage))

    # The loader gives back what it checked, and the tagger gets the file's scaling.
    recipe = _tagger(recipe_file, path)
    model = nets.build("vqvae_cnn", 3, **recipe.model.options)
    payload = load_pretrained_encoder(model, path, recipe)
    assert float(model.input_scale) == pytest.approx(payload["scaling"]["input_scale"])


def test_train_refuses_a_vqvae_recipe_and_unlabeled_data(recipe_file: Path, tmp_path: Path,
                                                          capsys) -> None:
    out = tmp_path / "run"
    assert cli.main(["train", str(recipe_file), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "model.architecture 'vqvae' is the autoencoder" in err
    assert "run `streamtag pretrain RECIPE.toml`" in err and "model.encoder=" in err
    assert not out.exists()

    unlabeled = tmp_path / "folder.toml"
    unlabeled.write_text(tiny(tmp_path, tmp_path / "cache", FOLDER_DATA), encoding="utf-8")
    assert cli.main(["train", str(unlabeled), "--out", str(out), "--set",
                     "model.architecture=vqvae_cnn"]) == 2
    assert "data.kind 'audio_folder' has no labels" in capsys.readouterr().err
    assert not out.exists()

    assert cli.main(["train", str(recipe_file), "--out", str(out), "--set",
                     "model.architecture=vqvae_cnn", "--set",
                     "model.options.freeze_encoder=true"]) == 2
    assert "freeze_encoder = true needs model.encoder" in capsys.readouterr().err
    assert not out.exists()


def test_a_run_refused_for_its_data_leaves_no_run_folder(tmp_path: Path, capsys) -> None:
    out, kept = tmp_path / "run", tmp_path / "kept"
    kept.mkdir()
    for folder in (out, kept):
        assert cli.main(["train", str(RECIPES / "musicnn.toml"), "--out", str(folder),
                         "--set", f"data.root={tmp_path / 'no-dataset'}"]) == 2
        assert "annotations_final.csv not found" in capsys.readouterr().err
    assert not out.exists()  # made by the run that was refused: removed
    assert kept.is_dir()  # the user's own folder stays, with the log of what was tried
    assert cli.main(["pretrain", str(RECIPES / "vqvae_pretrain.toml"), "--out", str(out),
                     "--set", f"data.root={tmp_path / 'no-dataset'}"]) == 2
    assert "autotagging_moodtheme-train.tsv not found" in capsys.readouterr().err
    assert not out.exists()
    nested = tmp_path / "runs" / "one"  # the parent made for it goes too
    assert cli.main(["train", str(RECIPES / "musicnn.toml"), "--out", str(nested),
                     "--set", f"data.root={tmp_path / 'no-dataset'}"]) == 2
    assert not (tmp_path / "runs").exists()


# --------------------------------------------------------------------------------------------
# A folder of audio


def test_cli_pretrains_on_an_audio_folder(pretrained, folder: Path, tmp_path: Path,
                                          synthetic_root, capsys) -> None:
    # The synthetic benchmark's folder: its flac files, its csv and json left out.
    path = tmp_path / "folder.toml"
    path.write_text(tiny(synthetic_root(40, 3.0), folder / "cache", FOLDER_DATA),
                    encoding="utf-8")
    out = tmp_path / "run"
    assert cli.main(["pretrain", str(path), "--out", str(out), "--set", "train.epochs=1"]) == 0
    printed = capsys.readouterr().out
    assert "tracks: train 36, validation 4" in printed
    assert re.search(r"streamtag pretrain: .*vqvae\.pt: validation reconstruction MSE \S+ before "
                     r"training, \S+ after \(epoch 1 of 1\)", printed)
    assert f"--set model.encoder={out / 'vqvae.pt'}" in printed
    assert _payload(out / "vqvae.pt")["metrics"]["windows"] > 0


def _touch(root: Path, *names: str) -> None:
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"")


def test_audio_folder_adapter(tmp_path: Path) -> None:
    root = tmp_path / "music"
    names = [f"album/{i:02d}.ogg" for i in range(17)] + ["a.wav", "sub/b.FLAC",
                                                          "sub/deep/c.mp3"]
    _touch(root, *names, "notes.txt", ".hidden/d.wav", ".e.wav", "cover.jpg")
    dataset = load_audio_folder(root)
    assert sorted(t.id for t in dataset.tracks) == sorted(names)
    assert dataset.tags == [] and all(t.tags == () for t in dataset.tracks)
    assert dataset.labels().shape == (20, 0)
    validation = {t.id for t in dataset.split("validation")}
    assert len(validation) == 2 and len(dataset.split("train")) == 18
    assert dataset.split("test") == []
    assert all(t.audio_path == root / t.id for t in dataset.tracks)

    # The same files are held out wherever the folder is and in whatever order it was written.
    copy = tmp_path / "copy"
    _touch(copy, *reversed(names))
    assert {t.id for t in load_audio_folder(copy).split("validation")} == validation
    assert {t.id for t in load_audio_folder(root, validation_fraction=0.3)
            .split("validation")} >= validation
    only_wav = load_audio_folder(root, extensions=["WAV", "mp3"])
    assert sorted(t.id for t in only_wav.tracks) == ["a.wav", "sub/deep/c.mp3"]

    with pytest.raises(ConfigError, match=r"no test split"):
        load_audio_folder(root, splits=("train", "validation", "test"))
    with pytest.raises(ConfigError, match=r"no audio files with the suffixes"):
        load_audio_folder(root, extensions=[".aiff"])
    _touch(tmp_path / "one", "x.wav")
    with pytest.raises(ConfigError, match=r"one audio file; at least two are needed"):
        load_audio_folder(tmp_path / "one")
    with pytest.raises(ConfigError, match=r"is not a folder"):
        load_audio_folder(tmp_path / "nowhere")


@pytest.mark.parametrize(("override", "message"), [
    ("data.validation_fraction=1.5", r"data\.validation_fraction must be a number between 0 "
                                     r"and 1"),
    ("data.extensions=[]", r"data\.extensions must be a non-empty list"),
    ("data.n_clips=40", r"unknown key data\.n_clips; allowed keys in \[data\]: kind, root, "
                        r"extensions, validation_fraction"),
])
def test_audio_folder_recipe_keys(override: str, message: str) -> None:
    text = tiny("/music", "/tmp/cache", FOLDER_DATA)
    assert parse_recipe(text).data.options["validation_fraction"] == 0.1
    with pytest.raises(ConfigError, match=message):
        parse_recipe(text, [override])


# --------------------------------------------------------------------------------------------
# The shipped recipes


def test_synthetic_recipes_pretrain_and_load_the_same_encoder() -> None:
    pre = load_recipe(RECIPES / "synthetic_vqvae_pretrain.toml")
    tagger = load_recipe(RECIPES / "synthetic_vqvae.toml", ["model.encoder=run/vqvae.pt"])
    assert pre.model.architecture == "vqvae"
    assert tagger.model.architecture in ("vqvae_gru", "vqvae_cnn")
    # Same benchmark (one feature cache), frontend, window and encoder.
    assert (pre.data, pre.frontend, pre.model.window) == (tagger.data, tagger.frontend,
                                                          tagger.model.window)
    pre_options = {**nets.spec("vqvae")["options"], **pre.model.options}
    tagger_options = {**nets.spec(tagger.model.architecture)["options"], **tagger.model.options}
    for key in ("vq_type", "channels", "n_codes", "n_mels"):
        assert pre_options[key] == tagger_options[key], key
    paper = load_recipe(RECIPES / "vqvae_pretrain.toml")
    assert paper.model.architecture == "vqvae" and paper.model.window == 1024
    assert paper.frontend_options().n_mels == 128


def test_the_models_scale_their_input() -> None:
    torch.manual_seed(0)
    plain = nets.build("vqvae", 1, channels=8, n_codes=16, n_mels=80).eval()
    scaled = nets.build("vqvae", 1, channels=8, n_codes=16, n_mels=80, input_offset=2.0,
                        input_scale=0.5).eval()
    weights = {k: v for k, v in plain.state_dict().items() if not k.startswith("input_")}
    scaled.load_state_dict(weights, strict=False)
    x = torch.rand(2, 80, 16) * 4
    with torch.no_grad():
        assert torch.equal(scaled(x), plain((x - 2.0) * 0.5))
        assert torch.equal(scaled.encode(x)[1], plain.encode((x - 2.0) * 0.5)[1])
    tagger = nets.build("vqvae_gru", 3, channels=8, n_codes=16, n_mels=80, gru_units=4).eval()
    tagger.load_encoder_state_dict(scaled)
    assert (float(tagger.input_offset), float(tagger.input_scale)) == (2.0, 0.5)
    with torch.no_grad():
        assert torch.equal(tagger.codes(x), scaled.encode(x)[0])
    with pytest.raises(ValueError, match="input_scale must be > 0"):
        nets.build("vqvae", 1, input_scale=0.0)
