"""Overlapping windows share work: what a window's forward can take from the window before.

The nets registry declares which architectures share work, and by which of the two schemes
below (``nets.spec(name)["window_reuse"]``); a model file names its architecture in its
manifest.

"pooled_columns". The default model (``mel_cnn``) sees windows of 93 frames every 31, and its
convolutions are unpadded, so much of a window's first layers was already computed for an
earlier window. Its second layer is the costly one (a 3×3 convolution of 32 → 64 channels,
about half the forward) and its 2×2 max pools pair the frames, so the reuse goes by the pools'
parity: with an odd hop the window two before pairs the frames as this one does, with an even
hop the window before.

Window k's second convolution at column n is window k - d's at column n + s, where d is 1 for
an even hop and 2 for an odd one and s = d · hop / 2 (pooled frames). A window computes that
convolution's first 2Q columns' pool from nothing; it takes them from what window k - d left:
the same convolution's columns s ... s + 2Q - 1 of window k - d, pooled in the pairs window k
uses (the "carry"). So a served window computes the first two layers only on the columns its
pools need past the carry: with the default model's 93 and 31, the second convolution on 31
of its 43 columns and the first on 66 of 91 (what that saves: docs/engine-benchmark.md,
"Overlapping windows share work").

Two ONNX graphs serve it, both exported from the network and rewritten by ``graph_passes``:
``first`` (a whole window → probabilities and its carry) and ``next`` (a window and the carry
of window k - d → probabilities and this window's carry). The max pool is taken before the
second layer's ReLU and batch norm (the same numbers while the batch norm's scales are
positive, which ``graph_passes.pool_first`` also relies on), so a carry holds pooled values
and the Winograd rewrite takes the row pairs' pool inside its tiles. Both are checked against
the file's TorchScript module on a run of overlapping windows at load (≤ 1e-4); a model where
anything here does not hold serves as before, with the reason.

"first_block". ``short_chunk_resnet`` (stride-2 residual blocks of padded 3×3 convolutions)
reuses its first block, the costliest (a 128 → 128 convolution on 64 × 116 for its 231-frame
windows): with an even hop the first block's output at column n is the window before's at
column n + hop / 2 (an odd hop: the window two before), except where the zeros of either
window's padding reach it: two columns at the left edge, three at the right. A window takes
the columns between from the carry and computes its first block on the rest only
(``ResNetGeometry``: 35 of 116 at a hop of 62 frames); the blocks after it run whole, since
their strides misalign with the hop and their receptive fields reach the padding. Its carry is
larger (the first block's output on 81 columns: 2.7 MB against the default model's 70 KB).
"""

from __future__ import annotations

import dataclasses
import functools
import io
import logging
import warnings
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

from streamtag import nets
from streamtag.errors import first_lines
from streamtag.model import graph_passes, modelfile
from streamtag.model.onnx_export import ONNX_OPSET, ONNX_TOLERANCE
from streamtag.model.sessions import onnx_session

log = logging.getLogger(__name__)

__all__ = ["Geometry", "ResNetGeometry", "WindowReuse", "geometry", "resnet_geometry",
           "window_reuse"]


@dataclasses.dataclass(frozen=True)
class Geometry:
    """Where a ``mel_cnn`` window of ``window`` frames every ``hop`` finds its carry.

    ``lag``: windows back to the one whose carry it takes (1 or 2); ``shift``: the second
    convolution's columns between the two; ``carried``: pooled columns the carry holds;
    ``lo`` ... ``hi``: the second convolution's columns a window with a carry computes;
    ``frames``: the frames of the window those need (start, stop)."""

    window: int
    hop: int
    lag: int
    shift: int
    carried: int
    lo: int
    hi: int
    frames: tuple[int, int]
    pooled_columns: int

    @property
    def lag_frames(self) -> int:
        """Frames between the end of a window and the end of the one whose carry it takes."""
        return self.lag * self.hop


def geometry(window: int, hop: int) -> Geometry | None:
    """The reuse of ``mel_cnn`` windows of ``window`` frames every ``hop``; None where the
    windows overlap too little for one pooled column of the second layer."""
    if hop < 1 or hop >= window:
        return None
    conv2 = (window - 2) // 2 - 2
    pooled = conv2 // 2
    lag = 1 if hop % 2 == 0 else 2
    shift = lag * hop // 2
    # at least one pooled column computed anew (its pool is what the Winograd rewrite takes
    # inside its tiles)
    carried = min((conv2 - shift) // 2, pooled - 1)
    if carried < 1:
        return None
    lo = min(2 * carried, shift)
    hi = max(2 * pooled - 1, shift + 2 * carried - 1)
    return Geometry(window, hop, lag, shift, carried, lo, hi, (2 * lo, 2 * hi + 8), pooled)


def _columns(x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """``x``'s columns start ... stop - 1 (an even count) paired by a 1×2 max pool; no
    slice where the pool's own rounding down leaves the same columns."""
    width = x.shape[-1]
    if not (start == 0 and stop in (width, width - 1)):
        x = x[..., start:stop]
    return F.max_pool2d(x, (1, 2), (1, 2))


class _Steps(nn.Module):
    """``mel_cnn``'s forward in the two steps of a window with and without a carry."""

    def __init__(self, net: nn.Module, g: Geometry, with_carry: bool) -> None:
        super().__init__()
        self.net, self.g, self.with_carry = net, g, with_carry
        # in eval mode before the exporter sees it: the exporter puts a module back in the mode
        # it found it in, and a module in training mode takes its submodules (the batch norms)
        # with it
        self.eval()

    def forward(self, x: torch.Tensor, carry: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        f, g = self.net.features, self.g
        if self.with_carry:
            x = x[..., g.frames[0]:g.frames[1]]
            origin = g.lo  # the second convolution's first column computed here
        else:
            origin = 0
        h = f[3](f[2](f[1](f[0](x.unsqueeze(1)))))
        rows = F.max_pool2d(f[5](h), (2, 1), (2, 1))  # the row pairs, before ReLU, batch norm
        own = _columns(rows, g.shift - origin, g.shift - origin + 2 * g.carried)
        if self.with_carry:
            pooled = torch.cat([carry, _columns(rows, 2 * g.carried - origin,
                                                2 * g.pooled_columns - origin)], -1)
        else:
            pooled = _columns(rows, 0, 2 * g.pooled_columns)
        z = f[7](f[6](pooled))
        for layer in f[10:]:
            z = layer(z)
        return torch.sigmoid(self.net.dense(z.flatten(1))), own


# a carry of fewer first-block columns than this saves less than its slices and joins cost
RESNET_MIN_TAKEN = 8


@dataclasses.dataclass(frozen=True)
class ResNetGeometry:
    """Where a ``short_chunk_resnet`` window of ``window`` frames every ``hop`` finds its carry.

    ``lag``: windows back to the one whose carry it takes (1 for an even hop, 2 for an odd
    one); ``shift``: the first block's output columns between the two; ``columns``: that
    output's width; ``taken``: the columns (start, stop) a window takes from the carry, the
    rest it computes."""

    window: int
    hop: int
    lag: int
    shift: int
    columns: int
    taken: tuple[int, int]

    @property
    def lag_frames(self) -> int:
        """Frames between the end of a window and the end of the one whose carry it takes."""
        return self.lag * self.hop


def resnet_geometry(window: int, hop: int) -> ResNetGeometry | None:
    """The reuse of the first block of ``short_chunk_resnet`` windows of ``window`` frames
    every ``hop``; None where the windows overlap too little."""
    if hop < 1 or hop >= window:
        return None
    lag = 1 if hop % 2 == 0 else 2
    shift = lag * hop // 2
    # the first block's output column n reads frames 2n - 3 ... 2n + 3 through its two
    # convolutions and 2n - 1 ... 2n + 1 through its shortcut; the zero padding of the window
    # (frame -1 and frame `window`, and the first convolution's output at -1 and `columns`)
    # reaches columns 0, 1 and those past (window - 2) // 2 - 1
    columns, last_clean = (window - 1) // 2 + 1, (window - 2) // 2 - 1
    start, stop = 2, last_clean + 1 - shift
    if stop - start < RESNET_MIN_TAKEN:
        return None
    return ResNetGeometry(window, hop, lag, shift, columns, (start, stop))


class _Folded(nn.Module):
    """``bn(conv(x))`` of a convolution and the batch norm after it (eval mode) as one
    convolution's weights and bias, buffers (the exporter makes them initializers, which the
    graph passes read)."""

    def __init__(self, conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
        super().__init__()
        weight, bias = fuse_conv_bn_weights(conv.weight, conv.bias, bn.running_mean,
                                            bn.running_var, bn.eps, bn.weight, bn.bias)
        self.register_buffer("weight", weight.detach())
        self.register_buffer("bias", bias.detach())


def _conv_columns(x: torch.Tensor, conv: _Folded, first: int, width: int, start: int,
                  stop: int, stride: int) -> torch.Tensor:
    """Output columns start ... stop - 1 of a 3×3 convolution with padding 1 and ``stride``
    over an input ``width`` columns wide, of which ``x`` holds columns ``first`` on. Zeros
    pad the input only where the whole input's padding does; every slice is static (shape
    inference follows it), so one side of padding is had as both, the extra output column
    cut."""
    lo, hi = stride * start - 1, stride * (stop - 1) + 2  # the input columns read
    count, weight, bias = stop - start, conv.weight, conv.bias
    if lo >= 0 and hi <= width:
        return F.conv2d(x[..., lo - first:hi - first], weight, bias, stride, (1, 0))
    if lo >= 0:  # the right edge: one more column in on the left, its output cut
        begin = lo - (stride - 1)
        out = F.conv2d(x[..., begin - first:width - first], weight, bias, stride, 1)
        return out[..., 1:1 + count]
    return F.conv2d(x[..., -first:min(hi, width) - first], weight, bias, stride, 1)[..., :count]


class _ResNetSteps(nn.Module):
    """``short_chunk_resnet``'s forward in the two steps of a window with and without a carry
    of its first block's output."""

    def __init__(self, net: nn.Module, g: ResNetGeometry, with_carry: bool) -> None:
        super().__init__()
        self.net, self.g, self.with_carry = net, g, with_carry
        block = net.blocks[0]
        self.conv1 = _Folded(block.conv1, block.bn1)
        self.conv2 = _Folded(block.conv2, block.bn2)
        self.shortcut = _Folded(block.shortcut[0], block.shortcut[1])
        self.eval()  # before the exporter sees it (``_Steps``)

    def _first_block(self, x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """The first block's output columns start ... stop - 1 from the whole window ``x``."""
        window, columns = self.g.window, self.g.columns
        lo, hi = max(start - 1, 0), min(stop + 1, columns)
        h = F.relu(_conv_columns(x, self.conv1, 0, window, lo, hi, 2))
        y = _conv_columns(h, self.conv2, lo, columns, start, stop, 1)
        return F.relu(y + _conv_columns(x, self.shortcut, 0, window, start, stop, 2))

    def forward(self, x: torch.Tensor, carry: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        net, g = self.net, self.g
        start, stop = g.taken
        x = net.input_bn(x.unsqueeze(1))
        if self.with_carry:
            h = torch.cat([self._first_block(x, 0, start), carry,
                           self._first_block(x, stop, g.columns)], -1)
        else:
            h = net.blocks[0](x)
        own = h[..., start + g.shift:stop + g.shift]
        z = net.blocks[1:](h).amax(dim=(2, 3))
        z = net.dropout(F.relu(net.bn(net.dense1(z))))
        return torch.sigmoid(net.dense2(z)), own


def _export(module: nn.Module, args: tuple, names: list[str]) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript-based exporter's deprecation
        torch.onnx.export(module, args, buffer, opset_version=ONNX_OPSET, input_names=names,
                          output_names=["probabilities", "carry"], dynamo=False,
                          dynamic_axes={n: {0: "batch"} for n in [*names, "probabilities",
                                                                  "carry"]})
    return buffer.getvalue()


class WindowReuse:
    """``first(windows)`` and ``next(windows, carries)`` → (probabilities, carries), a carry
    per window: window k's forward given the carry of window k - ``geometry.lag``; the two
    steps' ONNX Runtime sessions."""

    def __init__(self, g: Geometry | ResNetGeometry, first_session, next_session) -> None:
        self.geometry = g
        self._first, self._next = first_session, next_session

    @property
    def lag_frames(self) -> int:
        return self.geometry.lag_frames

    def first(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        probs, carries = self._first.run(None, {"windows": windows})
        return probs, carries

    def next(self, windows: np.ndarray, carries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        probs, own = self._next.run(None, {"windows": windows, "carried": carries})
        return probs, own

    def run(self, windows: np.ndarray) -> np.ndarray:
        """Probabilities of consecutive windows of one stream (``hop`` apart), each taking
        the carry of the one ``lag`` before it where there is one (checks and tests)."""
        lag, out, carries = self.geometry.lag, [], []
        for i, window in enumerate(windows):
            if i < lag:
                probs, carry = self.first(window[np.newaxis])
            else:
                probs, carry = self.next(window[np.newaxis], carries[i - lag])
            out.append(probs[0])
            carries.append(carry)
        return np.stack(out)


_Plan = tuple[Geometry | ResNetGeometry | None, Callable[[bool], nn.Module] | None, str]


def _plan_pooled_columns(net: nn.Module, options: dict, window: int, hop: int) -> _Plan:
    """``mel_cnn``'s layout: the second convolution's pooled columns carried (``Geometry``)."""
    if not bool((net.features[7].weight > 0).all()):
        return None, None, ("its second batch norm has a scale <= 0, so its max pool cannot be "
                            "taken first")
    g = geometry(window, hop)
    return g, functools.partial(_Steps, net, g), ""


def _plan_first_block(net: nn.Module, options: dict, window: int, hop: int) -> _Plan:
    """``short_chunk_resnet``'s layout: the first block's output carried (``ResNetGeometry``)."""
    if options.get("downsample", "stride") != "stride":
        return None, None, ('its first block is shared between windows only with '
                            'downsample = "stride"')
    g = resnet_geometry(window, hop)
    return g, functools.partial(_ResNetSteps, net, g), ""


# the schemes of nets.WINDOW_REUSE: the geometry of a network's windows and its two steps
SCHEMES: dict[str, Callable[[nn.Module, dict, int, int], _Plan]] = {
    "pooled_columns": _plan_pooled_columns,
    "first_block": _plan_first_block,
}


def _not_reused() -> str:
    reusing = [name for name in nets.names() if nets.spec(name)["window_reuse"] is not None]
    return f"only {' and '.join(reusing)} model files reuse work across windows"


def _plan(loaded: modelfile.LoadedModel, hop: int) -> _Plan:
    """The geometry of ``loaded``'s windows ``hop`` frames apart and the maker of its two steps
    (``with_carry`` → module), from the zoo's eager network with the file's weights; or
    (None, None, why not)."""
    options = dict(loaded.manifest.architecture)
    name = options.pop("name", None)
    scheme = nets.spec(name)["window_reuse"] if name in nets.names() else None
    # an ensemble's or a waveform export's module holds other files' modules (``members``)
    if loaded.manifest.members or scheme is None:
        return None, None, _not_reused()
    try:
        net = nets.build(name, len(loaded.tags), **options).eval()
        net.load_state_dict(loaded.module.model.state_dict())
    except (TypeError, ValueError, RuntimeError) as error:
        return None, None, f"its weights do not fit the zoo's {name} ({first_lines(error, 1)})"
    g, steps, why = SCHEMES[scheme](net, options, int(loaded.window), hop)
    if g is None and not why:  # no geometry: the windows overlap too little
        why = f"windows {hop} frames apart overlap too little to share work"
    return g, steps, why


def window_reuse(loaded: modelfile.LoadedModel, hop: int, threads: int,
                 check_windows: int = 6) -> tuple[WindowReuse | None, str]:
    """The reuse of ``loaded``'s windows ``hop`` frames apart on ONNX Runtime, checked against
    its TorchScript module; (None, why not) where it cannot serve."""
    if loaded.input_kind != "logmel" or loaded.device.type != "cpu":
        return None, "only log-mel models on the CPU reuse work across windows"
    g, steps, why = _plan(loaded, hop)
    if g is None or steps is None:
        return None, why
    n_mels = loaded.frontend_options.n_mels
    example = torch.zeros(1, n_mels, g.window)
    try:
        first_graph = _export(steps(False), (example,), ["windows"])
        with torch.no_grad():
            _, carry = steps(False)(example)
        next_graph = _export(steps(True), (example, carry), ["windows", "carried"])
        sessions = [onnx_session(graph_passes.optimize(graph)[0], threads)
                    for graph in (first_graph, next_graph)]
    except Exception as error:  # noqa: BLE001 - the exporter and onnx raise many types
        return None, f"its steps cannot be exported ({first_lines(error, 1)})"
    reuse = WindowReuse(g, *sessions)
    # a run of overlapping windows of random frames against the module, window by window
    generator = torch.Generator().manual_seed(0)
    frames = torch.randn(n_mels, g.window + (check_windows - 1) * hop, generator=generator)
    windows = torch.stack([frames[:, i * hop: i * hop + g.window]
                           for i in range(check_windows)])
    with torch.inference_mode():
        expected = loaded(windows).double().cpu().numpy()
    difference = float(np.abs(reuse.run(windows.numpy()) - expected).max())
    if not difference <= ONNX_TOLERANCE:  # NaN fails too
        return None, (f"its steps' probabilities differ from TorchScript's by "
                      f"{difference:.3g} (allowed {ONNX_TOLERANCE:g})")
    return reuse, ""
