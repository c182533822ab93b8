"""Worker processes sharing one GPU: each allocator's cap leaves room for the CUDA context
beside it, and a batch that finds the GPU full runs in halves instead of being lost.

The arithmetic and the halving run everywhere; the cap set on a real GPU is in
tests/model/test_inference_cuda.py (skipped without one).
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from streamtag.errors import ModelError
from streamtag.model.inference import allocator_cap, halving_when_out_of_memory

GIB = 1 << 30


def test_each_worker_s_allocator_leaves_room_for_its_cuda_context():
    # 16 workers on an 80 GB H100 (79.18 GiB as torch counts it): each allocator may hold its
    # sixteenth less 5 % and less 1 GiB for what the process holds outside it (its CUDA
    # context and cuDNN's workspaces, 0.51 GiB measured); 16 workers then leave the GPU room
    # (0.9 / 16 of it each left 0.5 GiB a context and the forwards ran out of memory).
    total = int(79.18 * GIB)
    cap = allocator_cap(1 / 16, total)
    assert cap == int(total / 16 * 0.95) - GIB
    assert 16 * (cap + 0.51 * GIB) < 0.9 * total
    assert allocator_cap(1.0, total) == int(total * 0.95) - GIB  # one worker
    assert allocator_cap(1 / 8, int(139.8 * GIB)) > 15 * GIB  # 8 on an H200
    # So many workers that each would have under half a GiB: refused, saying what to do
    with pytest.raises(ModelError, match=r"16 worker processes do not fit on one GPU of 16\.0 "
                                         r"GiB: each would have 0\.00 GiB for its model .*run "
                                         r"fewer --processes, or serve on the CPU"):
        allocator_cap(1 / 16, 16 * GIB)


def _sums(windows: np.ndarray) -> np.ndarray:
    return windows.reshape(len(windows), -1).sum(axis=1, keepdims=True)


def test_a_batch_the_gpu_has_no_memory_for_runs_in_halves(caplog):
    # A stand-in for the GPU forward: torch's out-of-memory error (or the RuntimeError the
    # TorchScript interpreter wraps it in) for batches over 3 windows, as a full GPU gives it
    sizes, released = [], []

    def forward(windows: np.ndarray, wrapped: bool = False) -> np.ndarray:
        sizes.append(len(windows))
        if len(windows) > 3:
            if wrapped:
                raise RuntimeError("The following operation failed in the TorchScript "
                                   "interpreter.\nRuntimeError: CUDA out of memory. Tried to "
                                   "allocate 550.00 MiB.")
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
        return _sums(windows)

    windows = np.random.default_rng(0).standard_normal((10, 2, 3)).astype(np.float32)
    caplog.set_level(logging.WARNING, logger="streamtag")
    for wrapped in (False, True):
        sizes.clear()
        run = halving_when_out_of_memory(lambda w, wrapped=wrapped: forward(w, wrapped),
                                         lambda: released.append(True))
        np.testing.assert_array_equal(run(windows), _sums(windows))  # every window, in order
        assert sizes == [10, 5, 2, 3, 5, 2, 3]
    assert len(released) == 6  # the cached blocks given back before each retry
    assert "the GPU had no memory for a batch of 10 windows: it ran in halves" in caplog.text
    # One window that does not fit, and any other error, raise as before
    one = halving_when_out_of_memory(lambda w: forward(np.repeat(w, 4, axis=0)),
                                     lambda: None)
    with pytest.raises(torch.cuda.OutOfMemoryError):
        one(windows[:1])

    def broken(windows: np.ndarray) -> np.ndarray:
        raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        halving_when_out_of_memory(broken, lambda: released.append(True))(windows)
    assert len(released) == 6
