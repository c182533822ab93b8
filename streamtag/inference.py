"""A model file ready to serve: loaded on its device, warmed up, one batched forward.

The only module of the daemon that touches the device (DESIGN.md); the engine hands it stacked
numpy windows and gets per-tag probabilities back.
"""

from __future__ import annotations

import os
import time

import numpy as np
import torch

from streamtag import modelfile
from streamtag.errors import ModelError
from streamtag.frontend import LogMelOptions

_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc mallopt parameters


def keep_freed_memory() -> bool:
    """Tells glibc's allocator to keep freed memory in the process (no mmap for large blocks,
    no trimming). Without it every forward pass returns its activation buffers to the kernel
    and faults them in again, which costs 40-70 % of CPU time at batch 32 and makes batching
    slower per window than single windows (measured in docs/models.md). Returns False where
    the C library is not glibc. Memory then stays at its peak, which a daemon reaches at once."""
    import ctypes
    import ctypes.util
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 1 << 30))


class InferenceModel:
    """``forward(windows)`` → probabilities ``(batch, tags)`` as float32 numpy."""

    def __init__(self, loaded: modelfile.LoadedModel) -> None:
        self.loaded = loaded
        self.tags: tuple[str, ...] = tuple(loaded.tags)
        self.thresholds = np.asarray(loaded.thresholds, dtype=np.float64)
        self.input_kind: str = loaded.input_kind
        self.window: int = int(loaded.window)
        self.hop: int = int(loaded.hop)
        self.frontend: LogMelOptions = loaded.frontend_options
        self.name: str = loaded.name
        self.hash: str = loaded.manifest.weights_sha256
        self.device: torch.device = loaded.device
        self.path = str(loaded.path)

    @classmethod
    def load(cls, path: str | os.PathLike, device: str = "auto",
             warm_up_batch: int = 2) -> InferenceModel:
        """Loads and checks a model file (``ModelError`` naming the reason) and warms it up."""
        model = cls(modelfile.load(path, device=device))
        model.warm_up(warm_up_batch)
        return model

    @property
    def sample_rate(self) -> float:
        return float(self.frontend.sample_rate)

    def input_shape(self, batch: int) -> tuple[int, ...]:
        if self.input_kind == "logmel":
            return (batch, self.frontend.n_mels, self.window)
        return (batch, self.window)

    def warm_up(self, batch: int = 2) -> float:
        """Runs a forward on silence so the first real window does not pay for lazy set-up;
        returns the seconds it took. A model that fails here is refused."""
        t0 = time.perf_counter()
        try:
            out = self.forward(np.zeros(self.input_shape(batch), dtype=np.float32))
        except Exception as exc:  # noqa: BLE001 - any failure makes the model unusable
            raise ModelError(f"{self.path}: the model fails on a {self.input_shape(batch)} "
                             f"batch: {exc}") from exc
        if out.shape != (batch, len(self.tags)):
            raise ModelError(f"{self.path}: the model returns shape {out.shape}, expected "
                             f"{(batch, len(self.tags))} (one probability per tag)")
        return time.perf_counter() - t0

    def forward(self, windows: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            probs = self.loaded(np.ascontiguousarray(windows, dtype=np.float32))
        return probs.float().cpu().numpy()

    def same_input_as(self, other: InferenceModel) -> bool:
        """True when windows made for ``other`` are valid input for this model."""
        return (self.input_kind == other.input_kind and self.frontend == other.frontend
                and self.window == other.window)
