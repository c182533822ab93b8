"""Window reuse's two steps as ONNX graphs, made with torch from the zoo's eager network and a
model file's weights: when the file is written (``modelfile`` stores them, format 1.3) and, for
a hop the file stores none for, when it is served where torch is installed.

What the steps compute, and why it equals the whole window's forward, is told in
``streamtag.model.window_reuse``, which serves them without torch.
"""

from __future__ import annotations

import functools
import hashlib
import io
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

from streamtag import nets
from streamtag.errors import first_lines
from streamtag.model.manifest import Manifest
from streamtag.model.onnx_export import ONNX_OPSET
from streamtag.model.stored import reuse_file_names
from streamtag.model.window_reuse import (
    MUSICNN_BRANCH_FRAMES,
    MUSICNN_MIDEND_FRAMES,
    AnyGeometry,
    Geometry,
    MusicnnGeometry,
    ResNetGeometry,
    VggGeometry,
    WindowReuse,
    from_graphs,
    geometry,
    musicnn_geometry,
    resnet_geometry,
    vgg_geometry,
)

__all__ = ["SCHEMES", "export_steps", "scheme_of", "stored_steps", "window_reuse"]


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


class _MusicnnSteps(nn.Module):
    """musicnn's forward in the two steps of a window with and without a carry of its front
    end's clean columns (``MusicnnGeometry``)."""

    def __init__(self, net: nn.Module, g: MusicnnGeometry, with_carry: bool) -> None:
        super().__init__()
        self.net, self.g, self.with_carry = net, g, with_carry
        self.branches = [*net.timbral, *net.temporal]
        # the mid-end's first convolution as the sum of its part over the timbral channels
        # (carried where it is the same in both windows) and its part over the others
        self.timbral_channels = sum(block.conv.out_channels for block in net.timbral)
        conv = net.midend[0].conv
        weight = conv.weight.detach()
        self.register_buffer("timbral_weight", weight[:, :self.timbral_channels].clone())
        self.register_buffer("other_weight", weight[:, self.timbral_channels:].clone())
        self.register_buffer("midend_bias", conv.bias.detach().clone())
        self.eval()  # before the exporter sees it (``_Steps``)

    @staticmethod
    def _pooled(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """The block's conv, ReLU, batch norm and maximum over the bands on ``x``, padded
        already (the order ``graph_passes`` rewrites)."""
        return block.bn(F.relu(block.conv(x))).amax(dim=3)

    def _columns(self, block: nn.Module, x: torch.Tensor, taken: tuple[int, int]
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """The branch's output columns before and after ``taken`` (start, stop) from the
        window ``x`` (batch, 1, frames, bands). Every slice is static, so shape inference
        (and with it the Winograd rewrite) follows it."""
        start, stop = taken
        before, after = block.time_padding
        frames = before + after + 1
        left = x[:, :, :start + frames - 1 - before]
        right = x[:, :, stop - before:]
        return (self._pooled(block, F.pad(left, (0, 0, before, 0))),
                self._pooled(block, F.pad(right, (0, 0, 0, after))))

    def forward(self, x: torch.Tensor, carry: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        net, g = self.net, self.g
        x = net.input_bn(x.transpose(1, 2).unsqueeze(1))
        maps: list[torch.Tensor] = []
        offset = 0
        for block, taken in zip(self.branches, g.taken, strict=True):
            if carry is None or taken is None:
                maps.append(block(x))
                continue
            width = taken[1] - taken[0]
            size = block.conv.out_channels * width
            kept = carry[:, offset:offset + size].reshape(-1, block.conv.out_channels, width)
            offset += size
            left, right = self._columns(block, x, taken)
            maps.append(torch.cat([left, kept, right], 2))
        # what the window after takes: these columns of each branch it takes from a carry
        owns = [m[..., t[0] + g.shift:t[1] + g.shift].flatten(1)
                for m, t in zip(maps, g.taken, strict=True) if t is not None]
        frontend = torch.cat(maps, 1)
        timbral = frontend[:, :self.timbral_channels]
        half = MUSICNN_MIDEND_FRAMES // 2
        if carry is None or g.midend_taken is None:
            part = F.conv1d(timbral, self.timbral_weight, self.midend_bias, padding=half)
        else:
            start, stop = g.midend_taken
            kept = carry[:, offset:].reshape(-1, self.timbral_weight.shape[0], stop - start)
            left = F.conv1d(F.pad(timbral[..., :start + half], (half, 0)),
                            self.timbral_weight, self.midend_bias)
            right = F.conv1d(F.pad(timbral[..., stop - half:], (0, half)),
                             self.timbral_weight, self.midend_bias)
            part = torch.cat([left, kept, right], 2)
        if g.midend_taken is not None:
            start, stop = g.midend_taken
            owns.append(part[..., start + g.shift:stop + g.shift].flatten(1))
        other = F.conv1d(frontend[:, self.timbral_channels:], self.other_weight, padding=half)
        y = net.midend[0].bn(F.relu(part + other))
        features = [frontend, y]
        for layer in net.midend[1:]:
            y = layer(y) + y
            features.append(y)
        dense = torch.cat(features, 1)
        pooled = torch.stack([dense.amax(dim=2), dense.mean(dim=2)], dim=2).flatten(1)
        hidden = net.dense_bn(F.relu(net.dense(net.dropout(net.pool_bn(pooled)))))
        return torch.sigmoid(net.output(net.dropout(hidden))), torch.cat(owns, 1)


class _VggSteps(nn.Module):
    """``musicnn_vgg``'s forward in the two steps of a window with and without a carry of its
    second convolution's output (after its ReLU and batch norm, before its pool)."""

    def __init__(self, net: nn.Module, g: VggGeometry, with_carry: bool) -> None:
        super().__init__()
        self.net, self.g, self.with_carry = net, g, with_carry
        self.eval()  # before the exporter sees it (``_Steps``)

    def forward(self, x: torch.Tensor, carry: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        net, g, f = self.net, self.g, self.net.features
        start, stop = g.taken
        x = net.input_bn(x.transpose(1, 2).unsqueeze(1))  # (batch, 1, frames, bands)
        if carry is None:
            y = f[7](f[6](f[5](f[3](f[2](f[1](f[0](x)))))))
        else:
            # the first pool's columns the second convolution reads around the carry's:
            # 0 ... start and stop - 1 ... the last, each from the frames they read. The
            # first convolution's padding falls on a frame the left run's pool leaves out,
            # and on the right run's first pooled column, which is dropped (no Pad node: the
            # Winograd rewrite needs every shape known)
            left = f[3](f[2](f[1](f[0](x[:, :, :2 * start + 5]))))
            right = f[3](f[2](f[1](f[0](x[:, :, 2 * stop - 4:]))))[:, :, 1:]
            # those two runs side by side in one convolution (its own padding at the outer
            # ends); the 2 output columns where they meet read both and are dropped
            out = f[7](f[6](f[5](torch.cat([left, right], 2))))
            y = torch.cat([out[:, :, :start], carry, out[:, :, start + 2:]], 2)
        own = y[:, :, start + g.shift:stop + g.shift]
        z = f[8](y)
        for layer in f[9:]:
            z = layer(z)
        z = z.permute(0, 2, 3, 1).flatten(1)  # as MusiCNNVGG.forward
        return torch.sigmoid(net.dense(net.dropout(z))), own


def _export(module: nn.Module, args: tuple, names: list[str]) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript-based exporter's deprecation
        torch.onnx.export(module, args, buffer, opset_version=ONNX_OPSET, input_names=names,
                          output_names=["probabilities", "carry"], dynamo=False,
                          dynamic_axes={n: {0: "batch"} for n in [*names, "probabilities",
                                                                  "carry"]})
    return buffer.getvalue()


_Plan = tuple[AnyGeometry | None, Callable[[bool], nn.Module] | None, str]


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


class _PairSteps(nn.Module):
    """``musicnn_pair``'s two networks each in their two steps, on one window: their
    probabilities merged as the pair merges them, their carries side by side in one (the
    first network's first ``split`` columns)."""

    def __init__(self, net: nn.Module, first: nn.Module, second: nn.Module, split: int) -> None:
        super().__init__()
        self.net, self.first, self.second, self.split = net, first, second, split
        self.eval()  # before the exporter sees it (``_Steps``)

    def forward(self, x: torch.Tensor, carry: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        if carry is None:
            p1, c1 = self.first(x)
            p2, c2 = self.second(x)
        else:
            p1, c1 = self.first(x, carry[:, :self.split])
            p2, c2 = self.second(x, carry[:, self.split:])
        return self.net.merge(p1, p2), torch.cat([c1, c2], 1)


def _plan_frontend_columns(net: nn.Module, options: dict, window: int, hop: int) -> _Plan:
    """musicnn's layout: its front end's clean columns carried (``MusicnnGeometry``); for
    ``musicnn_pair``, each of its two networks' (``_PairSteps``)."""
    if hasattr(net, "merge"):
        g, first, why = _plan_frontend_columns(net.first, options, window, hop)
        _, second, _ = _plan_frontend_columns(net.second, options, window, hop)
        if g is None or first is None or second is None:
            return g, None, why
        with torch.no_grad():  # the first network's carry's width
            split = int(first(False)(torch.zeros(1, options.get("n_mels", 96), window))[1].shape[1])
        return g, lambda with_carry: _PairSteps(net, first(with_carry), second(with_carry),
                                                split), ""
    frames = tuple(block.conv.kernel_size[0] for block in (*net.timbral, *net.temporal))
    paddings = tuple(block.time_padding[0] for block in (*net.timbral, *net.temporal))
    if frames != MUSICNN_BRANCH_FRAMES or paddings != tuple((f - 1) // 2 for f in frames):
        return None, None, (f"its front end's branches span {frames} frames, not the "
                            f"{MUSICNN_BRANCH_FRAMES} that window reuse knows")
    g = musicnn_geometry(window, hop)
    return g, functools.partial(_MusicnnSteps, net, g), ""


def _plan_second_convolution(net: nn.Module, options: dict, window: int, hop: int) -> _Plan:
    """``musicnn_vgg``'s layout: its second convolution's output carried (``VggGeometry``)."""
    f = net.features
    layout = [(type(f[i]).__name__, getattr(f[i], "kernel_size", None),
               getattr(f[i], "stride", None), getattr(f[i], "padding", None)) for i in (0, 3, 5)]
    if layout != [("Conv2d", (3, 3), (1, 1), (1, 1)), ("MaxPool2d", (4, 1), (2, 2), 0),
                  ("Conv2d", (3, 3), (1, 1), (1, 1))]:
        return None, None, ("its first layers are not the 3x3 convolutions and (4, 1) pool "
                            "that window reuse knows")
    g = vgg_geometry(window, hop)
    return g, functools.partial(_VggSteps, net, g), ""


# the schemes of nets.WINDOW_REUSE: the geometry of a network's windows and its two steps
SCHEMES: dict[str, Callable[[nn.Module, dict, int, int], _Plan]] = {
    "pooled_columns": _plan_pooled_columns,
    "first_block": _plan_first_block,
    "frontend_columns": _plan_frontend_columns,
    "second_convolution": _plan_second_convolution,
}


def _not_reused() -> str:
    reusing = [name for name in nets.names() if nets.spec(name)["window_reuse"] is not None]
    return f"only {' and '.join(reusing)} model files reuse work across windows"


def scheme_of(manifest: Manifest) -> str | None:
    """The window-reuse scheme of a model file's architecture (``nets`` registry); None where
    its windows share no work (another architecture, an ensemble's or a waveform export's
    module, which hold other files' modules)."""
    name = manifest.architecture.get("name")
    if manifest.members or manifest.input_kind != "logmel" or name not in nets.names():
        return None
    return nets.spec(name)["window_reuse"]


def _plan(manifest: Manifest, model: nn.Module, hop: int) -> _Plan:
    """The geometry of a file's windows ``hop`` frames apart and the maker of its two steps
    (``with_carry`` → module), from the zoo's eager network with ``model``'s weights (the
    file's network, inside its probabilities); or (None, None, why not)."""
    scheme = scheme_of(manifest)
    if scheme is None:
        return None, None, _not_reused()
    options = dict(manifest.architecture)
    name = options.pop("name")
    try:
        net = nets.build(name, len(manifest.tags), **options).eval()
        net.load_state_dict(model.state_dict())
    except (TypeError, ValueError, RuntimeError) as error:
        return None, None, f"its weights do not fit the zoo's {name} ({first_lines(error, 1)})"
    g, steps, why = SCHEMES[scheme](net, options, int(manifest.window), hop)
    if g is None and not why:  # no geometry: the windows overlap too little
        why = f"windows {hop} frames apart overlap too little to share work"
    return g, steps, why


def export_steps(manifest: Manifest, model: nn.Module, hop: int) -> tuple[str, bytes, bytes] | str:
    """The scheme and the two steps' graphs (as exported, not rewritten) of a file's windows
    ``hop`` frames apart; or why there are none."""
    g, steps, why = _plan(manifest, model, hop)
    if g is None or steps is None:
        return why
    example = torch.zeros(1, manifest.frontend.n_mels, g.window)
    try:
        first_graph = _export(steps(False), (example,), ["windows"])
        with torch.no_grad():
            _, carry = steps(False)(example)
        next_graph = _export(steps(True), (example, carry), ["windows", "carried"])
    except Exception as error:  # noqa: BLE001 - the exporter raises many types
        return f"its steps cannot be exported ({first_lines(error, 1)})"
    return str(scheme_of(manifest)), first_graph, next_graph


def _reference(module: nn.Module) -> Callable[[np.ndarray], np.ndarray]:
    """Whole windows → the module's probabilities (float64), what the steps are checked on."""
    def run(windows: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(windows)).double().cpu().numpy()
    return run


def window_reuse(loaded: Any, hop: int, threads: int) -> tuple[WindowReuse | None, str]:
    """The reuse of a loaded file's (``modelfile.LoadedModel``) windows ``hop`` frames apart on
    ONNX Runtime, its steps exported now and checked against its TorchScript module; (None,
    why not) where it cannot serve. For hops the file stores no steps for."""
    if loaded.input_kind != "logmel" or loaded.device.type != "cpu":
        return None, "only log-mel models on the CPU reuse work across windows"
    steps = export_steps(loaded.manifest, loaded.module.model, hop)
    if isinstance(steps, str):
        return None, steps
    return from_graphs(*steps, int(loaded.window), hop, loaded.frontend_options.n_mels, threads,
                       _reference(loaded.module))


def stored_steps(top: nn.Module, manifest: Manifest) -> tuple[dict[str, Any], dict[str, bytes]]:
    """What a model file being written stores of window reuse: the manifest's ``window_reuse``
    record and the steps' graphs at its hop, checked against ``top`` (the file's module) as
    they will serve; ({}, {}) for an architecture whose windows share no work, and a record of
    why where its steps cannot be had."""
    if scheme_of(manifest) is None:
        return {}, {}
    hop = manifest.hop
    steps = export_steps(manifest, top.model, hop)
    if isinstance(steps, str):
        return {"error": steps}, {}
    scheme, first, after = steps
    _, why = from_graphs(scheme, first, after, manifest.window, hop, manifest.frontend.n_mels,
                         1, _reference(top))
    if why:
        return {"error": why}, {}
    names = reuse_file_names(hop)
    record = {"scheme": scheme, "hops": {str(hop): {
        step: {"file": name, "sha256": hashlib.sha256(graph).hexdigest()}
        for step, name, graph in zip(("first", "next"), names, (first, after), strict=True)}}}
    return record, dict(zip(names, (first, after), strict=True))
