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
- ``winograd``: a 3×3 convolution of stride 1 with many channels on a large map is computed
  with Winograd's minimal filtering F(4×4, 3×3) (Lavin & Gray, "Fast algorithms for
  convolutional neural networks", CVPR 2016): 36 multiplications for each 4×4 block of outputs
  and each pair of channels instead of 144. The input's 6×6 tiles are transformed by two small
  convolutions, the products summed over channels are 36 matrix products (ONNX Runtime's
  GEMM), and the output transform is one more product and a depth-to-space. The transforms
  cost memory passes, so it pays only with at least ``WINOGRAD_MIN_CHANNELS`` channels in and
  out and ``WINOGRAD_MIN_TILES`` blocks of outputs (measured: below).
- ``winograd_rows``: a convolution of one input channel with a kernel short along the rows
  (axis 2) and long along the columns, whose only reader is a maximum over the columns
  (musicnn's timbral filters: 7 frames × 38 or 67 mel bands, then the maximum over the bands),
  is computed with the one-dimensional F(4, r) along the rows: 10 multiplications for each 4
  outputs instead of 28 for r = 7. The input's rows are transformed by one small convolution,
  the products are a grouped convolution along the columns (one group per point, ONNX
  Runtime's GEMM with the long taps as its inner size), the output transform is one matrix
  product, and the maximum over the columns is taken before the blocks of 4 are put back in
  order, so the reordering moves a 1/width of the values; the bias is added after the maximum
  (``max(x + b) = max(x) + b``, also in floating point).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
from onnx import helper, numpy_helper

__all__ = ["optimize", "pool_first", "winograd", "winograd_rows"]

# Where F(4×4, 3×3) paid on a 2-vCPU AMD EPYC (AVX-512), one layer of short_chunk_resnet at a
# time, ms per window at batch 1: 128 → 128 channels on 64 × 116 saved 5.1 (of 21), on 32 × 58
# 1.2; 256 → 256 on 16 × 29 (32 blocks) 1.6, on 8 × 15 (8 blocks) lost 0.1 and smaller maps
# lost up to 3; 32 → 64 (the default model's) lost 0.3 even on 95 × 45.
WINOGRAD_MIN_CHANNELS = 128
WINOGRAD_MIN_TILES = 32
WINOGRAD_M = 4  # outputs per tile side: F(4×4, 3×3)


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


# F(4×4, 3×3)'s finite points: 0, ±1 and a point and its reciprocal, 2 and -1/2, rather than
# ±2; this halved the largest error against the direct convolution in float32 (1.5e-5 against
# 3.7e-5 on outputs of about 1, 128 channels), as Barabasz et al. found such pairs do ("Error
# analysis and improving the accuracy of Winograd convolution for deep neural networks", ACM
# TOMS 2020).
WINOGRAD_POINTS = (0.0, 1.0, -1.0, 2.0, -0.5)


def winograd_matrices(m: int, r: int = 3, points: tuple[float, ...] = WINOGRAD_POINTS
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Toom-Cook's F(m, r) for a correlation of ``m`` outputs with an ``r``-tap filter:
    ``y = Aᵀ [(G g) ⊙ (Bᵀ d)]`` for ``d`` of ``m + r - 1`` inputs, evaluating at the first
    ``m + r - 2`` of ``points`` and at infinity. Returns (Aᵀ, G, Bᵀ) in float64."""
    n = m + r - 1
    if len(points) < n - 1 or len(set(points[:n - 1])) != n - 1:
        raise ValueError(f"F({m}, {r}) needs {n - 1} distinct points, got {points}")

    def evaluation(size: int) -> np.ndarray:
        """A polynomial of ``size`` coefficients at each point; infinity: its leading one."""
        values = np.zeros((n, size))
        for j, point in enumerate(points[:n - 1]):
            values[j] = [point ** i for i in range(size)]
        values[n - 1, size - 1] = 1.0
        return values

    # convolution: interpolate the product of the evaluations; correlation is its transpose
    return evaluation(m).T, evaluation(r), np.linalg.inv(evaluation(n)).T


def _static_shapes(model: onnx.ModelProto) -> dict[str, list[int | None]]:
    """Each value's shape as ONNX's shape inference finds it (None for a symbolic axis)."""
    inferred = onnx.shape_inference.infer_shapes(model)
    shapes = {}
    for info in (*inferred.graph.value_info, *inferred.graph.input):
        dims = info.type.tensor_type.shape.dim
        shapes[info.name] = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    return shapes


def winograd(model: onnx.ModelProto) -> int:
    """Each 3×3 stride-1 Conv that pays (module docstring) becomes F(4×4, 3×3), in place;
    returns how many."""
    graph = _Graph(model)
    shapes = _static_shapes(model)
    m = WINOGRAD_M
    n = m + 2
    a_t, g, b_t = winograd_matrices(m)
    order: list[onnx.NodeProto] = []
    rewritten = 0
    for conv in list(graph.graph.node):
        plan = _winograd_plan(graph, conv, shapes)
        if plan is None:
            order.append(conv)
            continue
        weight, bias, (channels, height, width), pads = plan
        k = weight.shape[0]
        out_h, out_w = height + pads[0] + pads[2] - 2, width + pads[1] + pads[3] - 2
        tiles_h, tiles_w = -(-out_h // m), -(-out_w // m)
        tiles = tiles_h * tiles_w
        padded_h, padded_w = tiles_h * m + 2, tiles_w * m + 2
        out = conv.output[0]
        stem = out + "_winograd"

        def value(suffix: str, stem: str = stem) -> str:
            return graph.new_name(f"{stem}_{suffix}")

        def const(suffix: str, array: np.ndarray, stem: str = stem) -> str:
            return graph.add_constant(f"{stem}_{suffix}", array)

        # U = G g Gᵀ for each (out, in) channel pair, laid out (36, out, in)
        u = np.einsum("ai,kcij,bj->abkc", g, weight.astype(np.float64), g)
        names = [value(s) for s in ("padded", "rows", "cols_in", "cols", "tiles", "by_point",
                                    "products", "flat", "blocks", "blocks2d", "full")]
        nodes = [
            helper.make_node("Pad", [conv.input[0], const("pads", np.array(
                [0, 0, pads[0], pads[1], 0, 0, padded_h - height - pads[0],
                 padded_w - width - pads[1]], np.int64))], [names[0]]),
            # the input transform Bᵀ d B: along the rows, then the columns, each channel alone
            helper.make_node("Reshape", [names[0], const("shape_rows", np.array(
                [-1, 1, padded_h, padded_w], np.int64))], [names[1]]),
            helper.make_node("Conv", [names[1], const("b_rows", b_t.reshape(n, 1, n, 1).astype(
                np.float32))], [names[2]], kernel_shape=[n, 1], strides=[m, 1]),
            helper.make_node("Reshape", [names[2], const("shape_cols", np.array(
                [-1, 1, tiles_h, padded_w], np.int64))], [names[3]]),
            helper.make_node("Conv", [names[3], const("b_cols", b_t.reshape(n, 1, 1, n).astype(
                np.float32))], [names[4]], kernel_shape=[1, n], strides=[1, m]),
            helper.make_node("Reshape", [names[4], const("shape_tiles", np.array(
                [-1, channels, n * n, tiles], np.int64))], [names[5]]),
            helper.make_node("Transpose", [names[5]], [names[6]], perm=[0, 2, 1, 3]),
            # (36, out, in) @ (batch, 36, in, tiles): the products summed over the channels
            helper.make_node("MatMul", [const("u", u.reshape(n * n, k, channels).astype(
                np.float32)), names[6]], [names[7]]),
            helper.make_node("Reshape", [names[7], const("shape_flat", np.array(
                [0, n * n, k * tiles], np.int64))], [names[8]]),
            # the output transform Aᵀ M A, then each tile's 4 × 4 block into place
            helper.make_node("MatMul", [const("a", np.einsum("ia,jb->ijab", a_t, a_t).reshape(
                m * m, n * n).astype(np.float32)), names[8]], [names[9]]),
            helper.make_node("Reshape", [names[9], const("shape_blocks", np.array(
                [0, m * m * k, tiles_h, tiles_w], np.int64))], [names[10]]),
        ]
        current = value("placed")
        nodes.append(helper.make_node("DepthToSpace", [names[10]], [current], blocksize=m,
                                      mode="DCR"))
        if (tiles_h * m, tiles_w * m) != (out_h, out_w):
            cut = value("cut")
            nodes.append(helper.make_node("Slice", [
                current, const("starts", np.array([0, 0], np.int64)),
                const("ends", np.array([out_h, out_w], np.int64)),
                const("axes", np.array([2, 3], np.int64))], [cut]))
            current = cut
        if bias is None:
            nodes.append(helper.make_node("Identity", [current], [out]))
        else:
            nodes.append(helper.make_node("Add", [current, const("bias", bias.reshape(
                k, 1, 1).astype(np.float32))], [out]))
        for node in nodes:
            node.name = graph.new_name(f"{stem}_{node.op_type}")
        order += nodes
        rewritten += 1
    if rewritten:
        del graph.graph.node[:]
        graph.graph.node.extend(order)
    return rewritten


_Plan = tuple[np.ndarray, np.ndarray | None, tuple[int, int, int], list[int]]


def _winograd_plan(graph: _Graph, conv: onnx.NodeProto, shapes: dict) -> _Plan | None:
    """(weights, bias, (in channels, height, width), pads) of a Conv that F(4×4, 3×3) serves
    with less work, else None."""
    if conv.op_type != "Conv" or len(conv.output) != 1:
        return None
    attributes = _attributes(conv)
    if (attributes.get("group", 1) != 1 or list(attributes.get("strides", [1, 1])) != [1, 1]
            or list(attributes.get("dilations", [1, 1])) != [1, 1]
            or attributes.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET")):
        return None
    weight = graph.constant(conv.input[1])
    if weight is None or weight.ndim != 4 or weight.shape[2:] != (3, 3) \
            or weight.dtype != np.float32:
        return None
    bias = None
    if len(conv.input) > 2 and conv.input[2]:
        bias = graph.constant(conv.input[2])
        if bias is None:
            return None
    shape = shapes.get(conv.input[0])
    if shape is None or len(shape) != 4 or None in shape[1:]:
        return None
    _, channels, height, width = shape
    pads = list(attributes.get("pads", [0, 0, 0, 0]))
    tiles = (-(-(height + pads[0] + pads[2] - 2) // WINOGRAD_M)
             * -(-(width + pads[1] + pads[3] - 2) // WINOGRAD_M))
    if (min(channels, weight.shape[0]) < WINOGRAD_MIN_CHANNELS or tiles < WINOGRAD_MIN_TILES
            or channels != weight.shape[1]):
        return None
    return weight, bias, (channels, height, width), pads


# F(4, r) along the rows (``winograd_rows``) and where it paid, one timbral layer of
# musicnn-mtt at a time (204 filters, 187 × 96 → 187 × (96 - taps + 1), then the maximum over
# the columns) on a 2-vCPU AMD EPYC (AVX-512 on 256-bit pipes), ms per window at batch 1 / 4:
# 7 × 38: 12.0 → 7.2 / 12.1 → 7.5; 7 × 67: 10.4 → 5.8 / 10.4 → 5.7 (F(2, 7): 12.3 and 8.8, no
# gain on 7 × 38; F(6, 7) 6.3 and 4.8 but twice F(4, 7)'s largest error).
WINOGRAD_ROWS_M = 4
WINOGRAD_ROWS_MAX_TAPS = 7  # rows of the kernel: F(4, 7) evaluates at 9 finite points
WINOGRAD_ROWS_MIN_COLUMN_TAPS = 32  # the grouped convolution's GEMM sums over these
WINOGRAD_ROWS_MIN_FILTERS = 128
# the finite points of F(4, r ≤ 7), each point beside its negative or its reciprocal
WINOGRAD_ROWS_POINTS = (0.0, 1.0, -1.0, 2.0, -0.5, 0.5, -2.0, 3.0, -1 / 3)


def winograd_rows(model: onnx.ModelProto) -> int:
    """Each one-channel Conv with a short kernel along the rows whose only reader is a maximum
    over the columns (module docstring) becomes F(4, r) along the rows with the maximum taken
    before the output is put in order, in place; returns how many."""
    graph = _Graph(model)
    shapes = _static_shapes(model)
    m = WINOGRAD_ROWS_M
    order: list[onnx.NodeProto] = []
    replaced: set[int] = set()
    rewritten = 0
    for conv in list(graph.graph.node):
        if id(conv) in replaced:
            continue
        plan = _winograd_rows_plan(graph, conv, shapes)
        if plan is None:
            order.append(conv)
            continue
        weight, bias, (height, width), pads, pool, keepdims = plan
        filters, _, taps, column_taps = weight.shape
        n = m + taps - 1
        a_t, g, b_t = winograd_matrices(m, taps, WINOGRAD_ROWS_POINTS)
        out_h = height + pads[0] + pads[2] - taps + 1
        out_w = width + pads[1] + pads[3] - column_taps + 1
        tiles = -(-out_h // m)
        padded_h = tiles * m + taps - 1
        out = pool.output[0]
        stem = out + "_winograd_rows"

        def value(suffix: str, stem: str = stem) -> str:
            return graph.new_name(f"{stem}_{suffix}")

        def const(suffix: str, array: np.ndarray, stem: str = stem) -> str:
            return graph.add_constant(f"{stem}_{suffix}", array)

        # G g for each filter's column of taps, laid out (point, filter, 1, 1, column taps)
        u = np.einsum("ai,fij->afj", g, weight[:, 0].astype(np.float64))
        names = [value(s) for s in ("padded", "by_point", "products", "flat", "blocks",
                                    "block_shaped", "maxima", "in_order", "rows")]
        nodes = [
            helper.make_node("Pad", [conv.input[0], const("pads", np.array(
                [0, 0, pads[0], pads[1], 0, 0, padded_h - height - pads[0], pads[3]],
                np.int64))], [names[0]]),
            # Bᵀ d for every tile of n rows, each point a channel: (batch, n, tiles, width)
            helper.make_node("Conv", [names[0], const("b", b_t.reshape(n, 1, n, 1).astype(
                np.float32))], [names[1]], kernel_shape=[n, 1], strides=[m, 1]),
            # each point's products, summed over the column taps: (batch, n · filters, tiles,
            # out_w)
            helper.make_node("Conv", [names[1], const("u", u.reshape(
                n * filters, 1, 1, column_taps).astype(np.float32))], [names[2]],
                kernel_shape=[1, column_taps], group=n),
            helper.make_node("Reshape", [names[2], const("shape_flat", np.array(
                [0, n, filters * tiles * out_w], np.int64))], [names[3]]),
            # the output transform: (m, n) @ (batch, n, ...) → each tile's m rows
            helper.make_node("MatMul", [const("a", a_t.astype(np.float32)), names[3]],
                             [names[4]]),
            helper.make_node("Reshape", [names[4], const("shape_blocks", np.array(
                [0, m, filters, tiles, out_w], np.int64))], [names[5]]),
            helper.make_node("ReduceMax", [names[5]], [names[6]], axes=[4], keepdims=0),
            helper.make_node("Transpose", [names[6]], [names[7]], perm=[0, 2, 3, 1]),
            helper.make_node("Reshape", [names[7], const("shape_rows", np.array(
                [0, filters, tiles * m], np.int64))], [names[8]]),
        ]
        current = names[8]
        if tiles * m != out_h:
            cut = value("cut")
            nodes.append(helper.make_node("Slice", [
                current, const("starts", np.array([0], np.int64)),
                const("ends", np.array([out_h], np.int64)),
                const("axes", np.array([2], np.int64))], [cut]))
            current = cut
        shape = (filters, 1, 1) if keepdims else (filters, 1)
        if keepdims:
            kept = value("kept")
            nodes.append(helper.make_node("Unsqueeze", [current, const(
                "kept_axis", np.array([3], np.int64))], [kept]))
            current = kept
        if bias is None:
            nodes.append(helper.make_node("Identity", [current], [out]))
        else:
            nodes.append(helper.make_node("Add", [current, const(
                "bias", bias.reshape(shape).astype(np.float32))], [out]))
        for node in nodes:
            node.name = graph.new_name(f"{stem}_{node.op_type}")
        order += nodes
        replaced.add(id(pool))
        rewritten += 1
    if rewritten:
        del graph.graph.node[:]
        graph.graph.node.extend(order)
    return rewritten


_RowsPlan = tuple[np.ndarray, np.ndarray | None, tuple[int, int], list[int], onnx.NodeProto,
                  int]


def _winograd_rows_plan(graph: _Graph, conv: onnx.NodeProto, shapes: dict
                        ) -> _RowsPlan | None:
    """(weights, bias, (height, width), pads, the maximum's node, its keepdims) of a Conv that
    F(4, r) along the rows serves with less work, else None."""
    if conv.op_type != "Conv" or len(conv.output) != 1 or not graph.only_reader(conv.output[0]):
        return None
    attributes = _attributes(conv)
    if (attributes.get("group", 1) != 1 or list(attributes.get("strides", [1, 1])) != [1, 1]
            or list(attributes.get("dilations", [1, 1])) != [1, 1]
            or attributes.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET")):
        return None
    weight = graph.constant(conv.input[1])
    if weight is None or weight.ndim != 4 or weight.shape[1] != 1 or weight.dtype != np.float32:
        return None
    filters, _, taps, column_taps = weight.shape
    if (not 2 <= taps <= WINOGRAD_ROWS_MAX_TAPS or column_taps < WINOGRAD_ROWS_MIN_COLUMN_TAPS
            or filters < WINOGRAD_ROWS_MIN_FILTERS):
        return None
    bias = None
    if len(conv.input) > 2 and conv.input[2]:
        bias = graph.constant(conv.input[2])
        if bias is None:
            return None
    pool = next((n for n in graph.graph.node if conv.output[0] in n.input), None)
    if pool is None or pool.op_type != "ReduceMax" or len(pool.output) != 1:
        return None
    pool_attributes = _attributes(pool)
    axes = pool_attributes.get("axes")
    if len(pool.input) > 1 and pool.input[1]:  # opset 18: the axes are an input
        given = graph.constant(pool.input[1])
        axes = None if given is None else given.tolist()
    if not axes or {a % 4 for a in axes} != {3}:
        return None
    shape = _input_shape(graph, conv.input[0], shapes)
    if shape is None or len(shape) != 4 or shape[1] != 1 or None in shape[2:]:
        return None
    pads = list(attributes.get("pads", [0, 0, 0, 0]))
    return weight, bias, (shape[2], shape[3]), pads, pool, pool_attributes.get("keepdims", 1)


def _input_shape(graph: _Graph, value: str, shapes: dict) -> list[int | None] | None:
    """A value's shape from shape inference, or that of a Pad whose pads are computed from
    constants only (the TorchScript exporter writes musicnn's padding so), which shape
    inference leaves unknown."""
    shape = shapes.get(value)
    if shape is not None and None not in shape[1:]:
        return shape
    pad = graph.made_by(value, "Pad")
    if pad is None or (_attributes(pad).get("mode", b"constant") not in (b"constant", "constant")
                       or len(pad.input) > 3 and pad.input[3]):
        return None
    before = shapes.get(pad.input[0])
    amounts = _constant_value(graph, pad.input[1], depth=16) if len(pad.input) > 1 else None
    if before is None or amounts is None or amounts.shape != (2 * len(before),):
        return None
    rank = len(before)
    return [None if size is None else size + int(amounts[i]) + int(amounts[i + rank])
            for i, size in enumerate(before)]


def _constant_value(graph: _Graph, value: str, depth: int) -> np.ndarray | None:
    """A value computed from constants alone (ONNX's reference evaluator runs the nodes), or
    None."""
    known = graph.constant(value)
    if known is not None or depth == 0:
        return known
    node = graph.producer.get(value)
    if node is None or len(node.output) != 1:
        return None
    if node.op_type == "Constant":
        return numpy_helper.to_array(helper.get_attribute_value(node.attribute[0])) \
            if node.attribute and node.attribute[0].name == "value" else None
    inputs = {}
    for name in node.input:
        if name:
            computed = _constant_value(graph, name, depth - 1)
            if computed is None:
                return None
            inputs[name] = computed
    opset = next((o.version for o in graph.model.opset_import if o.domain in ("", "ai.onnx")),
                 None)
    if opset is None:
        return None
    from onnx.reference import ReferenceEvaluator  # numpy's; loaded only for such a graph

    return ReferenceEvaluator(node, opsets={"": opset}).run(None, inputs)[0]


PASSES: dict[str, tuple[Callable[[onnx.ModelProto], int], str]] = {
    "pool_first": (pool_first, "max pools taken before their ReLU and batch norm"),
    "winograd": (winograd, "3x3 convolutions computed as Winograd F(4x4, 3x3)"),
    "winograd_rows": (winograd_rows, "one-channel convolutions with a maximum over the columns "
                                     "computed as Winograd F(4, r) along the rows"),
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
