"""What the benchmarks' reports share: the machine they ran on, the turn-taking timing their
figures come from, the Markdown tables they print them in, and the graph rewrites as they were
before musicnn's long kernels were cut in parts (a baseline some of them run beside)."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Hashable, Iterable
from contextlib import AbstractContextManager, nullcontext
from typing import TypeVar
from unittest.mock import patch

from streamtag.model import winograd
from streamtag.model.inference import cpu_name

__all__ = ["best_in_turns", "cpu_name", "load_at_end", "machine_line", "table_head",
           "table_row", "winograd_rows"]

K = TypeVar("K", bound=Hashable)


def machine_line() -> str:
    """A report's first line: the CPU, its cores and the load average as the run starts."""
    return f"# {cpu_name()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}"


def winograd_rows(as_served: bool) -> AbstractContextManager:
    """Where graphs are rewritten inside it (a model's at load, its window reuse's steps as its
    engine is made): as served, or (``as_served`` False) as before musicnn's long temporal
    filters were cut in parts, its timbral filters F(4, 7) and its temporal ones direct."""
    return nullcontext() if as_served else patch.multiple(
        winograd, WINOGRAD_ROWS_M=4, WINOGRAD_PARTS_MIN_TAPS=sys.maxsize)


def load_at_end() -> str:
    """A report's last line: the load average as the run ends, beside the one it started at."""
    return f"\n# load average at the end {os.getloadavg()[0]:.1f}"


def best_in_turns(runs: dict[K, Callable[[], object]], reps: int) -> dict[K, float]:
    """The least thread CPU time of ``reps`` calls of each of ``runs`` (their first calls made
    already), the runs taking turns so that a change in the machine's load falls on all of them."""
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(reps):
        for key, run in runs.items():
            t0 = time.thread_time()
            run()
            best[key] = min(best[key], time.thread_time() - t0)
    return best


def table_head(columns: list[str], text_columns: int) -> str:
    """A Markdown table's head: its first ``text_columns`` columns left-aligned, the figures
    right."""
    rule = ["---"] * text_columns + ["---:"] * (len(columns) - text_columns)
    return table_row(columns) + "\n|" + "|".join(rule) + "|"


def table_row(cells: Iterable[object]) -> str:
    """A Markdown table's row; an empty cell is one space wide."""
    return "|" + "|".join(f" {cell} " if cell != "" else " " for cell in cells) + "|"
