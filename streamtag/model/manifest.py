"""The manifest of a model file, ``streamtag.json``, and the extra files it describes, read
without torch.

A model file (docs/model-file.md) is a TorchScript zip archive whose extra files are this
manifest, the ONNX graph of its module and optionally an int8 one. The manifest says everything
needed to feed the module (tags, frontend options, input kind, window and hop) and to read its
output (thresholds); it is read with ``zipfile`` and ``json`` only, never with pickle, so a
command can show a file's contract without loading its module.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from streamtag import values
from streamtag.errors import ModelError
from streamtag.frontend import LogMelOptions

__all__ = [
    "FORMAT_VERSION",
    "INPUT_KINDS",
    "INT8_FILE",
    "MAX_INFLATED_ENTRY_BYTES",
    "MANIFEST_FILE",
    "ONNX_FILE",
    "Manifest",
    "as_manifest",
    "read_entry",
    "read_manifest",
    "stored_file",
]

# 1.1: the ONNX graph (ONNX_FILE) beside the TorchScript module; 1.2: optionally an int8 one
# (INT8_FILE, `streamtag models quantize`); 1.3: window reuse's two steps at the manifest's hop
# (``window_reuse``), so ONNX Runtime serves every part of the file without torch. A reader of
# 1.2 ignores them (and builds its own steps, with torch). 1.4: the TorchScript module may be
# absent (``torchscript`` false: a file made without torch, `streamtag models install`), the
# manifest and the ONNX graph then the whole file; `streamtag models complete` adds the module.
FORMAT_VERSION = "1.4"
MANIFEST_FILE = "streamtag.json"
ONNX_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
INPUT_KINDS = ("logmel", "waveform")

# torch.jit.save deflates only its code and debug records (KBs); larger compressed entries are
# refused (``read_entry``), since a few bytes of deflate can inflate to gigabytes
MAX_INFLATED_ENTRY_BYTES = 16 << 20
_REQUIRED_IN_FILE = ("name", "tags", "input_kind", "frontend", "window", "hop", "thresholds",
                     "weights_sha256")
_MAJOR = int(FORMAT_VERSION.split(".")[0])


def _parse_version(text: Any) -> tuple[int, int]:
    match = re.fullmatch(r"(\d+)\.(\d+)", text) if isinstance(text, str) else None
    if match is None:
        raise ModelError(f"format_version must be a 'MAJOR.MINOR' string such as "
                         f"'{FORMAT_VERSION}', got {text!r}")
    return int(match.group(1)), int(match.group(2))


def _check_version(text: Any) -> None:
    major, _ = _parse_version(text)
    if major != _MAJOR:
        raise ModelError(
            f"format version {text} cannot be read: this streamtag reads model files of format "
            f"{_MAJOR}.x (it writes {FORMAT_VERSION}); "
            + ("upgrade streamtag to load this file" if major > _MAJOR
               else "export the model again with this streamtag"))


def _jsonable(value: Any) -> Any:
    """A JSON-ready copy: numpy scalars and arrays as numbers and lists, non-finite floats as
    null (standard JSON has no NaN, and other languages read this file too)."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Path):
        return str(value)
    raise ModelError(f"manifest value {value!r} of type {type(value).__name__} cannot be "
                     "written as JSON; use numbers, strings, lists and dicts")


@dataclasses.dataclass(frozen=True)
class Manifest:
    """What ``streamtag.json`` holds; validated on construction (``ModelError`` naming the field).

    ``window`` and ``hop`` count frames for ``input_kind="logmel"`` and samples for
    ``"waveform"``. ``thresholds`` default to 0.5 per tag. ``members`` lists the model files an
    ensemble or a waveform export was built from (their names and weight hashes). ``onnx``
    describes the ONNX graph stored beside the module, or why there is none; ``torchscript``
    is false where the file has no TorchScript module (format 1.4, made without torch: the ONNX
    graph is then the model). ``created``,
    ``weights_sha256``, ``onnx`` and ``window_reuse`` (the steps' graphs stored for windows
    that share work, by hop) are filled in by ``save``. See docs/model-file.md for every field.
    """

    name: str
    tags: tuple[str, ...]
    input_kind: str
    frontend: LogMelOptions
    window: int
    hop: int
    thresholds: tuple[float, ...] | None = None
    architecture: dict[str, Any] = dataclasses.field(default_factory=dict)
    options: dict[str, Any] = dataclasses.field(default_factory=dict)
    metrics: dict[str, Any] = dataclasses.field(default_factory=dict)
    recipe: dict[str, Any] | str = dataclasses.field(default_factory=dict)
    members: tuple[dict[str, Any], ...] = ()
    onnx: dict[str, Any] = dataclasses.field(default_factory=dict)
    onnx_int8: dict[str, Any] = dataclasses.field(default_factory=dict)
    window_reuse: dict[str, Any] = dataclasses.field(default_factory=dict)
    torchscript: bool = True
    created: str = ""
    weights_sha256: str = ""
    format_version: str = FORMAT_VERSION

    def __post_init__(self) -> None:
        _check_version(self.format_version)
        if not isinstance(self.name, str):
            raise ModelError(f"name must be a string, got {self.name!r}")
        if isinstance(self.tags, str) or not isinstance(self.tags, Sequence):
            raise ModelError(f"tags must be a list of tag names, got {self.tags!r}")
        tags = tuple(self.tags)
        if not tags:
            raise ModelError("tags must not be empty: a model scores at least one tag")
        bad = [t for t in tags if not isinstance(t, str) or not t]
        if bad:
            raise ModelError(f"tags must be non-empty strings, got {bad[0]!r}")
        duplicates = sorted({t for t in tags if tags.count(t) > 1})
        if duplicates:
            raise ModelError(f"tags must be unique; repeated: {duplicates}")
        values.set_field(self, "tags", tags)
        thresholds = (0.5,) * len(tags) if self.thresholds is None else self.thresholds
        try:
            thresholds = tuple(float(v) for v in thresholds)
        except (TypeError, ValueError):
            raise ModelError(f"thresholds must be a list of numbers, got {self.thresholds!r}") \
                from None
        if len(thresholds) != len(tags):
            raise ModelError(f"thresholds count ({len(thresholds)}) does not match tags count "
                             f"({len(tags)}): give one threshold per tag, in the tags' order")
        if not all(0.0 <= v <= 1.0 for v in thresholds):
            raise ModelError(f"thresholds are probabilities and must lie in [0, 1], got "
                             f"{[v for v in thresholds if not 0.0 <= v <= 1.0][:3]}")
        values.set_field(self, "thresholds", thresholds)
        if self.input_kind not in INPUT_KINDS:
            raise ModelError(f"input_kind must be one of {list(INPUT_KINDS)}, "
                             f"got {self.input_kind!r}")
        if isinstance(self.frontend, Mapping):
            values.set_field(self, "frontend", _frontend_from_dict(self.frontend))
        if not isinstance(self.frontend, LogMelOptions):
            raise ModelError(f"frontend must be LogMelOptions or their dict, "
                             f"got {type(self.frontend).__name__}")
        unit = "frames" if self.input_kind == "logmel" else "samples"
        for field in ("window", "hop"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
                raise ModelError(f"{field} must be a positive whole number of {unit}, "
                                 f"got {value!r}")
            values.set_field(self, field, int(value))
        for field in ("architecture", "options", "metrics", "onnx", "onnx_int8", "window_reuse"):
            if not isinstance(getattr(self, field), Mapping):
                raise ModelError(f"{field} must be a dict, got {getattr(self, field)!r}")
        _check_reuse_record(self.window_reuse)
        if not isinstance(self.recipe, (Mapping, str)):
            raise ModelError(f"recipe must be a dict or a string, got {self.recipe!r}")
        members = tuple(self.members)
        if not all(isinstance(m, Mapping) for m in members):
            raise ModelError(f"members must be a list of dicts, got {self.members!r}")
        values.set_field(self, "members", members)
        if not isinstance(self.torchscript, bool):
            raise ModelError(f"torchscript must be true or false, got {self.torchscript!r}")
        for field in ("created", "weights_sha256"):
            if not isinstance(getattr(self, field), str):
                raise ModelError(f"{field} must be a string, got {getattr(self, field)!r}")

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready dict written as ``streamtag.json``."""
        return _jsonable({
            "format_version": self.format_version,
            "name": self.name,
            "architecture": self.architecture,
            "options": self.options,
            "tags": list(self.tags),
            "input_kind": self.input_kind,
            "frontend": self.frontend.to_dict(),
            "window": self.window,
            "hop": self.hop,
            "thresholds": list(self.thresholds),
            "metrics": self.metrics,
            "recipe": self.recipe,
            "members": list(self.members),
            "onnx": self.onnx,
            "onnx_int8": self.onnx_int8,
            "window_reuse": self.window_reuse,
            "torchscript": self.torchscript,
            "created": self.created,
            "weights_sha256": self.weights_sha256,
        })

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Manifest:
        """Inverse of ``to_dict``. The major format version must be this streamtag's; keys this
        version does not know (written by a later minor version) are ignored."""
        if not isinstance(data, Mapping):
            raise ModelError(f"the manifest must be a JSON object, got {type(data).__name__}")
        if "format_version" not in data:
            raise ModelError("the manifest has no format_version")
        _check_version(data["format_version"])
        missing = [name for name in _REQUIRED_IN_FILE if name not in data]
        if missing:
            raise ModelError(f"the manifest lacks the field(s) {missing}")
        values = {f.name: data[f.name] for f in dataclasses.fields(cls) if f.name in data}
        values["frontend"] = _frontend_from_dict(data["frontend"])
        return cls(**values)


def _check_reuse_record(record: Mapping[str, Any]) -> None:
    """``window_reuse``: empty, ``{"error": why}``, or a scheme and, by hop in frames (a string
    of digits), the ``first`` and ``next`` steps' file records; ``ModelError`` naming what is
    wrong, so a damaged or forged manifest stops at reading, not deep in serving."""
    if not record or "error" in record:
        return
    scheme, hops = record.get("scheme"), record.get("hops")
    if not isinstance(scheme, str) or not isinstance(hops, Mapping):
        raise ModelError(f"window_reuse must hold a scheme name and its hops, got "
                         f"{str(record)[:200]}")
    for hop, steps in hops.items():
        if not (isinstance(hop, str) and hop.isascii() and hop.isdigit() and len(hop) <= 9):
            raise ModelError(f"window_reuse.hops: {str(hop)[:40]!r} is not a hop in frames")
        if not (isinstance(steps, Mapping)
                and all(isinstance(steps.get(step), Mapping) for step in ("first", "next"))):
            raise ModelError(f"window_reuse.hops[{hop!r}] must hold the records of its first and "
                             "next steps' graphs")


def _frontend_from_dict(data: Any) -> LogMelOptions:
    if not isinstance(data, Mapping):
        raise ModelError(f"frontend must be a dict of log-mel options, got {data!r}")
    try:
        # Unknown frontend options are an error even within a major version: ignoring one would
        # compute features the model was not trained on.
        return LogMelOptions.from_dict(dict(data))
    except (TypeError, ValueError) as error:
        raise ModelError(f"frontend options: {error}") from None


def as_manifest(manifest: Manifest | Mapping[str, Any]) -> Manifest:
    """``manifest`` as a ``Manifest``; a dict of its fields takes this version's format."""
    if isinstance(manifest, Manifest):
        return manifest
    if not isinstance(manifest, Mapping):
        raise ModelError(f"manifest must be a Manifest or a dict, got {type(manifest).__name__}")
    known = {f.name for f in dataclasses.fields(Manifest)}
    unknown = sorted(set(manifest) - known)
    if unknown:  # a typo when saving is an error; reading ignores unknown keys instead
        raise ModelError(f"unknown manifest field(s) {unknown}; known fields: {sorted(known)}")
    values = dict(manifest)
    values.setdefault("format_version", FORMAT_VERSION)
    return Manifest(**values)


def read_entry(archive: zipfile.ZipFile, entry: str | zipfile.ZipInfo, path: Path) -> bytes:
    """An entry of a model file's archive, at most the size its directory declares (zipfile
    stops there). torch.jit.save stores the manifest, the graphs and the weights uncompressed,
    so their size is bounded by the file's own; it deflates only its code and debug records, a
    few KB each. A compressed entry declaring more than ``MAX_INFLATED_ENTRY_BYTES`` (which
    could inflate a small file into any amount of memory) is refused with a ModelError naming
    the file, as is a damaged one."""
    info = entry if isinstance(entry, zipfile.ZipInfo) else archive.getinfo(entry)
    if info.compress_type != zipfile.ZIP_STORED and info.file_size > MAX_INFLATED_ENTRY_BYTES:
        raise ModelError(f"model file {path}: {info.filename} inflates to {info.file_size} "
                         f"bytes, more than the {MAX_INFLATED_ENTRY_BYTES} a compressed entry "
                         "may (torch.jit.save stores large entries uncompressed); the file was "
                         "not written by streamtag or was changed since")
    try:
        return archive.read(info)
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise ModelError(f"model file {path} is damaged: {info.filename} cannot be read "
                         f"({error})") from None


def read_manifest(path: str | os.PathLike) -> Manifest:
    """The manifest of a model file, without loading its module. Raises ``ModelError`` naming
    the file: missing, truncated, not a zip, no ``streamtag.json``, bad JSON, unknown major
    version, invalid fields."""
    path = Path(path)
    if not path.exists():
        raise ModelError(f"model file {path} does not exist")
    if not path.is_file():
        raise ModelError(f"model file {path} is not a regular file")
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        with open(path, "rb") as f:
            head = f.read(4)
        if head == b"PK\x03\x04":
            raise ModelError(f"model file {path} is truncated or damaged: its zip directory is "
                             "missing; copy or download it again") from None
        raise ModelError(f"model file {path} is not a TorchScript model file (not a zip "
                         "archive)") from None
    with archive:
        # TorchScript stores extra files as <archive name>/extra/<file>.
        names = [n for n in archive.namelist() if n.split("/")[1:] == ["extra", MANIFEST_FILE]]
        if not names:
            raise ModelError(f"model file {path} has no {MANIFEST_FILE} manifest, so it is not a "
                             "streamtag model file; write it with streamtag.model.modelfile.save")
        raw = read_entry(archive, names[0], path)
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelError(f"model file {path}: {MANIFEST_FILE} is not valid JSON ({error})") \
            from None
    try:
        return Manifest.from_dict(data)
    except ModelError as error:
        raise ModelError(f"model file {path}: {MANIFEST_FILE}: {error}") from None


def stored_file(path: str | os.PathLike, record: Mapping[str, Any], what: str) -> bytes | None:
    """The extra file that a manifest record (``onnx``, ``onnx_int8``) names, checked against
    the hash it records; None where the record names none. ``what`` names it in errors."""
    if not record.get("file"):
        return None
    with zipfile.ZipFile(path) as archive:
        names = [n for n in archive.namelist() if n.split("/")[1:] == ["extra", record["file"]]]
        if not names:
            raise ModelError(f"the manifest names the {what} {record['file']} but the file "
                             "lacks it; write the model file again")
        data = read_entry(archive, names[0], Path(path))
    if hashlib.sha256(data).hexdigest() != record.get("sha256"):
        raise ModelError(f"the stored {what} does not match the hash its manifest records; "
                         "the file was changed or damaged after it was saved")
    return data
