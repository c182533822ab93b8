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
- ``batch_norm_forward``: a batch norm whose only reader is a convolution without padding
  (one group), or a Gemm (directly or through ``Flatten``), is folded into that reader's
  weights and bias: ``W·(s·x + t) = (W·s)·x + W·t``, exact in real arithmetic where no
  padding puts zeros where the batch norm would have put ``t``. After ``pool_first`` the
  default model's batch norms sit just before its next convolution or its dense layer.
- ``winograd``: a 3×3 convolution of stride 1 with enough channels is computed with
  Winograd's minimal filtering (Lavin & Gray, "Fast algorithms for convolutional neural
  networks", CVPR 2016) in one dimension, along the rows: F(6, 3) takes 8 multiplications for
  each 6 output rows, each channel pair and kernel column instead of 18, F(8, 3) 10 for 8 and
  F(4, 3) 6 for 4; each layer takes the one whose tiles hold the fewest rows (``rows_tile``:
  F(8, 3) on 64 rows needs 80 against F(6, 3)'s 88). The input's rows are transformed by one
  small convolution (stride m), each point's products summed over the channels and the 3 kernel
  columns are one group of a grouped convolution (ONNX Runtime's GEMM with 3 × channels as its
  inner size), and the output transform is one matrix product and a reordering. Measured layer
  by layer, this beat the two-dimensional F(4×4, 3×3) (a quarter of the multiplications, but
  36 GEMMs over the channels alone and twice the memory passes) on every layer tried, and
  lost to the direct convolution only with few channels or a small map (``WINOGRAD_MIN_*``).
  The convolution's bias goes into the products: point p gets βₚ·b where Aᵀβ = 1 (β from
  the pseudo-inverse of Aᵀ), so the output transform gives every row its bias and no pass
  over the output adds it. Where the convolution's only reader is a 2×2 max pool of stride 2
  (the default model's and vgg's layers, with ``pool_first``), the pool is taken before the
  rows are put in order: a tile's m rows (m even) hold whole row pairs, so the output
  transform runs as two matrix products, the tiles' even and odd rows, their elementwise
  maximum is the pool along the rows, and a 1×2 max pool takes it along the columns; the
  reordering and the cut of the last tile then move a quarter of the output.
- ``winograd_rows``: a convolution of one input channel with a kernel short along the rows
  (axis 2) and long along the columns, whose only reader is a maximum over the columns
  (musicnn's timbral filters: 7 frames × 38 or 67 mel bands, then the maximum over the bands),
  is computed with F(4, r) along the rows the same way: 10 multiplications for each 4 outputs
  instead of 28 for r = 7, the long kernel columns the GEMM's inner size. The maximum over the
  columns is taken before the blocks of 4 are put back in order, so the reordering moves
  1/columns of the values, and the bias is added after the maximum (``max(x + b) = max(x) +
  b``, also in floating point).
- ``relu_in_conv``: a convolution whose only reader is a max pool whose only reader is a ReLU
  (what ``pool_first`` leaves where the convolution is not rewritten) has the ReLU moved
  between the two (``max(relu(x)) = relu(max(x))``, also in floating point): ONNX Runtime then
  computes it in the convolution's own epilogue, and the pass over the pooled values is gone.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
import onnx
from onnx import helper, numpy_helper

__all__ = ["batch_norm_forward", "optimize", "pool_first", "relu_in_conv", "winograd",
           "winograd_rows"]


class _Graph:
    """The graph with who makes and who reads each value, and its constant tensors."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        self.graph = model.graph
        self.constants = {t.name: t for t in self.graph.initializer}
        self.producer = {out: node for node in self.graph.node for out in node.output}
        # each value's readers, a node once per input it fills, None for the graph's output
        self.readers: dict[str, list[onnx.NodeProto | None]] = {}
        for node in self.graph.node:
            for name in node.input:
                self.readers.setdefault(name, []).append(node)
        for output in self.graph.output:
            self.readers.setdefault(output.name, []).append(None)
        self._names = set(self.producer) | set(self.constants) | {i.name for i in self.graph.input}

    def only_reader(self, value: str) -> onnx.NodeProto | None:
        """The one node that reads ``value``, once; None where it is read more than once, by
        the graph's output, or not at all."""
        readers = self.readers.get(value, [])
        return readers[0] if len(readers) == 1 else None

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


def _reduced_axes(graph: _Graph, node: onnx.NodeProto) -> list[int] | None:
    """A Reduce node's axes, from its attribute or (opset 18) its constant input; None where
    not given or not constant."""
    axes = _attributes(node).get("axes")
    if len(node.input) > 1 and node.input[1]:
        given = graph.constant(node.input[1])
        axes = None if given is None else given.tolist()
    return axes


def _pooled_rank(graph: _Graph, pool: onnx.NodeProto, rank: int) -> int | None:
    """The rank of a max pool's output for an input of ``rank``, or None where the node is not
    a per-channel maximum over positions (batch and channel axes kept)."""
    if len(pool.output) != 1:
        return None
    if pool.op_type == "MaxPool":
        return rank
    attributes = _attributes(pool)
    axes = _reduced_axes(graph, pool)
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
        del graph.graph.node[:]
        graph.graph.node.extend(order)
    return rewritten


def batch_norm_forward(model: onnx.ModelProto) -> int:
    """Each inference batch norm whose only reader is a Conv without padding or a Gemm (read
    directly or through a Flatten of axis 1) is folded into that reader's constants and
    removed, in place; returns how many (module docstring)."""
    graph = _Graph(model)
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
            if _attributes(reader).get("axis", 1) != 1:
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
        del graph.graph.node[:]
        graph.graph.node.extend(kept)
    return len(folded)


def _fold_into_conv(graph: _Graph, conv: onnx.NodeProto, scale: np.ndarray,
                    shift: np.ndarray) -> bool:
    """Conv(s·x + t) as one Conv of x: weights × s over the input channels, bias + W·t."""
    attributes = _attributes(conv)
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


def _fold_into_gemm(graph: _Graph, gemm: onnx.NodeProto, scale: np.ndarray,
                    shift: np.ndarray) -> bool:
    """Gemm(flatten(s·x + t)) as one Gemm: B's rows of each channel's features × s, C +
    α/β·t·B (channel c's features are the c-th run of equal length)."""
    attributes = _attributes(gemm)
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
    graph = _Graph(model)
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
        del graph.graph.node[:]
        graph.graph.node.extend(order)
    return moved


# The finite points of Toom-Cook's F(m, r) along the rows, each beside its negative or its
# reciprocal: F(4, 3) takes the first 5, F(6, 3) 7, F(8, 3) and F(4, 7) all 9. Pairs such as 2
# and -1/2 rather than ±2 halved the largest float32 error (Barabasz et al., "Error analysis
# and improving the accuracy of Winograd convolution for deep neural networks", ACM TOMS
# 2020). For the last two, 3/4 and -4/3 gave F(8, 3) about half the largest error of 3 and
# -1/3 on 3×3 layers of 32-256 channels (2.3e-5 against 3.9e-5 on outputs of up to 6.5; F(6, 3):
# 7e-6), and F(4, 7) about 0.6 of it, in float32 simulations against float64.
WINOGRAD_POINTS = (0.0, 1.0, -1.0, 2.0, -0.5, 0.5, -2.0, 0.75, -4 / 3)

# Where F(m, 3) along the rows paid against ONNX Runtime's direct convolution, one layer at a
# time on a 2-vCPU AMD EPYC (AVX-512 on 256-bit pipes), ms at batch 1, direct → F(m, 3) (→ the
# two-dimensional F(4×4, 3×3) this pass replaced): 128 → 128 on 64 × 116 19.8 → 12.7 (14.8);
# 128 on 32 × 58 4.9 → 3.1 (3.4); 256 on 16 × 29 4.8 → 2.9 (3.2); 256 on 8 × 15 1.33 → 0.93
# (1.72); 256 on 4 × 8 0.44 → 0.35; 64 → 128 on 48 × 93 6.1 → 3.7; the default model's 32 → 64
# on 95 × 45 1.48 → 1.17 and 64 → 64 on 46 × 21 0.59 → 0.44. It lost with 16 channels in
# (16 → 16 on 96 × 187: 0.90 → 1.11), one channel in (1 → 32: 0.30 → 0.62) and on 2 × 4
# (0.21 → 0.30); 32 → 32 on 95 × 45 gained 9 %.
WINOGRAD_MIN_CHANNELS_IN = 32
WINOGRAD_MIN_CHANNELS_OUT = 64
WINOGRAD_MIN_ROWS = 4  # output rows
WINOGRAD_MIN_POSITIONS = 32  # output rows × columns

# F(4, r) along the rows of a one-channel convolution with a maximum over the columns
# (``winograd_rows``), one timbral layer of musicnn-mtt at a time (204 filters, 187 × 96 →
# 187 × (96 - taps + 1), then the maximum over the columns), same machine, ms per window at
# batch 1 / 4: 7 × 38: 12.0 → 7.2 / 12.1 → 7.5; 7 × 67: 10.4 → 5.8 / 10.4 → 5.7 (F(2, 7): 12.3
# and 8.8, no gain on 7 × 38; F(6, 7) 6.3 and 4.8 but twice F(4, 7)'s largest error).
WINOGRAD_ROWS_M = 4
WINOGRAD_ROWS_MAX_TAPS = 7  # rows of the kernel: F(4, 7) takes all of WINOGRAD_POINTS
WINOGRAD_ROWS_MIN_COLUMN_TAPS = 32  # the grouped convolution's GEMM sums over these
WINOGRAD_ROWS_MIN_FILTERS = 128


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


def rows_tile(out_rows: int) -> int:
    """F(4, 3), F(6, 3) or F(8, 3): the one that transforms the fewest rows for ``out_rows``
    output rows (tiles × points; on a tie 6, then 4: their float32 error is lower)."""
    return min((6, 4, 8), key=lambda m: -(-out_rows // m) * (m + 2))


_Shapes = Callable[[], dict[str, list[int | None]]]


def _shapes_when_asked(model: onnx.ModelProto) -> _Shapes:
    """``_static_shapes`` of the model, run at the first call only: a pass whose candidates all
    fail on their weights needs no shape inference (a quarter of a second for
    short_chunk_resnet's graph)."""
    return functools.cache(lambda: _static_shapes(model))


def _static_shapes(model: onnx.ModelProto) -> dict[str, list[int | None]]:
    """Each value's shape as ONNX's shape inference finds it (None for a symbolic axis)."""
    inferred = onnx.shape_inference.infer_shapes(model)
    shapes = {}
    for info in (*inferred.graph.value_info, *inferred.graph.input):
        dims = info.type.tensor_type.shape.dim
        shapes[info.name] = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    return shapes


def _plain_conv(graph: _Graph, conv: onnx.NodeProto
                ) -> tuple[np.ndarray, np.ndarray | None, list[int]] | None:
    """(weights, bias, pads) of a 2-D float32 Conv of stride 1, no dilation, one group and
    constant weights, else None."""
    if conv.op_type != "Conv" or len(conv.output) != 1:
        return None
    attributes = _attributes(conv)
    if (attributes.get("group", 1) != 1 or list(attributes.get("strides", [1, 1])) != [1, 1]
            or list(attributes.get("dilations", [1, 1])) != [1, 1]
            or attributes.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET")):
        return None
    weight = graph.constant(conv.input[1])
    if weight is None or weight.ndim != 4 or weight.dtype != np.float32:
        return None
    bias = None
    if len(conv.input) > 2 and conv.input[2]:
        bias = graph.constant(conv.input[2])
        if bias is None:
            return None
    return weight, bias, list(attributes.get("pads", [0, 0, 0, 0]))


def _conv_input(graph: _Graph, conv: onnx.NodeProto, weight: np.ndarray,
                shapes: _Shapes) -> list[int] | None:
    """The (channels, height, width) of a Conv's input where known and fitting its weights."""
    shape = _input_shape(graph, conv.input[0], shapes())
    if shape is None or len(shape) != 4 or None in shape[1:] or shape[1] != weight.shape[1]:
        return None
    return shape[1:]


def _conv_output(shape: list[int], pads: list[int], kernel: tuple[int, ...]) -> tuple[int, int]:
    """(rows, columns) out of a stride-1 Conv of a ``kernel`` on an input of ``shape``
    (channels, height, width)."""
    return (shape[1] + pads[0] + pads[2] - kernel[0] + 1,
            shape[2] + pads[1] + pads[3] - kernel[1] + 1)


class _RowsWinograd:
    """The nodes of F(m, r) along the rows (axis 2) of a Conv with an (r, columns) kernel,
    up to the output transform: the padded input's rows in tiles of ``m + r - 1``, each
    transformed by Bᵀ (one small convolution, stride m), and every point's products a group of
    one grouped convolution over the channels and the kernel's columns (ONNX Runtime's GEMM),
    joined as (batch, n, filters · tiles · output columns). The Conv's bias is in those
    products: point p gets βₚ·b with Aᵀβ = 1, so every output row gets b from the output
    transform (``rows``) and no pass over the output adds it."""

    def __init__(self, graph: _Graph, conv: onnx.NodeProto, weight: np.ndarray,
                 bias: np.ndarray | None, shape: list[int], pads: list[int], m: int,
                 stem: str) -> None:
        channels, height, width = shape
        filters, _, taps, column_taps = weight.shape
        n = m + taps - 1
        a_t, g, b_t = winograd_matrices(m, taps)
        self.m, self.filters, self.a_t = m, filters, a_t
        self.out_rows, self.out_columns = _conv_output(shape, pads, weight.shape[2:])
        self.tiles = tiles = -(-self.out_rows // m)
        padded_h, padded_w = tiles * m + taps - 1, width + pads[1] + pads[3]
        self._graph, self._stem = graph, stem
        # G g along each kernel's rows, laid out (point, filter, channel, 1, columns)
        u = np.einsum("ai,kciw->akcw", g, weight.astype(np.float64))
        flat, by_point, products = (self.value(s) for s in ("flat", "by_point", "products"))
        self.joined = self.value("joined")
        self.nodes = [
            helper.make_node("Reshape", [conv.input[0], self.const("shape_flat", np.array(
                [-1, 1, height, width], np.int64))], [flat]),
            # Bᵀ d for every tile of n rows of every channel, the zeros around the input the
            # Conv's own padding: (batch · channels, n, tiles, padded width)
            helper.make_node("Conv", [flat, self.const("b", b_t.reshape(n, 1, n, 1).astype(
                np.float32))], [by_point], kernel_shape=[n, 1], strides=[m, 1],
                pads=[pads[0], pads[1], padded_h - height - pads[0], pads[3]]),
        ]
        if channels > 1:  # point-major channels, the grouped convolution's groups
            split, swapped, grouped = (self.value(s) for s in ("split", "swapped", "grouped"))
            self.nodes += [
                helper.make_node("Reshape", [by_point, self.const("shape_split", np.array(
                    [-1, channels, n, tiles, padded_w], np.int64))], [split]),
                helper.make_node("Transpose", [split], [swapped], perm=[0, 2, 1, 3, 4]),
                helper.make_node("Reshape", [swapped, self.const("shape_grouped", np.array(
                    [-1, n * channels, tiles, padded_w], np.int64))], [grouped]),
            ]
            by_point = grouped
        products_inputs = [by_point, self.const("u", u.reshape(
            n * filters, channels, 1, column_taps).astype(np.float32))]
        if bias is not None:  # β: the least-squares solution of Aᵀβ = 1, exact here
            beta = np.linalg.pinv(a_t) @ np.ones(m)
            products_inputs.append(self.const("bias", np.outer(
                beta, bias.astype(np.float64)).reshape(-1).astype(np.float32)))
        self.nodes += [
            # each point's products summed over the channels and the kernel's columns:
            # (batch, n · filters, tiles, output columns)
            helper.make_node("Conv", products_inputs, [products],
                             kernel_shape=[1, column_taps], group=n),
            helper.make_node("Reshape", [products, self.const("shape_joined", np.array(
                [0, n, filters * tiles * self.out_columns], np.int64))], [self.joined]),
        ]

    def value(self, suffix: str) -> str:
        return self._graph.new_name(f"{self._stem}_{suffix}")

    def const(self, suffix: str, array: np.ndarray) -> str:
        return self._graph.add_constant(f"{self._stem}_{suffix}", array)

    def rows(self, which: slice, suffix: str) -> str:
        """The rows ``which`` of Aᵀ as one matrix product, (k, n) @ (batch, n, ...): the
        value (batch, k, filters · tiles · output columns) whose row i holds, for every tile,
        its output row ``range(m)[which][i]``."""
        out = self.value(suffix)
        self.nodes.append(helper.make_node("MatMul", [self.const(
            f"a_{suffix}", self.a_t[which].astype(np.float32)), self.joined], [out]))
        return out

    def blocks(self) -> str:
        """The whole output transform as (batch, m, filters, tiles, output columns): row
        ``t·m + i`` of the output is ``blocks[:, i, :, t]``."""
        full, blocks = self.rows(slice(None), "rows"), self.value("blocks")
        self.nodes.append(helper.make_node("Reshape", [full, self.const(
            "shape_blocks", np.array([0, self.m, self.filters, self.tiles, self.out_columns],
                                     np.int64))], [blocks]))
        return blocks

    def placed(self, blocks: str, per_tile: int, columns: int) -> str:
        """``blocks`` (batch, per_tile, filters, tiles, columns) with its rows put in order,
        (batch, filters, tiles · per_tile, columns): row ``t·per_tile + i`` from tile t's i."""
        in_order, placed = self.value("in_order"), self.value("placed")
        self.nodes += [
            helper.make_node("Transpose", [blocks], [in_order], perm=[0, 2, 3, 1, 4]),
            helper.make_node("Reshape", [in_order, self.const("shape_placed", np.array(
                [0, self.filters, self.tiles * per_tile, columns], np.int64))], [placed]),
        ]
        return placed

    def finish(self, current: str, out: str, rows: int, bias: np.ndarray | None = None
               ) -> list[onnx.NodeProto]:
        """The nodes, with ``current``'s rows (axis 2) past ``rows`` cut and ``bias`` (shaped
        to broadcast) added, into ``out``."""
        nodes = list(self.nodes)
        if self.tiles * self.m != self.out_rows:
            cut = self.value("cut")
            nodes.append(helper.make_node("Slice", [
                current, self.const("starts", np.array([0], np.int64)),
                self.const("ends", np.array([rows], np.int64)),
                self.const("axes", np.array([2], np.int64))], [cut]))
            current = cut
        if bias is None:
            nodes.append(helper.make_node("Identity", [current], [out]))
        else:
            nodes.append(helper.make_node("Add", [current, self.const(
                "bias", bias.astype(np.float32))], [out]))
        for node in nodes:
            node.name = self._graph.new_name(f"{self._stem}_{node.op_type}")
        return nodes


def winograd(model: onnx.ModelProto) -> int:
    """Each 3×3 stride-1 Conv that pays (module docstring) becomes F(m, 3) along its rows,
    in place, a 2×2 max pool that is its only reader taken inside it; returns how many."""
    graph = _Graph(model)
    shapes = _shapes_when_asked(model)
    order: list[onnx.NodeProto] = []
    replaced: set[int] = set()
    rewritten = 0
    for conv in list(graph.graph.node):
        if id(conv) in replaced:
            continue
        plan = _winograd_plan(graph, conv, shapes)
        if plan is None:
            order.append(conv)
            continue
        weight, bias, shape, pads = plan
        out = conv.output[0]
        rows = _RowsWinograd(graph, conv, weight, bias, shape, pads,
                             rows_tile(_conv_output(shape, pads, (3, 3))[0]), out + "_winograd")
        pool = graph.only_reader(out)
        pooled_columns = _pooled_columns(pool, rows.m)
        if pooled_columns is not None:
            order += _pooled_in_tiles(rows, pool.output[0], pooled_columns)
            replaced.add(id(pool))
        else:
            order += _in_order(rows, out)
        rewritten += 1
    if rewritten:
        del graph.graph.node[:]
        graph.graph.node.extend(order)
    return rewritten


def _in_order(rows: _RowsWinograd, out: str) -> list[onnx.NodeProto]:
    """The output rows put in order: ``t·m + i`` from tile t's row i."""
    placed = rows.placed(rows.blocks(), rows.m, rows.out_columns)
    return rows.finish(placed, out, rows.out_rows)


def _pooled_columns(pool: onnx.NodeProto | None, m: int) -> int | None:
    """The columns per pooled value (2, or 1 for a pool of row pairs alone) when ``pool`` is
    a max pool of kernel and stride 2×2 or 2×1 without padding whose row pairs lie inside
    tiles of ``m`` rows (m even); else None."""
    if (pool is None or pool.op_type != "MaxPool" or m % 2
            or [name for name in pool.output if name] != [pool.output[0]]):
        return None
    attributes = _attributes(pool)
    kernel = list(attributes.get("kernel_shape", []))
    if (kernel not in ([2, 2], [2, 1]) or list(attributes.get("strides", [1, 1])) != kernel
            or any(attributes.get("pads", [0])) or attributes.get("ceil_mode", 0)
            or list(attributes.get("dilations", [1, 1])) != [1, 1]
            or attributes.get("auto_pad", b"NOTSET") not in (b"NOTSET", b"VALID")
            or attributes.get("storage_order", 0)):
        return None
    return kernel[1]


def _pooled_in_tiles(rows: _RowsWinograd, out: str, pooled_columns: int
                     ) -> list[onnx.NodeProto]:
    """The max pool of the output's row pairs (and of its column pairs where
    ``pooled_columns`` is 2), taken before the rows are put in order: the maximum of each
    tile's even and odd rows (the output transform in two halves), then of each pair of
    columns; the reordering moves a half or a quarter of the output."""
    half = rows.m // 2
    pairs = rows.value("pairs")
    even = rows.rows(slice(0, None, 2), "even_rows")
    odd = rows.rows(slice(1, None, 2), "odd_rows")
    rows.nodes.append(helper.make_node("Max", [even, odd], [pairs]))
    columns = rows.out_columns // pooled_columns
    if pooled_columns == 2:
        grid, pooled = rows.value("grid"), rows.value("pooled")
        rows.nodes += [
            helper.make_node("Reshape", [pairs, rows.const("shape_grid", np.array(
                [0, half * rows.filters, rows.tiles, rows.out_columns], np.int64))], [grid]),
            helper.make_node("MaxPool", [grid], [pooled], kernel_shape=[1, 2], strides=[1, 2]),
        ]
        pairs = pooled
    blocks = rows.value("blocks")
    rows.nodes.append(helper.make_node("Reshape", [pairs, rows.const("shape_blocks", np.array(
        [0, half, rows.filters, rows.tiles, columns], np.int64))], [blocks]))
    return rows.finish(rows.placed(blocks, half, columns), out, rows.out_rows // 2)


def _winograd_plan(graph: _Graph, conv: onnx.NodeProto, shapes: _Shapes
                   ) -> tuple[np.ndarray, np.ndarray | None, list[int], list[int]] | None:
    """(weights, bias, (in channels, height, width), pads) of a 3×3 Conv that F(m, 3) along
    the rows serves with less work, else None."""
    plain = _plain_conv(graph, conv)
    if plain is None:
        return None
    weight, bias, pads = plain
    if (weight.shape[2:] != (3, 3) or weight.shape[1] < WINOGRAD_MIN_CHANNELS_IN
            or weight.shape[0] < WINOGRAD_MIN_CHANNELS_OUT):
        return None
    shape = _conv_input(graph, conv, weight, shapes)
    if shape is None:
        return None
    out_rows, out_columns = _conv_output(shape, pads, (3, 3))
    if out_rows < WINOGRAD_MIN_ROWS or out_rows * out_columns < WINOGRAD_MIN_POSITIONS:
        return None
    return weight, bias, shape, pads


def winograd_rows(model: onnx.ModelProto) -> int:
    """Each one-channel Conv with a short kernel along the rows whose only reader is a maximum
    over the columns (module docstring) becomes F(4, r) along the rows with the maximum taken
    before the output is put in order, in place; returns how many."""
    graph = _Graph(model)
    shapes = _shapes_when_asked(model)
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
        weight, bias, shape, pads, pool, keepdims = plan
        out = pool.output[0]
        # the bias after the maximum, on 1/columns of the values: ONNX Runtime's grouped
        # convolution of one channel a group would add it in a pass of its own over them all
        rows = _RowsWinograd(graph, conv, weight, None, shape, pads, WINOGRAD_ROWS_M,
                             out + "_winograd_rows")
        blocks = rows.blocks()
        maxima, in_order, placed = (rows.value(s) for s in ("maxima", "in_order", "placed"))
        rows.nodes += [
            # the maximum over the columns first: the reordering then moves 1/columns of it
            helper.make_node("ReduceMax", [blocks], [maxima], axes=[4], keepdims=0),
            helper.make_node("Transpose", [maxima], [in_order], perm=[0, 2, 3, 1]),
            helper.make_node("Reshape", [in_order, rows.const("shape_placed", np.array(
                [0, rows.filters, rows.tiles * rows.m] + [1] * keepdims, np.int64))],
                [placed]),
        ]
        bias_shape = (rows.filters, 1, 1) if keepdims else (rows.filters, 1)
        order += rows.finish(placed, out, rows.out_rows,
                             None if bias is None else bias.reshape(bias_shape))
        replaced.add(id(pool))
        rewritten += 1
    if rewritten:
        del graph.graph.node[:]
        graph.graph.node.extend(order)
    return rewritten


_RowsPlan = tuple[np.ndarray, np.ndarray | None, list[int], list[int], onnx.NodeProto, int]


def _winograd_rows_plan(graph: _Graph, conv: onnx.NodeProto, shapes: _Shapes
                        ) -> _RowsPlan | None:
    """(weights, bias, input shape, pads, the maximum's node, its keepdims) of a Conv that
    F(4, r) along the rows serves with less work, else None."""
    # the reader first: only a Conv read by a maximum over the columns has its weights read
    pool = graph.only_reader(conv.output[0]) if conv.op_type == "Conv" else None
    if pool is None or pool.op_type != "ReduceMax" or len(pool.output) != 1:
        return None
    axes = _reduced_axes(graph, pool)
    if not axes or {a % 4 for a in axes} != {3}:
        return None
    plain = _plain_conv(graph, conv)
    if plain is None:
        return None
    weight, bias, pads = plain
    filters, channels, taps, column_taps = weight.shape
    if (channels != 1 or not 2 <= taps <= WINOGRAD_ROWS_MAX_TAPS
            or column_taps < WINOGRAD_ROWS_MIN_COLUMN_TAPS
            or filters < WINOGRAD_ROWS_MIN_FILTERS):
        return None
    shape = _conv_input(graph, conv, weight, shapes)
    if shape is None:
        return None
    return weight, bias, shape, pads, pool, _attributes(pool).get("keepdims", 1)


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
    "batch_norm_forward": (batch_norm_forward, "batch norms folded into the layer after them"),
    "winograd": (winograd, "3x3 convolutions computed as Winograd F(m, 3) along the rows"),
    "winograd_rows": (winograd_rows, "one-channel convolutions with a maximum over the columns "
                                     "computed as Winograd F(4, r) along the rows"),
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
