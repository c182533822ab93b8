"""Installed models baked into the image: deploy/Dockerfile's models stage, which has no torch,
builds musicnn's checkpoints into model files holding the ONNX graph (``streamtag models
install`` without torch), and the CPU image, which has no torch either, serves the file with
ONNX Runtime."""

from __future__ import annotations

import json
import time

import pytest

from streamtag.audio.files import write_audio
from streamtag.audio.testsignals import music_like
from tests.container.conftest import DOCKERFILE, readable, record_figure
from tests.container.podman import build, host_find_links, image_size, podman

pytestmark = [pytest.mark.container, pytest.mark.slow]

MODELS_IMAGE = "localhost/streamtag:test-models"
MB = 1_000_000
READ_ONLY = ("--read-only", "--tmpfs", "/tmp:rw,mode=1777,size=256m")
BAKED = "/opt/streamtag/models/musicnn-msd.pt"
# Whether the baked file holds its TorchScript module
TORCHSCRIPT = ("from streamtag.model.manifest import read_manifest; "
               f"print(read_manifest('{BAKED}').torchscript)")


def test_a_baked_in_musicnn_model_serves_without_torch(base, cpu_image, shared_dir):
    started = time.monotonic()
    build(MODELS_IMAGE, dockerfile=DOCKERFILE, wheels=host_find_links(),
          build_args={"PYTHON_IMAGE": base, "MODELS": "musicnn-msd"})
    seconds = time.monotonic() - started
    song = shared_dir / "baked.flac"
    write_audio(song, music_like(12.0, 44100, seed=9), 44100)
    readable(song)
    try:
        torch = podman("run", "--rm", MODELS_IMAGE, "python", "-c",
                       "import importlib.util; print(importlib.util.find_spec('torch'))")
        assert torch.stdout.strip() == "None"
        module = podman("run", "--rm", MODELS_IMAGE, "python", "-c", TORCHSCRIPT)
        assert module.stdout.strip() == "False"  # built without torch: the ONNX graph only
        result = podman("run", "--rm", *READ_ONLY, "--network", "none",
                        "--volume", f"{shared_dir}:/data:ro", MODELS_IMAGE, "streamtag", "tag",
                        "--json", "--model", BAKED,
                        "/data/baked.flac", check=False)
        assert result.returncode == 0, result.stderr[-3000:]
        [report] = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
        assert report["error"] is None
        assert {"rock", "jazz", "chillout", "Mellow"} <= set(report["mean_scores"])
        record_figure(f"image with musicnn-msd baked in: built in {seconds:.0f} s, "
                      f"{(image_size(MODELS_IMAGE) - image_size(cpu_image)) / MB:.0f} MB above "
                      "the CPU image")
    finally:
        podman("rmi", MODELS_IMAGE, check=False)
