"""An int8 graph of a model file, for ONNX Runtime on CPUs where it pays: opt-in, calibrated on
the user's recordings and measured against the FP32 graph before it is stored.

``streamtag models quantize MODEL RECORDING...`` cuts the recordings into the windows the daemon
would score (same decoder, resampler, frontend and hop), calibrates ONNX Runtime's static
quantizer (``onnxruntime.quantization.quantize_static``: QDQ format, weights int8 per output
channel, activations uint8 from their min-max ranges) on every other window, and measures the
int8 graph on the windows it was not calibrated on: the largest and mean difference of the
probabilities, the share of the tag decisions (at the file's thresholds) that agree, and the
forward time of both graphs on one thread. The graph goes into the model file with that record
(``onnx_int8`` in the manifest, docs/model-file.md); ``[engine] precision = "int8"`` serves it.

It pays for wide convolutions and not for small ones: short_chunk_resnet's forward got faster,
the default model's slower (docs/benchmarks/, "int8 as an opt-in"). The record keeps
both times so the file says which it is.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from streamtag.catalog.calibration import file_chunks
from streamtag.engine.batching import cut_windows
from streamtag.errors import ModelError, SourceError, first_lines
from streamtag.model import stored
from streamtag.model.inference import InferenceModel, cpu_name
from streamtag.model.manifest import Manifest
from streamtag.model.sessions import onnx_session, session_runner

MIN_WINDOWS = 4  # half to calibrate on, half to check on
MAX_CALIBRATION_WINDOWS = 256  # spread evenly over the recordings' windows
TIMING_REPS = 9  # forwards of one window by each graph in turn; each one's median kept
QUANTIZER = ("onnxruntime.quantization.quantize_static: QDQ, int8 weights per channel in 7 "
             "bits (reduce_range), uint8 activations, min-max calibration")


@dataclasses.dataclass(frozen=True)
class Quantized:
    """What ``quantize_file`` made and measured."""

    manifest: Manifest
    calibration_windows: int
    check_windows: int
    max_difference: float
    mean_difference: float
    decisions_agree: float  # share of (window, tag) decisions the two graphs agree on
    fp32_ms: float  # one window, one thread
    int8_ms: float

    @property
    def pays(self) -> bool:
        return self.int8_ms < self.fp32_ms


def recording_windows(model: InferenceModel, paths: Sequence[str | os.PathLike]) -> np.ndarray:
    """Every window the daemon would score in the recordings, stacked; ``ModelError`` naming a
    recording that cannot be read."""
    windows = []
    for path in paths:
        try:
            windows.extend(cut_windows(model, file_chunks(Path(path), model.sample_rate)))
        except SourceError as error:
            raise ModelError(f"cannot quantize on {path}: {error}") from None
    if len(windows) < MIN_WINDOWS:
        raise ModelError(f"the recordings give {len(windows)} window(s) of this model; "
                         f"quantizing needs at least {MIN_WINDOWS}: give longer or more "
                         "recordings")
    return np.stack(windows)


def int8_graph(graph: bytes, windows: np.ndarray) -> bytes:
    """``graph`` quantized by ONNX Runtime's static quantizer, calibrated on ``windows``."""
    import onnx
    import onnxruntime
    from onnxruntime.quantization import CalibrationDataReader

    input_name = onnx.load_from_string(graph).graph.input[0].name

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._rows = iter(windows)

        def get_next(self) -> dict[str, np.ndarray] | None:
            row = next(self._rows, None)
            return None if row is None else {input_name: row[np.newaxis]}

    # The quantizer logs a warning on the root logger for each batch norm it cannot quantize
    # per channel (they stay FP32), and ONNX Runtime one for each initializer its optimiser
    # drops: noise to a user, so only errors come through while it runs.
    onnxruntime.set_default_logger_severity(3)
    quiet = _BelowError()
    logging.getLogger().addFilter(quiet)
    try:
        return _quantized(graph, Reader())
    finally:
        logging.getLogger().removeFilter(quiet)


class _BelowError(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR


def _quantized(graph: bytes, reader) -> bytes:
    from onnxruntime.quantization import QuantFormat, QuantType, quant_pre_process, quantize_static

    with tempfile.TemporaryDirectory(prefix="streamtag-quantize-") as folder:
        plain, prepared, out = (Path(folder) / n for n in ("fp32.onnx", "pre.onnx", "int8.onnx"))
        plain.write_bytes(graph)
        # Shapes inferred and the graph's own constants folded, as the quantizer asks.
        quant_pre_process(str(plain), str(prepared), skip_symbolic_shape=True)
        quantize_static(str(prepared), str(out), reader, quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        per_channel=True, reduce_range=True)
        return out.read_bytes()


def _median_ms(runs: Sequence[Callable[[np.ndarray], np.ndarray]],
               x: np.ndarray) -> list[float]:
    """Each runner's median milliseconds on ``x``, timed in turn, so that a change in the
    machine's load falls on all alike; rounded to the microsecond as recorded."""
    times: list[list[float]] = [[] for _ in runs]
    for run in runs:
        run(x)  # first-call costs
    for _ in range(TIMING_REPS):
        for run, kept in zip(runs, times, strict=True):
            t0 = time.perf_counter()
            run(x)
            kept.append(time.perf_counter() - t0)
    return [round(1e3 * float(np.median(kept)), 3) for kept in times]


def quantize_file(model_path: str | os.PathLike, audio_paths: Sequence[str | os.PathLike],
                  out: str | os.PathLike | None = None) -> Quantized:
    """Quantizes model file ``model_path`` on the recordings ``audio_paths`` and writes it with
    its int8 graph to ``out`` (default: in place, atomically). ``ModelError`` saying why where
    it cannot; the file is then left as it was."""
    if not audio_paths:
        raise ModelError("quantizing needs at least one recording")
    model = InferenceModel.load(model_path, device="cpu", backend="onnxruntime", threads=1)
    if stored.torch_installed():
        # ONNX Runtime read the file's graph, checked against its hash; the TorchScript weights
        # beside it, which the file written keeps, are checked where torch can read them (a
        # torch-free install never serves them, and a later load checks them again)
        from streamtag.model.modelfile import load as load_module

        load_module(model_path, device="cpu")
    if model.backend != "onnxruntime":
        raise ModelError(f"{model_path}: ONNX Runtime cannot serve this model "
                         f"({model.backend_note}), so it has no graph to quantize")
    windows = recording_windows(model, audio_paths)
    calibration, check = windows[0::2], windows[1::2]
    if len(calibration) > MAX_CALIBRATION_WINDOWS:
        pick = np.linspace(0, len(calibration) - 1, MAX_CALIBRATION_WINDOWS).round().astype(int)
        calibration = calibration[pick]
    try:
        graph = int8_graph(model.graph(), calibration)
        run_int8 = session_runner(onnx_session(graph, 1))
    except ModelError:
        raise
    except Exception as error:  # noqa: BLE001 - the quantizer raises many types
        raise ModelError(f"ONNX Runtime's quantizer cannot quantize {model_path}: "
                         f"{first_lines(error, 1)}") from None
    fp32, int8 = (np.concatenate([run(check[i:i + 8]) for i in range(0, len(check), 8)])
                  for run in (model.forward, run_int8))
    if int8.shape != fp32.shape or not np.isfinite(int8).all():
        raise ModelError(f"{model_path}: the int8 graph's output is not usable (shape "
                         f"{int8.shape}, expected {fp32.shape}, or not finite)")
    difference = np.abs(int8.astype(np.float64) - fp32)
    largest, mean = float(difference.max()), float(difference.mean())
    agree = float(np.mean((int8 >= model.thresholds) == (fp32 >= model.thresholds)))
    # rounded as recorded, so that the record and what the command says agree on which is faster
    fp32_ms, int8_ms = _median_ms([model.forward, run_int8], check[:1])
    names = ", ".join(Path(p).name for p in audio_paths[:5])
    more = f" and {len(audio_paths) - 5} more" if len(audio_paths) > 5 else ""
    import onnxruntime

    record = {
        "quantizer": f"onnxruntime {onnxruntime.__version__} {QUANTIZER}",
        "recordings": f"{len(audio_paths)}: {names}{more}",
        "calibration_windows": int(len(calibration)), "check_windows": int(len(check)),
        "max_difference": largest, "mean_difference": mean,
        "decisions_agree": agree,
        "forward_ms": {"fp32": fp32_ms, "int8": int8_ms, "cpu": cpu_name()},
    }
    manifest = stored.add_int8_graph(model_path, graph, record, out)
    return Quantized(manifest, len(calibration), len(check), largest, mean, agree, fp32_ms,
                     int8_ms)

