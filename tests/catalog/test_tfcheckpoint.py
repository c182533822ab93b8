"""The TensorFlow checkpoint reader, on tiny checkpoints TensorFlow wrote (made by
tests/data/tfcheckpoint/make_checkpoints.py) and on damaged copies of them."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from streamtag.catalog import tfcheckpoint
from streamtag.errors import ModelError

DATA = Path(__file__).parents[1] / "data" / "tfcheckpoint"
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


# ---------------------------------------------------------------- forged indexes

def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, value: int | bytes) -> bytes:
    """One protobuf field: a varint, or length-delimited bytes."""
    if isinstance(value, bytes):
        return _varint(number << 3 | 2) + _varint(len(value)) + value
    return _varint(number << 3) + _varint(value)


def _block(entries: list[tuple[bytes, bytes]]) -> bytes:
    """A table block of unshared keys, one restart point, and its trailer."""
    import google_crc32c

    body = b"".join(_varint(0) + _varint(len(k)) + _varint(len(v)) + k + v for k, v in entries)
    body += (0).to_bytes(4, "little") + (1).to_bytes(4, "little")
    crc = google_crc32c.value(body + b"\x00")
    masked = ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF
    return body + b"\x00" + masked.to_bytes(4, "little")


def write_index(prefix: Path, *, num_shards: int = 1,
                tensors: dict[str, tuple[tuple[int, ...], int]] = ()) -> None:
    """A tensor-bundle index saying whatever it is given: the header's shard count, and per
    float32 tensor name its shape and byte size (all in shard 0 at offset 0)."""
    entries = [(b"", _field(1, num_shards))]
    for name, (shape, size) in sorted(dict(tensors).items()):
        dims = b"".join(_field(2, _field(1, d)) for d in shape)
        entries.append((name.encode(), _field(1, 1) + _field(2, dims) + _field(3, 0)
                        + _field(4, 0) + _field(5, size)))
    data = _block(entries)
    index = _block([(entries[-1][0] + b"\xff", _varint(0) + _varint(len(data) - 5))])
    footer = (_varint(0) + _varint(0) + _varint(len(data)) + _varint(len(index) - 5))
    footer = footer.ljust(40, b"\x00") + (0xDB4775248B80FB57).to_bytes(8, "little")
    Path(f"{prefix}.index").write_bytes(data + index + footer)


def test_a_forged_index_reads_as_written(tmp_path):
    # the writer above is right: an honest forged index lists and reads
    prefix = tmp_path / "ckpt"
    write_index(prefix, tensors={"w": ((2, 3), 24)})
    Path(f"{prefix}.data-00000-of-00001").write_bytes(np.arange(6, dtype="<f4").tobytes())
    assert tfcheckpoint.list_tensors(prefix) == {"w": (np.dtype("float32"), (2, 3))}
    assert np.array_equal(tfcheckpoint.read_checkpoint(prefix)["w"],
                          np.arange(6, dtype="f4").reshape(2, 3))


@pytest.mark.parametrize("num_shards", [2**62, tfcheckpoint.MAX_SHARDS + 1, 0])
def test_a_shard_count_past_the_cap_is_refused_before_any_file_is_named(tmp_path, num_shards):
    # 2**62 shards once made the reader build a list of 2**62 file names: it hung, growing
    prefix = tmp_path / "ckpt"
    write_index(prefix, num_shards=num_shards, tensors={"w": ((2,), 8)})
    for read in (tfcheckpoint.list_tensors, tfcheckpoint.checkpoint_files,
                 tfcheckpoint.read_checkpoint):
        with pytest.raises(ModelError, match=rf"{prefix}\.index is corrupt: its header gives "
                                             rf"{num_shards} shards \(1 to 4096\)"):
            read(prefix)


def test_a_shape_past_int64_is_a_model_error_naming_the_file(tmp_path):
    # 2**32 x 2**32 float32 wrapped to 0 elements in an int64 product, then reshape raised a
    # bare ValueError
    prefix = tmp_path / "ckpt"
    write_index(prefix, tensors={"huge": ((2**32, 2**32), 0)})
    Path(f"{prefix}.data-00000-of-00001").write_bytes(b"")
    for read in (tfcheckpoint.list_tensors, tfcheckpoint.read_checkpoint):
        with pytest.raises(ModelError, match=rf"{prefix}\.index is corrupt: tensor 'huge' of "
                                             r"shape \(4294967296, 4294967296\) has "
                                             "18446744073709551616 elements"):
            read(prefix)


def test_a_size_the_data_file_does_not_hold_is_refused_before_reading(tmp_path):
    # 2**20 x 2**20 float32: a consistent entry of 4 TiB over a data file of 16 bytes
    prefix = tmp_path / "ckpt"
    write_index(prefix, tensors={"big": ((2**20, 2**20), 2**42)})
    Path(f"{prefix}.data-00000-of-00001").write_bytes(b"\x00" * 16)
    assert tfcheckpoint.list_tensors(prefix)["big"][1] == (2**20, 2**20)
    with pytest.raises(ModelError, match=r"data-00000-of-00001 is truncated: tensor 'big' lies "
                                         r"at bytes 0\.\.4398046511104 but the file has 16"):
        tfcheckpoint.read_checkpoint(prefix)


def test_too_many_dimensions_and_an_oversized_index_are_refused(tmp_path):
    prefix = tmp_path / "ckpt"
    write_index(prefix, tensors={"deep": ((1,) * 33, 4)})
    with pytest.raises(ModelError, match="33 dimensions"):
        tfcheckpoint.list_tensors(prefix)
    with Path(f"{prefix}.index").open("r+b") as index:  # sparse: no disk is used
        index.truncate(tfcheckpoint.MAX_INDEX_BYTES + 1)
    with pytest.raises(ModelError, match=rf"is {tfcheckpoint.MAX_INDEX_BYTES + 1} bytes, over"):
        tfcheckpoint.list_tensors(prefix)
