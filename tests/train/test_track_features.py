"""High-level track features for the CRNN (TaiInn runs 4 and 5): the CSV/JSON file, the
recipe's checks, and training with the vector concatenated inside the model."""

from __future__ import annotations

import json
import math
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from support.helpers import tiny_recipe

from streamtag.errors import ConfigError
from streamtag.train import datasets
from streamtag.train.data import synthetic_root as _synthetic_root
from streamtag.train.export import FEATURES_MODEL_FILE, MODEL_FILE
from streamtag.train.recipe import parse_recipe
from streamtag.train.run import train
from streamtag.train.track_features import FeatureScaler, load_track_features


# 60 clips of 3 s; the CRNN's smallest input (96 mels) at a 1.5 s window, 16 GRU units.
def recipe_text(root, cache, features: str, n_features: int) -> str:
    return tiny_recipe(
        "tiny-features", root, cache,
        data={"n_clips": 60, "synthetic": {"clip_seconds": 3.0}, "features": features},
        frontend={"n_mels": 96}, model={"architecture": "crnn", "window": 48, "hop": 24},
        model_options={"n_features": n_features, "gru_units": 16},
        train={"epochs": 3, "batch_size": 8, "windows_per_track": 2, "lr": 3e-3,
               "deterministic": None})


# --------------------------------------------------------------------------------------------
# The file


def test_csv_and_json_give_the_same_vectors(tmp_path: Path) -> None:
    (tmp_path / "f.csv").write_text("track_id,tempo,energy\na,120,0.5\nb,90.5,-1e-2\n\n")
    (tmp_path / "f.json").write_text(json.dumps({"a": {"tempo": 120, "energy": 0.5},
                                                 "b": {"energy": -0.01, "tempo": 90.5}}))
    (tmp_path / "l.json").write_text(json.dumps({"a": [120, 0.5], "b": [90.5, -0.01]}))
    from_csv = load_track_features(tmp_path / "f.csv")
    from_json = load_track_features(tmp_path / "f.json")
    from_list = load_track_features(tmp_path / "l.json")
    assert from_csv.names == from_json.names == ("tempo", "energy")
    assert from_list.names == ("f0", "f1")
    for features in (from_csv, from_json, from_list):
        np.testing.assert_array_equal(features.matrix(["b", "a"]),
                                      np.array([[90.5, -0.01], [120, 0.5]], dtype=np.float32))
    with pytest.raises(ConfigError, match=r"has no features for track\(s\) \['c'\]"):
        from_csv.matrix(["a", "c"])


@pytest.mark.parametrize("name, text, message", [
    ("f.csv", "name,x\na,1\n", r"the header must be track_id \(or id\)"),
    ("f.csv", "track_id,x,y\na,1\n", r"f\.csv, line 2: 2 columns, the header has 3"),
    ("f.csv", "id,x,y\na,1,loud\n", r"f\.csv, line 2, column 'y': 'loud' is not a number"),
    ("f.csv", "id,x\na,1\na,2\n", r"f\.csv, line 3: track 'a' appears twice"),
    ("f.csv", "id,x\na,nan\n", r"line 2, column 'x': 'nan' is not finite"),
    ("f.json", "[1, 2]", r"expected an object mapping track ids to features, got list"),
    ("f.json", '{"a": [1, 2], "b": [1]}', r"track 'b': 1 features, the first track has 2"),
    ("f.json", '{"a": {"x": 1}, "b": {"y": 1}}', r"track 'b': features \['y'\] differ"),
    ("f.json", '{"a": [true]}', r"track 'a', feature 0: True is not a number"),
    ("f.json", "{oops", r"f\.json is not valid JSON"),
    ("f.txt", "id,x\na,1\n", r"must be a \.csv or \.json file"),
])
def test_bad_feature_files_name_the_problem(tmp_path: Path, name: str, text: str,
                                            message: str) -> None:
    (tmp_path / name).write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_track_features(tmp_path / name)


def test_missing_file_and_the_scaler(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"data\.features: .*nope\.csv does not exist"):
        load_track_features(tmp_path / "nope.csv")
    train_matrix = np.array([[1.0, 5.0], [3.0, 5.0]], dtype=np.float32)
    scaler = FeatureScaler.fit(train_matrix)
    np.testing.assert_allclose(scaler(train_matrix), [[-1.0, 0.0], [1.0, 0.0]])
    np.testing.assert_allclose(scaler(np.array([[2.0, 7.0]])), [[0.0, 2.0]])


def test_recipe_checks(tmp_path: Path) -> None:
    def recipe(n_features: int, features: str, *overrides: str):
        return parse_recipe(recipe_text(tmp_path, tmp_path, features, n_features), overrides)

    assert recipe(3, "f.csv").model.options["n_features"] == 3
    with pytest.raises(ConfigError, match=r"n_features = 3 needs data\.features"):
        recipe(3, "")
    with pytest.raises(ConfigError, match=r"data\.features is set but crnn takes no track"):
        recipe(0, "f.csv")
    with pytest.raises(ConfigError, match=r"data\.features is set but mel_cnn takes no track"):
        recipe(3, "f.csv", "model.architecture=mel_cnn", "model.options={}")
    with pytest.raises(ConfigError, match=r"turn them off with data\.features"):
        recipe(3, "f.csv", "train.per_tag_best=true")


# --------------------------------------------------------------------------------------------
# Training with features


@pytest.fixture(scope="module")
def tracks(tmp_path_factory: pytest.TempPathFactory,
           synthetic_root) -> tuple[Path, Path, list]:
    """The module's folder, the synthetic benchmark's root and its tracks."""
    folder = tmp_path_factory.mktemp("features")
    recipe = parse_recipe(recipe_text(synthetic_root(60, 3.0), folder / "cache", "unused.csv",
                                      1))
    root = _synthetic_root(recipe, log=lambda message: None)
    return folder, root, datasets.load_synthetic(root).tracks


def _write_features(path: Path, tracks: list, informative: bool) -> int:
    """The clips' own tags as features (one 0/1 per tag, plus noise), or noise only."""
    from streamtag.audio.synthetic import TAGS

    rng = np.random.default_rng(0)
    rows = {}
    for track in tracks:
        vector = rng.normal(0.0, 0.1, size=len(TAGS))
        if informative:
            vector += np.array([tag in track.tags for tag in TAGS], dtype=float)
        rows[track.id] = vector.tolist()
    path.write_text(json.dumps(rows))
    return len(TAGS)


def _train(folder: Path, root: Path, name: str, tracks: list, informative: bool):
    features = folder / f"{name}.json"
    n = _write_features(features, tracks, informative)
    recipe = parse_recipe(recipe_text(root, folder / "cache", str(features), n))
    return train(recipe, folder / name, echo=False)


@pytest.mark.slow
def test_training_with_features_uses_them(tracks: tuple[Path, Path, list]) -> None:
    folder, root, all_tracks = tracks
    told = _train(folder, root, "told", all_tracks, informative=True)
    noise = _train(folder, root, "noise", all_tracks, informative=False)
    # The tags themselves as features: the model reads them through the concatenation.
    assert told.metrics["roc_auc_macro"] > 0.9
    assert told.metrics["roc_auc_macro"] > noise.metrics["roc_auc_macro"] + 0.1

    path = told.model_path
    assert path.name == FEATURES_MODEL_FILE and not (path.parent / MODEL_FILE).exists()
    with zipfile.ZipFile(path) as archive:
        info_name = next(n for n in archive.namelist() if n.endswith("extra/features.json"))
        info = json.loads(archive.read(info_name))
    assert len(info["feature_names"]) == len(info["feature_scaler"]["mean"]) == 13
    module = torch.jit.load(str(path))
    x = torch.randn(2, 96, 48)
    f = torch.zeros(2, 13)
    with torch.no_grad():
        assert not torch.allclose(module(x, f), module(x, f + 3.0))
    log = (path.parent / "train.log").read_text()
    assert "high-level features: 13 per track" in log and "no daemon model file" in log


@pytest.mark.slow
def test_a_track_without_features_is_left_out(tracks: tuple[Path, Path, list]) -> None:
    folder, root, all_tracks = tracks
    features = folder / "partial.json"
    _write_features(features, all_tracks[1:], informative=True)
    recipe = parse_recipe(recipe_text(root, folder / "cache", str(features), 13),
                          ["train.epochs=1"])
    result = train(recipe, folder / "partial", echo=False)
    log = (folder / "partial" / "train.log").read_text()
    assert f"1 track(s) have no row in {features} and are left out" in log
    assert math.isfinite(result.metrics["loss"])
    wrong = parse_recipe(recipe_text(root, folder / "cache", str(features), 12),
                         ["train.epochs=1"])
    with pytest.raises(ConfigError, match=r"n_features is 12 but data\.features has 13 "
                                          r"features per track"):
        train(wrong, folder / "wrong", echo=False)
