"""ONNX Runtime sessions: the one place that opens them, with the tuning every served graph
gets, whichever graph it is (a model file's, its rewrite, its int8 graph, window reuse's steps).

Sessions run on the CPU with a set number of intra-op threads and no spinning, and without ONNX
Runtime's memory pattern; why each setting, and what it cost where it was not so, is told below
and measured in docs/benchmarks/.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from streamtag.errors import ModelError, first_lines

__all__ = ["onnx_session", "session_runner"]


def onnx_session(graph: bytes, threads: int):
    """An ONNX Runtime session on the CPU for ``graph`` with ``threads`` intra-op threads;
    ``ModelError`` saying why there is none."""
    try:
        import onnxruntime
    except ImportError:
        raise ModelError("onnxruntime is not installed; pip install onnxruntime") from None
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only
    # Spinning threads wait for work at full speed: they would take the cores the other
    # streams' decoding and the other workers need.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    # The memory-pattern planner re-plans for each new batch size and maps fresh pages for it,
    # which the engine's batches of varying size paid for in system time; without it no case
    # was slower (docs/benchmarks/, "ONNX Runtime's memory pattern"). The arena still
    # reuses the buffers.
    options.enable_mem_pattern = False
    try:
        return onnxruntime.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own types
        raise ModelError(f"ONNX Runtime cannot load the graph: {first_lines(error, 1)}") \
            from None


def session_runner(session) -> Callable[[np.ndarray], np.ndarray]:
    """Windows in, the ONNX Runtime session's first output (the probabilities) out."""
    input_name = session.get_inputs()[0].name

    def run(windows: np.ndarray) -> np.ndarray:
        return session.run(None, {input_name: windows})[0]

    return run
