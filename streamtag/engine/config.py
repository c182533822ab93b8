"""The engine's settings, the ``[engine]`` section of the daemon's config: how it batches windows
and runs the model. Free of torch, so that reading a config stays cheap; the engine itself is in
streamtag.engine.batching."""

from __future__ import annotations

import dataclasses
import os

from streamtag import values
from streamtag.errors import ConfigError
from streamtag.model import BACKENDS, PRECISIONS

# engine.max_batch left out: on the CPU the cheapest batch size up to this, measured on the model
# as it loads (streamtag.model.inference.cheapest_batch); on CUDA this.
CPU_MAX_BATCH = 8
CUDA_MAX_BATCH = 64
# Source threads at work at once by default, however many cores: they share one GIL, and more of
# them spent the difference handing it over (system time), as measured in docs/operations.md.
DEFAULT_DECODERS = 2
# Upper bounds: a longer wait overflows the condition timeout and kills the inference thread;
# the frame ring holds window + 4 hops of frames per stream, so a huge hop would allocate GBs.
MAX_WAIT_MS = 60_000.0
MAX_HOP_SECONDS = 60.0
MAX_THREADS = 256  # workers, threads and decoders each


@dataclasses.dataclass(frozen=True)
class EngineConfig:
    """How the engine batches windows and runs the model."""

    max_batch: int | None = values.field(
        None, minimum=1, expected=f"an integer >= 1 (or left out: on the CPU measured up to "
                                  f"{CPU_MAX_BATCH}, {CUDA_MAX_BATCH} on CUDA)",
        help=f"windows per forward pass; left out: {CUDA_MAX_BATCH} on CUDA, and on the CPU the "
             f"size up to {CPU_MAX_BATCH} at which this model's forward costs least per window, "
             "measured as it loads")
    max_wait_ms: float = values.field(
        10.0, minimum=0, maximum=MAX_WAIT_MS,
        help="how long a due window may wait for others to fill a batch")
    hop_seconds: float | None = values.field(
        None, positive=True, maximum=MAX_HOP_SECONDS, flag="--hop-seconds",
        help="seconds between a stream's windows; left out: the model file's hop")
    max_pending_windows: int = values.field(
        16, minimum=1, help="per stream: windows queued before its source waits (or, live, "
                            "they are dropped)")
    backend: str = values.field(
        "auto", choices=BACKENDS, flag="--backend",
        help="auto: ONNX Runtime on the CPU, TorchScript on CUDA")
    precision: str = values.field(
        "fp32", choices=PRECISIONS, flag="--precision",
        help="int8: the model file's int8 graph on ONNX Runtime (opt-in; streamtag models "
             "quantize makes it)")
    workers: int = values.field(
        1, minimum=1, maximum=MAX_THREADS, expected=f"an integer from 1 to {MAX_THREADS}",
        help="inference threads, each running whole batches of one shared model")
    threads: int = values.field(
        1, minimum=1, maximum=MAX_THREADS, expected=f"an integer from 1 to {MAX_THREADS}",
        help="intra-op threads of one forward pass")
    # (streamtag.sources.decode_turns)
    decoders: int = values.field(
        0, minimum=0, maximum=MAX_THREADS,
        expected=f"an integer from 0 (one per core left over from the workers) to {MAX_THREADS}",
        help=f"source threads decoding at once, taking turns; 0: one per core left over from "
             f"the inference threads, at least 1 and at most {DEFAULT_DECODERS}")
    # (streamtag.model.window_reuse)
    reuse_windows: bool = values.field(
        True, help="overlapping windows share work: a window's forward takes what an earlier "
                   "window of its stream computed for the frames they share (the same "
                   "probabilities within 1e-4); false computes every window whole")

    def __post_init__(self) -> None:
        values.check_fields(self, "engine", ConfigError)
        if self.precision == "int8" and self.backend == "torch":
            raise ConfigError("engine.precision int8 serves the model file's int8 graph on ONNX "
                              "Runtime: set engine.backend to auto or onnxruntime, or precision "
                              "to fp32")

    def batch_limit(self, device_type: str) -> int:
        """``max_batch``, or its largest default for a model on ``device_type`` ("cpu",
        "cuda"); on the CPU the engine measures the model for a smaller one
        (``Engine.batch_limit_for``)."""
        if self.max_batch is not None:
            return self.max_batch
        return CUDA_MAX_BATCH if device_type == "cuda" else CPU_MAX_BATCH

    def decoder_turns(self) -> int:
        """How many source threads work at once: ``decoders``, or for 0 the cores this process
        may use less the inference threads, at least one and at most ``DEFAULT_DECODERS``."""
        if self.decoders:
            return self.decoders
        spare = len(os.sched_getaffinity(0)) - self.workers * self.threads
        return max(1, min(DEFAULT_DECODERS, spare))
