"""On a CUDA device: TorchScript serves, frozen and optimised, and scores as the CPU does.

Skipped where ``torch.cuda.is_available()`` is False (CI has no GPU). On a GPU box:
``python -m pytest -m "" tests/model/test_inference_cuda.py``. Real model files written by
``streamtag.model.modelfile``, the daemon end to end on a real MP3 over real ZeroMQ sockets, and
``streamtag tag`` as a user runs it; the CPU side is ONNX Runtime, what serves there.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from support.helpers import run_python

from streamtag import nets
from streamtag.catalog.shipped import default_model_path
from streamtag.errors import ModelError
from streamtag.model import modelfile
from streamtag.model.inference import InferenceModel
from tests.daemon.test_supervisor import streamtag_env
from tests.model.test_sessions import (
    HEAVY,
    N_TAGS,
    TAGGERS,
    _manifest,
    _published,
    published_events,
    published_scores,
    tagged_mean_scores,
)
from tests.nets.test_nets import SMALL

pytestmark = [pytest.mark.skipif(not torch.cuda.is_available(),
                                 reason="no CUDA device here (torch.cuda.is_available() is False)"),
              pytest.mark.usefixtures("own_cache")]

# what the forward on CUDA may differ from the CPU's by: the same bound as ONNX Runtime against
# TorchScript on the CPU (precision fp32 keeps TF32 off, streamtag.model.inference)
CUDA_TOLERANCE = 1e-4


def _windows(model: InferenceModel, batch: int) -> np.ndarray:
    """Log-mel-like windows (or waveforms) of the model's input shape."""
    rng = np.random.default_rng(batch)
    return rng.standard_normal(model.input_shape(batch)).astype(np.float32)


def _frozen_served(caplog) -> bool:
    return not any("serves the module as loaded" in r.getMessage() for r in caplog.records)


def test_auto_serves_the_default_model_with_frozen_torchscript_on_cuda(caplog):
    caplog.set_level(logging.WARNING, logger="streamtag")
    on_gpu = InferenceModel.load(default_model_path())  # device auto
    assert (on_gpu.device.type, on_gpu.backend, on_gpu.backend_note) == ("cuda", "torch", None)
    assert _frozen_served(caplog), caplog.text
    on_cpu = InferenceModel.load(default_model_path(), device="cpu", threads=1)
    assert on_cpu.backend == "onnxruntime"
    for batch in (1, 8, 64):
        windows = _windows(on_gpu, batch)
        np.testing.assert_allclose(on_gpu.forward(windows), on_cpu.forward(windows),
                                   atol=CUDA_TOLERANCE, rtol=0)


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in HEAVY else n
                                  for n in TAGGERS])
def test_every_zoo_tagger_serves_frozen_on_cuda_as_on_the_cpu(name, tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="streamtag")
    options, shape = SMALL[name]
    torch.manual_seed(0)
    path = tmp_path / f"{name}.pt"
    modelfile.save(nets.build(name, N_TAGS, **options), path, _manifest(shape, name))
    on_gpu = InferenceModel.load(path, device="cuda")
    assert (on_gpu.backend, on_gpu.backend_note) == ("torch", None)
    assert _frozen_served(caplog), caplog.text
    on_cpu = InferenceModel.load(path, device="cpu", threads=1)
    for batch in (1, 8):
        windows = _windows(on_gpu, batch)
        np.testing.assert_allclose(on_gpu.forward(windows), on_cpu.forward(windows),
                                   atol=CUDA_TOLERANCE, rtol=0, err_msg=f"batch {batch}")


def test_onnxruntime_on_cuda_is_refused_with_the_fix():
    with pytest.raises(ModelError, match="runs on the CPU only here; use device cpu, or "
                                         "backend torch"):
        InferenceModel.load(default_model_path(), device="cuda", backend="onnxruntime")


def test_the_daemon_on_cuda_publishes_what_it_publishes_on_the_cpu(song, tmp_path):
    default = default_model_path()
    on_gpu, status_gpu = _published(default, song, "auto", tmp_path, device="cuda")
    on_cpu, status_cpu = _published(default, song, "auto", tmp_path, device="cpu")
    assert status_gpu["model"]["device"].startswith("cuda"), status_gpu["model"]
    assert status_gpu["model"]["backend"] == "torch"
    assert status_cpu["model"]["backend"] == "onnxruntime"

    assert len(published_scores(on_cpu)) >= 10
    np.testing.assert_allclose(published_scores(on_gpu), published_scores(on_cpu),
                               atol=CUDA_TOLERANCE, rtol=0)
    assert published_events(on_gpu) == published_events(on_cpu) and published_events(on_cpu)


def test_tag_on_cuda_gives_the_cpu_s_scores(song):
    gpu = tagged_mean_scores(song, "--device", "cuda")
    cpu = tagged_mean_scores(song, "--device", "cpu")
    assert gpu.keys() == cpu.keys()
    for tag, score in gpu.items():
        assert abs(score - cpu[tag]) <= CUDA_TOLERANCE, tag


def test_a_worker_s_share_of_the_gpu_caps_its_allocator():
    # One of 4 workers: its allocator may hold a quarter of the device's memory less 5 % and
    # less 1 GiB (its CUDA context's room); a tensor past that fails in this process although
    # the GPU has room, and one under it is allocated.
    out = run_python(
        "import torch\n"
        "from streamtag.model.inference import share_the_gpu\n"
        "fraction = share_the_gpu('cuda', 0.25)\n"
        "total = torch.cuda.get_device_properties(0).total_memory\n"
        "under = torch.empty(int(total * fraction * 0.5) // 4, device='cuda')\n"
        "del under\n"
        "try:\n"
        "    torch.empty(int(total * fraction * 1.2) // 4, device='cuda')\n"
        "except torch.cuda.OutOfMemoryError:\n"
        "    print('capped', round(total * fraction), total)\n",
        timeout=120, env=streamtag_env())
    word, cap, total = out.split()
    assert word == "capped"
    assert abs(int(cap) - (int(int(total) * 0.25 * 0.95) - (1 << 30))) <= 1


def test_a_batch_the_gpu_cannot_hold_runs_in_halves_with_the_same_scores():
    # The allocator capped at 3 times what a batch of 8 windows took: a batch of 256 does not
    # fit, a few windows do: the forward runs in halves and scores every window as the CPU does.
    out = run_python(
        "import logging, sys\n"
        "import numpy as np, torch\n"
        "from streamtag.catalog.shipped import default_model_path\n"
        "from streamtag.model.inference import InferenceModel\n"
        "logging.basicConfig(stream=sys.stdout, level=logging.WARNING)\n"
        "gpu = InferenceModel.load(default_model_path(), device='cuda')\n"
        "cpu = InferenceModel.load(default_model_path(), device='cpu', threads=1)\n"
        "windows = np.random.default_rng(0).standard_normal(gpu.input_shape(256))"
        ".astype(np.float32)\n"
        "torch.cuda.synchronize(); torch.cuda.empty_cache()\n"
        "used = torch.cuda.memory_reserved()\n"
        "torch.cuda.reset_peak_memory_stats()\n"
        "gpu.forward(windows[:8])\n"
        "eight = torch.cuda.max_memory_reserved() - used\n"
        "torch.cuda.empty_cache()\n"
        "total = torch.cuda.get_device_properties(0).total_memory\n"
        "torch.cuda.set_per_process_memory_fraction((used + 3 * eight) / total)\n"
        "probs = gpu.forward(windows)\n"
        "print(float(np.abs(probs - cpu.forward(windows)).max()))\n",
        timeout=180, env=streamtag_env())
    assert "it ran in halves" in out
    assert float(out.split()[-1]) <= CUDA_TOLERANCE
