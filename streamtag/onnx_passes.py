"""Rewrites of a model file's ONNX graph that ONNX Runtime serves with less work on the CPU.

The graph a model file carries is its network as exported (docs/model-file.md); these passes
change how it computes, not what: each rewritten graph gives the exported graph's outputs up to
float rounding (the same arithmetic may run in another of ONNX Runtime's kernels, which rounds
apart by an ulp or two), and the backend still checks the result against the file's TorchScript
module before it serves (``inference``). ONNX Runtime's own optimiser already folds batch norms
into the convolutions before them and fuses activations; what it leaves is done here.

- ``pool_first``: a convolution followed by ReLU, batch norm and a max (``MaxPool``, or
  ``ReduceMax`` over positions: musicnn's maximum over the mel bands) computes the ReLU and the
  batch norm on every position and then keeps one in four, or one in 60. ReLU is increasing and
  a batch norm is ``a·x + b`` per channel, increasing where ``a > 0`` and decreasing where
  ``a < 0``, so the maximum of the result is the ReLU and batch norm of the maximum of the
  convolution, or of its minimum where ``a < 0``. The minimum is taken as the maximum of the
  convolution with that channel's weights and bias negated (negation is exact in floating
  point), then negated back. The ReLU and the batch norm then run on the pooled values only.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
from onnx import helper, numpy_helper

__all__ = ["optimize", "pool_first"]


class _Graph:
    """The graph with who makes and who reads each value, and its constant tensors."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        self.graph = model.graph
        self.constants = {t.name: t for t in self.graph.initializer}
        self.producer = {out: node for node in self.graph.node for out in node.output}
        self.readers: dict[str, int] = {}
        for node in self.graph.node:
            for name in node.input:
                self.readers[name] = self.readers.get(name, 0) + 1
        for output in self.graph.output:
            self.readers[output.name] = self.readers.get(output.name, 0) + 1
        self._names = set(self.producer) | set(self.constants) | {i.name for i in self.graph.input}

    def only_reader(self, value: str) -> bool:
        return self.readers.get(value, 0) == 1

    def made_by(self, value: str, op_type: str) -> onnx.NodeProto | None:
        node = self.producer.get(value)
        return node if node is not None and node.op_type == op_type else None

    def constant(self, name: str) -> np.ndarray | None:
        tensor = self.constants.get(name)
        return None if tensor is None else numpy_helper.to_array(tensor)

    def new_name(self, stem: str) -> str:
        name, k = stem, 0
        while name in self._names:
            k += 1
            name = f"{stem}_{k}"
        self._names.add(name)
        return name

    def add_constant(self, stem: str, value: np.ndarray) -> str:
        name = self.new_name(stem)
        self.graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name


def _attributes(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _batch_norm_scale(graph: _Graph, bn: onnx.NodeProto) -> np.ndarray | None:
    """A (inference-mode) batch norm's per-channel factor ``gamma / sqrt(var + eps)``, or None
    where its parameters are not constants."""
    if len(bn.output) != 1 or _attributes(bn).get("training_mode", 0):
        return None
    gamma, _, _, var = (graph.constant(name) for name in bn.input[1:5])
    if gamma is None or var is None:
        return None
    eps = _attributes(bn).get("epsilon", 1e-5)
    return gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + eps)


def _pooled_rank(graph: _Graph, pool: onnx.NodeProto, rank: int) -> int | None:
    """The rank of a max pool's output for an input of ``rank``, or None where the node is not
    a per-channel maximum over positions (batch and channel axes kept)."""
    if len(pool.output) != 1:
        return None
    if pool.op_type == "MaxPool":
        return rank
    attributes = _attributes(pool)
    axes = attributes.get("axes")
    if len(pool.input) > 1 and pool.input[1]:  # opset 18: the axes are an input
        given = graph.constant(pool.input[1])
        axes = None if given is None else given.tolist()
    if not axes:  # no axes: all of them, the channel axis too
        return None
    axes = {a % rank for a in axes}
    if axes & {0, 1}:
        return None
    return rank if attributes.get("keepdims", 1) else rank - len(axes)


def pool_first(model: onnx.ModelProto) -> int:
    """Conv → ReLU → BatchNormalization → MaxPool/ReduceMax becomes Conv (weights of the
    channels whose batch-norm factor is negative negated) → the pool → × sign → ReLU → batch
    norm, in place; returns how many were rewritten (module docstring)."""
    graph = _Graph(model)
    rewritten = 0
    order = list(graph.graph.node)
    for pool in list(order):
        if pool.op_type not in ("MaxPool", "ReduceMax"):
            continue
        bn = graph.made_by(pool.input[0], "BatchNormalization")
        relu = None if bn is None else graph.made_by(bn.input[0], "Relu")
        conv = None if relu is None else graph.made_by(relu.input[0], "Conv")
        if conv is None or not all(graph.only_reader(n.output[0]) for n in (conv, relu, bn)):
            continue
        weight = graph.constant(conv.input[1])
        bias = graph.constant(conv.input[2]) if len(conv.input) > 2 and conv.input[2] else None
        scale = _batch_norm_scale(graph, bn)
        if weight is None or scale is None or (len(conv.input) > 2 and conv.input[2]
                                               and bias is None):
            continue
        rank = _pooled_rank(graph, pool, weight.ndim)
        if rank is None or scale.shape != (weight.shape[0],):
            continue
        sign = np.where(scale < 0, -1.0, 1.0).astype(weight.dtype)
        flipped = bool((sign < 0).any())
        if flipped:
            conv.input[1] = graph.add_constant(
                conv.input[1] + "_signed", weight * sign.reshape((-1,) + (1,) * (weight.ndim - 1)))
            if bias is not None:
                conv.input[2] = graph.add_constant(conv.input[2] + "_signed", bias * sign)
        result = pool.output[0]
        pooled = graph.new_name(result + "_of_conv")
        pool.input[0], pool.output[0] = conv.output[0], pooled
        after = [pool]
        if flipped:
            signs = graph.add_constant(result + "_sign", sign.reshape((-1,) + (1,) * (rank - 2)))
            unsigned = graph.new_name(result + "_unsigned")
            after.append(helper.make_node("Mul", [pooled, signs], [unsigned],
                                          name=graph.new_name(result + "_sign_mul")))
            pooled = unsigned
        relu.input[0], relu.output[0] = pooled, graph.new_name(result + "_relu")
        bn.input[0], bn.output[0] = relu.output[0], result
        after += [relu, bn]
        # conv, then these in this order where the pool was; every reader comes later
        order = [n for n in order if n not in (relu, bn)]
        at = order.index(pool)
        order[at:at + 1] = after
        rewritten += 1
    if rewritten:
        del graph.graph.node[:]
        graph.graph.node.extend(order)
    return rewritten


PASSES: dict[str, tuple[Callable[[onnx.ModelProto], int], str]] = {
    "pool_first": (pool_first, "max pools taken before their ReLU and batch norm"),
}


def optimize(graph: bytes) -> tuple[bytes, list[str]]:
    """The graph rewritten by every pass, and a line for each pass that changed something
    ("max pools taken before their ReLU and batch norm: 4")."""
    model = onnx.load_from_string(graph)
    notes = []
    for run, what in PASSES.values():
        count = run(model)
        if count:
            notes.append(f"{what}: {count}")
    if not notes:
        return graph, notes
    onnx.checker.check_model(model)
    return model.SerializeToString(), notes
