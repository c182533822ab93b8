"""A model file ready to serve: loaded on its device, warmed up, one batched forward.

The only module of the daemon that touches the device (DESIGN.md); the engine hands it stacked
numpy windows and gets per-tag probabilities back. Two backends run the file: ONNX Runtime on
the graph the file carries (the CPU default, as the daemon serves more streams per core with it
than with frozen TorchScript: docs/benchmarks/) and TorchScript, frozen and optimised
for inference (CUDA, and wherever no graph can be had). ONNX Runtime serves without torch: the
file is opened with ``streamtag.model.stored`` and torch is imported only where TorchScript
must run (``needs_torch`` says what to install where it is missing).
"""

from __future__ import annotations

import dataclasses
import glob
import itertools
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from streamtag.errors import ModelError, first_lines
from streamtag.frontend import LogMelOptions
from streamtag.model import BACKENDS, PRECISIONS, graph_passes
from streamtag.model.sessions import onnx_session, session_runner
from streamtag.model.stored import (
    TORCH_EXTRA,
    StoredModel,
    needs_torch,
    open_model,
    torch_installed,
)
from streamtag.model.window_reuse import WindowReuse, from_graphs

log = logging.getLogger(__name__)

CHECK_TOLERANCE = 1e-4  # a rewritten graph's probabilities against the file's own graph's

# The CPU's batch size, when the config leaves it out, is measured (cheapest_batch): the forward
# per window at these sizes, within a time budget, smallest first.
BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64)
# A large model stops early: its forwards at a small batch already fill the budget.
MEASURE_BUDGET_S = 3.0  # the timing stops before a size that would run past this
MEASURE_REPS = 3  # rounds of one timed forward per size, after one untimed; the best kept
# A larger batch is chosen only where its forward costs this much less per window, measured at
# load: that measurement varies from load to load, and while serving a larger batch's
# activations contend with the decoding on the other core for the shared caches, which an idle
# measurement cannot see (docs/benchmarks/, "the batch chosen with a 10 % margin").
BATCH_GAIN = 0.10

_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8  # glibc mallopt parameters


def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one), for records of timings."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def _glibc_function(name: str) -> Callable[..., int] | None:
    """glibc's function ``name`` (ctypes), None where the C library is not glibc."""
    import ctypes
    import ctypes.util

    if not sys.platform.startswith("linux"):
        return None
    try:
        return getattr(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6"), name)
    except (OSError, AttributeError):
        return None


def keep_freed_memory() -> bool:
    """Tells glibc's allocator to keep freed memory in the process (no mmap for large blocks,
    no trimming) in one arena. Without it every forward pass returns its activation buffers to
    the kernel and faults them in again, which makes batching slower per window than single
    windows (docs/models.md). One arena: glibc gives other threads arenas of their own, whose
    heaps cannot hold a block over 64 MB, so a large forward in the inference thread would have
    its buffers mapped and faulted in again every time (docs/benchmarks/, "Malloc
    arenas"). Memory then stays at its peak, which a daemon reaches at once. Returns False
    where the C library is not glibc."""
    mallopt = _glibc_function("mallopt")
    if mallopt is None:
        return False
    return (bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 1 << 30))
            and bool(mallopt(_M_ARENA_MAX, 1)))


def return_freed_memory() -> bool:
    """Gives the memory freed so far back to the kernel (glibc's ``malloc_trim``): what loading
    and checking a model built and dropped (the graphs' rewrites, the sessions they were checked
    on), which ``keep_freed_memory`` would otherwise keep resident for good. Called once a model
    is ready to serve; False where the C library is not glibc."""
    malloc_trim = _glibc_function("malloc_trim")
    return malloc_trim is not None and bool(malloc_trim(0))


def cheapest_batch(per_window_ms: dict[int, float], gain: float = BATCH_GAIN) -> int:
    """The batch size to serve at, from the forward's milliseconds per window at each size
    measured: the smallest that no larger size beats by ``gain`` or more. Smaller batches wait
    less to fill and hold less memory, so a larger one must earn its place. The engine's own
    work per turn is shared by the turn's windows whatever the size of its forward passes
    (``engine.TURN_WINDOWS``), so the forward alone decides."""
    if not per_window_ms:
        raise ValueError("cheapest_batch needs the time of at least one batch size")
    best = min(per_window_ms)
    for size in sorted(per_window_ms):
        if per_window_ms[size] < per_window_ms[best] * (1.0 - gain):
            best = size
    return best


@dataclasses.dataclass(frozen=True)
class Device:
    """Where a model serves: ``type`` "cpu" or "cuda", ``index`` the CUDA device's number."""

    type: str
    index: int | None = None

    def __str__(self) -> str:
        return self.type if self.index is None else f"{self.type}:{self.index}"


def cuda_visible() -> bool:
    """Whether torch is installed and sees a CUDA device. torch is imported only where an
    NVIDIA driver is there to find (on Linux), so a CPU machine with torch installed serves
    without loading it."""
    if not torch_installed():
        return False
    if sys.platform.startswith("linux") and not (os.path.exists("/proc/driver/nvidia/version")
                                                 or glob.glob("/dev/nvidia[0-9]*")):
        return False
    import torch

    return bool(torch.cuda.is_available())


def _example(shape: tuple[int, ...]) -> np.ndarray:
    """A fixed random batch: what a rewritten graph is checked on."""
    return np.random.default_rng(0).standard_normal(shape, dtype=np.float32)


def _plain_graph(stored: StoredModel, loaded: Callable[[], Any]) -> bytes:
    """The file's ONNX graph: the one stored in it; for a file of format 1.0, which has none,
    one exported from its module (with torch, ``modelfile.onnx_graph``)."""
    graph = stored.graph()
    if graph is not None:
        return graph
    if not torch_installed():
        raise needs_torch(f"{stored.path} stores no ONNX graph (format "
                          f"{stored.manifest.format_version}), so one is exported from its "
                          "module, which")
    from streamtag.model import modelfile

    return modelfile.onnx_graph(loaded())


def _onnx_runner(stored: StoredModel, loaded: Callable[[], Any], threads: int,
                 shape: tuple[int, ...]
                 ) -> tuple[Callable[[np.ndarray], np.ndarray], list[str], bytes]:
    """ONNX Runtime on the file's graph, rewritten by ``graph_passes`` (the plain graph where a
    rewrite fails or changes the output: the rewritten graph's probabilities are checked against
    the plain graph's, which was checked against the module when the file was written); returns
    the runner, the passes applied and the graph it serves. ``ModelError`` saying why it cannot
    serve."""
    graph = _plain_graph(stored, loaded)
    plain = session_runner(onnx_session(graph, threads))
    try:
        rewritten, passes = graph_passes.optimize(graph)
    except Exception as error:  # noqa: BLE001 - onnx raises many types; the plain graph serves
        log.warning("%s: the ONNX graph is served as exported: its rewrite failed (%s)",
                    stored.path, first_lines(error, 1))
        return plain, [], graph
    if passes:
        try:
            run = session_runner(onnx_session(rewritten, threads))
            batch = _example(shape)
            difference = float(np.abs(run(batch).astype(np.float64) - plain(batch)).max())
            if difference <= CHECK_TOLERANCE:  # NaN fails too
                return run, passes, rewritten
            reason = (f"its probabilities differ from the plain graph's by {difference:.3g} "
                      f"(allowed {CHECK_TOLERANCE:g})")
        except ModelError as error:
            reason = str(error)
        log.warning("%s: the ONNX graph is served as exported: the rewritten one (%s) %s",
                    stored.path, "; ".join(passes), reason)
    return plain, [], graph


# Of its share of a GPU (1/N of N workers), the part a worker process may take: the rest is
# left for processes beside them (a display, a one-off `streamtag tag`).
GPU_SHARE_MARGIN = 0.95
# What a CUDA process holds outside torch's caching allocator, so outside its cap: its context,
# cuDNN's and cuBLAS's handles and workspaces. Measured 0.51 GiB a worker serving musicnn-msd
# on an H100 (4.96 GiB in use under a 4.45 GiB cap, docs/operations.md); twice that is kept.
GPU_PROCESS_RESERVE = 1 << 30
# The least a worker's allocator may hold: under it, N workers do not fit on the GPU.
GPU_MIN_ALLOCATOR = 1 << 29


def allocator_cap(share: float, total: int) -> int:
    """The bytes a worker's CUDA caching allocator may hold, for ``share`` of a GPU of
    ``total`` bytes: its part of the GPU (less ``GPU_SHARE_MARGIN``) less what the process holds
    outside the allocator (``GPU_PROCESS_RESERVE``). ``ModelError`` when that leaves under
    ``GPU_MIN_ALLOCATOR``: so many workers do not fit on one GPU.

    The reserve is per process: a margin in proportion to the share (0.9 of it, before) left
    16 workers on an 80 GB H100 0.5 GB each for a context of about that size, and forwards
    then ran out of memory on a GPU that held no free byte."""
    allowed = int(min(1.0, share) * GPU_SHARE_MARGIN * total) - GPU_PROCESS_RESERVE
    if allowed < GPU_MIN_ALLOCATOR:
        workers = max(1, round(1 / share))
        raise ModelError(
            f"{workers} worker processes do not fit on one GPU of {total / 2**30:.1f} GiB: each "
            f"would have {max(allowed, 0) / 2**30:.2f} GiB for its model beside the "
            f"{GPU_PROCESS_RESERVE / 2**30:.0f} GiB a CUDA process holds (at least "
            f"{GPU_MIN_ALLOCATOR / 2**30:.1f} GiB needed); run fewer --processes, or serve "
            "on the CPU (--device cpu)")
    return allowed


def serving_device(device: str, backend: str = "auto", precision: str = "fp32") -> str:
    """Where ``InferenceModel.load`` serves a model: "cpu", "cuda" or "cuda:N" ("auto": the CPU
    for ONNX Runtime and int8, else CUDA where torch sees one); any other text as given."""
    text = str(device).strip().lower()
    if (backend == "onnxruntime" or precision == "int8") and text == "auto":
        text = "cpu"
    if text == "auto":
        text = "cuda" if cuda_visible() else "cpu"
    return text


def share_the_gpu(device: str, share: float, backend: str = "auto",
                  precision: str = "fp32") -> float | None:
    """Caps this process's CUDA caching allocator at ``allocator_cap(share, the device's
    memory)`` when a model of ``device``, ``backend`` and ``precision`` serves on CUDA
    (``serving_device``); the cap as a fraction of the device's memory, or None (the CPU, ONNX
    Runtime, no CUDA). ``ModelError`` when ``share`` is too small a part of this GPU.

    For one of N worker processes on one GPU. By default torch's allocator keeps every block
    it ever held, and cuDNN takes the workspace it is offered: without a cap musicnn-msd's 8
    workers held up to 19 GB each on an H200 and the last to grow ran out of memory (docs/
    operations.md, "Worker processes on one machine"). Under the cap the allocator frees its
    cached blocks before it gives up on an allocation."""
    where = serving_device(device, backend, precision)
    if not where.startswith("cuda") or not cuda_visible():
        return None
    import torch

    index = torch.device(where).index
    index = torch.cuda.current_device() if index is None else index
    total = torch.cuda.get_device_properties(index).total_memory
    fraction = allocator_cap(share, total) / total
    torch.cuda.set_per_process_memory_fraction(fraction, index)
    return fraction


def full_fp32_on_cuda() -> None:
    """Precision fp32 on CUDA means IEEE FP32: cuDNN's convolutions and RNNs (and cuBLAS, which
    torch already keeps so) may not round their inputs to TensorFloat-32. torch lets them by
    default for convolutions, which moves the probabilities far past the CPU's 1e-4 parity
    (docs/benchmarks/, "TensorFloat-32"). Process-wide, as torch's flags are."""
    import torch

    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    settings = [b for b in (getattr(cudnn, "conv", None), getattr(cudnn, "rnn", None), matmul)
                if hasattr(b, "fp32_precision")]  # torch 2.9 on
    for backend in settings:
        backend.fp32_precision = "ieee"
    if not settings:
        cudnn.allow_tf32 = matmul.allow_tf32 = False


def out_of_gpu_memory(error: BaseException) -> bool:
    """Whether ``error`` is CUDA's out of memory: torch's own type, or the RuntimeError the
    TorchScript interpreter wraps it in (its text names it)."""
    return type(error).__name__ == "OutOfMemoryError" or "CUDA out of memory" in str(error)


_HALVED = itertools.count(1)  # the batches this process ran in halves


def halving_when_out_of_memory(run: Callable[[np.ndarray], np.ndarray],
                               release: Callable[[], None]
                               ) -> Callable[[np.ndarray], np.ndarray]:
    """``run``, where a batch that finds the GPU's memory full runs again in halves (each
    halved again if need be) after ``release`` gives this process's cached blocks back: the
    GPU is shared (N worker processes, other programs), and its windows are not lost. One
    window that does not fit raises as before; so does any other error."""
    def guarded(windows: np.ndarray) -> np.ndarray:
        try:
            return run(windows)
        except RuntimeError as error:
            if len(windows) < 2 or not out_of_gpu_memory(error):
                raise
        release()
        count = next(_HALVED)
        if count == 1 or count % 100 == 0:  # the first, then every hundredth
            log.warning("the GPU had no memory for a batch of %d windows: it ran in halves "
                        "(%d batches so far in this process); fewer worker processes, a "
                        "smaller [engine] max_batch or fewer other programs on the GPU avoid "
                        "that", len(windows), count)
        half = len(windows) // 2
        return np.concatenate([guarded(windows[:half]), guarded(windows[half:])])
    return guarded


def _torch_runner(loaded: Any, threads: int | None
                  ) -> tuple[Callable[[np.ndarray], np.ndarray], str | None]:
    """The file's module, frozen (weights become constants, so TorchScript folds them) and
    optimised for inference (batch norms folded into convolutions, fused operators); the plain
    module where that fails or changes the output. Returns the runner and why it is plain.

    ``threads`` is set in every thread that runs it: torch's OpenMP thread count belongs to the
    calling thread, and the idle OpenMP threads of a worker left at the default spin
    (docs/benchmarks/, "OpenMP threads per thread")."""
    import torch

    module = loaded.module
    note = None
    configured = threading.local()
    if loaded.device.type == "cuda":
        full_fp32_on_cuda()
    try:
        frozen = torch.jit.optimize_for_inference(torch.jit.freeze(module.eval()))
    except Exception as error:  # noqa: BLE001 - TorchScript raises several types
        frozen, note = None, f"cannot freeze the module ({first_lines(error, 1)})"
    device = loaded.device

    def runner_of(candidate: torch.jit.ScriptModule) -> Callable[[np.ndarray], np.ndarray]:
        def run(windows: np.ndarray) -> np.ndarray:
            if threads is not None and not getattr(configured, "done", False):
                torch.set_num_threads(threads)
                configured.done = True
            x = torch.from_numpy(windows).to(device)
            with torch.inference_mode():
                return candidate(x).float().cpu().numpy()
        return halving_when_out_of_memory(run, torch.cuda.empty_cache) \
            if device.type == "cuda" else run

    if frozen is not None:
        run = runner_of(frozen)
        try:
            from streamtag.model import modelfile

            batch = modelfile.example_input(loaded.manifest).numpy()
            with torch.inference_mode():
                expected = loaded(batch).double().cpu().numpy()
            difference = float(np.abs(run(batch) - expected).max())
        except Exception as error:  # noqa: BLE001
            difference = float("nan")
            note = f"the frozen module fails ({first_lines(error, 1)})"
        if difference <= CHECK_TOLERANCE:
            return run, None
        note = note or f"the frozen module's output differs by {difference:.3g}"
    return runner_of(module), note


def _int8_graph(stored: StoredModel) -> bytes:
    """The file's int8 graph (``streamtag.catalog.quantize``), served on ONNX Runtime. Its
    scores differ from the FP32 module's by what the manifest's ``onnx_int8`` records, so no
    1e-4 check here; the warm-up checks its output's shape. ``ModelError`` where the file has
    none."""
    graph = stored.int8_graph()
    if graph is None:
        raise ModelError(f"{stored.path} has no int8 graph; make one with `streamtag models "
                         f"quantize {stored.path} RECORDING...`, or serve precision fp32")
    return graph


class InferenceModel:
    """``forward(windows)`` → probabilities ``(batch, tags)`` as float32 numpy.

    ``backend`` is what serves (``"onnxruntime"`` or ``"torch"``); ``backend_note`` says why
    TorchScript serves where ONNX Runtime was wanted (None otherwise). ``precision``:
    ``"fp32"``, or ``"int8"`` for the file's int8 graph on ONNX Runtime, which never falls
    back: a model that cannot serve it is refused. ``model`` is the file opened without torch
    (``stored.StoredModel``) or loaded with it (``modelfile.LoadedModel``, whose device it
    serves on); ``loaded`` loads the TorchScript module where it was not."""

    def __init__(self, model: StoredModel, backend: str = "auto",
                 threads: int | None = None, precision: str = "fp32") -> None:
        self.stored = model
        module_device = getattr(model, "device", None)  # a modelfile.LoadedModel has one
        if module_device is None:
            self._loaded, self.device = None, Device("cpu")
        else:
            self._loaded = model
            self.device = Device(module_device.type, module_device.index)
        stored = self.stored
        self.tags: tuple[str, ...] = tuple(stored.tags)
        self.thresholds = np.asarray(stored.thresholds, dtype=np.float64)
        self.input_kind: str = stored.input_kind
        self.window: int = int(stored.window)
        self.hop: int = int(stored.hop)
        self.frontend: LogMelOptions = stored.frontend_options
        self.name: str = stored.name
        self.hash: str = stored.manifest.weights_sha256
        self.path = str(stored.path)
        if backend not in BACKENDS:
            raise ModelError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
        if precision not in PRECISIONS:
            raise ModelError(f"unknown precision {precision!r}; use one of "
                             f"{', '.join(PRECISIONS)}")
        self.precision = precision
        self.backend_note: str | None = None
        self.graph_passes: list[str] = []  # graph_passes' rewrites of the graph that serves
        self.batch_ms: dict[int, float] = {}  # measure_batches: ms per window by batch size
        self._run: Callable[[np.ndarray], np.ndarray] | None = None
        self._served_graph: bytes | None = None  # the ONNX graph self._run serves, if one
        self._threads = threads or 1
        self._reuse: dict[int, tuple[WindowReuse | None, str]] = {}  # by hop (window_reuse)
        self._reuse_lock = threading.Lock()
        if precision == "int8":
            if backend == "torch" or self.device.type != "cpu":
                raise ModelError(f"{self.path}: precision int8 runs on ONNX Runtime on the CPU; "
                                 "use backend auto or onnxruntime and device cpu, or precision "
                                 "fp32")
            self._served_graph = _int8_graph(stored)
            self._run = session_runner(onnx_session(self._served_graph, threads or 1))
            self.backend = "onnxruntime"
        elif backend == "onnxruntime" or (backend == "auto" and self.device.type == "cpu"):
            if self.device.type != "cpu":
                raise ModelError(f"{self.path}: backend onnxruntime runs on the CPU only here; "
                                 "use device cpu, or backend torch (or auto) on CUDA")
            try:
                self._run, self.graph_passes, self._served_graph = _onnx_runner(
                    stored, lambda: self.loaded, threads or 1, self.input_shape(2))
                self.backend = "onnxruntime"
                if self.graph_passes:
                    log.info("%s: ONNX graph rewritten: %s", self.path,
                             "; ".join(self.graph_passes))
            except ModelError as error:
                if not torch_installed():
                    raise ModelError(f"{self.path}: ONNX Runtime cannot serve this model "
                                     f"({error}); TorchScript would, with PyTorch: "
                                     f"{TORCH_EXTRA}") from None
                self.backend_note = f"ONNX Runtime cannot serve this model: {error}"
                log.warning("%s: %s; TorchScript serves it", self.path, self.backend_note)
        if self._run is None:
            if not torch_installed():
                raise needs_torch(f"serving {self.path} with TorchScript (backend torch)")
            if threads is not None and threads >= 1 and self.device.type == "cpu":
                import torch

                torch.set_num_threads(threads)
            self._run, frozen_note = _torch_runner(self.loaded, threads)
            self.backend = "torch"
            if frozen_note is not None:
                log.warning("%s: TorchScript serves the module as loaded: %s", self.path,
                            frozen_note)
        # A forward on one thread: its CPU time is then the calling thread's (measure_batches).
        if self.backend == "onnxruntime":
            self._one_thread = (threads or 1) == 1
        else:
            import torch

            self._one_thread = (threads or torch.get_num_threads()) == 1

    def graph(self) -> bytes:
        """The file's FP32 ONNX graph as it was exported (not rewritten)."""
        return _plain_graph(self.stored, lambda: self.loaded)

    @property
    def loaded(self) -> Any:
        """The file's TorchScript module loaded (``modelfile.LoadedModel``, with torch), on
        the device it serves on; loaded on first use where ONNX Runtime serves."""
        if self._loaded is None:
            if not torch_installed():
                raise needs_torch(f"loading the TorchScript module of {self.path}")
            from streamtag.model import modelfile

            self._loaded = modelfile.load(self.path, device=str(self.device))
        return self._loaded

    @classmethod
    def load(cls, path: str | os.PathLike, device: str = "auto", warm_up_batch: int = 2,
             backend: str = "auto", threads: int | None = None,
             precision: str = "fp32") -> InferenceModel:
        """Loads and checks a model file (``ModelError`` naming the reason) and warms it up.

        ``backend``: ``"auto"`` (ONNX Runtime on the CPU, TorchScript on CUDA),
        ``"onnxruntime"`` (CPU only; falls back to TorchScript, saying why, where the file's
        graph cannot be had) or ``"torch"``. ``device``: ``"auto"`` (CUDA where torch is
        installed and sees one, else the CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        ``threads``: intra-op threads of one forward (None: ONNX Runtime 1, torch as it is
        set). ``precision``: ``"fp32"`` or ``"int8"`` (the file's int8 graph, ONNX Runtime on
        the CPU). On the CPU with ONNX Runtime, torch is not imported."""
        text = serving_device(device, backend, precision)
        if text == "cpu" and backend != "torch":
            model = cls(open_model(path), backend, threads, precision)
        elif text == "cpu" or text == "cuda" or text.startswith("cuda:"):
            if not torch_installed():
                raise needs_torch(f"serving {path} on device {device!r} with backend "
                                  f"{backend!r} (TorchScript)")
            from streamtag.model import modelfile

            model = cls(modelfile.load(path, device=text), backend, threads, precision)
        else:
            raise ModelError(f"cannot load {path}: unknown device {device!r}; use 'auto', "
                             "'cpu', 'cuda' or 'cuda:N'")
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

    def measure_batches(self, largest: int, budget_s: float = MEASURE_BUDGET_S
                        ) -> dict[int, float]:
        """Times the forward at each of BATCH_SIZES up to ``largest`` on random windows: CPU
        milliseconds per window (wall time where a forward runs on several threads), the best
        of MEASURE_REPS rounds that take each size in turn, so that a change in the machine's
        load falls on every size alike. Sizes whose forwards would run past ``budget_s``
        altogether (estimated from batch 1) are left out; batch 1 is always timed. Kept in
        ``batch_ms``."""
        clock = time.thread_time if self._one_thread else time.perf_counter
        rng = np.random.default_rng(0)
        inputs = {1: rng.standard_normal(self.input_shape(1), dtype=np.float32)}
        self.forward(inputs[1])  # first-call costs
        t0 = clock()
        self.forward(inputs[1])
        one_s = max(clock() - t0, 1e-6)
        spent = one_s * 2
        for size in BATCH_SIZES[1:]:
            needed = one_s * size * (MEASURE_REPS + 1)
            if size > largest or spent + needed > budget_s:
                break
            spent += needed
            inputs[size] = rng.standard_normal(self.input_shape(size), dtype=np.float32)
            self.forward(inputs[size])  # this shape's first-call costs
        best = dict.fromkeys(inputs, float("inf"))
        for _ in range(MEASURE_REPS):
            for size, x in inputs.items():
                t0 = clock()
                self.forward(x)
                best[size] = min(best[size], clock() - t0)
        self.batch_ms = {size: 1000.0 * s / size for size, s in best.items()}
        if self._served_graph is not None and len(inputs) > 1:
            # ONNX Runtime's arena keeps what the largest batch measured took (about 300 MB for
            # musicnn-msd's batch of 8, docs/benchmarks/, "Memory per stream"): the
            # same graph in a fresh session serves, holding only what its batches take.
            self._run = session_runner(onnx_session(self._served_graph, self._threads))
            self._run(inputs[1])  # its first-call costs, here rather than in the first batch
        self._served_graph = None  # its bytes: a later measure keeps the session it finds
        return self.batch_ms

    def forward(self, windows: np.ndarray) -> np.ndarray:
        windows = np.ascontiguousarray(windows, dtype=np.float32)
        expected = self.input_shape(len(windows))
        if windows.shape != expected:
            raise ValueError(f"{self.name} takes windows of shape {expected}, got "
                             f"{windows.shape}")
        return self._run(windows)

    def window_reuse(self, hop: int) -> tuple[WindowReuse | None, str]:
        """What windows ``hop`` apart can take from the window before
        (``streamtag.model.window_reuse``), or None and why not: only FP32 graphs on ONNX
        Runtime reuse work. Built once per hop: from the steps the file stores for the hop,
        checked against the file's whole-window graph; for another hop, exported from the
        module where torch is installed."""
        with self._reuse_lock:
            if hop not in self._reuse:
                found = self._find_reuse(hop)
                if found[0] is not None:
                    log.info("%s: windows %d frames apart take the carry of the window %d "
                             "before", self.path, hop, found[0].geometry.lag)
                self._reuse[hop] = found
            return self._reuse[hop]

    def _find_reuse(self, hop: int) -> tuple[WindowReuse | None, str]:
        if self.backend != "onnxruntime" or self.precision != "fp32":
            return None, "only FP32 graphs on ONNX Runtime reuse work across windows"
        if self.input_kind != "logmel":
            return None, "only log-mel models reuse work across windows"
        try:
            steps = self.stored.reuse_graphs(hop)
            if steps is not None:
                reference = session_runner(onnx_session(self.graph(), 1))
                return from_graphs(*steps, self.window, hop, self.frontend.n_mels,
                                   self._threads, reference)
        except ModelError as error:
            return None, str(error)
        if torch_installed():
            from streamtag.model.reuse_export import window_reuse

            return window_reuse(self.loaded, hop, self._threads)
        record = self.stored.manifest.window_reuse
        if not record:
            return None, "the model file stores no window-reuse steps"
        if "error" in record:
            return None, f"the model file stores no window-reuse steps: {record['error']}"
        hops = ", ".join(str(h) for h in self.stored.reuse_hops())
        return None, (f"the model file stores window reuse's steps for windows {hops} frames "
                      f"apart; those of {hop} are exported from its module with PyTorch "
                      f"({TORCH_EXTRA})")

    def same_input_as(self, other: InferenceModel) -> bool:
        """True when windows made for ``other`` are valid input for this model."""
        return (self.input_kind == other.input_kind and self.frontend == other.frontend
                and self.window == other.window)
