"""The model file: one TorchScript file whose extra file ``streamtag.json`` is the manifest.

The file is the contract between the trainer and the daemon (docs/model-file.md): its module
maps a batch of inputs to per-tag PROBABILITIES, and its manifest says everything needed to feed
it (tags, frontend options, input kind, window and hop) and to read its output (thresholds). The
daemon configures itself from the file alone. Files are read with ``torch.jit.load`` and
``zipfile`` only, never with pickle.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import datetime
import hashlib
import io
import json
import logging
import math
import os
import re
import time
import warnings
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from streamtag.errors import ModelError
from streamtag.frontend import LogMelOptions
from streamtag.fsutil import atomic_path
from streamtag.model.torch_frontend import LogMelFrontend

log = logging.getLogger(__name__)

__all__ = [
    "FORMAT_VERSION",
    "INPUT_KINDS",
    "MANIFEST_FILE",
    "INT8_FILE",
    "ONNX_FILE",
    "LoadedModel",
    "Manifest",
    "add_int8_graph",
    "add_onnx_graph",
    "export_onnx",
    "export_waveform",
    "load",
    "onnx_graph",
    "read_manifest",
    "rewrite",
    "save",
    "save_ensemble",
    "stored_int8_graph",
    "weights_sha256",
]

# 1.1: the ONNX graph (ONNX_FILE) beside the TorchScript module; 1.2: optionally an int8 one
# (INT8_FILE, `streamtag models quantize`)
FORMAT_VERSION = "1.2"
MANIFEST_FILE = "streamtag.json"
ONNX_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
ONNX_OPSET = 17
ONNX_TOLERANCE = 1e-4  # ONNX Runtime's probabilities against the TorchScript module's
INPUT_KINDS = ("logmel", "waveform")

_REQUIRED_IN_FILE = ("name", "tags", "input_kind", "frontend", "window", "hop", "thresholds",
                     "weights_sha256")
_MAJOR = int(FORMAT_VERSION.split(".")[0])
_CHECK_BATCH = 2  # inputs in the scripted-versus-eager check at save time
_SAVE_TOLERANCE = 1e-5
_ENSEMBLE_TOLERANCE = 1e-6


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
    describes the ONNX graph stored beside the module, or why there is none. ``created``,
    ``weights_sha256`` and ``onnx`` are filled in by ``save``. See docs/model-file.md for every
    field.
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
        object.__setattr__(self, "tags", tags)
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
        object.__setattr__(self, "thresholds", thresholds)
        if self.input_kind not in INPUT_KINDS:
            raise ModelError(f"input_kind must be one of {list(INPUT_KINDS)}, "
                             f"got {self.input_kind!r}")
        if isinstance(self.frontend, Mapping):
            object.__setattr__(self, "frontend", _frontend_from_dict(self.frontend))
        if not isinstance(self.frontend, LogMelOptions):
            raise ModelError(f"frontend must be LogMelOptions or their dict, "
                             f"got {type(self.frontend).__name__}")
        unit = "frames" if self.input_kind == "logmel" else "samples"
        for field in ("window", "hop"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
                raise ModelError(f"{field} must be a positive whole number of {unit}, "
                                 f"got {value!r}")
            object.__setattr__(self, field, int(value))
        for field in ("architecture", "options", "metrics", "onnx", "onnx_int8"):
            if not isinstance(getattr(self, field), Mapping):
                raise ModelError(f"{field} must be a dict, got {getattr(self, field)!r}")
        if not isinstance(self.recipe, (Mapping, str)):
            raise ModelError(f"recipe must be a dict or a string, got {self.recipe!r}")
        members = tuple(self.members)
        if not all(isinstance(m, Mapping) for m in members):
            raise ModelError(f"members must be a list of dicts, got {self.members!r}")
        object.__setattr__(self, "members", members)
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


def _frontend_from_dict(data: Any) -> LogMelOptions:
    if not isinstance(data, Mapping):
        raise ModelError(f"frontend must be a dict of log-mel options, got {data!r}")
    try:
        # Unknown frontend options are an error even within a major version: ignoring one would
        # compute features the model was not trained on.
        return LogMelOptions.from_dict(dict(data))
    except (TypeError, ValueError) as error:
        raise ModelError(f"frontend options: {error}") from None


def _as_manifest(manifest: Manifest | Mapping[str, Any]) -> Manifest:
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


def weights_sha256(module: nn.Module) -> str:
    """SHA-256 (hex) of a module's ``state_dict()``: for each entry in order of name, the name
    (UTF-8), NUL, the dtype name (``float32``), NUL, the shape (``96,3,3``), NUL and the tensor's
    bytes (contiguous, on the CPU, native little-endian order)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        digest.update(name.encode("utf-8") + b"\0")
        digest.update(str(t.dtype).removeprefix("torch.").encode("ascii") + b"\0")
        digest.update(",".join(str(s) for s in t.shape).encode("ascii") + b"\0")
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class _Probabilities(nn.Module):
    """What a saved model file holds: the network, its logits turned into probabilities."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return torch.sigmoid(self.model(x))


class _Ensemble(nn.Module):
    """Members are whole model files (each already gives probabilities); their mean."""

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        self.model = nn.ModuleList(members)

    def forward(self, x: Tensor) -> Tensor:
        outputs: list[Tensor] = []
        for member in self.model:
            outputs.append(member(x))
        return torch.stack(outputs, 0).mean(0)


class _WaveformModel(nn.Module):
    """A log-mel model file behind its own frontend: samples in, probabilities out."""

    def __init__(self, frontend: LogMelFrontend, model: nn.Module) -> None:
        super().__init__()
        self.frontend = frontend
        self.model = model

    def forward(self, waveform: Tensor) -> Tensor:
        return self.model(self.frontend(waveform))


def first_lines(error: BaseException, count: int = 4) -> str:
    """The first ``count`` non-empty lines of an error's text, joined: long compiler and
    runtime messages in one line."""
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    return " | ".join(lines[:count]) or type(error).__name__


def example_input(manifest: Manifest) -> Tensor:
    """A fixed random batch of the manifest's input size: what saving and loading check on."""
    generator = torch.Generator().manual_seed(0)
    if manifest.input_kind == "logmel":
        shape = (_CHECK_BATCH, manifest.frontend.n_mels, manifest.window)
    else:
        shape = (_CHECK_BATCH, manifest.window)
    return torch.randn(shape, generator=generator)


def _check_outputs(got: Any, expected: Tensor, manifest: Manifest, tolerance: float,
                   what: str) -> None:
    n_tags = len(manifest.tags)
    shape = (_CHECK_BATCH, n_tags)
    if not isinstance(got, Tensor) or tuple(got.shape) != shape:
        described = tuple(got.shape) if isinstance(got, Tensor) else type(got).__name__
        raise ModelError(f"{what} gives {described} for a batch of {_CHECK_BATCH}, expected "
                         f"{shape}: one score per tag, and the manifest lists {n_tags} tags")
    if tuple(expected.shape) != shape:
        raise ModelError(f"{what} gives {tuple(expected.shape)} when run eagerly but "
                         f"{shape} scripted")
    difference = (got.double() - expected.double()).abs().max().item()
    if not difference <= tolerance:  # NaN fails too
        raise ModelError(f"{what}: the scripted module's probabilities differ from the eager "
                         f"ones by {difference:.3g} (allowed {tolerance:g}); the model does not "
                         "script faithfully (data-dependent Python in forward?)")


def _write(top: torch.jit.ScriptModule, path: str | os.PathLike, manifest: Manifest,
           graph: bytes | None = None, int8: bytes | None = None) -> Manifest:
    """Fills in the hash, the time and the version, then writes the file atomically. ``graph``
    (the module's ONNX graph) is stored as the extra file ``ONNX_FILE``; without it, one is
    exported here and, where that fails, the manifest's ``onnx`` records why. ``int8`` (an
    int8 graph of the same module, ``add_int8_graph``) is stored as ``INT8_FILE``; without it
    the manifest's ``onnx_int8`` is emptied."""
    if graph is None:
        graph, record = _export_or_reason(top, example_input(manifest))
    else:
        record = dict(manifest.onnx)
    manifest = dataclasses.replace(
        manifest,
        format_version=FORMAT_VERSION,
        weights_sha256=weights_sha256(top.model),
        onnx=record,
        onnx_int8=dict(manifest.onnx_int8) if int8 is not None else {},
        created=manifest.created or datetime.datetime.now(datetime.UTC).isoformat(
            timespec="seconds"),
    )
    data = manifest.to_dict()
    text = json.dumps(data, indent=2, allow_nan=False)
    extra: dict[str, Any] = {MANIFEST_FILE: text}
    if graph is not None:
        extra[ONNX_FILE] = graph
    if int8 is not None:
        extra[INT8_FILE] = int8
    path = Path(path)
    with atomic_path(path) as temporary:  # a reader never sees half a file
        torch.jit.save(top, str(temporary), _extra_files=extra)
    return Manifest.from_dict(data)  # exactly what a reader of the file gets


def _export_or_reason(top: torch.jit.ScriptModule,
                      example: Tensor) -> tuple[bytes | None, dict[str, Any]]:
    """The graph and its manifest record, or None and a record of why it could not be had."""
    try:
        return export_onnx(top, example)
    except ModelError as error:
        log.warning("no ONNX graph: %s", error)
        return None, {"error": str(error)}


def export_onnx(module: torch.jit.ScriptModule,
                example: Tensor) -> tuple[bytes, dict[str, Any]]:
    """The ONNX graph of a model file's module (input ``(batch, ...)`` → probabilities, the
    batch axis dynamic) and its manifest record. The graph is checked with ONNX Runtime against
    the module on ``example`` and on its first row: within ``ONNX_TOLERANCE``. Raises
    ``ModelError`` saying why it cannot be exported or differs.

    The exporter is torch's TorchScript-based one (``dynamo=False``): it takes the scripted
    module itself, so the graph is the file's own, and it exports every network of the zoo in
    well under a second, where the dynamo-based exporter needs the eager network, the extra
    package onnxscript, and 3-80 s. torch deprecates it; its warnings are silenced here."""
    module.eval()
    buffer = io.BytesIO()
    started = time.perf_counter()
    try:
        # The exporter prints the graph on failure and warns about its own deprecation.
        with (warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()),
              contextlib.redirect_stderr(io.StringIO())):
            warnings.simplefilter("ignore")
            torch.onnx.export(module, (example,), buffer, opset_version=ONNX_OPSET,
                              dynamo=False, input_names=["input"],
                              output_names=["probabilities"],
                              dynamic_axes={"input": {0: "batch"},
                                            "probabilities": {0: "batch"}})
    except Exception as error:  # the exporter raises many types; each means "cannot export"
        reason = first_lines(error, 1).split("  [Caused by")[0]  # drop the graph dump
        raise ModelError(f"torch.onnx.export cannot export the module: {reason}") from None
    finally:
        module.eval()  # the exporter restores the mode it found, which may be training
    seconds = time.perf_counter() - started
    graph = buffer.getvalue()
    difference = onnx_difference(graph, module, example)
    if not difference <= ONNX_TOLERANCE:  # NaN fails too
        raise ModelError(f"the exported ONNX graph's probabilities differ from the TorchScript "
                         f"module's by {difference:.3g} (allowed {ONNX_TOLERANCE:g})")
    record = {"file": ONNX_FILE, "opset": ONNX_OPSET, "sha256": hashlib.sha256(graph).hexdigest(),
              "exporter": f"torch {torch.__version__.split('+')[0]} torch.onnx.export "
                          "(TorchScript-based)",
              "max_difference": float(difference), "export_s": round(seconds, 3)}
    return graph, record


def onnx_session(graph: bytes, threads: int):
    """An ONNX Runtime session on the CPU for ``graph`` with ``threads`` intra-op threads;
    ``ModelError`` saying why there is none."""
    try:
        import onnxruntime
    except ImportError:
        raise ModelError("onnxruntime is not installed; pip install onnxruntime") from None
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only
    # Spinning threads wait for work at full speed: they would take the cores the other
    # streams' decoding and the other workers need.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    # The memory-pattern planner re-plans for each new batch size and maps fresh pages for it:
    # with the engine's varying batches it cost up to 11 ms of system time per window
    # (musicnn-mtt at batch 8: 28.3 -> 17.1 ms of CPU per window without it; never slower
    # without it, docs/engine-benchmark.md). The arena still reuses the buffers.
    options.enable_mem_pattern = False
    try:
        return onnxruntime.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own types
        raise ModelError(f"ONNX Runtime cannot load the graph: {first_lines(error, 1)}") \
            from None


def onnx_difference(graph: bytes, module: torch.jit.ScriptModule, example: Tensor) -> float:
    """Largest absolute difference between ONNX Runtime's output for ``graph`` and the module's,
    on ``example`` and on its first row alone (a batch of one)."""
    session = onnx_session(graph, threads=1)
    try:
        difference = 0.0
        for batch in (example, example[:1]):
            with torch.no_grad():
                expected = module(batch).double().numpy()
            got = session.run(None, {"input": batch.numpy()})[0]
            if got.shape != expected.shape:
                raise ModelError(f"the ONNX graph gives shape {got.shape} for a batch of "
                                 f"{len(batch)}, the module {expected.shape}")
            difference = max(difference, float(np.abs(got - expected).max()))
    except ModelError:
        raise
    except Exception as error:  # onnxruntime raises its own exception types
        raise ModelError(f"ONNX Runtime cannot run the exported graph: "
                         f"{first_lines(error, 1)}") from None
    return difference


def save(module: nn.Module, path: str | os.PathLike,
         manifest: Manifest | Mapping[str, Any]) -> Manifest:
    """Writes ``module`` (a network giving LOGITS ``(batch, tags)``) as a model file.

    The file's module returns ``sigmoid(logits)``. The network is copied to the CPU in eval mode
    and scripted (``module`` itself is left as it was); the scripted file's output must equal the
    eager ``sigmoid(module(x))`` within 1e-5 on a random batch of the manifest's input size.
    ``manifest`` is a ``Manifest`` or a dict of its fields; ``created``, ``weights_sha256`` and
    ``format_version`` are filled in. Returns the manifest written. Raises ``ModelError``.
    """
    manifest = _as_manifest(manifest)
    model_name = type(module).__name__
    try:
        network = copy.deepcopy(module).eval()
        if any(t.device.type != "cpu" for t in (*network.parameters(), *network.buffers())):
            network = network.to("cpu")
    except Exception as error:  # anything deepcopy or .to can raise
        raise ModelError(f"cannot copy model {model_name} to the CPU: {first_lines(error)}") \
            from error
    if isinstance(network, torch.jit.ScriptModule):
        scripted = network
    else:
        try:
            scripted = torch.jit.script(network)
        except Exception as error:  # TorchScript raises several types; all mean the same here
            raise ModelError(f"model {model_name} cannot be scripted with torch.jit.script, so "
                             "it cannot be saved as a model file; make its forward "
                             f"TorchScript-compatible. TorchScript says: {first_lines(error)}") \
                from error
    try:
        top = torch.jit.script(_Probabilities(scripted))
    except Exception as error:
        raise ModelError(f"model {model_name}: forward must take one Tensor and return one "
                         f"Tensor of logits (batch, tags). TorchScript says: "
                         f"{first_lines(error)}") from error
    example = example_input(manifest)
    with torch.no_grad():
        try:
            expected = torch.sigmoid(network(example))
        except Exception as error:
            raise ModelError(f"model {model_name} fails on a batch of the manifest's input size "
                             f"{tuple(example.shape)}: {first_lines(error)}") from error
        got = top(example)
    _check_outputs(got, expected, manifest, _SAVE_TOLERANCE, f"model {model_name}")
    return _write(top, path, manifest)


def rewrite(path: str | os.PathLike, out: str | os.PathLike, **changes: Any) -> Manifest:
    """Writes model file ``path`` again at ``out`` (which may be ``path``: it is replaced
    atomically) with manifest fields changed, e.g. ``thresholds``; the module and its weights
    are the file's own, checked against its hash on loading. Returns the manifest written."""
    fixed = sorted(set(changes) & {"format_version", "weights_sha256"})
    if fixed:
        raise ModelError(f"rewrite cannot change {fixed}: they describe the module itself")
    loaded = load(path, device="cpu")
    try:
        manifest = dataclasses.replace(loaded.manifest, **changes)
    except TypeError as error:
        raise ModelError(f"rewrite of {loaded.path}: {error}") from None
    return _write(loaded.module, out, manifest, _kept_graph(loaded), stored_int8_graph(loaded))


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
        try:
            raw = archive.read(names[0])
        except (zipfile.BadZipFile, OSError, EOFError) as error:
            raise ModelError(f"model file {path} is damaged: {MANIFEST_FILE} cannot be read "
                             f"({error})") from None
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelError(f"model file {path}: {MANIFEST_FILE} is not valid JSON ({error})") \
            from None
    try:
        return Manifest.from_dict(data)
    except ModelError as error:
        raise ModelError(f"model file {path}: {MANIFEST_FILE}: {error}") from None


def _resolve_device(device: str | torch.device, path: Path) -> torch.device:
    text = str(device).strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(text)
    except (RuntimeError, ValueError):
        resolved = None
    if resolved is None or resolved.type not in ("cpu", "cuda"):
        raise ModelError(f"cannot load {path}: unknown device {device!r}; use 'auto', 'cpu', "
                         "'cuda' or 'cuda:N'")
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ModelError(f"cannot load {path} on {device!r}: CUDA is not available here "
                             "(torch.cuda.is_available() is False: no GPU, no driver, or a CPU "
                             "build of torch); use device 'cpu' or 'auto'")
        count = torch.cuda.device_count()
        if resolved.index is not None and resolved.index >= count:
            raise ModelError(f"cannot load {path} on {device!r}: this machine has {count} CUDA "
                             f"device(s), numbered 0 to {count - 1}")
    return resolved


class LoadedModel:
    """A model file ready to run: ``model(batch)`` gives probabilities ``(batch, tags)``.

    ``module`` is the scripted module on ``device`` in eval mode; ``manifest`` the file's
    manifest, whose main fields are also attributes here.
    """

    def __init__(self, module: torch.jit.ScriptModule, manifest: Manifest, path: Path,
                 device: torch.device) -> None:
        self.module = module
        self.manifest = manifest
        self.path = path
        self.device = device
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
        """Input length: frames for log-mel models, samples for waveform models."""
        return self.manifest.window

    @property
    def hop(self) -> int:
        """Default step between windows, in the window's unit."""
        return self.manifest.hop

    def __call__(self, batch: Tensor | np.ndarray) -> Tensor:
        """Probabilities ``(batch, tags)`` on ``device`` for ``(batch, n_mels, frames)`` log-mel
        windows or ``(batch, samples)`` waveforms, as ``input_kind`` says."""
        x = torch.as_tensor(batch, dtype=torch.float32, device=self.device)
        if self.input_kind == "logmel":
            n_mels = self.frontend_options.n_mels
            if x.dim() != 3 or x.size(1) != n_mels:
                raise ValueError(f"{self.name} takes log-mel windows (batch, {n_mels}, frames), "
                                 f"got shape {tuple(x.shape)}")
        elif x.dim() != 2:
            raise ValueError(f"{self.name} takes waveforms (batch, samples), "
                             f"got shape {tuple(x.shape)}")
        with torch.no_grad():
            return self.module(x)

    def __repr__(self) -> str:
        return (f"LoadedModel({str(self.path)!r}, name={self.name!r}, tags={len(self.tags)}, "
                f"input_kind={self.input_kind!r}, window={self.window}, hop={self.hop}, "
                f"device={str(self.device)!r})")


def load(path: str | os.PathLike, device: str | torch.device = "auto") -> LoadedModel:
    """Reads and checks a model file; the module goes to ``device`` in eval mode.

    ``device``: ``"auto"`` (CUDA when available, else the CPU), ``"cpu"``, ``"cuda"`` or
    ``"cuda:N"``. Raises ``ModelError`` naming the file and the reason (see ``read_manifest``;
    also a module TorchScript cannot load and weights that do not match the recorded hash).
    """
    path = Path(path)
    manifest = read_manifest(path)
    resolved = _resolve_device(device, path)
    try:
        module = torch.jit.load(str(path), map_location=resolved)
    except Exception as error:  # TorchScript's loader raises RuntimeError and others
        raise ModelError(f"model file {path} is not a loadable TorchScript module: "
                         f"{first_lines(error, 2)}") from None
    try:
        model = module.model
    except AttributeError:
        raise ModelError(f"model file {path} holds a module without a 'model' submodule, so it "
                         "was not written by streamtag.model.modelfile; save it again") from None
    digest = weights_sha256(model)
    if digest != manifest.weights_sha256:
        raise ModelError(f"model file {path}: weights hash mismatch: the weights hash to "
                         f"{digest[:16]}... but {MANIFEST_FILE} records "
                         f"{manifest.weights_sha256[:16] or '(none)'}...; the file was changed or "
                         "damaged after it was saved")
    module.eval()
    return LoadedModel(module, manifest, path, resolved)


def _stored_graph(model: LoadedModel) -> bytes | None:
    """The ONNX graph stored in the model file, checked against the manifest's hash; None
    where the file has none."""
    record = model.manifest.onnx
    if "error" in record:
        raise ModelError(f"its graph could not be exported when the file was written: "
                         f"{record['error']}")
    return _stored_extra(model, record, "ONNX graph")


def _kept_graph(model: LoadedModel) -> bytes | None:
    """The stored graph of a file written again with its module unchanged: it still holds, so
    it is kept rather than exported and checked again. None where the file has none or records
    why none could be exported (``_write`` then exports, or records why, as ``save`` does)."""
    return None if "error" in model.manifest.onnx else _stored_graph(model)


def stored_int8_graph(model: LoadedModel) -> bytes | None:
    """The int8 graph stored in the model file (``add_int8_graph``), checked against the
    manifest's hash; None where the file has none."""
    return _stored_extra(model, model.manifest.onnx_int8, "int8 graph")


def _stored_extra(model: LoadedModel, record: Mapping[str, Any], what: str) -> bytes | None:
    if not record.get("file"):
        return None
    with zipfile.ZipFile(model.path) as archive:
        names = [n for n in archive.namelist() if n.split("/")[1:] == ["extra", record["file"]]]
        if not names:
            raise ModelError(f"the manifest names the {what} {record['file']} but the file "
                             "lacks it; write the model file again")
        data = archive.read(names[0])
    if hashlib.sha256(data).hexdigest() != record.get("sha256"):
        raise ModelError(f"the stored {what} does not match the hash its manifest records; "
                         "the file was changed or damaged after it was saved")
    return data


def _cache_folder() -> Path:
    import platformdirs

    return Path(platformdirs.user_cache_dir("streamtag")) / "onnx"


def onnx_graph(model: LoadedModel) -> bytes:
    """The model's ONNX graph: the one stored in its file; for a file without one (format 1.0),
    one exported now from its TorchScript module (``export_onnx``) and kept in the user cache
    folder under its weights hash, so the next load finds it. ``ModelError`` saying why where
    none can be had; the TorchScript module serves then."""
    graph = _stored_graph(model)
    if graph is not None:
        return graph
    cached = _cache_folder() / f"{model.manifest.weights_sha256}.onnx"
    try:
        return cached.read_bytes()
    except OSError:
        pass
    if model.device.type != "cpu":
        raise ModelError("the file has no ONNX graph and one is exported on the CPU only")
    graph, _ = export_onnx(model.module, example_input(model.manifest))
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(cached) as temporary:
            temporary.write_bytes(graph)
    except OSError as error:  # a read-only cache costs an export at every load, nothing more
        log.warning("cannot cache the ONNX graph of %s in %s: %s", model.path, cached.parent,
                    error)
    return graph


def add_onnx_graph(path: str | os.PathLike, out: str | os.PathLike | None = None) -> Manifest:
    """Writes a model file again (to ``out``, default in place) with its ONNX graph inside and
    format version ``FORMAT_VERSION``; the module, its weights (and so their hash) and the rest
    of the manifest are kept. Raises ``ModelError`` where the graph cannot be exported."""
    model = load(path, device="cpu")
    graph, record = export_onnx(model.module, example_input(model.manifest))
    manifest = dataclasses.replace(model.manifest, onnx=record)
    return _write(model.module, out or path, manifest, graph, stored_int8_graph(model))


def add_int8_graph(path: str | os.PathLike, graph: bytes, record: Mapping[str, Any],
                   out: str | os.PathLike | None = None) -> Manifest:
    """Writes a model file again (to ``out``, default in place) with ``graph``, an int8 graph of
    its module (``streamtag.catalog.quantize``), inside as ``INT8_FILE`` and ``record`` (how it was
    made
    and measured) with its hash as the manifest's ``onnx_int8``; the module, its weights, its
    FP32 graph and the rest of the manifest are kept."""
    model = load(path, device="cpu")
    full = {**record, "file": INT8_FILE, "sha256": hashlib.sha256(graph).hexdigest()}
    manifest = dataclasses.replace(model.manifest, onnx_int8=full)
    return _write(model.module, out or path, manifest, _kept_graph(model), graph)


def _first_difference(a: Manifest, b: Manifest) -> str | None:
    """The first contract field two members disagree on, described; None when they agree."""
    if a.tags != b.tags:
        if set(a.tags) == set(b.tags):
            return "tags (the same names in a different order)"
        only = sorted(set(a.tags) ^ set(b.tags))
        return f"tags ({len(a.tags)} vs {len(b.tags)}; not in both: {only[:5]})"
    if a.input_kind != b.input_kind:
        return f"input_kind ({a.input_kind!r} vs {b.input_kind!r})"
    if a.frontend != b.frontend:
        x, y = a.frontend.to_dict(), b.frontend.to_dict()
        key = next(k for k in x if x[k] != y[k])
        return f"frontend option {key} ({x[key]!r} vs {y[key]!r})"
    if a.window != b.window:
        return f"window ({a.window} vs {b.window})"
    if a.hop != b.hop:
        return f"hop ({a.hop} vs {b.hop})"
    return None


def save_ensemble(paths: Sequence[str | os.PathLike], out: str | os.PathLike,
                  name: str | None = None) -> Manifest:
    """One model file whose probabilities are the mean of the members' probabilities.

    Members must share tags (in order), input kind, frontend options, window and hop; the
    thresholds are the mean of the members'. Returns the manifest written.
    """
    if isinstance(paths, (str, os.PathLike)) or not paths:
        raise ModelError("save_ensemble needs a list of at least one model file")
    members = [load(p, device="cpu") for p in paths]
    first = members[0]
    for member in members[1:]:
        difference = _first_difference(first.manifest, member.manifest)
        if difference is not None:
            raise ModelError(f"cannot ensemble {member.path} with {first.path}: they differ in "
                             f"{difference}; members must share tags (in order), input_kind, "
                             "frontend options, window and hop")
    try:
        top = torch.jit.script(_Ensemble([m.module for m in members]))
    except Exception as error:
        raise ModelError(f"cannot script the ensemble: {first_lines(error)}") from error
    manifest = Manifest(
        name=name or "ensemble of " + ", ".join(m.name for m in members),
        tags=first.tags,
        input_kind=first.input_kind,
        frontend=first.frontend_options,
        window=first.window,
        hop=first.hop,
        thresholds=tuple(np.mean([m.manifest.thresholds for m in members], axis=0).tolist()),
        architecture={"name": "ensemble", "combine": "mean of probabilities",
                      "size": len(members)},
        recipe={"ensemble_of": [m.manifest.recipe for m in members]},
        members=tuple({"name": m.name, "weights_sha256": m.manifest.weights_sha256,
                       "architecture": m.manifest.architecture} for m in members),
    )
    example = example_input(manifest)
    with torch.no_grad():
        expected = torch.stack([m.module(example) for m in members]).mean(0)
        got = top(example)
    _check_outputs(got, expected, manifest, _ENSEMBLE_TOLERANCE, "the ensemble")
    return _write(top, out, manifest)


def export_waveform(model_file: str | os.PathLike, out: str | os.PathLike) -> Manifest:
    """A waveform model file from a log-mel one: ``LogMelFrontend`` then the log-mel model.

    The frontend is the model's with ``center=False``, so a window of
    ``n_fft + (W - 1) * hop_length`` samples gives exactly the model's ``W`` frames, each
    identical to the corresponding interior frame of the daemon's stream; the hop becomes
    ``H * hop_length`` samples. Returns the manifest written.
    """
    source = load(model_file, device="cpu")
    if source.input_kind != "logmel":
        raise ModelError(f"model file {source.path} already takes a waveform "
                         f"(input_kind {source.input_kind!r}); only log-mel models are exported")
    options = source.frontend_options.replace(center=False)
    frontend = LogMelFrontend(options)
    try:
        top = torch.jit.script(_WaveformModel(frontend, source.module))
    except Exception as error:
        raise ModelError(f"cannot script the waveform model of {source.path}: "
                         f"{first_lines(error)}") from error
    manifest = dataclasses.replace(
        source.manifest,
        input_kind="waveform",
        frontend=options,
        window=options.n_fft + (source.window - 1) * options.hop_length,
        hop=source.hop * options.hop_length,
        members=({"name": source.name, "weights_sha256": source.manifest.weights_sha256,
                  "input_kind": "logmel", "window": source.window, "hop": source.hop},),
        created="",
        weights_sha256="",
    )
    example = example_input(manifest)
    with torch.no_grad():
        frames = frontend(example)
        if frames.size(2) != source.window:
            raise ModelError(f"internal error: {manifest.window} samples gave {frames.size(2)} "
                             f"frames, not {source.window}")
        expected = source.module(frames)
        got = top(example)
    _check_outputs(got, expected, manifest, _SAVE_TOLERANCE, "the waveform model")
    return _write(top, out, manifest)
