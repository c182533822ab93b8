"""musicnn's taggers as model files without torch: the ONNX graph built from the checkpoint.

``streamtag models install`` where torch is not installed (docs/models.md, "Without torch")
reads musicnn's checkpoint as ``streamtag.catalog.musicnn.read_weights`` lays it out (the zoo
network's state-dict names and shapes) and writes the graph that torch's exporter gives for the
zoo's ``musicnn`` and ``musicnn_pair``, node for node where it matters: the same operators in
the same order (pad, convolution, ReLU, batch norm, maximum over the mel bands, ...), the
initializers named ``model.`` and the state-dict name, input ``input`` ``(batch, n_mels,
window)`` and output ``probabilities``. So the daemon's graph passes (``graph_passes``, the
Winograd rewrites of musicnn's long filters among them) find what they look for, and
``modelfile.add_module`` can rebuild the TorchScript half from the graph's own weights.

The file written (format 1.4, docs/model-file.md) holds the manifest and this graph, and no
TorchScript module (``Manifest.torchscript`` false); its ``weights_sha256`` is the hash the
TorchScript module's weights have (``stored.state_sha256``), so the files written with and
without torch name the same weights.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
import time
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from streamtag.catalog import music, musicnn
from streamtag.errors import ModelError, first_lines
from streamtag.fsutil import atomic_path
from streamtag.model.manifest import FORMAT_VERSION, MANIFEST_FILE, ONNX_FILE, Manifest
from streamtag.model.sessions import onnx_session
from streamtag.model.stored import COMPLETE_COMMAND, state_sha256

__all__ = ["NAMES", "OPSET", "convert", "musicnn_graph", "pair_graph", "write_graph_file"]

# What ``convert`` builds: the musicnn-architecture taggers and ``music`` (made of two)
NAMES = (music.NAME, "musicnn-msd", "musicnn-mtt")
OPSET = 17  # streamtag.model.onnx_export.ONNX_OPSET, the exporter's (that module needs torch)
_BN_EPS = 1e-3  # tf.layers.batch_normalization's, as streamtag.nets.musicnn
_TEMPORAL_LENGTHS = (128, 64, 32)
_PAIR_EPS = 1e-7  # MusicnnPair keeps the merged probabilities this far from 0 and 1


class _Builder:
    """Nodes and initializers of one graph, each value named once."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._names: set[str] = set()

    def name(self, stem: str) -> str:
        name, n = stem, 0
        while name in self._names:
            n += 1
            name = f"{stem}_{n}"
        self._names.add(name)
        return name

    def constant(self, stem: str, value: np.ndarray) -> str:
        name = self.name(stem)
        self.initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(self, op: str, inputs: list[str], stem: str, **attributes: Any) -> str:
        output = self.name(f"{stem}/{op}_output_0")
        self.nodes.append(helper.make_node(op, inputs, [output], name=self.name(f"{stem}/{op}"),
                                           **attributes))
        return output


def _batch_norm(b: _Builder, x: str, weights: Mapping[str, np.ndarray], prefix: str,
                key: str) -> str:
    inputs = [b.constant(f"{prefix}{key}.{part}", weights[f"{key}.{part}"])
              for part in ("weight", "bias", "running_mean", "running_var")]
    return b.node("BatchNormalization", [x, *inputs], f"/{prefix}{key}", epsilon=_BN_EPS,
                  momentum=0.99, training_mode=0)


def _conv(b: _Builder, x: str, weights: Mapping[str, np.ndarray], prefix: str, key: str,
          pads: list[int]) -> str:
    weight = weights[f"{key}.weight"]
    inputs = [x, b.constant(f"{prefix}{key}.weight", weight),
              b.constant(f"{prefix}{key}.bias", weights[f"{key}.bias"])]
    rank = weight.ndim - 2
    return b.node("Conv", inputs, f"/{prefix}{key}", kernel_shape=list(weight.shape[2:]),
                  pads=pads, strides=[1] * rank, dilations=[1] * rank, group=1)


def _musicnn(b: _Builder, x: str, weights: Mapping[str, np.ndarray], prefix: str) -> str:
    """streamtag.nets.musicnn.MusiCNN.forward on ``x`` (batch, mels, frames): its logits."""
    x = b.node("Transpose", [x], f"/{prefix}", perm=[0, 2, 1])
    x = b.node("Unsqueeze", [x, b.constant(f"/{prefix}axis1", np.array([1], np.int64))],
               f"/{prefix}")
    x = _batch_norm(b, x, weights, prefix, "input_bn")
    blocks = [(f"timbral.{i}", (3, 3)) for i in range(2)]
    blocks += [(f"temporal.{i}", ((n - 1) // 2, n - 1 - (n - 1) // 2))
               for i, n in enumerate(_TEMPORAL_LENGTHS)]
    pads: dict[tuple[int, int], str] = {}
    maps = []
    for key, (before, after) in blocks:
        if (before, after) not in pads:  # the exporter pads once for both timbral blocks
            amounts = b.constant(f"/{prefix}{key}/pads",
                                 np.array([0, 0, before, 0, 0, 0, after, 0], np.int64))
            pads[before, after] = b.node("Pad", [x, amounts], f"/{prefix}{key}", mode="constant")
        y = _conv(b, pads[before, after], weights, prefix, f"{key}.conv", [0, 0, 0, 0])
        y = b.node("Relu", [y], f"/{prefix}{key}")
        y = _batch_norm(b, y, weights, prefix, f"{key}.bn")
        maps.append(b.node("ReduceMax", [y], f"/{prefix}{key}", axes=[3], keepdims=0))
    frontend = b.node("Concat", maps, f"/{prefix}frontend", axis=1)
    features, y = [frontend], frontend
    for i in range(3):
        out = _conv(b, y, weights, prefix, f"midend.{i}.conv", [3, 3])
        out = b.node("Relu", [out], f"/{prefix}midend.{i}")
        out = _batch_norm(b, out, weights, prefix, f"midend.{i}.bn")
        y = out if i == 0 else b.node("Add", [out, y], f"/{prefix}midend.{i}")
        features.append(y)
    dense = b.node("Concat", features, f"/{prefix}dense", axis=1)
    most = b.node("ReduceMax", [dense], f"/{prefix}pool", axes=[2], keepdims=0)
    mean = b.node("ReduceMean", [dense], f"/{prefix}pool", axes=[2], keepdims=0)
    axis2 = b.constant(f"/{prefix}axis2", np.array([2], np.int64))
    pooled = b.node("Concat", [b.node("Unsqueeze", [most, axis2], f"/{prefix}pool"),
                               b.node("Unsqueeze", [mean, axis2], f"/{prefix}pool")],
                    f"/{prefix}pool", axis=2)
    x = b.node("Flatten", [pooled], f"/{prefix}pool", axis=1)
    x = _batch_norm(b, x, weights, prefix, "pool_bn")
    x = _gemm(b, x, weights, prefix, "dense")
    x = b.node("Relu", [x], f"/{prefix}dense")
    x = _batch_norm(b, x, weights, prefix, "dense_bn")
    return _gemm(b, x, weights, prefix, "output")


def _gemm(b: _Builder, x: str, weights: Mapping[str, np.ndarray], prefix: str, key: str) -> str:
    inputs = [x, b.constant(f"{prefix}{key}.weight", weights[f"{key}.weight"]),
              b.constant(f"{prefix}{key}.bias", weights[f"{key}.bias"])]
    return b.node("Gemm", inputs, f"/{prefix}{key}", alpha=1.0, beta=1.0, transB=1)


def _model(b: _Builder, output: str, n_mels: int, window: int, n_tags: int) -> bytes:
    graph = helper.make_graph(
        b.nodes, "streamtag",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", n_mels, window])],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, ["batch", n_tags])],
        b.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="streamtag.catalog.onnx_build",
                              ir_version=8)  # the exporter's, which older runtimes read
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()


def musicnn_graph(weights: Mapping[str, np.ndarray], n_mels: int, window: int) -> bytes:
    """The ONNX graph of a model file of the zoo's ``musicnn`` with ``weights`` (its
    state-dict arrays): probabilities ``(batch, tags)`` of ``(batch, n_mels, window)``."""
    b = _Builder()
    b.name("input")
    logits = _musicnn(b, "input", weights, "model.")
    b.nodes.append(helper.make_node("Sigmoid", [logits], ["probabilities"], name="/Sigmoid"))
    return _model(b, "probabilities", n_mels, window, len(weights["output.bias"]))


def pair_graph(weights: Mapping[str, np.ndarray], n_mels: int, window: int) -> bytes:
    """The ONNX graph of a model file of the zoo's ``musicnn_pair``: each network's
    probabilities times its mixing matrix, summed, kept ``_PAIR_EPS`` from 0 and 1 (what
    ``sigmoid(logit(p, eps))`` gives, up to rounding)."""
    b = _Builder()
    b.name("input")
    mixed = []
    for member in ("first", "second"):
        own = {k.removeprefix(f"{member}."): v for k, v in weights.items()
               if k.startswith(f"{member}.")}
        logits = _musicnn(b, "input", own, f"model.{member}.")
        p = b.node("Sigmoid", [logits], f"/model.{member}")
        mix = b.constant(f"model.{member}_mix", weights[f"{member}_mix"])
        mixed.append(b.node("MatMul", [p, mix], f"/model.{member}_mix"))
    merged = b.node("Add", mixed, "/model/merge")
    low = b.constant("/model/eps", np.array(_PAIR_EPS, np.float32))
    high = b.constant("/model/one_less_eps", np.array(1.0 - _PAIR_EPS, np.float32))
    b.nodes.append(helper.make_node("Clip", [merged, low, high], ["probabilities"],
                                    name="/model/Clip"))
    return _model(b, "probabilities", n_mels, window, weights["first_mix"].shape[1])


def _with_counters(weights: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The state dict as torch's module holds it: each batch norm's step counter beside its
    statistics (an int64 0, never trained here), for the weights hash."""
    full = dict(weights)
    for key in weights:
        if key.endswith(".running_mean"):
            full[key.removesuffix("running_mean") + "num_batches_tracked"] = np.array(0, np.int64)
    return full


def _check(graph: bytes, manifest: Manifest) -> dict[str, Any]:
    """ONNX Runtime runs the graph on a batch of two and of one: probabilities of the right
    shape, finite, in [0, 1]."""
    rng = np.random.default_rng(0)
    batch = rng.standard_normal((2, manifest.frontend.n_mels, manifest.window), np.float32)
    try:
        session = onnx_session(graph, threads=1)
        outputs = [session.run(None, {"input": x})[0] for x in (batch, batch[:1])]
    except Exception as error:  # noqa: BLE001 - onnxruntime raises its own types
        raise ModelError(f"ONNX Runtime cannot run the graph built for {manifest.name}: "
                         f"{first_lines(error, 1)}") from None
    for x, out in zip((batch, batch[:1]), outputs, strict=True):
        if out.shape != (len(x), len(manifest.tags)) or not (
                np.isfinite(out).all() and (out >= 0).all() and (out <= 1).all()):
            raise ModelError(f"the graph built for {manifest.name} gives no probabilities "
                             f"(shape {out.shape} for a batch of {len(x)})")
    return {"batch_difference": float(np.abs(outputs[0][:1] - outputs[1]).max())}


def write_graph_file(graph: bytes, manifest: Manifest, weights: Mapping[str, np.ndarray],
                     out: str | os.PathLike, build_s: float = 0.0) -> Manifest:
    """Writes a model file of format 1.4 without a TorchScript module (atomically): the
    manifest and ``graph``, the ONNX graph of a network whose state dict is ``weights``, built
    in ``build_s`` seconds. The graph is run once first (``ModelError`` where it cannot)."""
    record = {"file": ONNX_FILE, "opset": OPSET, "sha256": hashlib.sha256(graph).hexdigest(),
              "exporter": f"streamtag.catalog.onnx_build (onnx {onnx.__version__} helper API, "
                          "without torch)",
              "build_s": round(build_s, 3), **_check(graph, manifest)}
    manifest = dataclasses.replace(
        manifest,
        format_version=FORMAT_VERSION,
        torchscript=False,
        weights_sha256=state_sha256(_with_counters(weights)),
        onnx=record,
        onnx_int8={},
        window_reuse={"error": "the file has no TorchScript module to export window reuse's "
                               "steps from, so it serves whole windows (`"
                               f"{COMPLETE_COMMAND} {manifest.name}` adds both)"},
        created=manifest.created or datetime.datetime.now(datetime.UTC).isoformat(
            timespec="seconds"),
    )
    text = json.dumps(manifest.to_dict(), indent=2, allow_nan=False)
    out = Path(out)
    prefix = out.stem or "model"  # as torch.jit.save names the archive's folder
    with atomic_path(out) as temporary, zipfile.ZipFile(temporary, "w",
                                                        zipfile.ZIP_STORED) as archive:
        archive.writestr(f"{prefix}/extra/{MANIFEST_FILE}", text)
        archive.writestr(f"{prefix}/extra/{ONNX_FILE}", graph)
    return Manifest.from_dict(manifest.to_dict())


def convert(package_dir: Path, name: str, out: Path) -> Manifest:
    """Writes ``name`` (one of ``NAMES``) from the musicnn package folder ``package_dir`` as a
    model file without a TorchScript module, at ``out`` (atomically). Errors as
    ``musicnn.convert``'s."""
    package_dir, out = Path(package_dir), Path(out)
    started = time.perf_counter()
    n_mels, window = musicnn.MUSICNN_OPTIONS["n_mels"], musicnn.WINDOW_FRAMES
    if name == music.NAME:
        (first, first_tags), (second, second_tags) = (
            musicnn.read_weights(package_dir, m) for m in music.MEMBERS)
        tags, first_mix, second_mix = music.merge_matrices(first_tags, second_tags)
        weights = {**{f"first.{k}": v for k, v in first.items()},
                   **{f"second.{k}": v for k, v in second.items()},
                   "first_mix": first_mix, "second_mix": second_mix}
        graph = pair_graph(weights, n_mels, window)
        manifest = music.manifest(package_dir, first_tags, second_tags, tags)
    elif name in NAMES:
        weights, tags = musicnn.read_weights(package_dir, name)
        graph = musicnn_graph(weights, n_mels, window)
        manifest = musicnn.manifest(package_dir, name, tags)
    else:
        raise ModelError(f"{name} is converted with torch; without it streamtag converts "
                         f"{', '.join(NAMES)}")
    out.parent.mkdir(parents=True, exist_ok=True)
    return write_graph_file(graph, manifest, weights, out, time.perf_counter() - started)
