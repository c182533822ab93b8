"""The model file: one TorchScript file whose extra files are its manifest and its ONNX graphs.

The file is the contract between the trainer and the daemon (docs/model-file.md): its module
maps a batch of inputs to per-tag PROBABILITIES, and its manifest (``streamtag.model.manifest``)
says everything needed to feed it and to read its output. This module writes such files (a
network, an ensemble of files, a log-mel file behind its own frontend) and loads their modules
with ``torch.jit.load``; everything else is read with ``zipfile``, never with pickle, and a file
whose module stays as it is is written again without torch (``streamtag.model.stored``, whose
``rewrite`` and ``add_int8_graph`` are also found here). The ONNX graph it stores is exported
and checked by ``streamtag.model.onnx_export``, window reuse's steps by
``streamtag.model.reuse_export``.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import hashlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from streamtag.errors import ModelError, first_lines
from streamtag.fsutil import atomic_path
from streamtag.model.manifest import (
    FORMAT_VERSION,
    MANIFEST_FILE,
    ONNX_FILE,
    Manifest,
    as_manifest,
    read_manifest,
)
from streamtag.model.onnx_export import (
    ONNX_TOLERANCE,
    cached_export,
    export_onnx,
    onnx_difference,
)
from streamtag.model.reuse_export import stored_steps
from streamtag.model.stored import (
    StoredModel,
    add_int8_graph,
    no_torchscript,
    open_model,
    rewrite,
)
from streamtag.model.torch_frontend import LogMelFrontend

log = logging.getLogger(__name__)

# Manifest and read_manifest live in streamtag.model.manifest; most callers find them here.
__all__ = [
    "LoadedModel",
    "add_int8_graph",
    "add_module",
    "add_onnx_graph",
    "example_input",
    "export_waveform",
    "load",
    "onnx_graph",
    "rewrite",
    "save",
    "save_ensemble",
    "stored_int8_graph",
    "upgrade",
    "weights_sha256",
]

_CHECK_BATCH = 2  # inputs in the scripted-versus-eager check at save time
_SAVE_TOLERANCE = 1e-5
_ENSEMBLE_TOLERANCE = 1e-6


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
    the manifest's ``onnx_int8`` is emptied. Window reuse's steps at the manifest's hop are
    exported and stored where the architecture's windows share work (``reuse_export``)."""
    if graph is None:
        graph, record = _export_or_reason(top, example_input(manifest))
    else:
        record = dict(manifest.onnx)
    reuse, reuse_files = stored_steps(top, manifest)
    if "error" in reuse:
        log.warning("no window-reuse steps stored: %s", reuse["error"])
    manifest = dataclasses.replace(
        manifest,
        format_version=FORMAT_VERSION,
        torchscript=True,
        weights_sha256=weights_sha256(top.model),
        onnx=record,
        onnx_int8=dict(manifest.onnx_int8) if int8 is not None else {},
        window_reuse=reuse,
        created=manifest.created or datetime.datetime.now(datetime.UTC).isoformat(
            timespec="seconds"),
    )
    data = manifest.to_dict()
    text = json.dumps(data, indent=2, allow_nan=False)
    extra: dict[str, Any] = {MANIFEST_FILE: text, **reuse_files}
    if graph is not None:
        extra[ONNX_FILE] = graph
    if int8 is not None:
        extra[manifest.onnx_int8["file"]] = int8
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


def save(module: nn.Module, path: str | os.PathLike,
         manifest: Manifest | Mapping[str, Any]) -> Manifest:
    """Writes ``module`` (a network giving LOGITS ``(batch, tags)``) as a model file.

    The file's module returns ``sigmoid(logits)``. The network is copied to the CPU in eval mode
    and scripted (``module`` itself is left as it was); the scripted file's output must equal the
    eager ``sigmoid(module(x))`` within 1e-5 on a random batch of the manifest's input size.
    ``manifest`` is a ``Manifest`` or a dict of its fields; ``created``, ``weights_sha256`` and
    ``format_version`` are filled in. Returns the manifest written. Raises ``ModelError``.
    """
    manifest = as_manifest(manifest)
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


class LoadedModel(StoredModel):
    """A model file ready to run: ``model(batch)`` gives probabilities ``(batch, tags)``.

    ``module`` is the scripted module on ``device`` in eval mode; the manifest, its main fields
    and the stored graphs are ``StoredModel``'s, as read without torch.
    """

    def __init__(self, module: torch.jit.ScriptModule, manifest: Manifest, path: Path,
                 device: torch.device) -> None:
        super().__init__(path, manifest)
        self.module = module
        self.device = device

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
    if not manifest.torchscript:
        raise no_torchscript(path, "loading it with torch (CUDA, --backend torch, training, "
                                   "exporting)")
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


def stored_int8_graph(model: StoredModel) -> bytes | None:
    """The int8 graph stored in the model file (``add_int8_graph``), checked against the
    manifest's hash; None where the file has none."""
    return model.int8_graph()


def onnx_graph(model: LoadedModel) -> bytes:
    """The model's ONNX graph: the one stored in its file; for a file without one (format 1.0),
    one exported now from its TorchScript module (``export_onnx``) and kept in the user cache
    folder under its weights hash, so the next load finds it. ``ModelError`` saying why where
    none can be had; the TorchScript module serves then."""
    graph = model.graph()
    if graph is not None:
        return graph

    def export() -> bytes:
        if model.device.type != "cpu":
            raise ModelError("the file has no ONNX graph and one is exported on the CPU only")
        return export_onnx(model.module, example_input(model.manifest))[0]

    return cached_export(model.manifest.weights_sha256, export, model.path)


def upgrade(path: str | os.PathLike, out: str | os.PathLike | None = None) -> Manifest:
    """Writes a model file again (to ``out``, default in place) in format ``FORMAT_VERSION``:
    its module, weights and stored graphs kept, window reuse's steps at its hop added where its
    architecture shares work across windows (format 1.3), so ONNX Runtime serves all of it
    without torch. A file without an ONNX graph gets one (``add_onnx_graph``)."""
    model = load(path, device="cpu")
    graph = model.graph()
    if graph is None:
        return add_onnx_graph(path, out)
    return _write(model.module, out or path, model.manifest, graph, stored_int8_graph(model))


def add_onnx_graph(path: str | os.PathLike, out: str | os.PathLike | None = None) -> Manifest:
    """Writes a model file again (to ``out``, default in place) with its ONNX graph inside and
    format version ``FORMAT_VERSION``; the module, its weights (and so their hash) and the rest
    of the manifest are kept. Raises ``ModelError`` where the graph cannot be exported."""
    model = load(path, device="cpu")
    graph, record = export_onnx(model.module, example_input(model.manifest))
    manifest = dataclasses.replace(model.manifest, onnx=record)
    return _write(model.module, out or path, manifest, graph, stored_int8_graph(model))


def add_module(path: str | os.PathLike, out: str | os.PathLike | None = None) -> Manifest:
    """Writes a model file that has no TorchScript module (``Manifest.torchscript`` false: made
    without torch, ``streamtag.catalog.onnx_build``) again with one, to ``out`` (default in
    place, atomically): the network its manifest's architecture names (a ``streamtag.nets``
    name and options), filled with the weights of the file's ONNX graph (named ``model.`` and
    the state-dict name). The weights must hash to the manifest's ``weights_sha256`` and the
    module must give the graph's probabilities within ``ONNX_TOLERANCE``; the file is then
    written as ``save`` writes it (the graph exported again, window reuse's steps), keeping the
    manifest's thresholds, options and recipe, and its int8 graph. Returns the manifest
    written."""
    from onnx import load_from_string, numpy_helper

    from streamtag import nets

    stored = open_model(path)
    manifest = stored.manifest
    if manifest.torchscript:
        raise ModelError(f"model file {stored.path} already has its TorchScript module")
    graph = stored.graph()
    if graph is None:
        raise ModelError(f"model file {stored.path} has neither a TorchScript module nor an "
                         "ONNX graph; install it again")
    options = dict(manifest.architecture)
    architecture = options.pop("name", None)
    try:
        network = nets.build(architecture, len(manifest.tags), **options).eval()
    except (TypeError, ValueError) as error:
        raise ModelError(f"model file {stored.path}: its architecture {architecture!r} cannot "
                         f"be built ({error}), so no module can be made for it") from None
    arrays = {init.name.removeprefix("model."): numpy_helper.to_array(init)
              for init in load_from_string(graph).graph.initializer
              if init.name.startswith("model.")}
    state = network.state_dict()
    loaded = {}
    for key, tensor in state.items():
        if key.endswith("num_batches_tracked"):
            continue
        value = arrays.get(key)
        if value is None or tuple(value.shape) != tuple(tensor.shape):
            raise ModelError(f"model file {stored.path}: its ONNX graph holds no weight "
                             f"model.{key} of shape {tuple(tensor.shape)}, so the module cannot "
                             "be rebuilt from it; install the model again with torch")
        loaded[key] = torch.from_numpy(value.copy())
    network.load_state_dict(loaded, strict=False)
    if weights_sha256(network) != manifest.weights_sha256:
        raise ModelError(f"model file {stored.path}: the weights of its ONNX graph do not hash to "
                         "the manifest's weights_sha256; the file was changed or damaged")
    top = torch.jit.script(_Probabilities(network))
    difference = onnx_difference(graph, top, example_input(manifest))
    if not difference <= ONNX_TOLERANCE:  # NaN fails too
        raise ModelError(f"model file {stored.path}: the module rebuilt from its graph's weights "
                         f"differs from the graph by {difference:.3g} (allowed "
                         f"{ONNX_TOLERANCE:g}); install the model again with torch")
    int8 = stored.int8_graph()
    written = save(network, out or stored.path, dataclasses.replace(
        manifest, torchscript=True, onnx={}, onnx_int8={}, window_reuse={}))
    if int8 is not None:
        written = add_int8_graph(out or stored.path, int8, manifest.onnx_int8)
    return written


def _first_difference(a: Manifest, b: Manifest) -> str | None:
    """The first contract field two members disagree on, described; None when they agree."""
    if a.tags != b.tags:
        if set(a.tags) == set(b.tags):
            return "tags (the same names in a different order)"
        only = sorted(set(a.tags) ^ set(b.tags))
        more = f" and {len(only) - 5} more" if len(only) > 5 else ""
        return (f"tags ({len(a.tags)} vs {len(b.tags)}; not in both: "
                f"{', '.join(map(repr, only[:5]))}{more})")
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
            # the values in the order the files are named: the first member's, then this one's
            raise ModelError(f"cannot ensemble {first.path} with {member.path}: they differ in "
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
