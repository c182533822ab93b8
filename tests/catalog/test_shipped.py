"""The shipped default model: it loads, its weights match the manifest's hash, the daemon uses
it without --model, and it reproduces its model card's test metrics on regenerated data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from streamtag.catalog.shipped import default_model_path
from streamtag.model import modelfile

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "models" / "default" / "model.pt"
CARD = ROOT / "models" / "default" / "MODEL_CARD.md"
RECIPE = ROOT / "models" / "recipes" / "default.toml"


def test_the_shipped_model_loads_and_its_hash_matches():
    loaded = modelfile.load(MODEL, device="cpu")  # load() checks the weights' SHA-256
    manifest = loaded.manifest
    assert manifest.weights_sha256 == modelfile.weights_sha256(loaded.module.model)
    o = loaded.frontend_options
    assert loaded.window * o.hop_length / o.sample_rate <= 3.0 + 1e-9  # windows of <= 3 s
    assert loaded.hop * o.hop_length / o.sample_rate == pytest.approx(1.0, abs=0.02)
    assert MODEL.stat().st_size <= 10 * 1024 * 1024
    assert len(loaded.thresholds) == len(loaded.tags) >= 10
    assert manifest.metrics["roc_auc_macro"] >= 0.95


def test_the_daemon_uses_it_when_no_model_is_given():
    assert default_model_path().resolve() == MODEL.resolve() or (
        default_model_path().read_bytes() == MODEL.read_bytes())


def test_the_card_states_the_files_test_metrics_and_the_command():
    card = CARD.read_text()
    metrics = modelfile.load(MODEL, device="cpu").manifest.metrics
    assert f"{metrics['roc_auc_macro']:.3f}" in card
    assert f"{metrics['pr_auc_macro']:.3f}" in card
    # the figures that depend on the thresholds
    assert (f"| F1 (the file's thresholds) | {metrics['f1_macro']:.3f} | "
            f"{metrics['f1_micro']:.3f} |") in card
    assert f"| precision | {metrics['precision_macro']:.3f} | {metrics['precision_micro']:.3f} |" \
        in card
    assert f"| recall | {metrics['recall_macro']:.3f} | {metrics['recall_micro']:.3f} |" in card
    assert [row["threshold"] for row in metrics["per_tag"]] == pytest.approx(
        modelfile.load(MODEL, device="cpu").thresholds)  # the metrics are the file's own
    assert "streamtag train models/recipes/default.toml" in card


@pytest.mark.slow
def test_it_reproduces_its_cards_test_metrics_on_regenerated_data(tmp_path):
    from streamtag.train.export import evaluate_model_file
    from streamtag.train.recipe import load_recipe

    recipe = load_recipe(RECIPE, [f"train.cache_dir={json.dumps(str(tmp_path))}"])
    result = evaluate_model_file(MODEL, recipe, split="test", device="cpu", log=lambda *a: None)
    expected = modelfile.load(MODEL, device="cpu").manifest.metrics
    assert result["roc_auc_macro"] == pytest.approx(expected["roc_auc_macro"], abs=1e-3)
    assert result["pr_auc_macro"] == pytest.approx(expected["pr_auc_macro"], abs=1e-3)


def test_major_and_minor_are_never_both_on():
    """Every clip is in one mode and the two scores sum to about 1 (0.92-1.06 on the validation
    split's windows), so thresholds of 0.5 call an unsure window one or the other; lower ones
    would call it both."""
    from streamtag.audio.synthetic import demo_piece
    from streamtag.catalog.calibration import score_tracks
    from streamtag.model.inference import InferenceModel

    model = InferenceModel.load(MODEL, device="cpu")
    tags = list(model.tags)
    major, minor = tags.index("major"), tags.index("minor")
    track = score_tracks(model, [[demo_piece(30.0, seed=1)[0]]])[0]
    np.testing.assert_allclose(track.raw[:, major] + track.raw[:, minor], 1.0, atol=0.1)
    unsure = np.abs(track.raw[:, major] - 0.5) < 0.13  # both on under thresholds near 0.37
    assert unsure.any()
    both = ((track.raw[:, major] >= model.thresholds[major])
            & (track.raw[:, minor] >= model.thresholds[minor]))
    assert not both.any()
    assert model.thresholds[major] == model.thresholds[minor] == 0.5
