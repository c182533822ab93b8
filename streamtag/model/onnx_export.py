"""A model file's module as an ONNX graph: the export, its check against the module, and the
cache of graphs exported for files that store none.

The graph is what ONNX Runtime serves on the CPU (docs/model-file.md, "The ONNX graph"): the
module's probabilities for a batch of inputs, the batch axis dynamic, within ``ONNX_TOLERANCE``
of the TorchScript module. ``modelfile`` stores it in the file it writes; a file of format 1.0
has none, and the graph exported for it at load is kept in the user cache folder under its
weights hash.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from streamtag.errors import ModelError, first_lines
from streamtag.fsutil import atomic_path
from streamtag.model.manifest import ONNX_FILE
from streamtag.model.sessions import onnx_session

log = logging.getLogger(__name__)

__all__ = ["ONNX_OPSET", "ONNX_TOLERANCE", "cached_export", "export_onnx", "onnx_difference"]

ONNX_OPSET = 17
ONNX_TOLERANCE = 1e-4  # ONNX Runtime's probabilities against the TorchScript module's


def export_onnx(module: torch.jit.ScriptModule,
                example: Tensor) -> tuple[bytes, dict[str, Any]]:
    """The ONNX graph of a model file's module (input ``(batch, ...)`` → probabilities, the
    batch axis dynamic) and its manifest record. The graph is checked with ONNX Runtime against
    the module on ``example`` and on its first row: within ``ONNX_TOLERANCE``. Raises
    ``ModelError`` saying why it cannot be exported or differs.

    The exporter is torch's TorchScript-based one (``dynamo=False``): it takes the scripted
    module itself, so the graph is the file's own, and it is the faster by far, where the
    dynamo-based exporter needs the eager network and the extra package onnxscript
    (docs/model-file.md, "The ONNX graph"). torch deprecates it; its warnings are silenced
    here."""
    module.eval()
    buffer = io.BytesIO()
    started = time.perf_counter()
    try:
        # The exporter prints the graph on failure and warns about its own deprecation.
        with (warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()),
              contextlib.redirect_stderr(io.StringIO())):
            warnings.simplefilter("ignore")
            torch.onnx.export(module, (example,), buffer, opset_version=ONNX_OPSET,
                              dynamo=False, input_names=["input"],
                              output_names=["probabilities"],
                              dynamic_axes={"input": {0: "batch"},
                                            "probabilities": {0: "batch"}})
    except Exception as error:  # the exporter raises many types; each means "cannot export"
        reason = first_lines(error, 1).split("  [Caused by")[0]  # drop the graph dump
        raise ModelError(f"torch.onnx.export cannot export the module: {reason}") from None
    finally:
        module.eval()  # the exporter restores the mode it found, which may be training
    seconds = time.perf_counter() - started
    graph = buffer.getvalue()
    difference = onnx_difference(graph, module, example)
    if not difference <= ONNX_TOLERANCE:  # NaN fails too
        raise ModelError(f"the exported ONNX graph's probabilities differ from the TorchScript "
                         f"module's by {difference:.3g} (allowed {ONNX_TOLERANCE:g})")
    record = {"file": ONNX_FILE, "opset": ONNX_OPSET, "sha256": hashlib.sha256(graph).hexdigest(),
              "exporter": f"torch {torch.__version__.split('+')[0]} torch.onnx.export "
                          "(TorchScript-based)",
              "max_difference": float(difference), "export_s": round(seconds, 3)}
    return graph, record


def onnx_difference(graph: bytes, module: torch.jit.ScriptModule, example: Tensor) -> float:
    """Largest absolute difference between ONNX Runtime's output for ``graph`` and the module's,
    on ``example`` and on its first row alone (a batch of one)."""
    session = onnx_session(graph, threads=1)
    try:
        difference = 0.0
        for batch in (example, example[:1]):
            with torch.no_grad():
                expected = module(batch).double().numpy()
            got = session.run(None, {"input": batch.numpy()})[0]
            if got.shape != expected.shape:
                raise ModelError(f"the ONNX graph gives shape {got.shape} for a batch of "
                                 f"{len(batch)}, the module {expected.shape}")
            difference = max(difference, float(np.abs(got - expected).max()))
    except ModelError:
        raise
    except Exception as error:  # onnxruntime raises its own exception types
        raise ModelError(f"ONNX Runtime cannot run the exported graph: "
                         f"{first_lines(error, 1)}") from None
    return difference


def _cache_folder() -> Path:
    import platformdirs

    return Path(platformdirs.user_cache_dir("streamtag")) / "onnx"


def cached_export(weights_sha256: str, export: Callable[[], bytes], source: Any) -> bytes:
    """The graph kept in the user cache folder under ``weights_sha256``; where there is none,
    ``export()``'s, kept there for the next load. ``source`` (the model file) names it in the
    warning that a cache which cannot be written gets."""
    cached = _cache_folder() / f"{weights_sha256}.onnx"
    try:
        return cached.read_bytes()
    except OSError:
        pass
    graph = export()
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(cached) as temporary:
            temporary.write_bytes(graph)
    except OSError as error:  # a read-only cache costs an export at every load, nothing more
        log.warning("cannot cache the ONNX graph of %s in %s: %s", source, cached.parent, error)
    return graph
