"""Overlapping windows share work: what a window's forward can take from the window before.

The nets registry declares which architectures share work, and by which of the four schemes
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
of its 43 columns and the first on 66 of 91 (what that saves: docs/benchmarks/,
"Overlapping windows share work").

Two ONNX graphs serve it, both exported from the network (``reuse_export``, with torch, when
the model file is written; stored in it from format 1.3) and rewritten by ``graph_passes``:
``first`` (a whole window → probabilities and its carry) and ``next`` (a window and the carry
of window k - d → probabilities and this window's carry). The max pool is taken before the
second layer's ReLU and batch norm (the same numbers while the batch norm's scales are
positive, which ``graph_passes.pool_first`` also relies on), so a carry holds pooled values
and the Winograd rewrite takes the row pairs' pool inside its tiles. When the file is written
the steps are checked against its TorchScript module on a run of overlapping windows; at load
the rewritten steps are checked against the file's whole-window graph on such a run (≤ 1e-4),
so no torch is needed to serve them. A model where anything here does not hold serves as
before, with the reason.

"first_block". ``short_chunk_resnet`` (stride-2 residual blocks of padded 3×3 convolutions)
reuses its first block, the costliest (a 128 → 128 convolution on 64 × 116 for its 231-frame
windows): with an even hop the first block's output at column n is the window before's at
column n + hop / 2 (an odd hop: the window two before), except where the zeros of either
window's padding reach it: two columns at the left edge, three at the right. A window takes
the columns between from the carry and computes its first block on the rest only
(``ResNetGeometry``: 35 of 116 at a hop of 62 frames); the blocks after it run whole, since
their strides misalign with the hop and their receptive fields reach the padding. Its carry is
larger (the first block's output on 81 columns: 2.7 MB against the default model's 70 KB).

"frontend_columns". musicnn (187-frame windows every 62) has no pooling over time before its
back end, so its front end's output at column n is the window before's at column n + hop,
wherever neither window's padding reaches it. Each front-end branch is a convolution over L
frames (timbral: 7; temporal: 128, 64 and 32), zero-padded by ``(L - 1) // 2`` frames before
(``b``) and the rest after; column n reads frames n - b ... n - b + L - 1, so it is clean for
b <= n <= window - L + b, and a window takes from the carry the columns b ... window - L + b -
hop (``MusicnnGeometry.taken``; at 187 and 62: timbral 3..121, 119 of 187 columns; temporal 64
31..92 and 32 15..108; temporal 128 none, its clean columns 63..122 being fewer than the hop).
It computes those branches on the other columns only (two convolutions each, on the frames the
left and the right run read): the timbral ones, 73 % of the forward, on 68 of 187 columns, the
fewest a window can compute (3 padded at the left, the 65 whose frames are new). The mid-end's
first convolution reads every branch over 7 columns, the 128-frame one too, so its output is
the same in no two windows; it is linear, though, so it is computed as its part over the timbral
channels (408 of 561) plus its part over the rest, and the timbral part is carried where the
timbral columns it reads all are (6..118 at 187 and 62) and computed on the other 74 columns
only. The later mid-end layers read the first one's output and the back end pools over the
whole window: they run whole. The carry is those columns of each reused branch and of the
timbral part, flattened and joined (255 KB for musicnn at 187 and 62).

"second_convolution". musicnn's VGG baseline (``musicnn_vgg``) pads its 3×3 convolutions and
pools the first one's output by (4, 1) with a stride of 2 over time: its second convolution, 74
% of its products, gives at column n what the window before gave at column n + hop / 2 (an odd
hop: the window two before), except where the padding reaches (``VggGeometry``: columns 0, 1
and 90, 91 of 92 at 187 frames); a window takes columns 2..59 from the carry at a hop of 62 and
computes that convolution on the other 34 only. Its pool pairs columns, which the hop's shift
of 31 misaligns, so the carry is the convolution's output after its ReLU and batch norm, before
the pool (128 × 58 × 48 values, 1.4 MB); the layers after the pool run whole.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable

import numpy as np

from streamtag.errors import first_lines
from streamtag.model import graph_passes
from streamtag.model.sessions import onnx_session

log = logging.getLogger(__name__)

__all__ = ["GEOMETRIES", "MUSICNN_BRANCH_FRAMES", "MUSICNN_MIDEND_FRAMES", "MUSICNN_MIN_TAKEN",
           "RESNET_MIN_TAKEN", "REUSE_TOLERANCE", "VGG_MIN_TAKEN", "AnyGeometry", "Geometry",
           "MusicnnGeometry", "ResNetGeometry", "VggGeometry", "WindowReuse", "check_windows",
           "from_graphs", "geometry", "musicnn_geometry", "resnet_geometry", "vgg_geometry"]

REUSE_TOLERANCE = 1e-4  # the steps' probabilities against the whole window's


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


def _paired_lag(hop: int) -> tuple[int, int]:
    """(lag, shift) of a layer that pairs frames (a 2×2 pool, a stride of 2) for windows
    ``hop`` frames apart: the window before pairs them as this one does for an even hop, the
    window two before for an odd one; ``shift``: that layer's columns between the two."""
    lag = 1 if hop % 2 == 0 else 2
    return lag, lag * hop // 2


def geometry(window: int, hop: int) -> Geometry | None:
    """The reuse of ``mel_cnn`` windows of ``window`` frames every ``hop``; None where the
    windows overlap too little for one pooled column of the second layer."""
    if hop < 1 or hop >= window:
        return None
    conv2 = (window - 2) // 2 - 2
    pooled = conv2 // 2
    lag, shift = _paired_lag(hop)
    # at least one pooled column computed anew (its pool is what the Winograd rewrite takes
    # inside its tiles)
    carried = min((conv2 - shift) // 2, pooled - 1)
    if carried < 1:
        return None
    lo = min(2 * carried, shift)
    hi = max(2 * pooled - 1, shift + 2 * carried - 1)
    return Geometry(window, hop, lag, shift, carried, lo, hi, (2 * lo, 2 * hi + 8), pooled)


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
    # the first block's output column n reads frames 2n - 3 ... 2n + 3 through its two
    # convolutions and 2n - 1 ... 2n + 1 through its shortcut; the zero padding of the window
    # (frame -1 and frame `window`, and the first convolution's output at -1 and `columns`)
    # reaches columns 0, 1 and those past (window - 2) // 2 - 1
    return _halved_geometry(ResNetGeometry, window, hop, (window - 1) // 2 + 1,
                            (window - 2) // 2 - 1, RESNET_MIN_TAKEN)


def _halved_geometry(kind: type[ResNetGeometry], window: int, hop: int, columns: int,
                     last_clean: int, min_taken: int) -> ResNetGeometry | None:
    """A ``kind`` for a layer whose output has half the window's frames, ``columns`` wide,
    where the window's padding reaches columns 0 and 1 and those past ``last_clean``; None
    where a window would take fewer than ``min_taken`` columns from the carry."""
    if hop < 1 or hop >= window:
        return None
    lag, shift = _paired_lag(hop)
    start, stop = 2, last_clean + 1 - shift
    if stop - start < min_taken:
        return None
    return kind(window, hop, lag, shift, columns, (start, stop))


# the frames of musicnn's front-end branches in its order (nets.musicnn: two timbral of 7, the
# temporal of TEMPORAL_LENGTHS), each zero-padded by (frames - 1) // 2 before
MUSICNN_BRANCH_FRAMES = (7, 7, 128, 64, 32)
MUSICNN_MIDEND_FRAMES = 7  # its mid-end's convolutions over time, padded by 3 each side
# a branch taking fewer columns than this from the carry is computed whole: its slices and
# joins would cost about what it saves
MUSICNN_MIN_TAKEN = 8


@dataclasses.dataclass(frozen=True)
class MusicnnGeometry:
    """Where a musicnn window of ``window`` frames every ``hop`` finds its carry.

    ``taken``: per front-end branch (``MUSICNN_BRANCH_FRAMES``' order) the columns (start,
    stop) a window takes from the carry of the window before, or None where it computes the
    branch whole; ``midend_taken``: the columns of the mid-end's first convolution, its part
    over the timbral channels, taken from the carry (None: computed whole); ``shift``: the
    columns between two windows (the hop: nothing pools over time before the back end)."""

    window: int
    hop: int
    taken: tuple[tuple[int, int] | None, ...]
    midend_taken: tuple[int, int] | None
    lag: int = 1

    @property
    def shift(self) -> int:
        return self.hop

    @property
    def lag_frames(self) -> int:
        """Frames between the end of a window and the end of the one whose carry it takes."""
        return self.hop


def musicnn_geometry(window: int, hop: int) -> MusicnnGeometry | None:
    """The reuse of musicnn's front end on windows of ``window`` frames every ``hop``; None
    where its timbral branches (most of the forward) would take too little."""
    if hop < 1 or hop >= window:
        return None
    taken: list[tuple[int, int] | None] = []
    for frames in MUSICNN_BRANCH_FRAMES:
        before = (frames - 1) // 2
        # clean in both windows: before <= n and n + hop <= window - frames + before
        start, stop = before, window - frames + before - hop + 1
        taken.append((start, stop) if stop - start >= MUSICNN_MIN_TAKEN else None)
    if taken[0] is None:
        return None
    # the mid-end's part over the timbral channels at column n reads their columns n - 3 ...
    # n + 3, zero-padded: the same in both windows where those are all taken from the carry
    half = MUSICNN_MIDEND_FRAMES // 2
    start, stop = taken[0][0] + half, taken[0][1] - half
    midend = (start, stop) if stop - start >= MUSICNN_MIN_TAKEN else None
    return MusicnnGeometry(window, hop, tuple(taken), midend)


@dataclasses.dataclass(frozen=True)
class VggGeometry(ResNetGeometry):
    """Where a ``musicnn_vgg`` window of ``window`` frames every ``hop`` finds its carry: the
    fields of ``ResNetGeometry``, for its second convolution's output (``columns`` frames
    wide)."""


VGG_MIN_TAKEN = 8  # as RESNET_MIN_TAKEN


def vgg_geometry(window: int, hop: int) -> VggGeometry | None:
    """The reuse of the second convolution of ``musicnn_vgg`` windows of ``window`` frames
    every ``hop``; None where the windows overlap too little."""
    # the first convolution's frame t reads frames t - 1 ... t + 1 (clean for 1 <= t <=
    # window - 2); its pool's column p frames 2p ... 2p + 3 of it (clean for 1 <= p <=
    # (window - 5) // 2); the second convolution's column n that pool's n - 1 ... n + 1
    return _halved_geometry(VggGeometry, window, hop, (window - 4) // 2 + 1,
                            (window - 5) // 2 - 1, VGG_MIN_TAKEN)


AnyGeometry = Geometry | ResNetGeometry | MusicnnGeometry

# nets.WINDOW_REUSE's schemes: where a scheme's windows find their carry
GEOMETRIES: dict[str, Callable[[int, int], AnyGeometry | None]] = {
    "pooled_columns": geometry,
    "first_block": resnet_geometry,
    "frontend_columns": musicnn_geometry,
    "second_convolution": vgg_geometry,
}


class WindowReuse:
    """``first(windows)`` and ``next(windows, carries)`` → (probabilities, carries), a carry
    per window: window k's forward given the carry of window k - ``geometry.lag``; the two
    steps' ONNX Runtime sessions."""

    def __init__(self, g: AnyGeometry, first_session, next_session) -> None:
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


def check_windows(n_mels: int, window: int, hop: int, count: int = 6) -> np.ndarray:
    """A run of ``count`` windows ``hop`` frames apart cut from the same random frames: what
    the steps are checked on."""
    frames = np.random.default_rng(0).standard_normal((n_mels, window + (count - 1) * hop),
                                                      dtype=np.float32)
    return np.stack([frames[:, i * hop: i * hop + window] for i in range(count)])


def from_graphs(scheme: str, first_graph: bytes, next_graph: bytes, window: int, hop: int,
                n_mels: int, threads: int, reference: Callable[[np.ndarray], np.ndarray]
                ) -> tuple[WindowReuse | None, str]:
    """Window reuse served from its two steps' graphs (rewritten by ``graph_passes``), checked
    against ``reference`` (whole windows → probabilities) on a run of overlapping windows;
    (None, why not) where it cannot serve."""
    make = GEOMETRIES.get(scheme)
    g = make(window, hop) if make is not None else None
    if g is None:
        return None, f"no geometry of scheme {scheme!r} for windows {hop} frames apart"
    try:
        sessions = [onnx_session(graph_passes.optimize(graph)[0], threads)
                    for graph in (first_graph, next_graph)]
    except Exception as error:  # noqa: BLE001 - onnx and onnxruntime raise many types
        return None, f"its steps cannot be loaded ({first_lines(error, 1)})"
    reuse = WindowReuse(g, *sessions)
    windows = check_windows(n_mels, window, hop)
    difference = float(np.abs(reuse.run(windows) - reference(windows)).max())
    if not difference <= REUSE_TOLERANCE:  # NaN fails too
        return None, (f"its steps' probabilities differ from the whole window's by "
                      f"{difference:.3g} (allowed {REUSE_TOLERANCE:g})")
    return reuse, ""
