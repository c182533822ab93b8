"""How many CPUs this process may use, and how many worker processes ``--processes auto`` runs.

The core count of the machine says little in a container or under ``taskset``: the CPUs the
process may run on are its affinity mask (``os.sched_getaffinity``), and a cgroup v2 quota
(``cpu.max``: QUOTA PERIOD, or ``max``) caps the time it may take on them, in any cgroup from
its own up to the root. What one worker carries: its per-window work runs under one GIL, about
1.8 cores' worth (docs/operations.md, "Workers, threads and decoders"), so a worker is counted
as 2 cores, or its inference threads plus one where ``[engine]`` gives it more.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

WORKER_CORES = 2  # one process: its GIL-bound work (~1.8 cores) rounded up
CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")


def cgroup_quota(root: Path = CGROUP_ROOT, membership: Path = PROC_CGROUP) -> float | None:
    """The CPUs' worth of time the cgroup v2 ``cpu.max`` quotas allow this process (the
    smallest along its cgroup and every parent), or None when there is no quota (``max``, no
    cgroup v2, files that cannot be read)."""
    try:
        lines = membership.read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    # cgroup v2 is the line "0::/PATH"; v1 lines name their controllers.
    path = next((line[3:] for line in lines if line.startswith("0::")), None)
    if path is None:
        return None
    folder = (root / path.lstrip("/")).resolve()
    quotas = []
    while True:
        quota = _read_cpu_max(folder / "cpu.max")
        if quota is not None:
            quotas.append(quota)
        if folder == root.resolve() or root.resolve() not in folder.parents:
            break
        folder = folder.parent
    return min(quotas) if quotas else None


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


def worker_cores(workers: int, threads: int) -> int:
    """The cores one worker process carries, with ``[engine] workers`` × ``threads``
    inference threads: ``WORKER_CORES``, or those threads plus one for its sources."""
    return max(WORKER_CORES, workers * threads + 1)


def auto_processes(cpus: float, per_worker: int) -> int:
    """Worker processes for ``cpus`` usable CPUs, ``per_worker`` cores each; at least one."""
    return max(1, math.floor(cpus / per_worker + 1e-9))
