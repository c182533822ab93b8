"""Rewrites of a model file's ONNX graph that ONNX Runtime serves with less work on the CPU.

The graph a model file carries is its network as exported (docs/model-file.md); these passes
change how it computes, not what: each rewritten graph gives the exported graph's outputs up to
float rounding (the same arithmetic may run in another of ONNX Runtime's kernels, which rounds
apart by an ulp or two), and the backend still checks the result against the file's TorchScript
module before it serves (``inference``). ONNX Runtime's own optimiser already folds batch norms
into the convolutions before them and fuses activations; what it leaves is done here.
``optimize`` runs every pass of ``PASSES`` in turn: the three below, and the two Winograd
rewrites of convolutions in ``streamtag.model.winograd``.

- ``pool_first``: a convolution followed by ReLU, batch norm and a max (``MaxPool``, or
  ``ReduceMax`` over positions: musicnn's maximum over the mel bands) computes the ReLU and the
  batch norm on every position and then keeps one in four, or one in 60. ReLU is increasing and
  a batch norm is ``a·x + b`` per channel, increasing where ``a > 0`` and decreasing where
  ``a < 0``, so the maximum of the result is the ReLU and batch norm of the maximum of the
  convolution, or of its minimum where ``a < 0``. The minimum is taken as the maximum of the
  convolution with that channel's weights and bias negated (negation is exact in floating
  point), then negated back. The ReLU and the batch norm then run on the pooled values only.
- ``batch_norm_forward``: a batch norm whose only reader is a convolution without padding
  (one group), or a Gemm (directly or through ``Flatten``), is folded into that reader's
  weights and bias: ``W·(s·x + t) = (W·s)·x + W·t``, exact in real arithmetic where no
  padding puts zeros where the batch norm would have put ``t``. After ``pool_first`` the
  default model's batch norms sit just before its next convolution or its dense layer.
- ``relu_in_conv``: a convolution whose only reader is a max pool whose only reader is a ReLU
  (what ``pool_first`` leaves where the convolution is not rewritten) has the ReLU moved
  between the two (``max(relu(x)) = relu(max(x))``, also in floating point): ONNX Runtime then
  computes it in the convolution's own epilogue, and the pass over the pooled values is gone.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
from onnx import helper

from streamtag.model.graph_edit import Graph, node_attributes, reduced_axes
from streamtag.model.winograd import winograd, winograd_rows

__all__ = ["PASSES", "batch_norm_forward", "optimize", "pool_first", "relu_in_conv"]


def _batch_norm_scale(graph: Graph, bn: onnx.NodeProto) -> np.ndarray | None:
    """A (inference-mode) batch norm's per-channel factor ``gamma / sqrt(var + eps)``, or None
    where its parameters are not constants."""
    if len(bn.output) != 1 or node_attributes(bn).get("training_mode", 0):
        return None
    gamma, _, _, var = (graph.constant(name) for name in bn.input[1:5])
    if gamma is None or var is None:
        return None
    eps = node_attributes(bn).get("epsilon", 1e-5)
    return gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + eps)



def _pooled_rank(graph: Graph, pool: onnx.NodeProto, rank: int) -> int | None:
    """The rank of a max pool's output for an input of ``rank``, or None where the node is not
    a per-channel maximum over positions (batch and channel axes kept)."""
    if len(pool.output) != 1:
        return None
    if pool.op_type == "MaxPool":
        return rank
    attributes = node_attributes(pool)
    axes = reduced_axes(graph, pool)
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
    graph = Graph(model)
    rewritten = 0
    order = list(graph.graph.node)
    for pool in list(order):
        if pool.op_type not in ("MaxPool", "ReduceMax"):
            continue
        bn = graph.made_by(pool.input[0], "BatchNormalization")
        relu = None if bn is None else graph.made_by(bn.input[0], "Relu")
        conv = None if relu is None else graph.made_by(relu.input[0], "Conv")
        if conv is None or not all(graph.only_reader(n.output[0]) is not None
                                   for n in (conv, relu, bn)):
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
        graph.replace_nodes(order)
    return rewritten


def batch_norm_forward(model: onnx.ModelProto) -> int:
    """Each inference batch norm whose only reader is a Conv without padding or a Gemm (read
    directly or through a Flatten of axis 1) is folded into that reader's constants and
    removed, in place; returns how many (module docstring)."""
    graph = Graph(model)
    folded: list[onnx.NodeProto] = []
    for bn in list(graph.graph.node):
        if bn.op_type != "BatchNormalization":
            continue
        scale = _batch_norm_scale(graph, bn)
        beta, mean = (graph.constant(name) for name in bn.input[2:4])
        reader = graph.only_reader(bn.output[0])
        if scale is None or beta is None or mean is None or reader is None:
            continue
        shift = beta.astype(np.float64) - mean.astype(np.float64) * scale
        first = reader  # the node that reads the batch norm: it reads its input instead
        if reader.op_type == "Flatten":
            if node_attributes(reader).get("axis", 1) != 1:
                continue
            reader = graph.only_reader(reader.output[0])
        if reader is None:
            continue
        if reader.op_type == "Conv" and reader is first:
            done = _fold_into_conv(graph, reader, scale, shift)
        else:
            done = reader.op_type == "Gemm" and _fold_into_gemm(graph, reader, scale, shift)
        if done:
            first.input[0] = bn.input[0]
            folded.append(bn)
    if folded:
        kept = [node for node in graph.graph.node if node not in folded]
        graph.replace_nodes(kept)
    return len(folded)


def _fold_into_conv(graph: Graph, conv: onnx.NodeProto, scale: np.ndarray,
                    shift: np.ndarray) -> bool:
    """Conv(s·x + t) as one Conv of x: weights × s over the input channels, bias + W·t."""
    attributes = node_attributes(conv)
    weight = graph.constant(conv.input[1])
    has_bias = len(conv.input) > 2 and bool(conv.input[2])
    bias = graph.constant(conv.input[2]) if has_bias else None
    if (attributes.get("group", 1) != 1 or any(attributes.get("pads", [0]))
            or attributes.get("auto_pad", b"NOTSET") not in (b"NOTSET", b"VALID")
            or weight is None or weight.ndim < 3 or weight.shape[1] != scale.size
            or (has_bias and bias is None)):
        return False
    w = weight.astype(np.float64)
    taps = tuple(range(2, w.ndim))
    new_bias = w.sum(axis=taps) @ shift + (0.0 if bias is None else bias.astype(np.float64))
    conv.input[1] = graph.add_constant(conv.input[1] + "_of_batch_norm", (
        w * scale.reshape((1, -1) + (1,) * len(taps))).astype(weight.dtype))
    bias_name = graph.add_constant(conv.output[0] + "_bias_of_batch_norm",
                                   new_bias.astype(weight.dtype))
    if has_bias:
        conv.input[2] = bias_name
    else:
        conv.input.append(bias_name)
    return True


def _fold_into_gemm(graph: Graph, gemm: onnx.NodeProto, scale: np.ndarray,
                    shift: np.ndarray) -> bool:
    """Gemm(flatten(s·x + t)) as one Gemm: B's rows of each channel's features × s, C +
    α/β·t·B (channel c's features are the c-th run of equal length)."""
    attributes = node_attributes(gemm)
    weight = graph.constant(gemm.input[1])
    added = graph.constant(gemm.input[2]) if len(gemm.input) > 2 and gemm.input[2] else None
    alpha, beta = attributes.get("alpha", 1.0), attributes.get("beta", 1.0)
    trans_b = attributes.get("transB", 0)
    if (attributes.get("transA", 0) or weight is None or weight.ndim != 2 or added is None
            or beta == 0):
        return False
    by_feature = weight.T if trans_b else weight  # (features, outputs)
    per_channel, remainder = divmod(by_feature.shape[0], scale.size)
    if remainder or per_channel == 0:
        return False
    b = by_feature.astype(np.float64)
    scaled = b * np.repeat(scale, per_channel)[:, None]
    new_added = added.astype(np.float64) + alpha / beta * (np.repeat(shift, per_channel) @ b)
    gemm.input[1] = graph.add_constant(gemm.input[1] + "_of_batch_norm", (
        scaled.T if trans_b else scaled).astype(weight.dtype))
    gemm.input[2] = graph.add_constant(gemm.input[2] + "_of_batch_norm",
                                       new_added.astype(added.dtype))
    return True


def relu_in_conv(model: onnx.ModelProto) -> int:
    """Conv → MaxPool → Relu, each the only reader of the one before, becomes Conv → Relu →
    MaxPool, in place; returns how many (module docstring)."""
    graph = Graph(model)
    order = list(graph.graph.node)
    moved = 0
    for pool in list(order):
        if pool.op_type != "MaxPool" or [name for name in pool.output if name] != [
                pool.output[0]]:
            continue
        conv = graph.made_by(pool.input[0], "Conv")
        relu = graph.only_reader(pool.output[0])
        if (conv is None or graph.only_reader(conv.output[0]) is None or relu is None
                or relu.op_type != "Relu"):
            continue
        result = relu.output[0]
        relu.input[0], relu.output[0] = conv.output[0], graph.new_name(result + "_of_conv")
        pool.input[0], pool.output[0] = relu.output[0], result
        order.remove(relu)
        order.insert(order.index(pool), relu)
        moved += 1
    if moved:
        graph.replace_nodes(order)
    return moved



PASSES: dict[str, tuple[Callable[[onnx.ModelProto], int], str]] = {
    "pool_first": (pool_first, "max pools taken before their ReLU and batch norm"),
    "batch_norm_forward": (batch_norm_forward, "batch norms folded into the layer after them"),
    "winograd": (winograd, "3x3 convolutions computed as Winograd F(m, 3) along the rows"),
    "winograd_rows": (winograd_rows, "one-channel convolutions with a maximum over the columns "
                                     "computed as Winograd F(6, r) along the rows (F(5, 5) on "
                                     "parts of a long kernel)"),
    # after the Winograd passes: a convolution they rewrote ends in other nodes
    "relu_in_conv": (relu_in_conv, "ReLUs before a max pool computed in the convolution"),
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
