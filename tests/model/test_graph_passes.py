"""The rewrites of a model file's ONNX graph (streamtag.model.graph_passes and winograd): same
outputs, less work.

Small graphs built node by node with onnx.helper, run by a real ONNX Runtime; zoo networks
with trained-looking batch norms (negative factors included) through real model files.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from support.helpers import trained_looking

from streamtag import nets
from streamtag.frontend import LogMelOptions
from streamtag.model import graph_passes, modelfile, winograd
from streamtag.model.inference import InferenceModel
from streamtag.model.sessions import onnx_session

RNG = np.random.default_rng(7)


def opset_17(graph: onnx.GraphProto) -> onnx.ModelProto:
    """A model of ``graph`` at opset 17 and IR version 8, as torch.onnx.export writes them: the
    onnx package's own newest IR version can be newer than the installed ONNX Runtime reads
    (onnx 1.23 writes 14, ONNX Runtime 1.30 reads up to 13)."""
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def run(graph: bytes, x: np.ndarray) -> np.ndarray:
    return onnx_session(graph, threads=1).run(None, {"input": x})[0]


def conv_relu_bn_pool(pool: onnx.NodeProto, pooled_shape: list, *, extra_output: bool = False,
                      channels: int = 8) -> bytes:
    """input (N, 3, 12, 10) → Conv 3×3 → ReLU → BatchNormalization (half its factors negative)
    → ``pool`` (reading "bn", writing "output")."""
    weights = {
        "w": RNG.standard_normal((channels, 3, 3, 3)).astype(np.float32),
        "b": RNG.standard_normal(channels).astype(np.float32),
        "gamma": (RNG.standard_normal(channels) * np.resize([1, -1], channels)).astype(
            np.float32),
        "beta": RNG.standard_normal(channels).astype(np.float32),
        "mean": RNG.standard_normal(channels).astype(np.float32),
        "var": RNG.uniform(0.5, 2, channels).astype(np.float32),
    }
    nodes = [helper.make_node("Conv", ["input", "w", "b"], ["conv"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["conv"], ["relu"]),
             helper.make_node("BatchNormalization", ["relu", "gamma", "beta", "mean", "var"],
                              ["bn"]),
             pool]
    outputs = [helper.make_tensor_value_info("output", TensorProto.FLOAT, pooled_shape)]
    if extra_output:  # the ReLU's output is read twice: the pass must leave it
        nodes.append(helper.make_node("Identity", ["relu"], ["relu_copy"]))
        outputs.append(helper.make_tensor_value_info("relu_copy", TensorProto.FLOAT,
                                                     ["batch", channels, 12, 10]))
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                   ["batch", 3, 12, 10])],
        outputs, [numpy_helper.from_array(v, k) for k, v in weights.items()])
    model = opset_17(graph)
    onnx.checker.check_model(model)
    return model.SerializeToString()


MAX_POOL = helper.make_node("MaxPool", ["bn"], ["output"], kernel_shape=[2, 2], strides=[2, 2])
MEL_MAX = helper.make_node("ReduceMax", ["bn"], ["output"], axes=[3], keepdims=0)


@pytest.mark.parametrize(("pool", "shape"), [(MAX_POOL, ["batch", 8, 6, 5]),
                                             (MEL_MAX, ["batch", 8, 12])])
def test_a_pool_after_relu_and_batch_norm_is_taken_first_with_the_same_result(pool, shape):
    graph = conv_relu_bn_pool(pool, shape)
    rewritten, notes = graph_passes.optimize(graph)
    assert notes == ["max pools taken before their ReLU and batch norm: 1"]
    order = [n.op_type for n in onnx.load_from_string(rewritten).graph.node]
    assert order == ["Conv", pool.op_type, "Mul", "Relu", "BatchNormalization"]
    for batch in (1, 3):
        x = RNG.standard_normal((batch, 3, 12, 10)).astype(np.float32)
        expected = run(graph, x)
        got = run(rewritten, x)
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)  # BN kernels round apart
    # the negative factors mattered: without the sign the maxima would differ
    unsigned = onnx.load_from_string(rewritten)
    for node in unsigned.graph.node:
        if node.op_type == "Mul":
            node.op_type, node.input[1:] = "Identity", []
    x = RNG.standard_normal((2, 3, 12, 10)).astype(np.float32)
    assert np.abs(run(unsigned.SerializeToString(), x) - run(graph, x)).max() > 1e-3


def test_without_negative_factors_no_sign_is_needed():
    model = onnx.load_from_string(conv_relu_bn_pool(MAX_POOL, ["batch", 8, 6, 5]))
    gamma = next(t for t in model.graph.initializer if t.name == "gamma")
    gamma.CopyFrom(numpy_helper.from_array(np.abs(numpy_helper.to_array(gamma)), "gamma"))
    graph = model.SerializeToString()
    rewritten, notes = graph_passes.optimize(graph)
    # and the ReLU, next to the convolution, is computed in it (relu_in_conv)
    assert notes == ["max pools taken before their ReLU and batch norm: 1",
                     "ReLUs before a max pool computed in the convolution: 1"]
    assert [n.op_type for n in onnx.load_from_string(rewritten).graph.node] == [
        "Conv", "Relu", "MaxPool", "BatchNormalization"]
    x = RNG.standard_normal((2, 3, 12, 10)).astype(np.float32)
    np.testing.assert_allclose(run(rewritten, x), run(graph, x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("graph", [
    conv_relu_bn_pool(MAX_POOL, ["batch", 8, 6, 5], extra_output=True),
    # a maximum over the channels is not a per-channel maximum
    conv_relu_bn_pool(helper.make_node("ReduceMax", ["bn"], ["output"], axes=[1], keepdims=0),
                      ["batch", 12, 10]),
    conv_relu_bn_pool(helper.make_node("ReduceMax", ["bn"], ["output"], keepdims=0), []),
], ids=["relu read twice", "max over channels", "max over all"])
def test_graphs_the_pass_does_not_fit_are_left_as_they_are(graph):
    assert graph_passes.optimize(graph) == (graph, [])


# ------------------------------------------------- batch norms folded forward, ReLUs in convs

def batch_norm_then(reader: str, *, height: int = 7, width: int = 6, channels: int = 6,
                    conv: dict | None = None, conv_bias: bool = True, trans_b: int = 0,
                    alpha: float = 1.0, beta: float = 1.0, bn_read_twice: bool = False) -> bytes:
    """input (N, channels, height, width), or (N, channels) for "gemm", → BatchNormalization
    (some factors negative) → ``reader``: "conv" (3×3 to 5 channels, ``conv`` its
    attributes), "flatten gemm" (Flatten, then Gemm to 4) or "gemm"."""
    rng = np.random.default_rng(channels * height + width)
    weights = {
        "gamma": (rng.standard_normal(channels) * np.resize([1, -1], channels)).astype(
            np.float32),
        "beta": rng.standard_normal(channels).astype(np.float32),
        "mean": rng.standard_normal(channels).astype(np.float32),
        "var": rng.uniform(0.5, 2, channels).astype(np.float32),
    }
    shape = ["batch", channels] if reader == "gemm" else ["batch", channels, height, width]
    nodes = [helper.make_node("BatchNormalization", ["input", "gamma", "beta", "mean", "var"],
                              ["bn"])]
    outputs = []
    if reader == "conv":
        attributes = conv or {}
        weights["w"] = rng.standard_normal((5, channels // attributes.get("group", 1), 3, 3)
                                           ).astype(np.float32)
        inputs = ["bn", "w"]
        if conv_bias:
            weights["b"] = rng.standard_normal(5).astype(np.float32)
            inputs.append("b")
        nodes.append(helper.make_node("Conv", inputs, ["output"], **attributes))
        outputs.append(helper.make_tensor_value_info("output", TensorProto.FLOAT,
                                                     ["batch", 5, "rows", "columns"]))
    else:
        features = channels * (1 if reader == "gemm" else height * width)
        b = rng.standard_normal((features, 4)).astype(np.float32)
        weights["b"] = b.T.copy() if trans_b else b
        weights["c"] = rng.standard_normal(4).astype(np.float32)
        flat = "bn"
        if reader == "flatten gemm":
            nodes.append(helper.make_node("Flatten", ["bn"], ["flat"], axis=1))
            flat = "flat"
        nodes.append(helper.make_node("Gemm", [flat, "b", "c"], ["output"], transB=trans_b,
                                      alpha=alpha, beta=beta))
        outputs.append(helper.make_tensor_value_info("output", TensorProto.FLOAT,
                                                     ["batch", 4]))
    if bn_read_twice:
        nodes.append(helper.make_node("Identity", ["bn"], ["bn_copy"]))
        outputs.append(helper.make_tensor_value_info("bn_copy", TensorProto.FLOAT, shape))
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, shape)],
        outputs, [numpy_helper.from_array(v, k) for k, v in weights.items()])
    model = opset_17(graph)
    onnx.checker.check_model(model)
    return model.SerializeToString()


@pytest.mark.parametrize("graph", [
    batch_norm_then("conv"),
    batch_norm_then("conv", conv_bias=False),
    batch_norm_then("conv", conv={"strides": [2, 1], "pads": [0, 0, 0, 0]}),
    batch_norm_then("flatten gemm"),
    batch_norm_then("flatten gemm", trans_b=1, alpha=0.5, beta=2.0),
    batch_norm_then("gemm", trans_b=1),
], ids=["conv", "conv without bias", "conv stride 2", "flatten gemm", "gemm transB alpha beta",
        "gemm of 2-D"])
def test_a_batch_norm_is_folded_into_the_layer_after_it(graph):
    rewritten, notes = graph_passes.optimize(graph)
    assert notes == [f"{FOLD_NOTE}: 1"]
    assert "BatchNormalization" not in [n.op_type for n in
                                        onnx.load_from_string(rewritten).graph.node]
    shape = [d.dim_value for d in onnx.load_from_string(graph).graph.input[0].type
             .tensor_type.shape.dim[1:]]
    for batch in (1, 3):
        x = RNG.standard_normal([batch, *shape]).astype(np.float32)
        expected = run(graph, x)
        assert np.abs(expected).max() > 1  # outputs of a few units: atol is relative to them
        np.testing.assert_allclose(run(rewritten, x), expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("graph", [
    # zero padding would meet the input where the batch norm would have put its shift
    batch_norm_then("conv", conv={"pads": [1, 1, 1, 1]}),
    batch_norm_then("conv", conv={"auto_pad": "SAME_UPPER"}),
    batch_norm_then("conv", conv={"group": 2}),
    batch_norm_then("conv", bn_read_twice=True),
    batch_norm_then("flatten gemm", beta=0.0),
], ids=["padded", "same padding", "grouped", "read twice", "gemm beta 0"])
def test_a_batch_norm_the_fold_does_not_fit_is_left(graph):
    assert graph_passes.optimize(graph) == (graph, [])


def conv_pool_relu(*, pool_read_twice: bool = False) -> bytes:
    """input (N, 3, 12, 10) → Conv 3×3 to 8 channels → MaxPool 2×2 → Relu."""
    rng = np.random.default_rng(11)
    weights = {"w": rng.standard_normal((8, 3, 3, 3)).astype(np.float32),
               "b": rng.standard_normal(8).astype(np.float32)}
    nodes = [helper.make_node("Conv", ["input", "w", "b"], ["conv"]),
             helper.make_node("MaxPool", ["conv"], ["pooled"], kernel_shape=[2, 2],
                              strides=[2, 2]),
             helper.make_node("Relu", ["pooled"], ["output"])]
    outputs = [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 8, 5, 4])]
    if pool_read_twice:
        nodes.append(helper.make_node("Identity", ["pooled"], ["pooled_copy"]))
        outputs.append(helper.make_tensor_value_info("pooled_copy", TensorProto.FLOAT,
                                                     ["batch", 8, 5, 4]))
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                   ["batch", 3, 12, 10])],
        outputs, [numpy_helper.from_array(v, k) for k, v in weights.items()])
    return opset_17(graph).SerializeToString()


def test_a_relu_after_a_pool_of_a_convolution_is_computed_in_the_convolution():
    graph = conv_pool_relu()
    rewritten, notes = graph_passes.optimize(graph)
    assert notes == [f"{RELU_NOTE}: 1"]
    assert [n.op_type for n in onnx.load_from_string(rewritten).graph.node] == [
        "Conv", "Relu", "MaxPool"]
    for batch in (1, 3):
        x = RNG.standard_normal((batch, 3, 12, 10)).astype(np.float32)
        expected = run(graph, x)
        assert (expected == 0).any() and (expected > 0).any()
        np.testing.assert_array_equal(run(rewritten, x), expected)
    # the pooled values without the ReLU are still the graph's where something else reads them
    assert graph_passes.optimize(conv_pool_relu(pool_read_twice=True))[1] == []


POOLS_NOTE = "max pools taken before their ReLU and batch norm"
FOLD_NOTE = "batch norms folded into the layer after them"
RELU_NOTE = "ReLUs before a max pool computed in the convolution"
WINOGRAD_NOTE = "3x3 convolutions computed as Winograd F(m, 3) along the rows: 1"
ROWS_NOTE = ("one-channel convolutions with a maximum over the columns computed as Winograd "
             "F(6, r) along the rows (F(5, 5) on parts of a long kernel): 1")


@pytest.mark.parametrize(("name", "options", "n_mels", "frames", "rewrites"), [
    # the shipped default model's network: 4 pools; each batch norm before the next unpadded
    # convolution or the dense layer; its 32 -> 64 and 64 -> 64 convolutions (the first
    # convolution's ReLU stays after the pool: negative factors put a sign between them)
    ("mel_cnn", {}, 128, 261, [(POOLS_NOTE, 4), (FOLD_NOTE, 4),
                               (WINOGRAD_NOTE.split(":")[0], 3)]),
    # narrow timbral filters (32): too few for F(6, 7); no 3x3 convolutions; the batch
    # norms before its dense layers; its 128- and 64-frame temporal filters in parts
    ("musicnn", {"frontend_width": 0.25, "midend_filters": 16}, 96, 64,
     [(POOLS_NOTE, 5), (FOLD_NOTE, 2), (ROWS_NOTE.split(":")[0], 2)]),
])
def test_zoo_networks_serve_rewritten_with_the_scores_of_torchscript(name, options, n_mels,
                                                                     frames, rewrites,
                                                                     tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    torch.manual_seed(0)
    path = tmp_path / f"{name}.pt"
    modelfile.save(trained_looking(nets.build(name, 4, **options)), path, {
        "name": name, "tags": ["a", "b", "c", "d"], "input_kind": "logmel",
        "frontend": LogMelOptions.preset("musicnn").replace(n_mels=n_mels), "window": frames,
        "hop": frames // 2})
    loaded = modelfile.load(path, device="cpu")
    model = InferenceModel(loaded, backend="onnxruntime", threads=1)
    assert model.graph_passes == [f"{note}: {count}" for note, count in rewrites]
    x = np.random.default_rng(1).standard_normal(model.input_shape(3), dtype=np.float32)
    np.testing.assert_allclose(model.forward(x), loaded(x).numpy(), atol=1e-4, rtol=0)
    np.testing.assert_allclose(model.forward(x), run(modelfile.onnx_graph(loaded), x),
                               atol=1e-5, rtol=0)


def test_a_rewrite_that_changes_the_scores_is_not_served(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    path = tmp_path / "mel_cnn.pt"
    torch.manual_seed(0)
    modelfile.save(nets.build("mel_cnn", 4), path, {
        "name": "m", "tags": ["a", "b", "c", "d"], "input_kind": "logmel",
        "frontend": LogMelOptions.preset("musicnn").replace(n_mels=128), "window": 261,
        "hop": 100})

    def scale_the_first_weights(model: onnx.ModelProto) -> int:
        first = model.graph.initializer[0]
        first.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(first) * 3, first.name))
        return 1

    monkeypatch.setitem(graph_passes.PASSES, "broken", (scale_the_first_weights, "broken"))
    loaded = modelfile.load(path, device="cpu")
    with caplog.at_level(logging.WARNING, logger="streamtag.model.inference"):
        model = InferenceModel(loaded, backend="onnxruntime", threads=1)
    assert model.backend == "onnxruntime" and model.graph_passes == []
    assert any("served as exported" in r.getMessage() and "broken: 1" in r.getMessage()
               for r in caplog.records)
    x = np.random.default_rng(1).standard_normal(model.input_shape(2), dtype=np.float32)
    np.testing.assert_allclose(model.forward(x), loaded(x).numpy(), atol=1e-4, rtol=0)


# ---------------------------------------------------------------- Winograd along the rows


@pytest.mark.parametrize(("m", "taps"), [(2, 3), (4, 3), (6, 3), (8, 3), (4, 5), (5, 5), (4, 7),
                                         (6, 7)])
def test_winograd_matrices_compute_a_correlation(m, taps):
    a_t, g, b_t = winograd.winograd_matrices(m, taps)
    rng = np.random.default_rng(m + taps)
    for _ in range(20):
        d, kernel = rng.standard_normal(m + taps - 1), rng.standard_normal(taps)
        expected = [float(np.dot(kernel, d[i:i + taps])) for i in range(m)]
        np.testing.assert_allclose(a_t @ ((g @ kernel) * (b_t @ d)), expected, atol=1e-10)


@pytest.mark.parametrize(("out_rows", "m"), [
    (4, 4), (6, 6), (8, 8), (12, 6), (16, 8), (20, 4), (30, 6), (44, 8), (64, 8), (93, 8)])
def test_the_tile_transforms_the_fewest_rows(out_rows, m):
    assert winograd.rows_tile(out_rows) == m


def conv_graph(channels: int, out_channels: int, height: int, width: int, *, pads: list,
               strides: tuple = (1, 1), bias: bool = True, kernel: int = 3) -> bytes:
    rng = np.random.default_rng(channels + height)
    weights = [numpy_helper.from_array((rng.standard_normal(
        (out_channels, channels, kernel, kernel)) / np.sqrt(kernel * kernel * channels)).astype(
        np.float32), "w")]
    inputs = ["input", "w"]
    if bias:
        weights.append(numpy_helper.from_array(rng.standard_normal(out_channels).astype(
            np.float32), "b"))
        inputs.append("b")
    graph = helper.make_graph(
        [helper.make_node("Conv", inputs, ["output"], pads=pads, strides=list(strides))], "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                       ["batch", channels, height, width])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [
            "batch", out_channels,
            (height + pads[0] + pads[2] - kernel) // strides[0] + 1,
            (width + pads[1] + pads[3] - kernel) // strides[1] + 1])], weights)
    return opset_17(graph).SerializeToString()


@pytest.mark.parametrize(("channels", "height", "width", "pads", "bias"), [
    (128, 64, 116, [1, 1, 1, 1], True),  # short_chunk_resnet's first block: F(8, 3), 64 rows
    (32, 95, 45, [0, 0, 0, 0], True),  # the default model's 32 -> 64: F(8, 3), 93 rows, cut
    (64, 10, 30, [1, 1, 1, 1], True),  # 10 rows: F(6, 3), 12 rows cut to 10
    (256, 4, 8, [1, 1, 1, 1], False),  # F(4, 3), no bias
    (64, 26, 26, [2, 0, 1, 1], True),  # uneven pads
])
def test_winograd_gives_the_convolution(channels, height, width, pads, bias):
    graph = conv_graph(channels, max(channels, 64), height, width, pads=pads, bias=bias)
    rewritten, notes = graph_passes.optimize(graph)
    assert notes == [WINOGRAD_NOTE]
    assert "MatMul" in [n.op_type for n in onnx.load_from_string(rewritten).graph.node]
    for batch in (1, 3):
        x = RNG.standard_normal((batch, channels, height, width)).astype(np.float32)
        expected = run(graph, x)
        got = run(rewritten, x)
        assert got.shape == expected.shape
        # outputs of up to ~7; float32 F(6, 3) differs from the direct sum by ~7e-6 at most,
        # F(8, 3) by ~2.5e-5
        np.testing.assert_allclose(got, expected, atol=5e-5, rtol=0)


@pytest.mark.parametrize("graph", [
    conv_graph(16, 64, 64, 64, pads=[1, 1, 1, 1]),  # too few channels in
    conv_graph(64, 32, 64, 64, pads=[1, 1, 1, 1]),  # too few out
    conv_graph(256, 256, 2, 16, pads=[1, 1, 1, 1]),  # 2 output rows
    conv_graph(64, 64, 6, 8, pads=[0, 0, 0, 0]),  # 4 x 6 outputs
    conv_graph(128, 128, 64, 64, pads=[1, 1, 1, 1], strides=(2, 2)),
    conv_graph(64, 64, 32, 32, pads=[2, 2, 2, 2], kernel=5),
], ids=["16 in", "32 out", "2 rows", "24 positions", "stride 2", "5x5"])
def test_winograd_leaves_convolutions_where_it_costs_more(graph):
    assert graph_passes.optimize(graph) == (graph, [])


def conv_pool_graph(height: int, width: int, *, pads: list, pool: dict,
                    second_reader: bool = False) -> bytes:
    """input (N, 32, height, width) → Conv 3×3 to 64 channels, with a bias → MaxPool(**pool)
    (the default model's second layer, pooled first)."""
    rng = np.random.default_rng(height * width)
    weights = {"w": (rng.standard_normal((64, 32, 3, 3)) / np.sqrt(9 * 32)).astype(np.float32),
               "b": rng.standard_normal(64).astype(np.float32)}
    nodes = [helper.make_node("Conv", ["input", "w", "b"], ["conv"], pads=pads),
             helper.make_node("MaxPool", ["conv"], ["output"], **pool)]
    outputs = [helper.make_tensor_value_info("output", TensorProto.FLOAT, [None] * 4)]
    if second_reader:
        nodes.append(helper.make_node("Identity", ["conv"], ["conv_copy"]))
        outputs.append(helper.make_tensor_value_info("conv_copy", TensorProto.FLOAT,
                                                     [None] * 4))
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                   ["batch", 32, height, width])],
        outputs, [numpy_helper.from_array(v, k) for k, v in weights.items()])
    model = opset_17(graph)
    onnx.checker.check_model(model)
    return model.SerializeToString()


POOL_2X2 = {"kernel_shape": [2, 2], "strides": [2, 2]}


def _check_rewritten(graph: bytes, rewritten: bytes, height: int, width: int) -> None:
    for batch in (1, 3):
        x = RNG.standard_normal((batch, 32, height, width)).astype(np.float32)
        expected = run(graph, x)
        got = run(rewritten, x)
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, atol=5e-5, rtol=0)


@pytest.mark.parametrize(("height", "width", "pads"), [
    (95, 45, [0, 0, 0, 0]),  # the default model's: 93 x 43 out, F(8, 3), the last tile cut
    (26, 20, [1, 1, 1, 1]),  # 26 x 20 out: 5 tiles of F(6, 3), 30 rows cut to 26
    (14, 14, [0, 0, 0, 0]),  # 12 x 12 out: two whole tiles of F(6, 3), nothing cut
    (10, 9, [1, 1, 1, 1]),  # 10 x 9 out: 12 rows cut to 10, an odd column left out
    (32, 16, [1, 1, 1, 1]),  # 32 x 16 out: four whole tiles of F(8, 3)
])
def test_winograd_takes_a_2x2_max_pool_inside_its_tiles(height, width, pads):
    graph = conv_pool_graph(height, width, pads=pads, pool=POOL_2X2)
    rewritten, notes = graph_passes.optimize(graph)
    assert notes == [WINOGRAD_NOTE]
    nodes = onnx.load_from_string(rewritten).graph.node
    pools = [_attributes(n) for n in nodes if n.op_type == "MaxPool"]
    # the 2x2 pool became the maximum of the tiles' row pairs and a pool of column pairs
    assert [p["kernel_shape"] for p in pools] == [[1, 2]]
    assert [n.op_type for n in nodes].count("MatMul") == 2 and "Max" in [n.op_type for n in nodes]
    # and the bias is in the products: no pass over the output adds it
    assert "Add" not in [n.op_type for n in nodes]
    _check_rewritten(graph, rewritten, height, width)


@pytest.mark.parametrize(("pool", "second_reader"), [
    ({"kernel_shape": [3, 3], "strides": [2, 2]}, False),
    ({"kernel_shape": [2, 2], "strides": [1, 1]}, False),
    ({**POOL_2X2, "ceil_mode": 1}, False),
    ({**POOL_2X2, "pads": [1, 1, 0, 0]}, False),
    (POOL_2X2, True),
], ids=["3x3", "stride 1", "ceil", "padded", "second reader"])
def test_winograd_leaves_other_pools_after_the_output(pool, second_reader):
    graph = conv_pool_graph(30, 20, pads=[1, 1, 1, 1], pool=pool, second_reader=second_reader)
    rewritten, notes = graph_passes.optimize(graph)
    assert notes == [WINOGRAD_NOTE]
    nodes = onnx.load_from_string(rewritten).graph.node
    assert [_attributes(n)["kernel_shape"] for n in nodes if n.op_type == "MaxPool"] == [
        pool["kernel_shape"]]
    session = onnx_session(graph, threads=1)
    for batch in (1, 3):
        x = RNG.standard_normal((batch, 32, 30, 20)).astype(np.float32)
        expected = session.run(None, {"input": x})
        got = onnx_session(rewritten, threads=1).run(None, {"input": x})
        for want, have in zip(expected, got, strict=True):
            np.testing.assert_allclose(have, want, atol=5e-5, rtol=0)


def _attributes(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def test_short_chunk_resnet_serves_through_winograd_with_the_scores_of_torchscript(
        tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    torch.manual_seed(0)
    path = tmp_path / "scr.pt"
    modelfile.save(trained_looking(nets.build("short_chunk_resnet", 4)), path, {
        "name": "scr", "tags": ["a", "b", "c", "d"], "input_kind": "logmel",
        "frontend": LogMelOptions.preset("musicnn").replace(n_mels=128), "window": 100,
        "hop": 50})
    loaded = modelfile.load(path, device="cpu")
    model = InferenceModel(loaded, backend="onnxruntime", threads=1)
    # the first four blocks' second convolutions (on 64 x 50, 32 x 25, 16 x 13, 8 x 7); the
    # later ones have fewer than 32 outputs, the stride-2 ones stay direct
    assert model.graph_passes == [WINOGRAD_NOTE.replace(": 1", ": 4")]
    x = np.random.default_rng(1).standard_normal(model.input_shape(3), dtype=np.float32)
    np.testing.assert_allclose(model.forward(x), loaded(x).numpy(), atol=1e-4, rtol=0)
    np.testing.assert_allclose(model.forward(x), run(modelfile.onnx_graph(loaded), x),
                               atol=1e-5, rtol=0)


# ---------------------------------------------------------------- F(6, r) along the rows

def timbral_graph(height: int, width: int, kernel: tuple[int, int], *, filters: int = 128,
                  pads: tuple = (0, 0, 0, 0), bias: bool = True, axes: tuple = (3,),
                  keepdims: int = 0, channels: int = 1, computed_pad: bool = False,
                  extra_reader: bool = False) -> bytes:
    """input (N, channels, height, width) → [Pad by a computed amount] → Conv → ReduceMax:
    musicnn's timbral filters as its TorchScript export writes them."""
    rng = np.random.default_rng(height + width + kernel[1])
    weights = {"w": (rng.standard_normal((filters, channels, *kernel))
                     / np.sqrt(kernel[0] * kernel[1])).astype(np.float32)}
    conv_inputs = ["conv_input", "w"]
    if bias:
        weights["b"] = rng.standard_normal(filters).astype(np.float32)
        conv_inputs.append("b")
    nodes = []
    if computed_pad:  # pads computed by nodes from constants, as the exporter writes them
        weights["half"] = np.array([0, 0, 3, 0], np.int64)
        nodes += [helper.make_node("Concat", ["half", "half"], ["pads"], axis=0),
                  helper.make_node("Pad", ["input", "pads"], ["conv_input"])]
        height += 6
    else:
        nodes.append(helper.make_node("Identity", ["input"], ["conv_input"]))
    nodes += [helper.make_node("Conv", conv_inputs, ["conv"], pads=list(pads)),
              helper.make_node("ReduceMax", ["conv"], ["output"], axes=list(axes),
                               keepdims=keepdims)]
    rank = 4 if keepdims else 4 - len(axes)
    outputs = [helper.make_tensor_value_info("output", TensorProto.FLOAT, [None] * rank)]
    if extra_reader:
        nodes.append(helper.make_node("Identity", ["conv"], ["conv_copy"]))
        outputs.append(helper.make_tensor_value_info("conv_copy", TensorProto.FLOAT,
                                                     [None] * 4))
    given_height = height - 6 if computed_pad else height
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                   ["batch", channels, given_height, width])],
        outputs, [numpy_helper.from_array(v, k) for k, v in weights.items()])
    model = opset_17(graph)
    onnx.checker.check_model(model)
    return model.SerializeToString()


@pytest.mark.parametrize("graph", [
    timbral_graph(187, 96, (7, 38), computed_pad=True),  # musicnn's, padded as exported
    timbral_graph(187, 96, (7, 67), bias=False, keepdims=1),
    timbral_graph(50, 40, (5, 32), pads=(2, 1, 1, 3)),  # 46 rows out: the last tile is cut
    timbral_graph(30, 33, (3, 32), filters=130, axes=(-1,)),
    # long kernels in parts: musicnn's temporal filters (128 and 64 frames × 1 band), and 66
    # taps (13 parts of 5 and one of 1) over 3 columns
    timbral_graph(187, 96, (128, 1), filters=51, pads=(63, 0, 64, 0)),
    timbral_graph(150, 96, (64, 1), filters=51, bias=False, keepdims=1),
    timbral_graph(100, 20, (66, 3), filters=8, pads=(10, 1, 20, 1)),
], ids=["musicnn 7x38", "7x67 keepdims", "5x32 pads", "3x32 axis -1", "musicnn 128x1",
        "64x1 keepdims", "66x3 pads"])
def test_winograd_rows_gives_the_convolution_and_its_maximum(graph):
    rewritten, notes = graph_passes.optimize(graph)
    assert notes == [ROWS_NOTE]
    ops = [n.op_type for n in onnx.load_from_string(rewritten).graph.node]
    assert ops.count("ReduceMax") == 1 and "MatMul" in ops  # the maximum moved, not added
    shape = onnx.load_from_string(graph).graph.input[0].type.tensor_type.shape.dim
    for batch in (1, 3):
        x = RNG.standard_normal((batch, 1, shape[2].dim_value, shape[3].dim_value)).astype(
            np.float32)
        expected = run(graph, x)
        got = run(rewritten, x)
        assert got.shape == expected.shape
        # outputs of a few units; F(6, 7) differs from the direct sum by 4-5e-5 at most here,
        # F(5, 5) in parts and F(6, 5) by 1-2e-5 (a wrong tile or part is off by units)
        np.testing.assert_allclose(got, expected, atol=2e-4, rtol=0)


@pytest.mark.parametrize("graph", [
    timbral_graph(187, 96, (7, 38), filters=64),  # too few filters
    timbral_graph(187, 96, (7, 24)),  # too few column taps
    timbral_graph(187, 96, (9, 38)),  # too many row taps for the points, too few for parts
    timbral_graph(187, 96, (32, 1), filters=51),  # musicnn's 32-frame filters: parts lost
    timbral_graph(187, 96, (7, 38), channels=2),
    timbral_graph(187, 96, (7, 38), axes=(2,)),  # the maximum over the rows
    timbral_graph(187, 96, (7, 38), axes=(2, 3)),
    timbral_graph(187, 96, (7, 38), extra_reader=True),  # the convolution is read twice
], ids=["64 filters", "24 column taps", "9 row taps", "32 row taps", "2 channels",
         "max over rows",
        "max over both", "read twice"])
def test_winograd_rows_leaves_what_it_does_not_fit(graph):
    assert graph_passes.optimize(graph) == (graph, [])


def test_musicnn_serves_through_winograd_rows_with_the_scores_of_torchscript(tmp_path,
                                                                             monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    torch.manual_seed(0)
    path = tmp_path / "musicnn.pt"
    modelfile.save(trained_looking(nets.build("musicnn", 4, midend_filters=16)), path, {
        "name": "musicnn", "tags": ["a", "b", "c", "d"], "input_kind": "logmel",
        "frontend": LogMelOptions.preset("musicnn"), "window": 187, "hop": 62})
    loaded = modelfile.load(path, device="cpu")
    model = InferenceModel(loaded, backend="onnxruntime", threads=1)
    # its two timbral layers (7 × 38 and 7 × 67 mel bands) and two of its temporal ones (128
    # and 64 frames; 32 frames are left) in parts (and the batch norms before its dense layers
    # are folded into them)
    assert model.graph_passes == ["max pools taken before their ReLU and batch norm: 5",
                                  f"{FOLD_NOTE}: 2", ROWS_NOTE.replace(": 1", ": 4")]
    x = np.random.default_rng(1).standard_normal(model.input_shape(3), dtype=np.float32)
    np.testing.assert_allclose(model.forward(x), loaded(x).numpy(), atol=1e-4, rtol=0)
    np.testing.assert_allclose(model.forward(x), run(modelfile.onnx_graph(loaded), x),
                               atol=1e-5, rtol=0)


@pytest.mark.parametrize(("height", "width"), [(95, 33), (95, 45), (26, 20)])
def test_winograd_takes_a_pool_of_row_pairs_inside_its_tiles(height, width):
    # window reuse pools the second layer's row pairs alone, then its columns in two phases
    graph = conv_pool_graph(height, width, pads=[0, 0, 0, 0],
                            pool={"kernel_shape": [2, 1], "strides": [2, 1]})
    rewritten, notes = graph_passes.optimize(graph)
    assert notes == [WINOGRAD_NOTE]
    nodes = onnx.load_from_string(rewritten).graph.node
    # the pool is the maximum of the tiles' row pairs: no MaxPool is left
    assert "MaxPool" not in [n.op_type for n in nodes] and "Max" in [n.op_type for n in nodes]
    _check_rewritten(graph, rewritten, height, width)
