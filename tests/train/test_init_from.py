"""Fine-tuning from a model file (model.init): the body's weights load bit for bit, a new head
is made for the recipe's tags, and a frozen body stays exactly as loaded."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from streamtag import nets
from streamtag.catalog import installed
from streamtag.errors import ConfigError
from streamtag.model import modelfile
from streamtag.train.loop import TrainingRun
from streamtag.train.recipe import parse_recipe

# 24 clips of 3 s of the synthetic benchmark (13 tags), 64 mels, 2 s windows, mel_cnn.
RECIPE = """
name = "tiny-init"
[data]
kind = "synthetic"
root = "{root}"
n_clips = 24
synthetic = {{clip_seconds = 3.0}}
[frontend]
preset = "musicnn"
n_mels = 64
hop_length = 512
[model]
architecture = "mel_cnn"
window = 64
hop = 32
[model.options]
n_mels = 64
n_frames = 64
[train]
epochs = 1
batch_size = 8
windows_per_track = 1
lr = 1e-2
cache_dir = "{cache}"
seed = 0
deterministic = true
device = "cpu"
"""

SOURCE_TAGS = ("a", "b", "c", "d", "e")  # not the recipe's 13: the head cannot be reused


@pytest.fixture(scope="module")
def recipe_text(tmp_path_factory: pytest.TempPathFactory) -> str:
    folder = tmp_path_factory.mktemp("init")
    return RECIPE.format(root=folder / "synthetic", cache=folder / "cache")


def source_file(path: Path, recipe, architecture: str = "mel_cnn", **options) -> Path:
    """A trained-looking model file of another tag set: random weights, random BN statistics."""
    torch.manual_seed(7)
    network = nets.build(architecture, len(SOURCE_TAGS), **options)
    with torch.no_grad():
        for name, tensor in network.state_dict().items():
            if tensor.is_floating_point():
                tensor.copy_(torch.rand_like(tensor) + (0.5 if "running_var" in name else 0))
    modelfile.save(network, path, {
        "name": "source", "tags": list(SOURCE_TAGS), "input_kind": "logmel",
        "frontend": recipe.frontend_options(), "window": 64, "hop": 32,
        "architecture": {"name": architecture, **options}})
    return path


def test_frozen_body_loads_bit_for_bit_and_only_the_head_trains(recipe_text, tmp_path,
                                                                  monkeypatch):
    base = parse_recipe(recipe_text, name="tiny")
    home = tmp_path / "home"
    (home / "models").mkdir(parents=True)
    source = source_file(home / "models" / "source-mel.pt", base, n_mels=64, n_frames=64)
    monkeypatch.setenv(installed.HOME_ENV, str(home))
    recipe = parse_recipe(recipe_text, ["model.init=source-mel",  # an installed name
                                        "model.freeze_body_epochs=1"], name="tiny")
    run = TrainingRun(recipe, tmp_path / "run")
    run.setup()
    theirs = modelfile.load(source, device="cpu").module.model.state_dict()
    start = copy.deepcopy(run.model.state_dict())
    assert len(run.head) == 2  # the output layer's weight and bias
    for name, tensor in start.items():
        if name not in run.head:
            assert torch.equal(tensor, theirs[name]), name  # bit for bit
    assert start[sorted(run.head)[0]].shape[0] == 13  # a new head for the recipe's tags

    run.fit()  # one epoch, body frozen
    after = run.model.state_dict()
    for name, tensor in after.items():
        if name in run.head:
            assert not torch.equal(tensor, start[name]), f"head {name} did not train"
        else:
            assert torch.equal(tensor, start[name]), f"frozen body entry {name} changed"


def test_without_freezing_the_body_trains_too(recipe_text, tmp_path):
    base = parse_recipe(recipe_text, name="tiny")
    source = source_file(tmp_path / "source.pt", base, n_mels=64, n_frames=64)
    recipe = parse_recipe(recipe_text, [f"model.init={source}"], name="tiny")
    run = TrainingRun(recipe, tmp_path / "run")
    run.setup()
    start = copy.deepcopy(run.model.state_dict())
    run.fit()
    changed = [n for n, t in run.model.state_dict().items()
               if n not in run.head and t.is_floating_point() and not torch.equal(t, start[n])]
    assert changed


def test_a_different_architecture_or_options_is_refused(recipe_text, tmp_path):
    base = parse_recipe(recipe_text, name="tiny")
    other = source_file(tmp_path / "crnn.pt", base, architecture="cp_resnet", base_channels=4)
    recipe = parse_recipe(recipe_text, [f"model.init={other}"], name="tiny")
    with pytest.raises(ConfigError, match="'cp_resnet' model but the recipe builds 'mel_cnn'"):
        TrainingRun(recipe, tmp_path / "run1").setup()
    narrow = source_file(tmp_path / "narrow.pt", base, n_mels=64, n_frames=64, dropout=0.2)
    recipe = parse_recipe(recipe_text, [f"model.init={narrow}"], name="tiny")
    TrainingRun(recipe, tmp_path / "run2").setup()  # dropout changes no weight: it fits
    with pytest.raises(ConfigError, match="model.init: no model named 'nope'"):
        TrainingRun(parse_recipe(recipe_text, ["model.init=nope"], name="tiny"),
                    tmp_path / "run3").setup()
    with pytest.raises(ConfigError, match="freeze_body_epochs needs model.init"):
        parse_recipe(recipe_text, ["model.freeze_body_epochs=2"], name="tiny")
    # an ensemble has no one body: said, not "set model.architecture = 'ensemble'"
    from streamtag.model import modelfile

    ensemble = tmp_path / "ensemble.pt"
    modelfile.save_ensemble([narrow, narrow], ensemble)
    recipe = parse_recipe(recipe_text, [f"model.init={ensemble}"], name="tiny")
    with pytest.raises(ConfigError, match="it is an ensemble of 2 models, which has no one body"):
        TrainingRun(recipe, tmp_path / "run4").setup()


def test_freeing_the_body_leaves_what_the_model_froze_itself():
    from streamtag.train.init_from import head_names, set_body_frozen

    options = {"channels": 64, "n_codes": 64, "gru_units": 32, "freeze_encoder": True}
    model = nets.build("vqvae_gru", 5, **options).train()
    head = head_names("vqvae_gru", options, 5)
    own = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert own and all(n.startswith(("encoder.", "codebook.")) for n in own)
    set_body_frozen(model, head, frozen=True)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == set(head)
    set_body_frozen(model, head, frozen=False)
    assert {n for n, p in model.named_parameters() if not p.requires_grad} == own
