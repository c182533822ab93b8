"""musicnn's taggers as model files without torch: the ONNX graph built from the checkpoint.

``streamtag models install`` where torch is not installed (docs/models.md, "Without torch")
reads musicnn's checkpoint as ``streamtag.catalog.musicnn.read_weights`` lays it out (the zoo
network's state-dict names and shapes) and writes the graph that torch's exporter gives for the
zoo's ``musicnn``, ``musicnn_pair`` and ``musicnn_vgg``, node for node where it matters: the
same operators in the same order (pad, convolution, ReLU, batch norm, maximum over the mel
bands, ...), the initializers named ``model.`` and the state-dict name, input ``input``
``(batch, n_mels, window)`` and output ``probabilities``. So the daemon's graph passes
(``graph_passes``, the Winograd rewrites of musicnn's long filters among them) find what they
look for, and ``modelfile.add_module`` can rebuild the TorchScript half from the graph's own
weights.

Window reuse's two steps (``step_graphs``) are built the same way from the arithmetic of
``reuse_export._MusicnnSteps`` and ``_VggSteps`` and checked, as they will serve, against the
whole-window graph.

The file written (format 1.4, docs/model-file.md) holds the manifest, this graph and the steps,
and no TorchScript module (``Manifest.torchscript`` false); its ``weights_sha256`` is the hash
the TorchScript module's weights have (``stored.state_sha256``), so the files written with and
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
from streamtag.model.graph_edit import unique_name
from streamtag.model.manifest import FORMAT_VERSION, MANIFEST_FILE, ONNX_FILE, Manifest
from streamtag.model.sessions import onnx_session
from streamtag.model.stored import reuse_file_names, state_sha256

__all__ = ["NAMES", "OPSET", "convert", "step_graphs", "stored_steps", "whole_graph",
           "write_graph_file"]

# What ``convert`` builds: music (made of two musicnn taggers) and musicnn's four taggers
NAMES = (music.NAME, *musicnn.NAMES)
OPSET = 17  # streamtag.model.onnx_export.ONNX_OPSET, the exporter's (that module needs torch)
_BN_EPS = 1e-3  # tf.layers.batch_normalization's, as streamtag.nets.musicnn
_TEMPORAL_LENGTHS = (128, 64, 32)
_PAIR_EPS = 1e-7  # MusicnnPair keeps the merged probabilities this far from 0 and 1
# window reuse's scheme of each architecture (the nets registry's, reuse_export.SCHEMES)
_SCHEMES = {"musicnn": "frontend_columns", "musicnn_pair": "frontend_columns",
            "musicnn_vgg": "second_convolution"}


class _Builder:
    """Nodes and initializers of one graph, each value named once."""

    def __init__(self, *inputs: str) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._names: set[str] = set(inputs)
        self._weights: dict[str, tuple[np.ndarray, str]] = {}

    def name(self, stem: str) -> str:
        return unique_name(self._names, stem)

    def constant(self, stem: str, value: np.ndarray) -> str:
        """An initializer; the same array under the same stem is stored once (a step reads a
        branch's weights on both sides of its carry)."""
        known = self._weights.get(stem)
        if known is not None and known[0] is value:
            return known[1]
        name = self.name(stem)
        self._weights[stem] = (value, name)
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


def _branches() -> list[tuple[str, tuple[int, int]]]:
    """The front end's branches (``MUSICNN_BRANCH_FRAMES``' order) and their time padding."""
    blocks = [(f"timbral.{i}", (3, 3)) for i in range(2)]
    return blocks + [(f"temporal.{i}", ((n - 1) // 2, n - 1 - (n - 1) // 2))
                     for i, n in enumerate(_TEMPORAL_LENGTHS)]


def _input(b: _Builder, x: str, weights: Mapping[str, np.ndarray], prefix: str) -> str:
    """(batch, mels, frames) -> (batch, 1, frames, mels), input batch norm."""
    x = b.node("Transpose", [x], f"/{prefix}", perm=[0, 2, 1])
    x = b.node("Unsqueeze", [x, b.constant(f"/{prefix}axis1", np.array([1], np.int64))],
               f"/{prefix}")
    return _batch_norm(b, x, weights, prefix, "input_bn")


def _pad(b: _Builder, x: str, before: int, after: int, axis: int, rank: int, stem: str) -> str:
    amounts = np.zeros(2 * rank, np.int64)
    amounts[axis], amounts[rank + axis] = before, after
    return b.node("Pad", [x, b.constant(f"{stem}/pads", amounts)], stem, mode="constant")


def _slice(b: _Builder, x: str, axis: int, start: int, stop: int, stem: str) -> str:
    ends = np.iinfo(np.int64).max if stop is None else stop
    return b.node("Slice", [x, b.constant(f"{stem}/starts", np.array([start], np.int64)),
                            b.constant(f"{stem}/ends", np.array([ends], np.int64)),
                            b.constant(f"{stem}/axes", np.array([axis], np.int64))], stem)


def _pooled(b: _Builder, padded: str, weights: Mapping[str, np.ndarray], prefix: str,
            key: str) -> str:
    """A branch's conv, ReLU, batch norm and maximum over the bands (the order
    ``graph_passes`` rewrites) on its padded input."""
    y = _conv(b, padded, weights, prefix, f"{key}.conv", [0, 0, 0, 0])
    y = b.node("Relu", [y], f"/{prefix}{key}")
    y = _batch_norm(b, y, weights, prefix, f"{key}.bn")
    return b.node("ReduceMax", [y], f"/{prefix}{key}", axes=[3], keepdims=0)


def _back(b: _Builder, frontend: str, y: str, weights: Mapping[str, np.ndarray],
          prefix: str) -> str:
    """From the mid-end's first layer's output ``y`` on: its other two layers, the dense
    connection, the pooling over time and the back end; the logits."""
    features = [frontend, y]
    for i in (1, 2):
        out = _conv(b, y, weights, prefix, f"midend.{i}.conv", [3, 3])
        out = b.node("Relu", [out], f"/{prefix}midend.{i}")
        out = _batch_norm(b, out, weights, prefix, f"midend.{i}.bn")
        y = b.node("Add", [out, y], f"/{prefix}midend.{i}")
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


def _musicnn(b: _Builder, x: str, weights: Mapping[str, np.ndarray], prefix: str) -> str:
    """streamtag.nets.musicnn.MusiCNN.forward on ``x`` (batch, mels, frames): its logits."""
    x = _input(b, x, weights, prefix)
    pads: dict[tuple[int, int], str] = {}
    maps = []
    for key, (before, after) in _branches():
        if (before, after) not in pads:  # the exporter pads once for both timbral blocks
            amounts = b.constant(f"/{prefix}{key}/pads",
                                 np.array([0, 0, before, 0, 0, 0, after, 0], np.int64))
            pads[before, after] = b.node("Pad", [x, amounts], f"/{prefix}{key}", mode="constant")
        maps.append(_pooled(b, pads[before, after], weights, prefix, key))
    frontend = b.node("Concat", maps, f"/{prefix}frontend", axis=1)
    y = _conv(b, frontend, weights, prefix, "midend.0.conv", [3, 3])
    y = b.node("Relu", [y], f"/{prefix}midend.0")
    y = _batch_norm(b, y, weights, prefix, "midend.0.bn")
    return _back(b, frontend, y, weights, prefix)


def _vgg_block(b: _Builder, x: str, weights: Mapping[str, np.ndarray], prefix: str, i: int,
               pool: bool = True) -> str:
    """Block ``i`` of ``MusiCNNVGG.features``: its 3x3 convolution, ReLU, batch norm and (with
    ``pool``) max pool."""
    conv, norm = musicnn.vgg_layers()[i]
    x = _conv(b, x, weights, prefix, f"features.{conv}", [1, 1, 1, 1])
    x = b.node("Relu", [x], f"/{prefix}features.{conv}")
    x = _batch_norm(b, x, weights, prefix, f"features.{norm}")
    return _vgg_pool(b, x, prefix, i) if pool else x


def _vgg_pool(b: _Builder, x: str, prefix: str, i: int) -> str:
    return b.node("MaxPool", [x], f"/{prefix}features.{musicnn.vgg_layers()[i][1] + 1}",
                  kernel_shape=list(musicnn.VGG_POOLS[i]), strides=list(musicnn.VGG_STRIDES[i]),
                  pads=[0, 0, 0, 0], ceil_mode=0)


def _vgg_tail(b: _Builder, x: str, weights: Mapping[str, np.ndarray], prefix: str,
              first: int) -> str:
    """Blocks ``first`` on, the flatten in TensorFlow's (batch, frames, mels, channels) order
    and the dense layer: the logits."""
    for i in range(first, len(musicnn.VGG_POOLS)):
        x = _vgg_block(b, x, weights, prefix, i)
    x = b.node("Transpose", [x], f"/{prefix}flatten", perm=[0, 2, 3, 1])
    x = b.node("Flatten", [x], f"/{prefix}flatten", axis=1)
    return _gemm(b, x, weights, prefix, "dense")


def _vgg(b: _Builder, x: str, weights: Mapping[str, np.ndarray], prefix: str) -> str:
    """streamtag.nets.musicnn.MusiCNNVGG.forward on ``x`` (batch, mels, frames): its logits."""
    return _vgg_tail(b, _input(b, x, weights, prefix), weights, prefix, 0)


def _vgg_steps(b: _Builder, x: str, carry: str | None, weights: Mapping[str, np.ndarray],
               prefix: str, g: Any) -> tuple[str, str]:
    """Window reuse's step of musicnn_vgg (``reuse_export._VggSteps``, the same arithmetic):
    the second convolution's output (after its ReLU and batch norm) carried."""
    x = _input(b, x, weights, prefix)
    start, stop = g.taken
    if carry is None:
        y = _vgg_block(b, _vgg_block(b, x, weights, prefix, 0), weights, prefix, 1, pool=False)
    else:
        stem = f"/{prefix}steps"
        left = _vgg_block(b, _slice(b, x, 2, 0, 2 * start + 5, f"{stem}/left"), weights,
                          prefix, 0)
        right = _vgg_block(b, _slice(b, x, 2, 2 * stop - 4, None, f"{stem}/right"), weights,
                           prefix, 0)
        right = _slice(b, right, 2, 1, None, f"{stem}/right_pooled")
        out = _vgg_block(b, b.node("Concat", [left, right], f"{stem}/runs", axis=2), weights,
                         prefix, 1, pool=False)
        y = b.node("Concat", [_slice(b, out, 2, 0, start, f"{stem}/before"), carry,
                              _slice(b, out, 2, start + 2, None, f"{stem}/after")],
                   f"{stem}/joined", axis=2)
    own = _slice(b, y, 2, start + g.shift, stop + g.shift, f"/{prefix}own")
    return _vgg_tail(b, _vgg_pool(b, y, prefix, 1), weights, prefix, 2), own


def _musicnn_steps(b: _Builder, x: str, carry: str | None, weights: Mapping[str, np.ndarray],
                   prefix: str, g: Any) -> tuple[str, str]:
    """Window reuse's step of musicnn (``reuse_export._MusicnnSteps``, the same arithmetic):
    with ``carry`` None a whole window, else a window and the carry of the one before
    (``MusicnnGeometry`` ``g``); its logits and its own carry."""
    x = _input(b, x, weights, prefix)
    maps, owns, offset = [], [], 0
    for (key, (before, after)), taken in zip(_branches(), g.taken, strict=True):
        stem = f"/{prefix}{key}"
        if carry is None or taken is None:
            maps.append(_pooled(b, _pad(b, x, before, after, 2, 4, stem), weights, prefix, key))
            continue
        start, stop = taken
        channels, frames = weights[f"{key}.conv.weight"].shape[0], before + after + 1
        width = stop - start
        kept = _slice(b, carry, 1, offset, offset + channels * width, f"{stem}/kept")
        kept = b.node("Reshape", [kept, b.constant(f"{stem}/kept_shape", np.array(
            [-1, channels, width], np.int64))], f"{stem}/kept")
        offset += channels * width
        left = _slice(b, x, 2, 0, start + frames - 1 - before, f"{stem}/left")
        right = _slice(b, x, 2, stop - before, None, f"{stem}/right")
        left = _pooled(b, _pad(b, left, before, 0, 2, 4, f"{stem}/left"), weights, prefix, key)
        right = _pooled(b, _pad(b, right, 0, after, 2, 4, f"{stem}/right"), weights, prefix,
                        key)
        maps.append(b.node("Concat", [left, kept, right], stem, axis=2))
    for m, (key, _), taken in zip(maps, _branches(), g.taken, strict=True):
        if taken is not None:  # what the window after takes from this one
            own = _slice(b, m, 2, taken[0] + g.shift, taken[1] + g.shift, f"/{prefix}{key}/own")
            owns.append(b.node("Flatten", [own], f"/{prefix}{key}/own", axis=1))
    frontend = b.node("Concat", maps, f"/{prefix}frontend", axis=1)
    weight = weights["midend.0.conv.weight"]
    timbral_channels = sum(weights[f"timbral.{i}.conv.weight"].shape[0] for i in range(2))
    timbral = _slice(b, frontend, 1, 0, timbral_channels, f"/{prefix}frontend/timbral")
    other = _slice(b, frontend, 1, timbral_channels, None, f"/{prefix}frontend/other")
    part_weights = {"timbral.weight": weight[:, :timbral_channels],
                    "timbral.bias": weights["midend.0.conv.bias"],
                    "other.weight": weight[:, timbral_channels:]}
    half = 3  # MUSICNN_MIDEND_FRAMES // 2
    stem = f"/{prefix}midend.0"

    def timbral_conv(y: str, pads: list[int]) -> str:
        return _conv(b, y, part_weights, f"{prefix}midend.0.conv.", "timbral", pads)

    if carry is None or g.midend_taken is None:
        part = timbral_conv(timbral, [half, half])
    else:
        start, stop = g.midend_taken
        kept = _slice(b, carry, 1, offset, None, f"{stem}/kept")
        kept = b.node("Reshape", [kept, b.constant(f"{stem}/kept_shape", np.array(
            [-1, weight.shape[0], stop - start], np.int64))], f"{stem}/kept")
        left = _pad(b, _slice(b, timbral, 2, 0, start + half, f"{stem}/left"), half, 0, 2, 3,
                    f"{stem}/left")
        right = _pad(b, _slice(b, timbral, 2, stop - half, None, f"{stem}/right"), 0, half, 2,
                     3, f"{stem}/right")
        part = b.node("Concat", [timbral_conv(left, [0, 0]), kept,
                                 timbral_conv(right, [0, 0])], stem, axis=2)
    if g.midend_taken is not None:
        start, stop = g.midend_taken
        own = _slice(b, part, 2, start + g.shift, stop + g.shift, f"{stem}/own")
        owns.append(b.node("Flatten", [own], f"{stem}/own", axis=1))
    other = b.node("Conv", [other, b.constant(f"{prefix}midend.0.conv.other.weight",
                                               part_weights["other.weight"])], f"{stem}/other",
                   kernel_shape=[7], pads=[half, half], strides=[1], dilations=[1], group=1)
    y = b.node("Relu", [b.node("Add", [part, other], stem)], stem)
    y = _batch_norm(b, y, weights, prefix, "midend.0.bn")
    return _back(b, frontend, y, weights, prefix), b.node("Concat", owns, f"/{prefix}carry",
                                                          axis=1)


def _gemm(b: _Builder, x: str, weights: Mapping[str, np.ndarray], prefix: str, key: str) -> str:
    inputs = [x, b.constant(f"{prefix}{key}.weight", weights[f"{key}.weight"]),
              b.constant(f"{prefix}{key}.bias", weights[f"{key}.bias"])]
    return b.node("Gemm", inputs, f"/{prefix}{key}", alpha=1.0, beta=1.0, transB=1)


def _model(b: _Builder, inputs: list[tuple[str, list]], outputs: list[tuple[str, list]]
           ) -> bytes:
    def values(pairs: list[tuple[str, list]]) -> list[onnx.ValueInfoProto]:
        return [helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)
                for name, shape in pairs]

    graph = helper.make_graph(b.nodes, "streamtag", values(inputs), values(outputs),
                              b.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="streamtag.catalog.onnx_build",
                              ir_version=8)  # the exporter's, which older runtimes read
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()


def _members(weights: Mapping[str, np.ndarray]) -> list[tuple[str, dict[str, np.ndarray]]]:
    """The networks a state dict holds: ("", all of it) for ``musicnn``; ("first.", ...) and
    ("second.", ...) for ``musicnn_pair``."""
    if "first_mix" not in weights:
        return [("", dict(weights))]
    return [(f"{member}.", {k.removeprefix(f"{member}."): v for k, v in weights.items()
                            if k.startswith(f"{member}.")}) for member in ("first", "second")]


def _probabilities(b: _Builder, logits: list[str], weights: Mapping[str, np.ndarray]) -> None:
    """The file's output ``probabilities`` from each member's logits: their sigmoid, or for a
    pair each network's probabilities times its mixing matrix, summed and kept ``_PAIR_EPS``
    from 0 and 1 (what the pair's ``sigmoid(logit(p, eps))`` gives, up to rounding)."""
    if len(logits) == 1:
        b.nodes.append(helper.make_node("Sigmoid", logits, ["probabilities"], name="/Sigmoid"))
        return
    mixed = []
    for member, x in zip(("first", "second"), logits, strict=True):
        p = b.node("Sigmoid", [x], f"/model.{member}")
        mix = b.constant(f"model.{member}_mix", weights[f"{member}_mix"])
        mixed.append(b.node("MatMul", [p, mix], f"/model.{member}_mix"))
    merged = b.node("Add", mixed, "/model/merge")
    low = b.constant("/model/eps", np.array(_PAIR_EPS, np.float32))
    high = b.constant("/model/one_less_eps", np.array(1.0 - _PAIR_EPS, np.float32))
    b.nodes.append(helper.make_node("Clip", [merged, low, high], ["probabilities"],
                                    name="/model/Clip"))


def _n_tags(weights: Mapping[str, np.ndarray]) -> int:
    if "first_mix" in weights:
        return weights["first_mix"].shape[1]
    return len(weights["dense.bias" if "features.0.weight" in weights else "output.bias"])


def whole_graph(weights: Mapping[str, np.ndarray], n_mels: int, window: int) -> bytes:
    """The ONNX graph of a model file of the zoo's ``musicnn`` or ``musicnn_pair`` with
    ``weights`` (its state-dict arrays): probabilities ``(batch, tags)`` of ``(batch, n_mels,
    window)``."""
    b = _Builder("input")
    network = _vgg if "features.0.weight" in weights else _musicnn
    logits = [network(b, "input", own, f"model.{member}")
              for member, own in _members(weights)]
    _probabilities(b, logits, weights)
    return _model(b, [("input", ["batch", n_mels, window])],
                  [("probabilities", ["batch", _n_tags(weights)])])


def _carry_width(own: Mapping[str, np.ndarray], g: Any) -> int:
    """The columns one window of a network hands the next (``_musicnn_steps``' carry)."""
    width = sum(own[f"{key}.conv.weight"].shape[0] * (taken[1] - taken[0])
                for (key, _), taken in zip(_branches(), g.taken, strict=True) if taken)
    if g.midend_taken is not None:
        width += own["midend.0.conv.weight"].shape[0] * (g.midend_taken[1] - g.midend_taken[0])
    return width


def _vgg_step_graphs(weights: Mapping[str, np.ndarray], n_mels: int, window: int,
                     hop: int) -> tuple[bytes, bytes] | str:
    from streamtag.model.window_reuse import vgg_geometry

    g = vgg_geometry(window, hop)
    if g is None:
        return f"windows {hop} frames apart overlap too little to share work"
    # the carry: the second convolution's output columns taken, over the first pool's bands
    pool, stride = musicnn.VGG_POOLS[0][1], musicnn.VGG_STRIDES[0][1]
    bands = (n_mels - pool) // stride + 1
    shape = ["batch", weights["features.5.bias"].shape[0], g.taken[1] - g.taken[0], bands]
    graphs = []
    for with_carry in (False, True):
        b = _Builder("windows", "carried")
        logits, own = _vgg_steps(b, "windows", "carried" if with_carry else None, weights,
                                 "model.", g)
        _probabilities(b, [logits], weights)
        b.nodes.append(helper.make_node("Identity", [own], ["carry"], name="/carry"))
        inputs = [("windows", ["batch", n_mels, window])]
        if with_carry:
            inputs.append(("carried", shape))
        graphs.append(_model(b, inputs, [("probabilities", ["batch", _n_tags(weights)]),
                                         ("carry", shape)]))
    return graphs[0], graphs[1]


def step_graphs(weights: Mapping[str, np.ndarray], n_mels: int, window: int,
                hop: int) -> tuple[bytes, bytes] | str:
    """Window reuse's two steps at ``hop`` frames (scheme ``frontend_columns`` of musicnn and
    its pair, ``second_convolution`` of musicnn_vgg): the graphs ``reuse_export`` exports with
    torch, from the same arithmetic; or why there are none."""
    from streamtag.model.window_reuse import musicnn_geometry

    if "features.0.weight" in weights:
        return _vgg_step_graphs(weights, n_mels, window, hop)
    g = musicnn_geometry(window, hop)
    if g is None:
        return f"windows {hop} frames apart overlap too little to share work"
    members = _members(weights)
    widths = [_carry_width(own, g) for _, own in members]
    graphs = []
    for with_carry in (False, True):
        b = _Builder("windows", "carried")
        logits, carries, offset = [], [], 0
        for (member, own), width in zip(members, widths, strict=True):
            carry = None
            if with_carry:
                carry = "carried" if len(members) == 1 else _slice(
                    b, "carried", 1, offset, offset + width, f"/model.{member}carried")
                offset += width
            x, own_carry = _musicnn_steps(b, "windows", carry, own, f"model.{member}", g)
            logits.append(x)
            carries.append(own_carry)
        _probabilities(b, logits, weights)
        b.nodes.append(helper.make_node("Concat", carries, ["carry"], name="/carry", axis=1))
        inputs = [("windows", ["batch", n_mels, window])]
        if with_carry:
            inputs.append(("carried", ["batch", sum(widths)]))
        graphs.append(_model(b, inputs, [("probabilities", ["batch", _n_tags(weights)]),
                                         ("carry", ["batch", sum(widths)])]))
    return graphs[0], graphs[1]


def stored_steps(graph: bytes, weights: Mapping[str, np.ndarray], manifest: Manifest
                 ) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The manifest's ``window_reuse`` record and the steps' graphs at its hop, checked as
    they will serve against ``graph`` (whole windows) on a run of overlapping windows, as
    ``reuse_export.stored_steps`` checks them against the module; a record of why where
    they cannot be had."""
    from streamtag.model.sessions import session_runner
    from streamtag.model.window_reuse import from_graphs

    hop, n_mels = manifest.hop, manifest.frontend.n_mels
    scheme = _SCHEMES[manifest.architecture["name"]]
    try:
        steps = step_graphs(weights, n_mels, manifest.window, hop)
    except Exception as error:  # noqa: BLE001 - onnx's checker raises its own types
        steps = f"its steps cannot be built ({first_lines(error, 1)})"
    if isinstance(steps, str):
        return {"error": steps}, {}
    first, after = steps
    reference = session_runner(onnx_session(graph, threads=1))
    _, why = from_graphs(scheme, first, after, manifest.window, hop, n_mels, 1, reference)
    if why:
        return {"error": why}, {}
    names = reuse_file_names(hop)
    record = {"scheme": scheme, "hops": {str(hop): {
        step: {"file": name, "sha256": hashlib.sha256(data).hexdigest()}
        for step, name, data in zip(("first", "next"), names, (first, after), strict=True)}}}
    return record, dict(zip(names, (first, after), strict=True))


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
    reuse, reuse_files = stored_steps(graph, weights, manifest)
    manifest = dataclasses.replace(
        manifest,
        format_version=FORMAT_VERSION,
        torchscript=False,
        weights_sha256=state_sha256(_with_counters(weights)),
        onnx=record,
        onnx_int8={},
        window_reuse=reuse,
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
        for name, data in reuse_files.items():
            archive.writestr(f"{prefix}/extra/{name}", data)
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
        graph = whole_graph(weights, n_mels, window)
        manifest = music.manifest(package_dir, first_tags, second_tags, tags)
    elif name in NAMES:
        weights, tags = musicnn.read_weights(package_dir, name)
        graph = whole_graph(weights, n_mels, window)
        manifest = musicnn.manifest(package_dir, name, tags)
    else:
        raise ModelError(f"{name} is converted with torch; without it streamtag converts "
                         f"{', '.join(NAMES)}")
    out.parent.mkdir(parents=True, exist_ok=True)
    return write_graph_file(graph, manifest, weights, out, time.perf_counter() - started)
