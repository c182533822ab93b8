"""Winograd's minimal filtering along the rows: two rewrites of a model file's ONNX graph
(``graph_passes`` runs them) that compute convolutions with fewer multiplications.

Lavin & Gray, "Fast algorithms for convolutional neural networks" (CVPR 2016), in one dimension:
F(m, r) gives m outputs of an r-tap filter from m + r - 1 inputs with m + r - 1 multiplications
instead of m·r, exact in real arithmetic; in float32 it rounds apart from the direct convolution
by a little more, which the points it evaluates at keep small (``WINOGRAD_POINTS``).

- ``winograd``: a 3×3 convolution of stride 1 with enough channels is computed with F(6, 3)
  along the rows: 8 multiplications for each 6 output rows, each channel pair and kernel column
  instead of 18, F(8, 3) 10 for 8 and F(4, 3) 6 for 4; each layer takes the one whose tiles
  hold the fewest rows (``rows_tile``: F(8, 3) on 64 rows needs 80 against F(6, 3)'s 88). The
  input's rows are transformed by one small convolution (stride m), each point's products
  summed over the channels and the 3 kernel columns are one group of a grouped convolution
  (ONNX Runtime's GEMM with 3 × channels as its inner size), and the output transform is one
  matrix product and a reordering. Measured layer by layer, this beat the two-dimensional
  F(4×4, 3×3) (a quarter of the multiplications, but 36 GEMMs over the channels alone and
  twice the memory passes) on every layer tried, and lost to the direct convolution only with
  few channels or a small map (``WINOGRAD_MIN_*``). The convolution's bias goes into the
  products: point p gets βₚ·b where Aᵀβ = 1 (β from the pseudo-inverse of Aᵀ), so the output
  transform gives every row its bias and no pass over the output adds it. Where the
  convolution's only reader is a 2×2 max pool of stride 2 (the default model's and vgg's
  layers, with ``pool_first``), the pool is taken before the rows are put in order: a tile's m
  rows (m even) hold whole row pairs, so the output transform runs as two matrix products, the
  tiles' even and odd rows, their elementwise maximum is the pool along the rows, and a 1×2
  max pool takes it along the columns; the reordering and the cut of the last tile then move a
  quarter of the output.
- ``winograd_rows``: a convolution of one input channel with a kernel short along the rows
  (axis 2) and long along the columns, whose only reader is a maximum over the columns
  (musicnn's timbral filters: 7 frames × 38 or 67 mel bands, then the maximum over the bands),
  is computed with F(6, r) along the rows the same way: 12 multiplications for each 6 outputs
  instead of 42 for r = 7, the long kernel columns the GEMM's inner size. The maximum over the
  columns is taken before the blocks of 6 are put back in order, so the reordering moves
  1/columns of the values, and the bias is added after the maximum (``max(x + b) = max(x) +
  b``, also in floating point).
  A one-channel kernel long along the rows (musicnn's temporal filters: 128 or 64 frames × 1
  band, then the same maximum) is cut into parts of m = 5 taps. Output row m·t + i of the
  correlation is the sum over the parts a of part a's correlation at row m·(t + a) + i, which is
  F(5, 5) on the input's tile t + a: so the input's tiles are transformed once, and each point's
  products are a correlation along the tiles with one tap a part (the grouped convolution's
  kernel is parts × columns), followed by one output transform. 9 multiplications a part for 5
  outputs instead of 25: for 128 taps, 26 parts, 47 multiplications an output instead of 128.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
import onnx
from onnx import helper, numpy_helper

from streamtag.model.graph_edit import Graph, node_attributes, reduced_axes

__all__ = ["WINOGRAD_POINTS", "rows_tile", "winograd", "winograd_matrices", "winograd_rows"]

# The finite points of Toom-Cook's F(m, r) along the rows, each beside its negative or its
# reciprocal: F(4, 3) takes the first 5, F(6, 3) 7, F(5, 5) 8, F(8, 3) and F(4, 7) 9, F(6, 7)
# all 11. Pairs such as 2 and -1/2 rather than ±2 halve the largest float32 error (Barabasz et
# al., "Error analysis and improving the accuracy of Winograd convolution for deep neural
# networks", ACM TOMS 2020); as the 8th and 9th, 3/4 and -4/3 gave F(8, 3) and F(4, 7) about half
# the error of 3 and -1/3 in float32 simulations (docs/benchmarks/, "F(8, 3) along the
# rows"); 3 and -1/3 then, as F(6, 7)'s last two, gave it a little less than 4/3 and -3/4
# (docs/benchmarks/, "musicnn's long kernels in parts").
WINOGRAD_POINTS = (0.0, 1.0, -1.0, 2.0, -0.5, 0.5, -2.0, 0.75, -4 / 3, 3.0, -1 / 3)

# Where F(m, 3) along the rows beats ONNX Runtime's direct convolution, measured one layer at a
# time: from 32 channels in and 64 out, on maps of a few rows and columns or more; it lost with
# 16 channels or one channel in and on a map of 2 × 4 (docs/benchmarks/, "Winograd
# along the rows").
WINOGRAD_MIN_CHANNELS_IN = 32
WINOGRAD_MIN_CHANNELS_OUT = 64
WINOGRAD_MIN_ROWS = 4  # output rows
WINOGRAD_MIN_POSITIONS = 32  # output rows × columns

# F(6, r) along the rows of a one-channel convolution with a maximum over the columns
# (``winograd_rows``), measured on musicnn's timbral layers: F(2, 7) did not pay on 7 × 38; F(6, 7)
# took about 1 ms less of musicnn's reused step than F(4, 7) (12.7-14.0 ms) in most repeats, its
# largest error 3.6 times F(4, 7)'s on the layer and about 1e-6 on the probabilities
# (docs/benchmarks/, "Winograd along the rows" and "musicnn's long kernels in parts").
WINOGRAD_ROWS_M = 6
WINOGRAD_ROWS_MAX_TAPS = 7  # rows of the kernel: F(6, 7) takes all of WINOGRAD_POINTS
WINOGRAD_ROWS_MIN_COLUMN_TAPS = 32  # the grouped convolution's GEMM sums over these
WINOGRAD_ROWS_MIN_FILTERS = 128
# A one-channel kernel longer than that along the rows (musicnn's temporal filters: 128, 64 and
# 32 frames × 1 band) in parts of 5 taps, F(5, 5) on each part and one transform of the input
# for them all; measured on musicnn's (51 filters over 96 bands; 16 and 32 filters too): 128
# taps 3.0 → 2.2 ms, 64 taps 1.16 → 0.99 ms, and 32 taps lost (0.55 → 0.64 ms).
WINOGRAD_PARTS_M = 5
WINOGRAD_PARTS_MIN_TAPS = 64


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


def _plain_conv(graph: Graph, conv: onnx.NodeProto
                ) -> tuple[np.ndarray, np.ndarray | None, list[int]] | None:
    """(weights, bias, pads) of a 2-D float32 Conv of stride 1, no dilation, one group and
    constant weights, else None."""
    if conv.op_type != "Conv" or len(conv.output) != 1:
        return None
    attributes = node_attributes(conv)
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


def _conv_input(graph: Graph, conv: onnx.NodeProto, weight: np.ndarray,
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

    def __init__(self, graph: Graph, conv: onnx.NodeProto, weight: np.ndarray,
                 bias: np.ndarray | None, shape: list[int], pads: list[int], m: int,
                 stem: str, in_parts: bool = False) -> None:
        channels, height, width = shape
        filters, _, taps, column_taps = weight.shape
        # in parts: the kernel's rows cut into parts of m taps (the last padded with zeros),
        # part a the correlation of the input tiles a further on (module docstring)
        r = m if in_parts else taps
        parts = -(-taps // r)
        n = m + r - 1
        a_t, g, b_t = winograd_matrices(m, r)
        self.m, self.filters, self.a_t = m, filters, a_t
        self.out_rows, self.out_columns = _conv_output(shape, pads, weight.shape[2:])
        self.tiles = tiles = -(-self.out_rows // m)
        padded_h, padded_w = tiles * m + parts * r - 1, width + pads[1] + pads[3]
        in_tiles = tiles + parts - 1  # the input's, transformed
        self._graph, self._stem = graph, stem
        # G g along each part of each kernel's rows, laid out (point, filter, channel, part,
        # columns)
        whole = np.zeros((filters, channels, parts * r, column_taps))
        whole[:, :, :taps] = weight
        u = np.einsum("pi,kcaiw->pkcaw", g, whole.reshape(filters, channels, parts, r,
                                                             column_taps))
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
                    [-1, channels, n, in_tiles, padded_w], np.int64))], [split]),
                helper.make_node("Transpose", [split], [swapped], perm=[0, 2, 1, 3, 4]),
                helper.make_node("Reshape", [swapped, self.const("shape_grouped", np.array(
                    [-1, n * channels, in_tiles, padded_w], np.int64))], [grouped]),
            ]
            by_point = grouped
        products_inputs = [by_point, self.const("u", u.reshape(
            n * filters, channels, parts, column_taps).astype(np.float32))]
        if bias is not None:  # β: the least-squares solution of Aᵀβ = 1, exact here
            beta = np.linalg.pinv(a_t) @ np.ones(m)
            products_inputs.append(self.const("bias", np.outer(
                beta, bias.astype(np.float64)).reshape(-1).astype(np.float32)))
        self.nodes += [
            # each point's products summed over the channels, the kernel's columns and its
            # parts: (batch, n · filters, tiles, output columns)
            helper.make_node("Conv", products_inputs, [products],
                             kernel_shape=[parts, column_taps], group=n),
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


_Nodes = tuple[list[onnx.NodeProto], onnx.NodeProto | None]


def _rewrite_convs(model: onnx.ModelProto,
                   rewrite: Callable[[Graph, onnx.NodeProto, _Shapes], _Nodes | None]) -> int:
    """Each node for which ``rewrite`` gives nodes replaced by them, in place, and the reader
    that they replace too (or None) dropped; returns how many were rewritten."""
    graph = Graph(model)
    shapes = _shapes_when_asked(model)
    order: list[onnx.NodeProto] = []
    replaced: set[int] = set()
    rewritten = 0
    for node in list(graph.graph.node):
        if id(node) in replaced:
            continue
        nodes = rewrite(graph, node, shapes)
        if nodes is None:
            order.append(node)
            continue
        order += nodes[0]
        if nodes[1] is not None:
            replaced.add(id(nodes[1]))
        rewritten += 1
    if rewritten:
        graph.replace_nodes(order)
    return rewritten


def winograd(model: onnx.ModelProto) -> int:
    """Each 3×3 stride-1 Conv that pays (module docstring) becomes F(m, 3) along its rows,
    in place, a 2×2 max pool that is its only reader taken inside it; returns how many."""
    return _rewrite_convs(model, _winograd_nodes)


def _winograd_nodes(graph: Graph, conv: onnx.NodeProto, shapes: _Shapes) -> _Nodes | None:
    plan = _winograd_plan(graph, conv, shapes)
    if plan is None:
        return None
    weight, bias, shape, pads = plan
    out = conv.output[0]
    rows = _RowsWinograd(graph, conv, weight, bias, shape, pads,
                         rows_tile(_conv_output(shape, pads, (3, 3))[0]), out + "_winograd")
    pool = graph.only_reader(out)
    pooled_columns = _pooled_columns(pool, rows.m)
    if pooled_columns is not None:
        return _pooled_in_tiles(rows, pool.output[0], pooled_columns), pool
    return _in_order(rows, out), None


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
    attributes = node_attributes(pool)
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


def _winograd_plan(graph: Graph, conv: onnx.NodeProto, shapes: _Shapes
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
    over the columns (module docstring) becomes F(6, r) along the rows with the maximum taken
    before the output is put in order, one with a long kernel F(5, 5) on its parts, in place;
    returns how many."""
    return _rewrite_convs(model, _winograd_rows_nodes)


def _winograd_rows_nodes(graph: Graph, conv: onnx.NodeProto, shapes: _Shapes
                         ) -> _Nodes | None:
    plan = _winograd_rows_plan(graph, conv, shapes)
    if plan is None:
        return None
    weight, bias, shape, pads, pool, keepdims, in_parts = plan
    out = pool.output[0]
    # the bias after the maximum, on 1/columns of the values: ONNX Runtime's grouped
    # convolution of one channel a group would add it in a pass of its own over them all
    rows = _RowsWinograd(graph, conv, weight, None, shape, pads,
                         WINOGRAD_PARTS_M if in_parts else WINOGRAD_ROWS_M,
                         out + "_winograd_rows", in_parts)
    blocks = rows.blocks()
    maxima, in_order, placed = (rows.value(s) for s in ("maxima", "in_order", "placed"))
    rows.nodes += [
        # the maximum over the columns first: the reordering then moves 1/columns of it
        helper.make_node("ReduceMax", [blocks], [maxima], axes=[4], keepdims=0),
        helper.make_node("Transpose", [maxima], [in_order], perm=[0, 2, 3, 1]),
        helper.make_node("Reshape", [in_order, rows.const("shape_placed", np.array(
            [0, rows.filters, rows.tiles * rows.m] + [1] * keepdims, np.int64))], [placed]),
    ]
    bias_shape = (rows.filters, 1, 1) if keepdims else (rows.filters, 1)
    return rows.finish(placed, out, rows.out_rows,
                       None if bias is None else bias.reshape(bias_shape)), pool


_RowsPlan = tuple[np.ndarray, np.ndarray | None, list[int], list[int], onnx.NodeProto, int,
                  bool]


def _winograd_rows_plan(graph: Graph, conv: onnx.NodeProto, shapes: _Shapes
                        ) -> _RowsPlan | None:
    """(weights, bias, input shape, pads, the maximum's node, its keepdims, whether in parts)
    of a Conv that F(6, r) along the rows, or F(5, 5) on its parts, serves with less work,
    else None."""
    # the reader first: only a Conv read by a maximum over the columns has its weights read
    pool = graph.only_reader(conv.output[0]) if conv.op_type == "Conv" else None
    if pool is None or pool.op_type != "ReduceMax" or len(pool.output) != 1:
        return None
    axes = reduced_axes(graph, pool)
    if not axes or {a % 4 for a in axes} != {3}:
        return None
    plain = _plain_conv(graph, conv)
    if plain is None:
        return None
    weight, bias, pads = plain
    filters, channels, taps, column_taps = weight.shape
    if channels != 1:
        return None
    if (2 <= taps <= WINOGRAD_ROWS_MAX_TAPS and column_taps >= WINOGRAD_ROWS_MIN_COLUMN_TAPS
            and filters >= WINOGRAD_ROWS_MIN_FILTERS):
        in_parts = False
    elif taps >= WINOGRAD_PARTS_MIN_TAPS:
        in_parts = True
    else:
        return None
    shape = _conv_input(graph, conv, weight, shapes)
    if shape is None:
        return None
    return weight, bias, shape, pads, pool, node_attributes(pool).get("keepdims", 1), in_parts


def _input_shape(graph: Graph, value: str, shapes: dict) -> list[int | None] | None:
    """A value's shape from shape inference, or that of a Pad whose pads are computed from
    constants only (the TorchScript exporter writes musicnn's padding so), which shape
    inference leaves unknown."""
    shape = shapes.get(value)
    if shape is not None and None not in shape[1:]:
        return shape
    pad = graph.made_by(value, "Pad")
    mode = None if pad is None else node_attributes(pad).get("mode", b"constant")
    if mode not in (b"constant", "constant") or len(pad.input) > 3 and pad.input[3]:
        return None
    before = shapes.get(pad.input[0])
    amounts = _constant_value(graph, pad.input[1], depth=16) if len(pad.input) > 1 else None
    if before is None or amounts is None or amounts.shape != (2 * len(before),):
        return None
    rank = len(before)
    return [None if size is None else size + int(amounts[i]) + int(amounts[i + rank])
            for i, size in enumerate(before)]


def _constant_value(graph: Graph, value: str, depth: int) -> np.ndarray | None:
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
