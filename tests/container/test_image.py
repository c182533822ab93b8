"""The CPU image of deploy/Dockerfile, built on the local base: what it holds (no torch, the
default model inside the package, psycopg), what it costs above its base, who it runs as, and
`streamtag tag` of a mounted file on a read-only root with only a tmpfs to write to."""

from __future__ import annotations

import json

import pytest

from streamtag.audio.files import write_audio
from streamtag.audio.testsignals import music_like
from tests.container.conftest import readable, record_figure
from tests.container.podman import image_size, podman

pytestmark = pytest.mark.container

MB = 1_000_000
# What the CPU image may add to its base (docs/deploy.md): streamtag, ONNX Runtime, numpy,
# scikit-learn, matplotlib, PyAV's FFmpeg, ... but no torch.
MAX_ABOVE_BASE_BYTES = 400 * MB
READ_ONLY = ("--read-only", "--tmpfs", "/tmp:rw,mode=1777,size=256m")

PACKAGE_SIZES = """
import importlib.metadata as md, json, os
sizes = {}
for dist in md.distributions():
    total = 0
    for f in dist.files or ():
        p = dist.locate_file(f)
        if os.path.isfile(p):
            total += os.path.getsize(p)
    sizes[dist.metadata["Name"]] = total
print(json.dumps(sizes))
"""


def python_in(image: str, code: str, *options: str) -> str:
    return podman("run", "--rm", *options, image, "python", "-c", code).stdout


def package_sizes(image: str) -> dict[str, int]:
    return json.loads(python_in(image, PACKAGE_SIZES))


def test_the_cpu_image_has_no_torch_and_records_its_size(cpu_image, base):
    above = image_size(cpu_image) - image_size(base)
    sizes = package_sizes(cpu_image)
    largest = sorted(sizes.items(), key=lambda kv: -kv[1])[:12]
    record_figure(f"CPU image: {image_size(cpu_image) / MB:.0f} MB, {above / MB:.0f} MB above "
                  f"its base ({image_size(base) / MB:.0f} MB); largest packages: "
                  + ", ".join(f"{name} {size / MB:.0f} MB" for name, size in largest))
    assert "torch" not in {name.lower() for name in sizes}
    found = python_in(cpu_image, "import importlib.util as u; "
                      "print(u.find_spec('torch') is None)").strip()
    assert found == "True", "torch is importable in the CPU image"
    assert above <= MAX_ABOVE_BASE_BYTES, (
        f"{above / MB:.0f} MB above the base; by package: {largest}")


def test_the_image_runs_as_uid_10001_with_the_default_model_and_the_recorder_driver(cpu_image):
    out = python_in(cpu_image, "import os, psycopg; "
                    "from streamtag.catalog.shipped import default_model_path as d; "
                    "print(os.getuid(), os.getgid(), d())").split()
    assert out[:2] == ["10001", "10001"]
    assert "/site-packages/streamtag/models/default/model.pt" in out[2]
    [image] = json.loads(podman("image", "inspect", cpu_image).stdout)
    assert image["Config"]["User"] == "10001:10001"
    assert image["Healthcheck"]["Test"] == ["CMD", "streamtag-healthcheck"]
    env = dict(e.split("=", 1) for e in image["Config"]["Env"])
    assert env["STREAMTAG_HOME"].startswith("/tmp/")


def test_help_and_models_list_on_a_read_only_root(cpu_image):
    assert "usage: streamtag" in podman("run", "--rm", *READ_ONLY, cpu_image).stdout
    listed = podman("run", "--rm", *READ_ONLY, cpu_image, "streamtag", "models", "list")
    assert listed.returncode == 0


def test_tag_a_mounted_file_on_a_read_only_root(cpu_image, shared_dir):
    song = shared_dir / "song.flac"
    write_audio(song, music_like(12.0, 44100, seed=7), 44100)
    readable(song)
    result = podman("run", "--rm", *READ_ONLY, "--network", "none",
                    "--volume", f"{shared_dir}:/data:ro", cpu_image,
                    "streamtag", "tag", "--json", "/data/song.flac", check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    [report] = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    text = json.dumps(report)
    assert "/data/song.flac" in text
    # The shipped model's tag names appear in the segments and the summary.
    names = python_in(cpu_image, "from streamtag.catalog.shipped import default_model_path; "
                      "from streamtag.model.manifest import read_manifest; "
                      "print('\\n'.join(read_manifest(default_model_path()).tags))")
    assert any(name in text for name in names.split()), text[:2000]


def test_the_healthcheck_of_a_one_shot_command_is_healthy(cpu_image, containers):
    name = "streamtag-test-oneshot"
    containers.append(name)
    podman("run", "-d", "--name", name, *READ_ONLY, cpu_image, "sleep", "120")
    assert podman("healthcheck", "run", name, check=False).returncode == 0
