"""Running podman for the container tests: one command line (runc, ulimits within the hard
limits), a check for what the tests need, and the locally made base image.

Every call goes through `podman()`, which points CONTAINERS_CONF at a containers.conf of this
module's own (runtime runc, default ulimits), so containers podman makes by itself (`kube play`,
`healthcheck run`) get the same settings as `build`, `run` and `create`, which also get the
ulimits as flags. Nothing here pulls: no registry is assumed reachable.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BASE_SCRIPT = REPO / "deploy" / "podman" / "base.sh"
# The stand-in for python:3.11-slim-bookworm; STREAMTAG_BASE_IMAGE names another (a real
# python:3.11-slim-bookworm where a registry is reachable and already pulled).
BASE_IMAGE = "localhost/streamtag-base:bookworm"
# crun refuses hybrid cgroups on some kernels; podman's default ulimits exceed common hard limits.
RUNTIME = "runc"
# 16,384 open files as the systemd unit's LimitNOFILE (docs/operations.md): the daemon sizes
# its ZeroMQ connection caps from it
ULIMITS = ("nofile=16384:16384", "nproc=1000:1000")
TAKES_ULIMITS = {"build", "run", "create"}
BUILD_TIMEOUT_S = 3600


@functools.cache
def containers_conf() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="streamtag-podman-"))
    conf = folder / "containers.conf"
    ulimits = ", ".join(f'"{u}"' for u in ULIMITS)
    conf.write_text(f"[containers]\ndefault_ulimits = [{ulimits}]\n\n"
                    f'[engine]\nruntime = "{RUNTIME}"\n')
    return conf


def podman_env() -> dict[str, str]:
    return {**os.environ, "CONTAINERS_CONF": str(containers_conf())}


def podman_command(*args: str) -> list[str]:
    """podman's argv: runc, and the ulimits for the subcommands that make containers."""
    argv = ["podman", "--runtime", RUNTIME, *args]
    if args and args[0] in TAKES_ULIMITS:
        argv[4:4] = [flag for u in ULIMITS for flag in ("--ulimit", u)]
    return argv


def podman(*args: str, check: bool = True, timeout: float = 600,
           input: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run podman; output captured as text. check: a failure raises AssertionError with
    podman's stderr (the end of it), which is what a failing test should show."""
    argv = podman_command(*args)
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                            input=input, env=podman_env())
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} exited {result.returncode}:\n"
                             f"{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
    return result


def missing() -> list[str]:
    """What the container tests need and this machine lacks, with how to get it."""
    needs = []
    for program, package in (("podman", "podman"), ("runc", "runc"),
                             ("debootstrap", "debootstrap")):
        if shutil.which(program) is None and not Path(f"/usr/sbin/{program}").exists():
            needs.append(f"{program} (apt-get install {package})")
    if os.geteuid() != 0:
        needs.append("root (podman here builds and runs images as root)")
    return needs


def skip_unless_podman() -> None:
    needs = missing()
    if os.environ.get("STREAMTAG_BASE_IMAGE"):
        needs = [n for n in needs if not n.startswith("debootstrap")]
    if needs:
        pytest.skip("the container tests need " + ", ".join(needs))


@functools.cache
def base_image() -> str:
    """The base image's name, made by deploy/podman/base.sh once per test session (which
    does nothing when the image exists)."""
    skip_unless_podman()
    named = os.environ.get("STREAMTAG_BASE_IMAGE")
    if named:
        podman("image", "exists", named)
        return named
    result = subprocess.run(["sh", str(BASE_SCRIPT), BASE_IMAGE], capture_output=True,
                            text=True, timeout=BUILD_TIMEOUT_S, env=podman_env())
    if result.returncode != 0:
        raise AssertionError(f"{BASE_SCRIPT.name} failed:\n{result.stdout[-3000:]}\n"
                             f"{result.stderr[-5000:]}")
    return BASE_IMAGE


def host_find_links() -> list[Path]:
    """The folders of wheels this host's pip reads (PIP_FIND_LINKS), to mount into a build so
    pip finds there what it would otherwise download."""
    return [Path(p) for p in os.environ.get("PIP_FIND_LINKS", "").split()
            if Path(p).is_dir()]


def build(tag: str, *, dockerfile: Path, context: Path = REPO,
          build_args: dict[str, str] | None = None, wheels: Sequence[Path] = (),
          target: str | None = None, timeout: float = BUILD_TIMEOUT_S) -> str:
    """`podman build` on the host network (pip reaches the index through the host's proxy),
    Docker format (keeps HEALTHCHECK), with `wheels` folders mounted at /mnt/wheels/0,
    /mnt/wheels/1, ... and named to pip in PIP_EXTRA_ARGS as --find-links. Returns the tag."""
    args = ["build", "--network", "host", "--format", "docker", "--pull=never",
            "-f", str(dockerfile), "-t", tag]
    ignore = dockerfile.with_name(dockerfile.name + ".dockerignore")
    if ignore.is_file():  # Docker reads it by itself; podman 4.3 is told
        args += ["--ignorefile", str(ignore)]
    extra = []
    for i, folder in enumerate(wheels):
        args += ["--volume", f"{folder}:/mnt/wheels/{i}:ro"]
        extra += ["--find-links", f"/mnt/wheels/{i}"]
    build_args = dict(build_args or {})
    if extra:
        build_args["PIP_EXTRA_ARGS"] = " ".join([build_args.get("PIP_EXTRA_ARGS", ""), *extra]
                                                ).strip()
    for key, value in build_args.items():
        args += ["--build-arg", f"{key}={value}"]
    if target:
        args += ["--target", target]
    podman(*args, str(context), timeout=timeout)
    return tag


def image_size(image: str) -> int:
    """Bytes, as `podman image inspect` reports them."""
    return int(podman("image", "inspect", "--format", "{{.Size}}", image).stdout.strip())


def remove_containers(*names: str) -> None:
    if names:
        podman("rm", "-f", "-t", "5", *names, check=False, timeout=120)
