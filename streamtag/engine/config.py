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

    # Windows per forward pass; None: 64 on CUDA, and on the CPU the size up to 8 at which this
    # model's forward costs least per window, measured as it loads (1-2 for the default model on
    # ONNX Runtime, whose forward per window grows with the batch; 4-8 for an LSTM's, which
    # shrinks), so batching serves where it pays.
    max_batch: int | None = values.field(
        None, minimum=1, expected=f"an integer >= 1 (or left out: on the CPU measured up to "
                                  f"{CPU_MAX_BATCH}, {CUDA_MAX_BATCH} on CUDA)")
    # how long a due window may wait for others to fill a batch
    max_wait_ms: float = values.field(10.0, minimum=0, maximum=MAX_WAIT_MS)
    # overrides the model file's default hop
    hop_seconds: float | None = values.field(None, positive=True, maximum=MAX_HOP_SECONDS)
    # per stream: queued windows before waiting or dropping
    max_pending_windows: int = values.field(16, minimum=1)
    # auto: ONNX Runtime on the CPU, TorchScript on CUDA
    backend: str = values.field("auto", choices=BACKENDS)
    # int8: the model file's int8 graph on ONNX Runtime (opt-in)
    precision: str = values.field("fp32", choices=PRECISIONS)
    # inference threads, each running whole batches (one model shared)
    workers: int = values.field(1, minimum=1, maximum=MAX_THREADS,
                                expected=f"an integer from 1 to {MAX_THREADS}")
    # intra-op threads of one forward pass
    threads: int = values.field(1, minimum=1, maximum=MAX_THREADS,
                                expected=f"an integer from 1 to {MAX_THREADS}")
    # Source threads working at once, taking turns (streamtag.sources.decode_turns); 0: one per
    # core left over from the inference threads, at least one and at most DEFAULT_DECODERS.
    decoders: int = values.field(0, minimum=0, maximum=MAX_THREADS,
                                 expected=f"an integer from 0 (one per core left over from the "
                                          f"workers) to {MAX_THREADS}")
    # Overlapping windows share work: a window's forward takes what an earlier window of its
    # stream computed for the frames they share (streamtag.model.window_reuse; the default model
    # on ONNX Runtime). The same probabilities within 1e-4; false computes every window whole.
    reuse_windows: bool = True

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
