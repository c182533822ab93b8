"""The command line, one module per command: its parser (``add_commands``) and its terminal
code; streamtag.cli lists the modules and dispatches.

What every command shares lives here: refused input's message and exit status (2 for a
command line or config that cannot work, 1 for work that failed), whether to paint and whether
to show progress (``NO_COLOR``, a terminal, ``-q``), standard input read as a file (``-``),
stopping on a signal, and text from outside made safe to show on a terminal.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO, TypeVar

from streamtag.text import without_escape_sequences

# The exit status of a command that refused its input (flags, config), as argparse's own.
EXIT_USAGE = 2
# The exit status of a command whose work failed: a file it could not read, a daemon that did
# not answer or refused, a stream that failed.
EXIT_FAILED = 1
# What a file argument of "-" means: standard input.
STDIN = "-"
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# How often a wait on a signalled event looks whether a signal came (SignalEvent)
SIGNAL_POLL_S = 0.1


# Names listed where one asked for is unknown (streams a database or a daemon has)
NAMES_SHOWN = 20


def names_listed(names: Sequence[str], none: str = "none") -> str:
    """Names from outside, sorted as given, quoted and safe for a terminal: the first
    NAMES_SHOWN, then "and more"; ``none`` when there are none."""
    shown = ", ".join(terminal_text(repr(name)) for name in names[:NAMES_SHOWN]) or none
    return shown + (" and more" if len(names) > NAMES_SHOWN else "")


# Packages of the extras (pyproject.toml) that a command may need: what it is, and the extra.
# a module a command may miss → (what it is, the pip requirement that brings it)
OPTIONAL = {"torch": ("PyTorch", "torch"), "sklearn": ("scikit-learn", "scikit-learn"),
            "matplotlib": ("matplotlib", "matplotlib")}


def missing_extra(command: str, error: ModuleNotFoundError) -> int | None:
    """For a command that needs an extra not installed here (``OPTIONAL``): says which, and
    how to install it, on stderr, and returns EXIT_USAGE; None for any other missing module."""
    extra = OPTIONAL.get((error.name or "").split(".")[0])
    if extra is None:
        return None
    from streamtag.model.stored import TORCH_EXTRA

    what, requirement = extra
    how = TORCH_EXTRA if requirement == "torch" else f"pip install {requirement}"
    print(f"streamtag {command}: this needs {what}, which is not installed here: {how}",
          file=sys.stderr)
    return EXIT_USAGE


def refused(command: str, error: Exception | str) -> int:
    """Says on stderr why ``streamtag COMMAND`` refused its input; returns EXIT_USAGE."""
    print(f"streamtag {command}: {error}", file=sys.stderr)
    return EXIT_USAGE


def failed(command: str, error: Exception | str) -> int:
    """Says on stderr why ``streamtag COMMAND`` failed; returns EXIT_FAILED."""
    print(f"streamtag {command}: {error}", file=sys.stderr)
    return EXIT_FAILED


def log_level(args: Any) -> int:
    """The logging level of ``-q`` (errors only), none, ``-v`` (info) or ``-vv`` (debug)."""
    if getattr(args, "quiet", False):
        return logging.ERROR
    verbose = getattr(args, "verbose", 0) or 0
    return logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING


def use_color(stream: TextIO) -> bool:
    """Whether to paint text written to ``stream``: only on a terminal, and never where the
    ``NO_COLOR`` environment variable is set to anything (no-color.org)."""
    if os.environ.get("NO_COLOR"):
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


T = TypeVar("T")


def progress(items: Sequence[T], quiet: bool = False, **kwargs: Any) -> Iterable[T]:
    """``items`` with a tqdm bar on stderr while they are worked through, where stderr is a
    terminal and ``-q`` is not given; else ``items`` as they are. The bar has a length, so a
    caller that takes ``len`` of a sequence may take this instead."""
    if quiet or len(items) < 2 or not sys.stderr.isatty():
        return items
    from tqdm import tqdm

    return tqdm(items, file=sys.stderr, leave=False, dynamic_ncols=True, **kwargs)


@contextlib.contextmanager
def stdin_as_file(name: str) -> Iterator[str]:
    """The path to read for a file argument: ``name`` itself, or for ``-`` standard input
    copied to a temporary file, removed after the block (PyAV probes a file by seeking, which
    a pipe cannot)."""
    if name != STDIN:
        yield name
        return
    with tempfile.TemporaryDirectory(prefix="streamtag-stdin-") as folder:
        path = Path(folder) / "stdin"
        with open(path, "wb") as copy:
            shutil.copyfileobj(sys.stdin.buffer, copy, 1 << 20)
        yield str(path)


class SignalEvent(threading.Event):
    """A threading.Event that a signal handler may set (``signal``). Python runs a handler in
    the main thread between two bytecodes, possibly while that thread holds the event's own
    lock (entering or leaving ``wait``): ``set`` there would wait for that lock for ever. So
    the handler only raises a flag, and ``wait`` looks at it every SIGNAL_POLL_S."""

    def __init__(self) -> None:
        super().__init__()
        self.signalled = False

    def signal(self) -> None:
        """Sets the event without taking a lock: the one way for a signal handler."""
        self.signalled = True

    def is_set(self) -> bool:
        return self.signalled or super().is_set()

    def clear(self) -> None:
        self.signalled = False
        super().clear()

    def wait(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self.signalled:
                super().set()  # outside the handler: wakes every waiter at once
                return True
            left = SIGNAL_POLL_S if deadline is None else min(SIGNAL_POLL_S,
                                                              deadline - time.monotonic())
            if left <= 0:
                return super().is_set()
            if super().wait(left):
                return True


@contextlib.contextmanager
def stop_on_signals(on_repeat: Callable[[], None] | None = None) -> Iterator[threading.Event]:
    """An event that SIGINT or SIGTERM sets while the block runs (Ctrl-C, or an orchestrator
    stopping the process); the previous handlers are back after it. A signal that finds the
    event already set calls `on_repeat` (a second Ctrl-C: leave at once).

    Python runs signal handlers in the main thread only; elsewhere none is installed and only
    the caller sets the event.
    """
    stop = SignalEvent()

    def handle(signum: int, frame: object) -> None:
        if stop.is_set() and on_repeat is not None:
            on_repeat()
        stop.signal()

    previous = {}
    try:
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                previous[signum] = signal.signal(signum, handle)
        yield stop
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


# What a terminal acts on rather than shows, in text from outside (a station's title, a peer's
# error): escape sequences whole (streamtag.text), then any other C0 control, DEL and the C1
# controls.
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # but tab and newline
_LINE_BREAKS = re.compile(r"[\t\n]")
_C1_AND_DEL = re.compile(r"[\x7f-\x9f]")


def terminal_text(text: str, *, one_line: bool = False) -> str:
    """``text`` as a terminal may show it: without escape sequences, C0 controls other than
    tab and newline, DEL or C1 controls. ``one_line``: tab and newline become spaces, so text
    from outside cannot start a line that looks like one of ours."""
    if text.isascii() and text.isprintable():  # the common case: nothing to take out (the
        return text  # invisible formatting that without_escape_sequences removes is not ASCII)
    text = without_escape_sequences(text)
    if one_line:
        text = _LINE_BREAKS.sub(" ", text)
    return _CONTROLS.sub("", text)


def terminal_json(text: str) -> str:
    """JSON text with DEL and the C1 controls written as ``\\u`` escapes (json.dumps escapes
    C0 but writes these as they are): the same JSON, safe on a terminal. Outside strings JSON
    is ASCII, so every such character is inside a string, where the escape means it."""
    return _C1_AND_DEL.sub(lambda match: f"\\u{ord(match.group()):04x}", text)
