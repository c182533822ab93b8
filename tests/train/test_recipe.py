"""Every shipped recipe parses and its model runs at its window size; recipe errors name the key."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from streamtag import nets
from streamtag.errors import ConfigError
from streamtag.train.recipe import Recipe, apply_overrides, load_recipe, parse_recipe

RECIPES = Path(__file__).resolve().parents[2] / "models" / "recipes"
RECIPE_FILES = sorted(RECIPES.glob("*.toml"))
# Forward passes that take about a second or more on one core.
HEAVY = {"cp_resnet", "fa_resnet", "mobilenet_attn", "vqvae_pretrain"}
N_TAGS = {"mtg_jamendo": 56, "mtat": 50}  # moodtheme; top-50


def test_recipes_are_shipped() -> None:
    names = {p.stem for p in RECIPE_FILES}
    for name in ("default", "vggish", "crnn", "mobilenet_attn", "cp_resnet", "fa_resnet",
                 "short_chunk_resnet", "samplecnn", "mel_cnn", "lstm"):
        assert name in names, name
    synthetic = {p.stem for p in RECIPE_FILES if p.stem.startswith("synthetic_")}
    assert len(synthetic) >= 8


@pytest.mark.parametrize("path", RECIPE_FILES, ids=lambda p: p.stem)
def test_recipe_parses_and_round_trips(path: Path) -> None:
    recipe = load_recipe(path)
    assert recipe.name and recipe.description
    assert parse_recipe(recipe.to_toml()) == recipe
    assert recipe.model.input_kind == nets.spec(recipe.model.architecture)["input_kind"]


def _model_cases() -> list:
    cases = []
    for path in RECIPE_FILES:
        marks = [pytest.mark.slow] if path.stem in HEAVY else []
        cases.append(pytest.param(path, marks=marks, id=path.stem))
    return cases


@pytest.mark.parametrize("path", _model_cases())
def test_recipe_model_runs_at_its_window(path: Path) -> None:
    recipe = load_recipe(path)
    n_tags = N_TAGS.get(recipe.data.kind, 13)  # the synthetic benchmark has 13 tags
    model = nets.build(recipe.model.architecture, n_tags, **recipe.model.options).eval()
    if recipe.model.input_kind == "waveform":
        x = torch.randn(1, recipe.model.window)
    else:
        x = torch.randn(1, recipe.frontend_options().n_mels, recipe.model.window)
    n_features = recipe.model.options.get("n_features", 0)  # a track feature vector
    with torch.no_grad():
        y = model(x, torch.randn(1, n_features)) if n_features else model(x)
    if recipe.model.architecture == "vqvae":  # the autoencoder: its reconstruction
        assert tuple(y.shape) == tuple(x.shape) and bool(torch.isfinite(y).all())
        return
    assert tuple(y.shape) == (1, n_tags) and bool(torch.isfinite(y).all())


def test_default_recipe_is_a_small_streaming_model() -> None:
    recipe = load_recipe(RECIPES / "default.toml")
    options = recipe.frontend_options()
    assert recipe.data.kind == "synthetic"
    seconds = recipe.model.window * options.hop_length / options.sample_rate
    hop_seconds = recipe.model.hop * options.hop_length / options.sample_rate
    assert seconds <= 3.0 and hop_seconds == pytest.approx(1.0, abs=0.02)
    model = nets.build(recipe.model.architecture, 13, **recipe.model.options)
    size = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    assert size < 10e6


# --------------------------------------------------------------------------------------------
# Errors and overrides


@pytest.mark.parametrize("override, message", [
    ("train.epoch=3", r"unknown key train\.epoch; allowed keys in \[train\]: epochs, "),
    ("augment.mixup=0.2", r"unknown key augment\.mixup; allowed keys in \[augment\]"),
    ("eval.hop=3", r"unknown key eval\.hop; allowed keys in \[eval\]"),
    ("frontend.nmels=64", r"unknown key frontend\.nmels; allowed keys in \[frontend\]: preset"),
    ("data.top_n=10", r"unknown key data\.top_n; allowed keys in \[data\]: kind, root, n_clips"),
    ("model.options.depth=3", r"unknown key model\.options\.depth for mel_cnn; its options: "),
    ("model.stride=3", r"unknown key model\.stride; allowed keys in \[model\]"),
    ("train.optimizer=rmsprop", r"train\.optimizer must be one of 'adam', .*got 'rmsprop'"),
    ("train.epochs=0", r"train\.epochs must be a whole number >= 1, got 0"),
    ("train.epochs=2.5", r"train\.epochs must be a whole number, got 2\.5"),
    ("train.deterministic=1", r"train\.deterministic must be true or false, got 1"),
    ("train.lr=0", r"train\.lr must be a number > 0"),
    ("train.schedule=cosine", r"train\.schedule must be one of 'none', 'plateau', "),
    ("train.loss=kl", r"train\.loss must be one of 'bce', 'logit_mse', 'threshold_bce', "
                    r"got 'kl'"),
    ("train.loss=logit_mse", r"train\.loss = \"logit_mse\" fits a teacher's scores: it needs "
                             r"data\.kind = \"distill\"; use train\.loss = \"bce\" for tags"),
    ("train.loss=threshold_bce", r"train\.loss = \"threshold_bce\" fits a teacher's scores: it "
                                 r"needs data\.kind = \"distill\""),
    ("train.temperature=0", r"train\.temperature must be a number > 0"),
    ("eval.threshold_method=max", r"eval\.threshold_method must be one of 'f1', "),
    ("frontend.n_mels=0", r"frontend\.n_mels must be"),
    ("frontend.preset=mp3", r"frontend\.preset must be one of"),
    ("model.architecture=resnet50", r"model\.architecture must be one of 'vggish', "),
    ("model.encoder=runs/p/vqvae.pt", r"model\.encoder \(a pre-trained VQ-VAE\) is for "
                                      r"vqvae_gru and vqvae_cnn; mel_cnn has no VQ-VAE encoder"),
    ("model.options.n_mels=64", r"model\.options\.n_mels = 64 disagrees with frontend\.n_mels"),
    ("data.kind=imagenet", r"data\.kind must be one of 'mtg_jamendo', 'mtat', "),
    ("data.synthetic={tempo=3}", r"unknown synthetic option"),
    ("data.split_fractions=[0.5, 0.5]", r"data\.split_fractions must be three fractions"),
    ("augment.freq_masks=2", r"augment\.freq_width must be > 0"),
    ("bogus.key=1", r"unknown key 'bogus' at the top of the recipe"),
    ("epochs=3", r"name a section and a key"),
])
def test_bad_keys_and_values_are_named(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_recipe(BASE, [override])


BASE = """
[model]
architecture = "mel_cnn"
window = 100
hop = 50
"""


def test_overrides_are_toml_values_or_bare_strings() -> None:
    data = apply_overrides({}, ["train.lr=1e-4", "train.bf16=true", "data.root=/data/my set",
                                "data.tags=[\"a\", \"b\"]", "model.options.rho=7",
                                "name=\"run 1\"", "train.device=cuda"])
    assert data == {"train": {"lr": 1e-4, "bf16": True, "device": "cuda"},
                    "data": {"root": "/data/my set", "tags": ["a", "b"]},
                    "model": {"options": {"rho": 7}}, "name": "run 1"}
    with pytest.raises(ConfigError, match="expected section.key=value"):
        apply_overrides({}, ["train.lr"])


def test_kind_specific_data_keys_and_paths(tmp_path: Path) -> None:
    recipe = parse_recipe(BASE, ["data.kind=mtat", "data.root=/data/mtat", "data.top_n=20"])
    assert recipe.data.options["top_n"] == 20
    assert recipe.data.path("annotations") == Path("/data/mtat/annotations_final.csv")
    assert recipe.data.path("audio_root") is None
    with pytest.raises(ConfigError, match="data.audio_root or data.mel_root must be set"):
        parse_recipe(BASE, ["data.kind=mtg_jamendo"])
    with pytest.raises(ConfigError, match=r"unknown key data\.subset; allowed keys in \[data\]: "
                                          r"kind, root, annotations"):
        parse_recipe(BASE, ["data.kind=mtat", "data.subset=moodtheme"])


def test_architecture_constraints_are_checked_up_front() -> None:
    with pytest.raises(ConfigError, match="whole number of segments of 256 frames"):
        parse_recipe(BASE, ["model.architecture=mobilenet_attn", "model.window=300"])
    with pytest.raises(ConfigError, match="vggish needs at least 96 mels and 1280 frames"):
        parse_recipe(BASE, ["model.architecture=vggish"])
    with pytest.raises(ConfigError, match="takes a waveform, not a spectrogram"):
        parse_recipe(BASE, ["model.architecture=samplecnn", "model.window=59049",
                            "augment.time_masks=1", "augment.time_width=5"])
    with pytest.raises(ConfigError, match=r"n_features = 4 needs data\.features"):
        parse_recipe(BASE, ["model.architecture=crnn", "model.options.n_features=4"])


def test_recipe_files_report_their_problems(tmp_path: Path) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text("[train\nepochs = 3\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_recipe(broken)
    with pytest.raises(ConfigError, match="not found"):
        load_recipe(tmp_path / "missing.toml")
    named = tmp_path / "my-model.toml"
    named.write_text(BASE, encoding="utf-8")
    assert load_recipe(named).name == "my-model"
    assert load_recipe(named, ["name=other"]).name == "other"


def test_defaults_and_none_options_round_trip() -> None:
    recipe = parse_recipe(BASE, ["frontend.norm=none", "frontend.fmax=none",
                                 "frontend.mel_scale=htk"])
    options = recipe.frontend_options()
    assert options.norm is None and options.fmax is None and options.mel_scale == "htk"
    assert parse_recipe(recipe.to_toml()) == recipe
    assert Recipe().train.epochs == 30
