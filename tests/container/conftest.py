"""Session fixtures of the container tests: the locally made base image, the CPU image built
from this working tree on it (once per session; podman's layer cache makes a rebuild of an
unchanged tree quick), a folder the containers' user can read, and the figures the tests
measured, printed at the end of the run."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import pytest

from tests.container.podman import (
    REPO,
    base_image,
    build,
    host_find_links,
    podman,
    skip_unless_podman,
)

DOCKERFILE = REPO / "deploy" / "Dockerfile"
CPU_IMAGE = "localhost/streamtag:test-cpu"
FIGURES: list[str] = []


def record_figure(line: str) -> None:
    """A measured figure (a build time, an image size) for the end-of-run summary."""
    FIGURES.append(line)
    print(line)


def pytest_terminal_summary(terminalreporter):
    if FIGURES:
        terminalreporter.section("container figures")
        for line in FIGURES:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def base() -> str:
    skip_unless_podman()
    started = time.monotonic()
    name = base_image()
    record_figure(f"base image {name}: ready in {time.monotonic() - started:.0f} s")
    return name


@pytest.fixture(scope="session")
def cpu_image(base) -> str:
    """deploy/Dockerfile with its defaults (no torch, no extra models) on the base image."""
    started = time.monotonic()
    build(CPU_IMAGE, dockerfile=DOCKERFILE, build_args={"PYTHON_IMAGE": base},
          wheels=host_find_links())
    record_figure(f"CPU image {CPU_IMAGE}: built in {time.monotonic() - started:.0f} s")
    return CPU_IMAGE


@pytest.fixture(scope="session")
def shared_dir():
    """A folder that the image's user (uid 10001) can read, for files mounted into
    containers; pytest's own temporary folders are root's alone."""
    folder = Path(tempfile.mkdtemp(prefix="streamtag-container-"))
    folder.chmod(0o755)
    yield folder
    # Containers may have written files as their user; root removes them all the same.
    for path in sorted(folder.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        path.rmdir() if path.is_dir() and not path.is_symlink() else path.unlink()
    folder.rmdir()


@pytest.fixture
def containers():
    """Names of containers a test starts; removed (podman rm -f) when it ends."""
    names: list[str] = []
    yield names
    if names:
        podman("rm", "-f", "-t", "5", *names, check=False, timeout=120)


def readable(path: Path) -> Path:
    os.chmod(path, 0o644)
    return path
