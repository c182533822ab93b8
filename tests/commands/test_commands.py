"""What the command modules share: stopping on a signal, and one exit status for refused input.

The signals are real: sent with os.kill to this process, handled by Python in the main thread.
"""

from __future__ import annotations

import ast
import os
import signal
import threading
from pathlib import Path

import pytest
from support.helpers import run_python

from streamtag.commands import EXIT_USAGE, STOP_SIGNALS, stop_on_signals

PACKAGE = Path(__file__).resolve().parents[2] / "streamtag"
COMMANDS_INIT = PACKAGE / "commands" / "__init__.py"


@pytest.fixture
def previous_handlers():
    """A handler of the test's own on each stop signal, to see it restored; the real ones
    come back afterwards."""
    seen: list[int] = []

    def before(signum, frame) -> None:
        seen.append(signum)

    saved = {signum: signal.signal(signum, before) for signum in STOP_SIGNALS}
    try:
        yield before, seen
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)


@pytest.mark.parametrize("signum", STOP_SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_a_signal_sets_the_event_and_the_previous_handler_comes_back(signum,
                                                                     previous_handlers):
    before, seen = previous_handlers
    with stop_on_signals() as stop:
        assert not stop.is_set()
        assert signal.getsignal(signum) is not before
        os.kill(os.getpid(), signum)
        assert stop.wait(5), "the signal did not set the event"
    assert seen == [], "the previous handler ran while the block had its own"
    assert all(signal.getsignal(s) is before for s in STOP_SIGNALS)
    os.kill(os.getpid(), signum)  # the previous handler is the one in force again
    assert _wait_for(lambda: seen == [signum])


def test_a_second_signal_calls_on_repeat(previous_handlers):
    repeats: list[int] = []
    with stop_on_signals(on_repeat=lambda: repeats.append(1)) as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.wait(5)
        assert repeats == []
        os.kill(os.getpid(), signal.SIGINT)
        assert _wait_for(lambda: repeats == [1])


def test_a_signal_while_the_main_thread_holds_the_event_s_lock_still_stops_it():
    # Python runs the handler between two bytecodes of the main thread: here, as when Ctrl-C
    # lands while `stop.wait()` is being entered, inside the event's own lock. A handler that
    # took that lock waited for itself for ever (`streamtag demo --dashboard` hung on Ctrl-C).
    script = """
import os, signal
from streamtag.commands import stop_on_signals
with stop_on_signals() as stop:
    with stop._cond:
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(1000):  # bytecodes for the handler to run between
            pass
    assert stop.wait(5), "the signal did not set the event"
print("stopped")
"""
    assert run_python(script, timeout=60).strip() == "stopped"


def test_the_handlers_come_back_when_the_block_raises(previous_handlers):
    before, _ = previous_handlers
    with pytest.raises(RuntimeError), stop_on_signals():
        raise RuntimeError("the command failed")
    assert all(signal.getsignal(s) is before for s in STOP_SIGNALS)


def test_outside_the_main_thread_no_handler_is_installed(previous_handlers):
    before, _ = previous_handlers
    found = {}

    def worker() -> None:
        with stop_on_signals() as stop:
            found["handlers"] = [signal.getsignal(s) for s in STOP_SIGNALS]
            stop.set()  # the caller's own way to stop
            found["set"] = stop.is_set()

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join(5)
    assert found == {"handlers": [before] * len(STOP_SIGNALS), "set": True}


def test_the_exit_status_and_the_signal_handling_are_written_once():
    assert EXIT_USAGE == 2  # argparse's own status for a usage error
    defined, handlers = [], []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Assign) and any(
                    isinstance(t, ast.Name) and t.id == "EXIT_USAGE" for t in node.targets):
                defined.append(path)
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "signal" and isinstance(node.func.value, ast.Name)
                    and node.func.value.id == "signal"):
                handlers.append(path)
    assert set(defined) == {COMMANDS_INIT}, defined
    assert set(handlers) == {COMMANDS_INIT}, handlers


def _wait_for(condition, timeout_s: float = 5.0) -> bool:
    done = threading.Event()
    for _ in range(int(timeout_s / 0.01)):
        if condition():
            return True
        done.wait(0.01)  # a wait in the main thread lets Python run a pending handler
    return condition()
