"""A reader of TensorFlow checkpoints (the "tensor bundle" format), without TensorFlow.

A checkpoint with prefix ``P`` is the file ``P.index`` and the shards
``P.data-00000-of-0000N``. The index is a LevelDB-style sorted table: data blocks of
prefix-compressed key/value entries, an index block pointing at them, and a 48-byte footer.
Every key is a tensor name and every value a ``BundleEntryProto`` (dtype, shape, shard, offset,
size, masked CRC-32C of the bytes); the entry under the empty key is the ``BundleHeaderProto``
(number of shards, byte order). The shards hold each tensor's raw bytes at its offset. The few
protobuf fields needed are decoded here by hand, so reading needs neither TensorFlow nor a
protobuf library.

    >>> from streamtag import tfcheckpoint
    >>> tfcheckpoint.list_tensors("model/ckpt")        # doctest: +SKIP
    {'dense/kernel': (dtype('float32'), (561, 200)), ...}
    >>> weights = tfcheckpoint.read_checkpoint("model/ckpt")  # doctest: +SKIP

Errors are ``ModelError`` naming the file (and the tensor) and what is wrong. What the index
says is checked before it is used, against caps no real checkpoint comes near and against the
data that is there: a damaged or forged index cannot make the reader allocate or loop without
end.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import struct
from collections.abc import Iterator
from pathlib import Path

import google_crc32c
import numpy as np

from streamtag.errors import ModelError

__all__ = ["TensorInfo", "checkpoint_files", "data_files", "index_entries", "index_file",
           "list_tensors", "read_checkpoint"]

_TABLE_MAGIC = 0xDB4775248B80FB57  # LevelDB's table magic number, the footer's last 8 bytes
_FOOTER_SIZE = 48  # two block handles padded to 40 bytes, then the magic
_BLOCK_TRAILER_SIZE = 5  # compression type (1 byte) + masked CRC-32C (4 bytes)
_CRC_MASK_DELTA = 0xA282EAD8
# Caps on what a checkpoint may hold, checked before a byte is parsed: musicnn 0.1.0's
# indexes are 2,994 and 4,948 bytes, one shard each, its data files 7.3 and 9.5 MB.
MAX_INDEX_BYTES = 1024 * 1024
MAX_DATA_BYTES = 64 * 1024 * 1024
MAX_SHARDS = 4096  # TensorFlow writes one shard per device or partition
MAX_RANK = 32  # numpy's most dimensions
MAX_INT64 = 2**63 - 1  # elements and bytes of one tensor

# TensorFlow's DataType enum (types.proto) for the types numpy holds; others are refused.
_DTYPES: dict[int, np.dtype] = {
    1: np.dtype("<f4"),  # DT_FLOAT
    2: np.dtype("<f8"),  # DT_DOUBLE
    3: np.dtype("<i4"),  # DT_INT32
    4: np.dtype("u1"),  # DT_UINT8
    5: np.dtype("<i2"),  # DT_INT16
    6: np.dtype("i1"),  # DT_INT8
    8: np.dtype("<c8"),  # DT_COMPLEX64
    9: np.dtype("<i8"),  # DT_INT64
    10: np.dtype("?"),  # DT_BOOL
    17: np.dtype("<u2"),  # DT_UINT16
    18: np.dtype("<c16"),  # DT_COMPLEX128
    19: np.dtype("<f2"),  # DT_HALF
    22: np.dtype("<u4"),  # DT_UINT32
    23: np.dtype("<u8"),  # DT_UINT64
}
_DTYPE_NAMES = {7: "string", 14: "bfloat16", 20: "resource", 21: "variant"}


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    """One tensor's entry in the index: where its bytes are and what they hold."""

    name: str
    dtype: np.dtype
    shape: tuple[int, ...]
    shard: int
    offset: int
    size: int
    crc32c: int | None  # masked, as TensorFlow stores it; None when the entry has none


def index_file(prefix: str | os.PathLike) -> Path:
    """``P.index`` for the prefix ``P`` (which may end in a folder separator: musicnn's do)."""
    return Path(os.fspath(prefix) + ".index")


def data_files(prefix: str | os.PathLike, num_shards: int) -> list[Path]:
    """The shard files of a checkpoint with ``num_shards`` shards."""
    return [Path(f"{os.fspath(prefix)}.data-{i:05d}-of-{num_shards:05d}")
            for i in range(num_shards)]


def _mask(crc: int) -> int:
    """TensorFlow and LevelDB store CRCs masked, so that a CRC of data holding CRCs differs."""
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + _CRC_MASK_DELTA) & 0xFFFFFFFF


class _Corrupt(Exception):
    """A decoding step found bytes that cannot be what the format says; the caller names the
    file."""


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= len(data):
            raise _Corrupt("a variable-length number runs past the end")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise _Corrupt("a variable-length number is longer than 10 bytes")


def _fields(message: bytes) -> list[tuple[int, int, int | bytes]]:
    """A protobuf message's (field number, wire type, value): varints and fixed as ints,
    length-delimited as bytes."""
    out: list[tuple[int, int, int | bytes]] = []
    pos = 0
    while pos < len(message):
        tag, pos = _varint(message, pos)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = _varint(message, pos)
        elif wire == 1:
            if pos + 8 > len(message):
                raise _Corrupt("a protobuf fixed64 field runs past the end")
            value, pos = struct.unpack_from("<Q", message, pos)[0], pos + 8
        elif wire == 2:
            length, pos = _varint(message, pos)
            if pos + length > len(message):
                raise _Corrupt("a protobuf field runs past the end of its message")
            value, pos = message[pos:pos + length], pos + length
        elif wire == 5:
            if pos + 4 > len(message):
                raise _Corrupt("a protobuf fixed32 field runs past the end")
            value, pos = struct.unpack_from("<I", message, pos)[0], pos + 4
        else:
            raise _Corrupt(f"protobuf wire type {wire} is not one a checkpoint index uses")
        out.append((number, wire, value))
    return out


def _signed64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _shape(message: bytes) -> tuple[int, ...]:
    dims: list[int] = []
    for number, wire, value in _fields(message):
        if number == 2 and wire == 2:  # TensorShapeProto.dim
            size = 0
            for n, w, v in _fields(value):  # type: ignore[arg-type]
                if n == 1 and w == 0:
                    size = _signed64(v)  # type: ignore[arg-type]
            dims.append(size)
        elif number == 3 and wire == 0 and value:  # unknown_rank
            raise _Corrupt("a tensor of unknown rank")
    if any(d < 0 for d in dims):
        raise _Corrupt(f"a tensor of unknown size {dims}")
    if len(dims) > MAX_RANK:
        raise _Corrupt(f"a tensor of {len(dims)} dimensions (at most {MAX_RANK})")
    return tuple(dims)


@contextlib.contextmanager
def _reading(what: str, path: Path) -> Iterator[None]:
    """A checkpoint file's missing or unreadable file as a ModelError naming it."""
    try:
        yield
    except FileNotFoundError:
        raise ModelError(f"TensorFlow checkpoint {what} {path} does not exist; a checkpoint "
                         "with prefix P is P.index plus P.data-*-of-* files") from None
    except OSError as error:
        raise ModelError(f"cannot read TensorFlow checkpoint {what} {path}: "
                         f"{error.strerror or error}") from None


def _read_file(path: Path, what: str, most: int) -> bytes:
    with _reading(what, path), path.open("rb") as file:
        size = os.fstat(file.fileno()).st_size
        if size > most:
            raise ModelError(f"TensorFlow checkpoint {what} {path} is {size} bytes, "
                             f"over the {most} this reader takes: it is not a "
                             "checkpoint index")
        return file.read(most + 1)


def _block(data: bytes, offset: int, size: int) -> bytes:
    end = offset + size + _BLOCK_TRAILER_SIZE
    if offset < 0 or end > len(data):
        raise _Corrupt(f"a block at byte {offset} of {size} bytes runs past the end of the "
                       f"file ({len(data)} bytes): the file is truncated")
    contents = data[offset:offset + size]
    compression = data[offset + size]
    stored = struct.unpack_from("<I", data, offset + size + 1)[0]
    if _mask(google_crc32c.value(data[offset:offset + size + 1])) != stored:
        raise _Corrupt(f"the block at byte {offset} fails its CRC-32C check: the file is "
                       "damaged")
    if compression != 0:
        raise _Corrupt(f"the block at byte {offset} is compressed (type {compression}); "
                       "TensorFlow writes checkpoint indexes uncompressed")
    return contents


def _entries(block: bytes) -> list[tuple[bytes, bytes]]:
    """The (key, value) pairs of one table block."""
    if len(block) < 4:
        raise _Corrupt("a block is too short to hold its restart count")
    restarts = struct.unpack_from("<I", block, len(block) - 4)[0]
    end = len(block) - 4 - 4 * restarts
    if end < 0:
        raise _Corrupt("a block's restart array is larger than the block")
    pairs: list[tuple[bytes, bytes]] = []
    key = b""
    pos = 0
    while pos < end:
        shared, pos = _varint(block, pos)
        unshared, pos = _varint(block, pos)
        value_size, pos = _varint(block, pos)
        if shared > len(key) or pos + unshared + value_size > end:
            raise _Corrupt("a block entry runs past the end of its block")
        key = key[:shared] + block[pos:pos + unshared]
        pos += unshared
        pairs.append((key, block[pos:pos + value_size]))
        pos += value_size
    return pairs


def _table(data: bytes) -> list[tuple[bytes, bytes]]:
    """Every (key, value) of a LevelDB-format table, in key order."""
    if len(data) < _FOOTER_SIZE:
        raise _Corrupt(f"it is {len(data)} bytes, shorter than a table's {_FOOTER_SIZE}-byte "
                       "footer: the file is truncated or not a checkpoint index")
    footer = data[-_FOOTER_SIZE:]
    if struct.unpack_from("<Q", footer, 40)[0] != _TABLE_MAGIC:
        raise _Corrupt("its footer lacks the table magic number: the file is truncated or not "
                       "a checkpoint index")
    _, pos = _varint(footer, 0)  # the metaindex block's handle: TensorFlow leaves it empty
    _, pos = _varint(footer, pos)
    index_offset, pos = _varint(footer, pos)
    index_size, pos = _varint(footer, pos)
    pairs: list[tuple[bytes, bytes]] = []
    for _, handle in _entries(_block(data, index_offset, index_size)):
        offset, pos = _varint(handle, 0)
        size, _ = _varint(handle, pos)
        pairs.extend(_entries(_block(data, offset, size)))
    return pairs


def _header(value: bytes) -> tuple[int, int]:
    num_shards, endianness = 1, 0
    for number, wire, field in _fields(value):
        if number == 1 and wire == 0:
            num_shards = field  # type: ignore[assignment]
        elif number == 2 and wire == 0:
            endianness = field  # type: ignore[assignment]
    return num_shards, endianness


def _entry(name: str, value: bytes) -> TensorInfo:
    dtype_code, shape, shard, offset, size, crc = 0, (), 0, 0, 0, None
    for number, wire, field in _fields(value):
        if number == 1 and wire == 0:
            dtype_code = field
        elif number == 2 and wire == 2:
            shape = _shape(field)  # type: ignore[arg-type]
        elif number == 3 and wire == 0:
            shard = field
        elif number == 4 and wire == 0:
            offset = _signed64(field)  # type: ignore[arg-type]
        elif number == 5 and wire == 0:
            size = _signed64(field)  # type: ignore[arg-type]
        elif number == 6 and wire == 5:
            crc = field
        elif number == 7:
            raise _Corrupt(f"tensor {name!r} is stored in slices (a partitioned variable), "
                           "which this reader does not support")
    if dtype_code not in _DTYPES:
        kind = _DTYPE_NAMES.get(dtype_code, f"enum value {dtype_code}")  # type: ignore[arg-type]
        raise _Unsupported(f"tensor {name!r} has TensorFlow dtype {kind}, which this reader "
                           f"does not support (numeric types only: "
                           f"{', '.join(str(d) for d in _DTYPES.values())})")
    return TensorInfo(name, _DTYPES[dtype_code], shape, shard, offset, size,  # type: ignore
                      crc)  # type: ignore[arg-type]


class _Unsupported(Exception):
    pass


def _index(prefix: str | os.PathLike) -> tuple[int, dict[str, TensorInfo | str]]:
    """The number of shards and every tensor's entry (or why it cannot be read)."""
    path = index_file(prefix)
    data = _read_file(path, "index", MAX_INDEX_BYTES)
    try:
        pairs = _table(data)
        if not pairs or pairs[0][0] != b"":
            raise _Corrupt("it has no header entry (the empty key)")
        num_shards, endianness = _header(pairs[0][1])
        if endianness != 0:
            raise _Corrupt("its tensors are stored big-endian; only little-endian checkpoints "
                           "are supported")
        if not 1 <= num_shards <= MAX_SHARDS:
            raise _Corrupt(f"its header gives {num_shards} shards (1 to {MAX_SHARDS})")
        entries: dict[str, TensorInfo | str] = {}
        for key, value in pairs[1:]:
            name = key.decode("utf-8", errors="replace")
            try:
                info = _entry(name, value)
            except _Unsupported as error:
                entries[name] = str(error)  # an error only if that tensor is read
                continue
            if info.shard >= num_shards:
                raise _Corrupt(f"tensor {name!r} is in shard {info.shard} of {num_shards}")
            elements = math.prod(info.shape)  # Python's integers: no overflow to hide it
            if elements > MAX_INT64:
                raise _Corrupt(f"tensor {name!r} of shape {info.shape} has {elements} "
                               "elements, more than a 64-bit count holds")
            expected = elements * info.dtype.itemsize
            if info.size != expected:
                raise _Corrupt(f"tensor {name!r} of shape {info.shape} and dtype {info.dtype} "
                               f"should take {expected} bytes but its entry says {info.size}")
            entries[name] = info
    except _Corrupt as error:
        raise ModelError(f"TensorFlow checkpoint index {path} is corrupt: {error}; copy or "
                         "install the checkpoint again") from None
    return num_shards, entries


def checkpoint_files(prefix: str | os.PathLike) -> list[Path]:
    """The index and every data file of a checkpoint (the shard count is read from the
    index)."""
    num_shards, _ = _index(prefix)
    return [index_file(prefix), *data_files(prefix, num_shards)]


def index_entries(prefix: str | os.PathLike) -> dict[str, TensorInfo]:
    """Every loadable tensor's entry in the index (shard, offset, size, CRC), by name."""
    _, entries = _index(prefix)
    return {name: info for name, info in entries.items() if isinstance(info, TensorInfo)}


def list_tensors(prefix: str | os.PathLike) -> dict[str, tuple[np.dtype | str, tuple[int, ...]]]:
    """Every tensor's name → (numpy dtype, shape), from the index alone. A tensor of a type
    this reader cannot load has the reason as a string in place of its dtype."""
    _, entries = _index(prefix)
    return {name: (info.dtype, info.shape) if isinstance(info, TensorInfo) else (info, ())
            for name, info in entries.items()}


def read_checkpoint(prefix: str | os.PathLike,
                    names: list[str] | None = None) -> dict[str, np.ndarray]:
    """Tensors by name (all, or ``names``), each checked against its CRC-32C.

    ``prefix`` is what TensorFlow's ``Saver`` was given: ``P`` for ``P.index`` and
    ``P.data-*``. Raises ``ModelError`` naming the file and tensor for a missing, truncated or
    corrupt file, a failed checksum, a name not in the checkpoint or an unsupported dtype.
    """
    num_shards, entries = _index(prefix)
    wanted = list(entries) if names is None else list(names)
    missing = [n for n in wanted if n not in entries]
    if missing:
        raise ModelError(f"TensorFlow checkpoint {index_file(prefix)} has no tensor "
                         f"{missing[0]!r}; it has {len(entries)}: "
                         f"{', '.join(sorted(entries)[:8])}{', ...' if len(entries) > 8 else ''}")
    shards = data_files(prefix, num_shards)
    sizes: dict[int, int] = {}
    out: dict[str, np.ndarray] = {}
    for name in wanted:
        info = entries[name]
        if isinstance(info, str):
            raise ModelError(f"TensorFlow checkpoint {index_file(prefix)}: {info}")
        path = shards[info.shard]
        if info.shard not in sizes:
            sizes[info.shard] = _file_size(path)
        # The bytes the index promises must be there before any is read or allocated.
        if info.offset < 0 or info.offset + info.size > sizes[info.shard]:
            raise ModelError(f"TensorFlow checkpoint data file {path} is truncated: tensor "
                             f"{name!r} lies at bytes {info.offset}..{info.offset + info.size} "
                             f"but the file has {sizes[info.shard]}; copy or install the "
                             "checkpoint again")
        raw = _read_range(path, info.offset, info.size)
        if info.crc32c is not None and _mask(google_crc32c.value(raw)) != info.crc32c:
            raise ModelError(f"TensorFlow checkpoint data file {path}: tensor {name!r} fails "
                             "its CRC-32C check: the file is damaged; copy or install the "
                             "checkpoint again")
        try:
            out[name] = np.frombuffer(raw, dtype=info.dtype).reshape(info.shape).astype(
                info.dtype.newbyteorder("="), copy=True)
        except ValueError as error:  # the index's checks should leave none: named all the same
            raise ModelError(f"TensorFlow checkpoint {index_file(prefix)}: tensor {name!r} of "
                             f"shape {info.shape} cannot be read: {error}") from None
    return out


def _file_size(path: Path) -> int:
    with _reading("data file", path):
        size = path.stat().st_size
    if size > MAX_DATA_BYTES:
        raise ModelError(f"TensorFlow checkpoint data file {path} is {size} bytes, over the "
                         f"{MAX_DATA_BYTES} this reader takes (musicnn's are under 10 MB): "
                         "install from musicnn's own package")
    return size


def _read_range(path: Path, offset: int, size: int) -> bytes:
    with _reading("data file", path), path.open("rb") as file:
        file.seek(offset)
        raw = file.read(size)
    if len(raw) != size:  # shrank since it was measured
        raise ModelError(f"TensorFlow checkpoint data file {path} is truncated: it ends "
                         f"before byte {offset + size}; copy or install the checkpoint again")
    return raw
