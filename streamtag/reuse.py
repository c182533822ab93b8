"""Overlapping windows share work: what a window's forward can take from the window before.

The default model (``mel_cnn``) sees windows of 93 frames every 31, and its convolutions are
unpadded, so much of a window's first layers was already computed for an earlier window. Its
second layer is the costly one (a 3×3 convolution of 32 → 64 channels, about half the forward)
and its 2×2 max pools pair the frames, so the reuse goes by the pools' parity: with an odd hop
the window two before pairs the frames as this one does, with an even hop the window before.

Window k's second convolution at column n is window k - d's at column n + s, where d is 1 for
an even hop and 2 for an odd one and s = d · hop / 2 (pooled frames). A window computes that
convolution's first 2Q columns' pool from nothing; it takes them from what window k - d left:
the same convolution's columns s ... s + 2Q - 1 of window k - d, pooled in the pairs window k
uses (the "carry"). So a served window computes the first two layers only on the columns its
pools need past the carry: with the default model's 93 and 31, the second convolution on 31
of its 43 columns and the first on 66 of 91, 0.3 ms of its 2.1 ms forward on an AVX2 core
(docs/engine-benchmark.md).

Two ONNX graphs serve it, both exported from the network and rewritten by ``onnx_passes``:
``first`` (a whole window → probabilities and its carry) and ``next`` (a window and the carry
of window k - d → probabilities and this window's carry). The max pool is taken before the
second layer's ReLU and batch norm (the same numbers while the batch norm's scales are
positive, which ``onnx_passes.pool_first`` also relies on), so a carry holds pooled values
and the Winograd rewrite takes the row pairs' pool inside its tiles. Both are checked against
the file's TorchScript module on a run of overlapping windows at load (≤ 1e-4); a model where
anything here does not hold serves as before, with the reason.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from streamtag import modelfile, onnx_passes

log = logging.getLogger(__name__)

__all__ = ["Geometry", "WindowReuse", "geometry", "window_reuse"]

OPSET = 17


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


def _export(module: nn.Module, args: tuple, names: list[str]) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript-based exporter's deprecation
        torch.onnx.export(module, args, buffer, opset_version=OPSET, input_names=names,
                          output_names=["probabilities", "carry"], dynamo=False,
                          dynamic_axes={n: {0: "batch"} for n in [*names, "probabilities",
                                                                  "carry"]})
    return buffer.getvalue()


class WindowReuse:
    """``first(windows)`` and ``next(windows, carries)`` → (probabilities, carries), a carry
    per window: window k's forward given the carry of window k - ``geometry.lag``; the two
    steps' ONNX Runtime sessions."""

    def __init__(self, g: Geometry, first_session, next_session) -> None:
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


def _mel_cnn(loaded: modelfile.LoadedModel) -> tuple[nn.Module | None, str]:
    """The eager ``mel_cnn`` with the file's weights, or None and why not."""
    from streamtag.nets.mel_cnn import MelCNN

    manifest = loaded.manifest
    arch = dict(manifest.architecture or {})
    module = loaded.module
    if (arch.pop("name", None) != "mel_cnn" or manifest.members
            or getattr(module, "original_name", "") != "_Probabilities"
            or getattr(getattr(module, "model", None), "original_name", "") != "MelCNN"):
        return None, "only mel_cnn model files reuse work across windows"
    net = MelCNN(len(loaded.tags), **arch).eval()
    net.load_state_dict(module.model.state_dict())
    if not bool((net.features[7].weight > 0).all()):
        return None, ("its second batch norm has a scale <= 0, so its max pool cannot be "
                      "taken first")
    return net, ""


def window_reuse(loaded: modelfile.LoadedModel, hop: int, threads: int,
                 check_windows: int = 6) -> tuple[WindowReuse | None, str]:
    """The reuse of ``loaded``'s windows ``hop`` frames apart on ONNX Runtime, checked against
    its TorchScript module; (None, why not) where it cannot serve."""
    if loaded.input_kind != "logmel" or loaded.device.type != "cpu":
        return None, "only log-mel models on the CPU reuse work across windows"
    net, why = _mel_cnn(loaded)
    if net is None:
        return None, why
    g = geometry(int(loaded.window), hop)
    if g is None:
        return None, f"windows {hop} frames apart overlap too little to share work"
    n_mels = loaded.frontend_options.n_mels
    example = torch.zeros(1, n_mels, g.window)
    try:
        first_graph = _export(_Steps(net, g, False), (example,), ["windows"])
        with torch.no_grad():
            _, carry = _Steps(net, g, False)(example)
        next_graph = _export(_Steps(net, g, True), (example, carry), ["windows", "carried"])
        sessions = [modelfile.onnx_session(onnx_passes.optimize(graph)[0], threads)
                    for graph in (first_graph, next_graph)]
    except Exception as error:  # noqa: BLE001 - the exporter and onnx raise many types
        return None, f"its steps cannot be exported ({modelfile.first_lines(error, 1)})"
    reuse = WindowReuse(g, *sessions)
    # a run of overlapping windows of random frames against the module, window by window
    generator = torch.Generator().manual_seed(0)
    frames = torch.randn(n_mels, g.window + (check_windows - 1) * hop, generator=generator)
    windows = torch.stack([frames[:, i * hop: i * hop + g.window]
                           for i in range(check_windows)])
    with torch.inference_mode():
        expected = loaded(windows).double().cpu().numpy()
    difference = float(np.abs(reuse.run(windows.numpy()) - expected).max())
    if not difference <= modelfile.ONNX_TOLERANCE:  # NaN fails too
        return None, (f"its steps' probabilities differ from TorchScript's by "
                      f"{difference:.3g} (allowed {modelfile.ONNX_TOLERANCE:g})")
    return reuse, ""
