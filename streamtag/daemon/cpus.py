"""How many CPUs this process may use, and how many worker processes ``--processes auto`` runs.

The core count of the machine says little in a container or under ``taskset``: the CPUs the
process may run on are its affinity mask (``os.sched_getaffinity``), and a cgroup v2 quota
(``cpu.max``: QUOTA PERIOD, or ``max``) caps the time it may take on them, in any cgroup from
its own up to the root. What one worker carries: its per-window work is a GIL-bound part
(sources, scoring, publishing) and the forward, which releases the GIL; together they keep
1.15 (musicnn-msd) to 2.2 (the default model) cores busy, neither part alone a whole second
core. Measured, one worker per usable CPU carried more streams than one per two CPUs for both
models on 2 and on 16 cores (docs/operations.md, "Worker processes on one machine"), so a
worker is counted as one core on the CPU (its inference threads where ``[engine]`` gives it
more). Serving on a GPU it stays at 2 cores a worker, as measured there. The memory the
process may use caps the count too: the available memory and a cgroup v2 ``memory.max``, at
``WORKER_MEMORY`` bytes a worker.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path

WORKER_CORES = 1  # serving on the CPU: one worker per usable CPU
GPU_WORKER_CORES = 2  # serving on a GPU: as measured with 8 workers on 16 cores
# A worker's resident memory with its model loaded: measured 155 MB for the default model and
# 330 MB for musicnn-msd (ONNX Runtime, 4 streams a worker), plus about 1 MB a stream
# (docs/benchmarks/, "Memory per stream"): musicnn-msd's with room for 150 streams.
WORKER_MEMORY = 512 * 2**20
PROC_MEMINFO = Path("/proc/meminfo")
CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")


def _cgroup_folder(root: Path, membership: Path) -> Path | None:
    """This process's cgroup v2 folder below ``root``, or None (no cgroup v2, unreadable)."""
    try:
        lines = membership.read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    # cgroup v2 is the line "0::/PATH"; v1 lines name their controllers.
    path = next((line[3:] for line in lines if line.startswith("0::")), None)
    if path is None:
        return None
    return (root / path.lstrip("/")).resolve()


def _smallest_along(root: Path, membership: Path, name: str,
                    read: Callable[[Path], float | None]) -> float | None:
    """The smallest value ``read`` finds in the file ``name`` of this process's cgroup v2
    folder and of every parent up to ``root``; None where there is none."""
    folder = _cgroup_folder(root, membership)
    if folder is None:
        return None
    found = []
    while True:
        value = read(folder / name)
        if value is not None:
            found.append(value)
        if folder == root.resolve() or root.resolve() not in folder.parents:
            break
        folder = folder.parent
    return min(found) if found else None


def cgroup_quota(root: Path = CGROUP_ROOT, membership: Path = PROC_CGROUP) -> float | None:
    """The CPUs' worth of time the cgroup v2 ``cpu.max`` quotas allow this process (the
    smallest along its cgroup and every parent), or None when there is no quota (``max``, no
    cgroup v2, files that cannot be read)."""
    return _smallest_along(root, membership, "cpu.max", _read_cpu_max)


def _read_cpu_max(path: Path) -> float | None:
    try:
        fields = path.read_text(encoding="utf-8").split()
    except OSError:
        return None
    if len(fields) != 2 or fields[0] == "max":
        return None
    try:
        quota, period = int(fields[0]), int(fields[1])
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def usable_cpus(root: Path = CGROUP_ROOT, membership: Path = PROC_CGROUP) -> float:
    """The CPUs this process may use: its affinity mask, capped by a cgroup v2 quota."""
    cpus: float = len(os.sched_getaffinity(0))
    quota = cgroup_quota(root, membership)
    return min(cpus, quota) if quota is not None else cpus


def _read_memory_max(path: Path) -> int | None:
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() and int(text) > 0 else None


def cgroup_memory_limit(root: Path = CGROUP_ROOT, membership: Path = PROC_CGROUP) -> int | None:
    """The smallest cgroup v2 ``memory.max`` along this process's cgroup and its parents, in
    bytes, or None (``max`` everywhere, no cgroup v2, files that cannot be read)."""
    limit = _smallest_along(root, membership, "memory.max", _read_memory_max)
    return None if limit is None else int(limit)


def available_memory(meminfo: Path = PROC_MEMINFO) -> int | None:
    """``MemAvailable`` from /proc/meminfo in bytes, or None where it cannot be read."""
    try:
        for line in meminfo.read_text(encoding="utf-8").splitlines():
            name, _, value = line.partition(":")
            if name == "MemAvailable":
                fields = value.split()
                return int(fields[0]) * 1024 if fields and fields[0].isdigit() else None
    except OSError:
        return None
    return None


def usable_memory(root: Path = CGROUP_ROOT, membership: Path = PROC_CGROUP,
                  meminfo: Path = PROC_MEMINFO) -> int | None:
    """The memory the workers may take: the machine's available memory, capped by a cgroup v2
    ``memory.max``; None when neither can be read."""
    known = [m for m in (available_memory(meminfo), cgroup_memory_limit(root, membership))
             if m is not None]
    return min(known) if known else None


def worker_cores(workers: int, threads: int, gpu: bool = False) -> int:
    """The cores one worker process is counted for, with ``[engine] workers`` × ``threads``
    inference threads: ``WORKER_CORES`` (``GPU_WORKER_CORES`` serving on a GPU), or its
    inference threads where there are more."""
    return max(GPU_WORKER_CORES if gpu else WORKER_CORES, workers * threads)


def auto_processes(cpus: float, per_worker: int, memory: int | None = None) -> int:
    """Worker processes for ``cpus`` usable CPUs, ``per_worker`` cores each, and no more than
    ``memory`` bytes hold at ``WORKER_MEMORY`` each; at least one."""
    count = math.floor(cpus / per_worker + 1e-9)
    if memory is not None:
        count = min(count, memory // WORKER_MEMORY)
    return max(1, count)
