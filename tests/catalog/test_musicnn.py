"""musicnn's published taggers converted to model files: parity with musicnn's TensorFlow
graphs, the manifest, bad checkpoints, and loud audio.

The reference outputs were made once by tests/data/musicnn/make_reference.py with musicnn's own
graphs in TensorFlow; these tests need only the ``musicnn`` package's checkpoints
(``pip install --no-deps musicnn==0.1.0``), not TensorFlow.
"""

from __future__ import annotations

import hashlib
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from streamtag import compute_logmel
from streamtag.audio import testsignals
from streamtag.catalog import musicnn as musicnn_models
from streamtag.errors import ModelError
from streamtag.frontend import LogMelOptions
from streamtag.model import modelfile
from streamtag.model.manifest import read_manifest

DATA = Path(__file__).parents[1] / "data" / "musicnn"
REFERENCE = {  # our name -> musicnn's
    "musicnn-mtt": "MTT_musicnn",
    "musicnn-msd": "MSD_musicnn",
    "vgg-mtt": "MTT_vgg",
    "vgg-msd": "MSD_vgg",
}
INSTALL = "pip install --no-deps musicnn==0.1.0"


@pytest.fixture(scope="module")
def package() -> Path:
    found = musicnn_models.find_installed_package()
    if found is None:
        pytest.skip(f"the musicnn package is not installed: {INSTALL}")
    return found


@pytest.fixture(scope="module")
def converted(package, tmp_path_factory) -> dict[str, Path]:
    """All four models, converted once for the module."""
    folder = tmp_path_factory.mktemp("musicnn-models")
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # the save-time check runs small batches: threads only contend
    try:
        for name in musicnn_models.NAMES:
            musicnn_models.convert(package, name, folder / f"{name}.pt")
    finally:
        torch.set_num_threads(previous)
    return {name: folder / f"{name}.pt" for name in musicnn_models.NAMES}


def test_the_names_are_the_four_published_models():
    assert set(musicnn_models.NAMES) == set(REFERENCE)


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_probabilities_match_musicnns_tensorflow_graph(converted, name):
    windows = np.load(DATA / "inputs.npy")
    expected = np.load(DATA / "outputs.npz")[REFERENCE[name]]
    model = modelfile.load(converted[name], device="cpu")
    got = model(windows).numpy()
    assert got.shape == expected.shape == (len(windows), 50)
    per_window = np.abs(got - expected).max(axis=1)
    assert per_window.max() <= 1e-4, per_window
    # the reference is not degenerate: the windows get different scores
    assert np.ptp(expected, axis=0).max() > 0.05


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_the_manifest_says_where_the_model_came_from(converted, package, name):
    manifest = read_manifest(converted[name])
    assert manifest.name == name
    assert manifest.tags == musicnn_models.read_labels(package, name)
    assert len(manifest.tags) == 50
    assert manifest.input_kind == "logmel"
    assert manifest.frontend == LogMelOptions.preset("musicnn")
    assert (manifest.window, manifest.hop) == (187, musicnn_models.HOP_FRAMES)
    assert manifest.thresholds == (0.5,) * 50  # calibration is a later step
    recipe = manifest.recipe
    assert recipe["source"] == "musicnn 0.1.0"
    assert recipe["licence"] == "ISC"
    assert "Pons" in recipe["citation"] and "Serra" in recipe["citation"]
    assert ("MagnaTagATune" if "mtt" in name else "Million Song Dataset") in recipe["tag_source"]
    files = musicnn_models.checkpoint_files(package, name)
    assert [f.name for f in files] == [".index", ".data-00000-of-00001"]
    assert recipe["checkpoint_sha256"] == {
        f"{REFERENCE[name]}/{f.name}": hashlib.sha256(f.read_bytes()).hexdigest() for f in files}


def test_mtt_and_msd_models_have_different_tags(converted):
    mtt = read_manifest(converted["musicnn-mtt"]).tags
    msd = read_manifest(converted["musicnn-msd"]).tags
    assert mtt != msd
    assert read_manifest(converted["vgg-msd"]).tags == msd


def test_loud_clipped_audio_stays_finite_where_a_float16_cast_overflows(converted):
    options = LogMelOptions.preset("musicnn")
    loud = np.clip(8.0 * testsignals.music_like(4.0, 16000, seed=3), -1.0, 1.0)
    mel_power = compute_logmel(loud.astype(np.float32), options.replace(log="none"))
    # musicnn's extractor casts the mel power to float16 and scales it by 10000 in float16:
    # on this audio that overflows to inf, and its model would see inf.
    with np.errstate(over="ignore"):
        musicnn_features = np.log10(10000 * mel_power.astype(np.float16) + 1)
    assert np.isinf(musicnn_features).any()
    features = compute_logmel(loud.astype(np.float32), options)  # (frames, mels), float32
    assert np.isfinite(features).all()
    windows = np.stack([features[i:i + 187].T for i in (0, 50)])
    model = modelfile.load(converted["musicnn-msd"], device="cpu")
    probabilities = model(windows).numpy()
    assert np.isfinite(probabilities).all()
    assert ((probabilities > 0) & (probabilities < 1)).all()


def test_an_unknown_name_lists_the_names(package, tmp_path):
    with pytest.raises(ModelError, match="musicnn-msd"):
        musicnn_models.convert(package, "musicnn-big", tmp_path / "x.pt")


def _package_copy(package: Path, tmp_path: Path, folders: dict[str, str]) -> Path:
    """A musicnn package folder holding configuration.py and ``folders`` (ours: theirs)."""
    copy = tmp_path / "musicnn"
    copy.mkdir()
    shutil.copy(package / "configuration.py", copy)
    for ours, theirs in folders.items():
        shutil.copytree(package / theirs, copy / ours)
    return copy


def _assert_nothing_written(out: Path) -> None:
    assert not out.exists()
    assert list(out.parent.iterdir()) == []


@pytest.mark.parametrize("damage", ["truncated data", "damaged data", "truncated index",
                                    "missing data"])
def test_a_bad_checkpoint_is_named_and_nothing_is_written(package, tmp_path, damage):
    copy = _package_copy(package, tmp_path, {"MSD_vgg": "MSD_vgg"})
    index, data = copy / "MSD_vgg" / ".index", copy / "MSD_vgg" / ".data-00000-of-00001"
    if damage == "truncated data":
        data.write_bytes(data.read_bytes()[:1000])
        pattern = rf"{data} is truncated: tensor '.+'"
    elif damage == "damaged data":
        content = bytearray(data.read_bytes())
        content[len(content) // 2] ^= 1
        data.write_bytes(bytes(content))
        pattern = rf"{data}: tensor '.+' fails its CRC-32C check"
    elif damage == "truncated index":
        index.write_bytes(index.read_bytes()[:-10])
        pattern = rf"{index} is corrupt"
    else:
        data.unlink()
        pattern = rf"{data} does not exist"
    out = tmp_path / "models" / "vgg-msd.pt"
    out.parent.mkdir()
    with pytest.raises(ModelError, match=pattern):
        musicnn_models.convert(copy, "vgg-msd", out)
    _assert_nothing_written(out)


def test_a_checkpoint_of_another_model_names_the_missing_tensor(package, tmp_path):
    copy = _package_copy(package, tmp_path, {"MSD_musicnn": "MSD_vgg"})
    out = tmp_path / "models" / "musicnn-msd.pt"
    out.parent.mkdir()
    with pytest.raises(ModelError, match=r"MSD_musicnn/\.index lacks tensor 'conv2d/kernel'"):
        musicnn_models.convert(copy, "musicnn-msd", out)
    _assert_nothing_written(out)


def test_a_shape_mismatch_names_file_and_tensor(package, tmp_path):
    # a configuration.py with one MSD tag less: the checkpoint's output layer no longer fits
    copy = _package_copy(package, tmp_path, {"MSD_vgg": "MSD_vgg"})
    labels = musicnn_models.read_labels(package, "vgg-msd")
    (copy / "configuration.py").write_text(f"MSD_LABELS = {list(labels[:-1])!r}\n")
    out = tmp_path / "models" / "vgg-msd.pt"
    out.parent.mkdir()
    with pytest.raises(ModelError, match=r"MSD_vgg/\.index: tensor 'dense/kernel' has shape "
                                         r"\(256, 50\).*\(49, 256\)"):
        musicnn_models.convert(copy, "vgg-msd", out)
    _assert_nothing_written(out)


def test_a_folder_that_is_not_a_musicnn_package_is_named(tmp_path):
    with pytest.raises(ModelError, match=r"configuration\.py does not exist.*not a musicnn "
                                         "package"):
        musicnn_models.convert(tmp_path, "musicnn-msd", tmp_path / "x.pt")


def test_finding_the_package_does_not_import_it(package):
    # importing musicnn imports TensorFlow; finding its checkpoints must not
    assert package.name == "musicnn" and (package / "configuration.py").is_file()
    assert "musicnn" not in sys.modules
    assert "tensorflow" not in sys.modules
