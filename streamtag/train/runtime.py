"""How a run runs, whatever it trains: its log, progress bars, device, determinism, the
checkpoint write, the random states a checkpoint keeps, and its place in a ``torchrun`` job.

Used by the tagger's training run (``loop``) and the VQ-VAE pre-training (``pretrain``) alike;
imports nothing else of the trainer.

Distributed data-parallel training: under ``torchrun --nproc_per_node N`` (``WORLD_SIZE`` > 1 in
the environment) every process is one ``Distributed`` rank; ``start_process_group`` joins them
(gloo on the CPU, NCCL on CUDA).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from streamtag.errors import ConfigError
from streamtag.fsutil import atomic_path

__all__ = [
    "RECIPE_FILE",
    "Distributed",
    "RunLog",
    "determinism",
    "distributed_from_env",
    "numpy_state",
    "resolve_device",
    "save_atomic",
    "set_numpy_state",
    "start_process_group",
]

RECIPE_FILE = "recipe.toml"  # every run folder's resolved recipe


# --------------------------------------------------------------------------------------------
# Logging and progress


class RunLog:
    """One line per event to stdout and, once the run has a folder, to its log file."""

    def __init__(self, path: Path | None = None, echo: bool = True) -> None:
        self.path = path
        self.echo = echo

    def __call__(self, message: str) -> None:
        if self.echo:
            print(message, flush=True)
        if self.path is not None:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(message + "\n")


@contextlib.contextmanager
def no_folder_left_if_refused(run_dir: str | os.PathLike, log_file: str) -> Iterator[None]:
    """A run folder the block makes is removed again when the block is refused (ConfigError or
    ModelError: no data there, a model that cannot take the window) while it holds nothing but
    its log's first lines. A folder that was there before stays, with the log of the attempt."""
    from streamtag.errors import ModelError

    folder = Path(run_dir).absolute()
    made = [f for f in (folder, *folder.parents) if not f.exists()]  # deepest first
    try:
        yield
    except (ConfigError, ModelError):
        # (Under torchrun another process may remove it first: the error raised is the run's.)
        with contextlib.suppress(OSError):
            if made and {p.name for p in folder.iterdir()} <= {log_file}:
                (folder / log_file).unlink(missing_ok=True)
                for created in made:  # the folder, then the parents made for it (runs/)
                    created.rmdir()
        raise


# --------------------------------------------------------------------------------------------
# Device, determinism, checkpoint files and random states


def resolve_device(name: str) -> torch.device:
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ConfigError("train.device is 'cuda' but no CUDA device is available; use "
                              "'auto' or 'cpu'")
        return torch.device("cuda")
    return torch.device("cpu")


@contextlib.contextmanager
def determinism(enabled: bool, device: torch.device) -> Iterator[None]:
    """Deterministic algorithms for the run, restoring the process's settings afterwards."""
    previous = (torch.are_deterministic_algorithms_enabled(),
                torch.is_deterministic_algorithms_warn_only_enabled(),
                torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    if enabled:
        # An op without a deterministic implementation (some CUDA backward passes) warns
        # instead of stopping the run; every op the CPU path uses is deterministic.
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cudnn.benchmark = device.type == "cuda"
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = previous[2:]


def save_atomic(obj: Any, path: Path) -> None:
    """``torch.save`` written whole or not at all: a crash never leaves half a checkpoint."""
    with atomic_path(path) as temporary:
        torch.save(obj, temporary)


# The legacy global numpy generator is saved too: the trainer draws from its own generators, but
# code it calls (a model, a library) may use the global one.
def numpy_state() -> list[Any]:
    """The global numpy generator's state as plain values (what ``torch.load`` with
    ``weights_only`` reads back)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002
    return [name, keys.tolist(), int(pos), int(has_gauss), float(cached)]


def set_numpy_state(state: Sequence[Any]) -> None:
    name, keys, pos, has_gauss, cached = state
    np.random.set_state(  # noqa: NPY002
        (name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))


# --------------------------------------------------------------------------------------------
# Distributed training


@dataclasses.dataclass(frozen=True)
class Distributed:
    """This process's place in a ``torchrun`` job (one process, rank 0 of 1, without one)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.active:
            torch.distributed.barrier()

    def sum(self, *values: float) -> list[float]:
        """Each value summed over the processes (the values themselves with one process)."""
        if not self.active:
            return list(values)
        sums = torch.tensor(values, dtype=torch.float64)
        torch.distributed.all_reduce(sums)
        return [float(v) for v in sums]


def distributed_from_env() -> Distributed:
    """Reads ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` (set by ``torchrun``)."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError as error:
        raise ConfigError(f"WORLD_SIZE, RANK and LOCAL_RANK must be whole numbers: {error}") \
            from None
    if world < 1 or not 0 <= rank < world:
        raise ConfigError(f"RANK {rank} is not within WORLD_SIZE {world}")
    return Distributed(rank=rank, world=world, local_rank=local_rank)


def start_process_group(dist: Distributed, device: torch.device) -> None:
    if not dist.active or torch.distributed.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    torch.distributed.init_process_group(backend=backend, rank=dist.rank, world_size=dist.world)
