"""Test-wide settings."""

import os

# Two shared cores: torch's default of one thread per core oversubscribes them when several
# processes run, which makes small forward passes tens of times slower. One thread per test
# process keeps the suite's time predictable. (Benchmarks set their own thread counts.)
os.environ.setdefault("OMP_NUM_THREADS", "1")

try:
    import torch
except ImportError:  # pragma: no cover - torch is a dependency
    torch = None
if torch is not None:
    torch.set_num_threads(1)
