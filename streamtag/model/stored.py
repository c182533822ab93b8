"""A model file opened without torch: its manifest and the ONNX graphs stored beside its module.

Everything the CPU serves is in the file as ONNX graphs (docs/model-file.md): the module's
(``ONNX_FILE``), optionally an int8 one (``INT8_FILE``) and, from format 1.3, the two steps of
window reuse at the manifest's hop (``WINDOW_REUSE``). So ONNX Runtime serves a file with numpy,
onnxruntime and this module, and torch is loaded only where its TorchScript module must run:
CUDA, the ``torch`` backend, a file of format 1.0 without a graph, window reuse at a hop the
file stores no steps for.

A file of format 1.4 may have no TorchScript module at all (``Manifest.torchscript`` false:
``streamtag models install`` without torch writes the manifest and the ONNX graph only); what
needs the module then says so and names the command that adds it (``no_torchscript``).

A file is also written again without torch where its module stays as it is (new thresholds, an
int8 graph): the archive's entries are copied as they are and the extra files replaced
(``rewrite_archive``); TorchScript reads the result as it read the original, which
tests/scenarios/test_torch_free.py checks with ``torch.jit.load``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from streamtag.errors import ModelError
from streamtag.frontend import LogMelOptions
from streamtag.fsutil import atomic_path
from streamtag.model.manifest import (
    INT8_FILE,
    MANIFEST_FILE,
    Manifest,
    read_entry,
    read_manifest,
    stored_file,
)

__all__ = [
    "TORCH_EXTRA",
    "StoredModel",
    "COMPLETE_COMMAND",
    "add_int8_graph",
    "needs_torch",
    "no_torchscript",
    "open_model",
    "reuse_file_names",
    "rewrite",
    "rewrite_archive",
    "state_sha256",
    "torch_installed",
]

# what a user installs for the parts that need torch (streamtag is installed from a clone, so
# its [torch] extra is torch itself; the README's "Install" says which build to take)
TORCH_EXTRA = ("pip install torch (its CPU build from PyTorch's CPU wheel index on a machine "
               "without a GPU: README, \"Install\")")


def torch_installed() -> bool:
    """Whether torch can be imported here (without importing it)."""
    import importlib.util

    return importlib.util.find_spec("torch") is not None


def needs_torch(what: str) -> ModelError:
    """The error of a part that needs torch where it is not installed."""
    return ModelError(f"{what} needs PyTorch, which is not installed here: {TORCH_EXTRA}")


# the one command that adds the TorchScript module to a file made without torch
COMPLETE_COMMAND = "streamtag models complete"


def no_torchscript(path: str | os.PathLike, what: str) -> ModelError:
    """The error of a part that needs the TorchScript module of a file that has none."""
    path = Path(path)
    name = path.stem if path.suffix == ".pt" else str(path)
    return ModelError(f"{what} needs the TorchScript module of {path}, which the file does not "
                      "have: it was installed without torch and holds the ONNX graph that ONNX "
                      "Runtime serves on the CPU. With torch installed, "
                      f"`{COMPLETE_COMMAND} {name}` adds the module; for torch: {TORCH_EXTRA}")


def state_sha256(state: Mapping[str, np.ndarray]) -> str:
    """``modelfile.weights_sha256`` without torch, of a state dict as numpy arrays: for each
    entry in order of name, the name (UTF-8), NUL, the dtype name (``float32``), NUL, the shape
    (``96,3,3``), NUL and the array's bytes (C order, little-endian)."""
    digest = hashlib.sha256()
    for name, array in sorted(state.items()):
        a = np.asarray(array)  # not ascontiguousarray, which makes a 0-d counter 1-d
        a = a.astype(a.dtype.newbyteorder("<"), copy=False)
        digest.update(name.encode("utf-8") + b"\0")
        digest.update(a.dtype.name.encode("ascii") + b"\0")
        digest.update(",".join(str(s) for s in a.shape).encode("ascii") + b"\0")
        digest.update(a.tobytes(order="C"))
    return digest.hexdigest()


def reuse_file_names(hop: int) -> tuple[str, str]:
    """The extra files of window reuse's two steps at ``hop`` frames."""
    return f"reuse.hop{hop}.first.onnx", f"reuse.hop{hop}.next.onnx"


class StoredModel:
    """A model file's manifest and stored graphs, read with ``zipfile`` (no torch, no pickle).
    The same attributes as ``modelfile.LoadedModel`` but the module."""

    def __init__(self, path: str | os.PathLike, manifest: Manifest) -> None:
        self.path = Path(path)
        self.manifest = manifest
        thresholds = np.asarray(manifest.thresholds, dtype=np.float32)
        thresholds.flags.writeable = False
        self._thresholds = thresholds

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def frontend_options(self) -> LogMelOptions:
        return self.manifest.frontend

    @property
    def tags(self) -> tuple[str, ...]:
        return self.manifest.tags

    @property
    def thresholds(self) -> np.ndarray:
        """Per-tag decision thresholds, float32, in the tags' order (read-only)."""
        return self._thresholds

    @property
    def input_kind(self) -> str:
        return self.manifest.input_kind

    @property
    def window(self) -> int:
        return self.manifest.window

    @property
    def hop(self) -> int:
        return self.manifest.hop

    def graph(self) -> bytes | None:
        """The module's ONNX graph, checked against the manifest's hash; None where the file
        has none (format 1.0). ``ModelError`` where it records why none could be exported."""
        record = self.manifest.onnx
        if "error" in record:
            raise ModelError(f"its graph could not be exported when the file was written: "
                             f"{record['error']}")
        return stored_file(self.path, record, "ONNX graph")

    def int8_graph(self) -> bytes | None:
        """The int8 graph (``streamtag models quantize``), hash-checked; None where none."""
        return stored_file(self.path, self.manifest.onnx_int8, "int8 graph")

    def reuse_hops(self) -> tuple[int, ...]:
        """The hops (frames) the file stores window reuse's steps for."""
        return tuple(sorted(int(h) for h in self.manifest.window_reuse.get("hops", {})))

    def reuse_graphs(self, hop: int) -> tuple[str, bytes, bytes] | None:
        """Window reuse's scheme and its two steps' graphs at ``hop``, hash-checked; None where
        the file stores none for that hop."""
        record = self.manifest.window_reuse
        steps = record.get("hops", {}).get(str(hop))
        if not steps:
            return None
        first = stored_file(self.path, steps["first"], f"window-reuse graph (hop {hop})")
        after = stored_file(self.path, steps["next"], f"window-reuse graph (hop {hop})")
        if first is None or after is None:
            return None
        return str(record["scheme"]), first, after

    def __repr__(self) -> str:
        return (f"StoredModel({str(self.path)!r}, name={self.name!r}, tags={len(self.tags)}, "
                f"input_kind={self.input_kind!r}, window={self.window}, hop={self.hop})")


def open_model(path: str | os.PathLike) -> StoredModel:
    """A model file's manifest and graphs; ``ModelError`` naming the file where it cannot be
    read (``read_manifest``)."""
    return StoredModel(path, read_manifest(path))


def rewrite_archive(path: str | os.PathLike, out: str | os.PathLike, manifest: Manifest,
                    files: Mapping[str, bytes | None] | None = None) -> Manifest:
    """Writes model file ``path`` again at ``out`` (which may be ``path``: it is replaced
    atomically) with ``manifest`` as its ``streamtag.json`` and the extra files ``files`` (name
    → bytes, or None to drop one); every other entry of the archive, the module and its weights
    among them, is copied as it is. Returns the manifest written."""
    path, out = Path(path), Path(out)
    text = json.dumps(manifest.to_dict(), indent=2, allow_nan=False).encode("utf-8")
    replaced: dict[str, bytes | None] = {**(files or {}), MANIFEST_FILE: text}
    try:
        with zipfile.ZipFile(path) as source, atomic_path(out) as temporary:
            entries = source.infolist()
            prefix = entries[0].filename.split("/")[0] if entries else ""
            if not prefix:
                raise ModelError(f"model file {path} is not a TorchScript archive")
            with zipfile.ZipFile(temporary, "w", zipfile.ZIP_STORED) as target:
                for entry in entries:
                    parts = entry.filename.split("/")
                    if parts[1:2] == ["extra"] and len(parts) == 3 and parts[2] in replaced:
                        continue
                    target.writestr(entry, read_entry(source, entry, path))
                for name, data in replaced.items():
                    if data is not None:
                        target.writestr(f"{prefix}/extra/{name}", data)
    except (zipfile.BadZipFile, OSError) as error:
        raise ModelError(f"cannot write model file {path} again as {out}: {error}") from None
    return read_manifest(out)  # exactly what a reader of the file gets


def rewrite(path: str | os.PathLike, out: str | os.PathLike, **changes: Any) -> Manifest:
    """Writes model file ``path`` again at ``out`` (which may be ``path``) with manifest fields
    changed, e.g. ``thresholds``; the module, its weights and its graphs are the file's own.
    Returns the manifest written. Needs no torch."""
    fixed = sorted(set(changes) & {"format_version", "weights_sha256", "onnx", "onnx_int8",
                                   "window_reuse"})
    if fixed:
        raise ModelError(f"rewrite cannot change {fixed}: they describe the module and its "
                         "stored graphs")
    stored = open_model(path)
    stored.graph()  # the stored graphs are checked against their hashes before they are kept
    stored.int8_graph()
    for hop in stored.reuse_hops():
        stored.reuse_graphs(hop)
    try:
        manifest = dataclasses.replace(stored.manifest, **changes)
    except TypeError as error:
        raise ModelError(f"rewrite of {stored.path}: {error}") from None
    return rewrite_archive(path, out, manifest)


def add_int8_graph(path: str | os.PathLike, graph: bytes, record: Mapping[str, Any],
                   out: str | os.PathLike | None = None) -> Manifest:
    """Writes a model file again (to ``out``, default in place) with ``graph``, an int8 graph of
    its module (``streamtag.catalog.quantize``), inside as ``INT8_FILE`` and ``record`` (how it
    was made and measured) with its hash as the manifest's ``onnx_int8``; everything else is
    kept. Needs no torch."""
    stored = open_model(path)
    full = {**record, "file": INT8_FILE, "sha256": hashlib.sha256(graph).hexdigest()}
    manifest = dataclasses.replace(stored.manifest, onnx_int8=full)
    return rewrite_archive(path, out or path, manifest, {INT8_FILE: graph})

