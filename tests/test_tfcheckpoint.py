"""The TensorFlow checkpoint reader, on tiny checkpoints TensorFlow wrote (made by
tests/data/tfcheckpoint/make_checkpoints.py) and on damaged copies of them."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from streamtag.catalog import tfcheckpoint
from streamtag.errors import ModelError

DATA = Path(__file__).parent / "data" / "tfcheckpoint"
EXPECTED = dict(np.load(DATA / "expected.npz"))


@pytest.mark.parametrize("checkpoint", ["v1", "sharded"])
def test_reads_what_tensorflow_wrote(checkpoint):
    prefix = DATA / checkpoint / "ckpt"
    tensors = tfcheckpoint.read_checkpoint(prefix, list(EXPECTED))
    assert set(tensors) == set(EXPECTED)
    for name, expected in EXPECTED.items():
        got = tensors[name]
        assert got.dtype == expected.dtype, name
        assert got.shape == expected.shape, name
        assert np.array_equal(got, expected), name
        assert got.flags.writeable  # a copy, not a view of the file's bytes


def test_lists_names_dtypes_and_shapes_from_the_index():
    listed = tfcheckpoint.list_tensors(DATA / "v1" / "ckpt")
    assert set(listed) == set(EXPECTED) | {"bfloat16"}
    assert listed["conv/kernel"] == (np.dtype("float32"), (3, 3, 2, 4))
    assert listed["scalar"] == (np.dtype("float32"), ())
    assert listed["empty"] == (np.dtype("float32"), (0, 3))
    # a type numpy has no dtype for is listed with the reason in place of the dtype
    assert "bfloat16" in listed["bfloat16"][0]


def test_a_sharded_checkpoint_names_all_its_files():
    files = tfcheckpoint.checkpoint_files(DATA / "sharded" / "ckpt")
    assert [f.name for f in files] == [
        "ckpt.index", "ckpt.data-00000-of-00002", "ckpt.data-00001-of-00002"]
    # both shards hold tensors: otherwise the test of sharded reading above proves nothing
    assert all(f.stat().st_size > 0 for f in files)


def test_an_unsupported_dtype_is_named_with_the_tensor():
    with pytest.raises(ModelError, match=r"'bfloat16'.*dtype bfloat16.*not support"):
        tfcheckpoint.read_checkpoint(DATA / "v1" / "ckpt", ["bfloat16"])
    with pytest.raises(ModelError, match="bfloat16"):
        tfcheckpoint.read_checkpoint(DATA / "v1" / "ckpt")  # all tensors: bfloat16 among them


def test_an_unknown_tensor_name_lists_some_that_exist():
    with pytest.raises(ModelError, match=r"ckpt\.index has no tensor 'dense/kernal'.*dense/bias"):
        tfcheckpoint.read_checkpoint(DATA / "v1" / "ckpt", ["dense/kernal"])


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    """A writable copy of the v1 checkpoint; returns its prefix."""
    for path in (DATA / "v1").iterdir():
        shutil.copy(path, tmp_path / path.name)
    return tmp_path / "ckpt"


def _index(prefix: Path) -> Path:
    return prefix.parent / "ckpt.index"


def _data(prefix: Path) -> Path:
    return prefix.parent / "ckpt.data-00000-of-00001"


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x40
    path.write_bytes(bytes(data))


def _truncate(path: Path, size: int) -> None:
    path.write_bytes(path.read_bytes()[:size])


def _offset(prefix: Path, name: str) -> int:
    return tfcheckpoint.index_entries(prefix)[name].offset


def test_a_missing_index_or_data_file_is_named(copy):
    _data(copy).unlink()
    with pytest.raises(ModelError, match=r"data file .*ckpt\.data-00000-of-00001 does not exist"):
        tfcheckpoint.read_checkpoint(copy, ["dense/bias"])
    _index(copy).unlink()
    with pytest.raises(ModelError, match=r"index .*ckpt\.index does not exist"):
        tfcheckpoint.list_tensors(copy)


@pytest.mark.parametrize("size", [0, 20, 47, 300, -1])
def test_a_truncated_index_is_named(copy, size):
    index = _index(copy)
    _truncate(index, size if size >= 0 else index.stat().st_size - 1)
    with pytest.raises(ModelError, match=rf"index {index}.*(truncated|corrupt)"):
        tfcheckpoint.list_tensors(copy)


def test_a_damaged_index_block_fails_its_checksum(copy):
    _flip(_index(copy), 30)  # inside the first data block: a key's bytes
    with pytest.raises(ModelError, match=rf"{_index(copy)} is corrupt.*CRC-32C"):
        tfcheckpoint.list_tensors(copy)


def test_a_truncated_data_file_names_the_tensor_past_its_end(copy):
    # the tensor stored last in the file
    last = max(EXPECTED, key=lambda name: _offset(copy, name))
    _truncate(_data(copy), _offset(copy, last) + 1)
    with pytest.raises(ModelError, match=rf"{_data(copy)} is truncated: tensor '{last}'"):
        tfcheckpoint.read_checkpoint(copy, [last])
    # tensors before the cut are still readable
    first = min(EXPECTED, key=lambda name: _offset(copy, name))
    assert np.array_equal(tfcheckpoint.read_checkpoint(copy, [first])[first], EXPECTED[first])


def test_a_damaged_tensor_fails_its_checksum_by_name(copy):
    _flip(_data(copy), _offset(copy, "dense/kernel") + 5)
    with pytest.raises(ModelError, match=rf"{_data(copy)}: tensor 'dense/kernel' fails its "
                                         "CRC-32C"):
        tfcheckpoint.read_checkpoint(copy, ["dense/kernel"])
    # the other tensors are intact
    assert np.array_equal(tfcheckpoint.read_checkpoint(copy, ["dense/bias"])["dense/bias"],
                          EXPECTED["dense/bias"])


def test_a_file_that_is_not_an_index_is_refused(copy):
    _index(copy).write_bytes(b"not a checkpoint index, just some text that is long enough" * 2)
    with pytest.raises(ModelError, match="magic number"):
        tfcheckpoint.list_tensors(copy)


@pytest.mark.slow
def test_reads_musicnn_checkpoints_as_tensorflow_does():
    tf = pytest.importorskip("tensorflow", reason="install tensorflow-cpu to compare with it")
    from streamtag.catalog import musicnn as musicnn_models

    package = musicnn_models.find_installed_package()
    if package is None:
        pytest.skip("install musicnn: pip install --no-deps musicnn==0.1.0")
    for folder in ("MTT_musicnn", "MSD_musicnn", "MTT_vgg", "MSD_vgg"):
        prefix = str(package / folder) + "/"  # musicnn's checkpoints have an empty file name
        reader = tf.compat.v1.train.NewCheckpointReader(prefix)
        expected = reader.get_variable_to_shape_map()
        ours = tfcheckpoint.read_checkpoint(prefix)
        assert set(ours) == set(expected)
        for name, value in ours.items():
            theirs = reader.get_tensor(name)
            assert value.dtype == theirs.dtype, name
            assert value.shape == tuple(expected[name]), name
            assert np.array_equal(value, theirs), name
