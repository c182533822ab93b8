"""The [torch] variant of deploy/Dockerfile builds and imports torch, and gives the models
baked into it their TorchScript module (CUDA serves it). The GPU image is this variant with
PyPI's CUDA torch (GBs); here TORCH_SPEC names the CPU torch wheel that pip finds on this
machine, which proves the same Dockerfile path without the CUDA download."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from tests.container.conftest import DOCKERFILE, record_figure
from tests.container.podman import build, host_find_links, image_size, podman
from tests.container.test_baked_models import TORCHSCRIPT

pytestmark = [pytest.mark.container, pytest.mark.slow]

TORCH = "torch==2.13.0"
TORCH_IMAGE = "localhost/streamtag:test-torch"
MB = 1_000_000


@pytest.fixture(scope="module")
def torch_wheel(tmp_path_factory):
    """The torch wheel pip would install here, as a file (from the host's wheel folders or
    its index): the build then installs exactly that one."""
    folder = tmp_path_factory.mktemp("torch-wheel")
    folder.chmod(0o755)
    result = subprocess.run([sys.executable, "-m", "pip", "download", TORCH, "--no-deps",
                             "--only-binary", ":all:", "-d", str(folder)],
                            capture_output=True, text=True, timeout=1800)
    if result.returncode != 0:
        pytest.skip(f"pip download {TORCH} failed: {result.stderr[-500:]}")
    [wheel] = folder.glob("torch-*.whl")
    if "+cpu" not in wheel.name:
        pytest.skip(f"{wheel.name} is not a CPU build; this test does not download CUDA torch")
    return wheel


def test_the_torch_variant_imports_torch_and_completes_baked_models(base, cpu_image,
                                                                    torch_wheel):
    started = time.monotonic()
    build(TORCH_IMAGE, dockerfile=DOCKERFILE, wheels=[torch_wheel.parent, *host_find_links()],
          build_args={"PYTHON_IMAGE": base,
                      "TORCH_SPEC": f"/mnt/wheels/0/{torch_wheel.name}",
                      "MODELS": "musicnn-msd"})
    seconds = time.monotonic() - started
    try:
        out = podman("run", "--rm", "--read-only", "--tmpfs", "/tmp:rw,mode=1777",
                     TORCH_IMAGE, "python", "-c",
                     "import torch, streamtag.model.inference; print(torch.__version__)")
        assert out.stdout.strip().startswith("2.13.0"), out.stdout
        module = podman("run", "--rm", TORCH_IMAGE, "python", "-c", TORCHSCRIPT)
        assert module.stdout.strip() == "True"  # `models complete` ran on the baked file
        record_figure(f"[torch] variant ({torch_wheel.name}) with musicnn-msd baked in: "
                      f"built in {seconds:.0f} s, "
                      f"{image_size(TORCH_IMAGE) / MB:.0f} MB, "
                      f"{(image_size(TORCH_IMAGE) - image_size(base)) / MB:.0f} MB above base, "
                      f"{(image_size(TORCH_IMAGE) - image_size(cpu_image)) / MB:.0f} MB above "
                      "the CPU image")
    finally:
        podman("rmi", TORCH_IMAGE, check=False)
