"""Turns: how many source threads work at once, in which order, and what a waiting thread
gives up."""

from __future__ import annotations

import threading
import time

import pytest
from support.helpers import wait_until

from streamtag.sources.decode_turns import Turns

HANG_S = 30  # only a hang would take this long


def start(target) -> threading.Thread:
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


def test_at_most_count_threads_hold_a_turn():
    turns = Turns(2)
    active, most, lock = [0], [0], threading.Lock()

    def work():
        for _ in range(20):
            with turns:
                with lock:
                    active[0] += 1
                    most[0] = max(most[0], active[0])
                time.sleep(0.0005)
                with lock:
                    active[0] -= 1

    threads = [start(work) for _ in range(6)]
    for thread in threads:
        thread.join(HANG_S)
    assert not any(t.is_alive() for t in threads)
    assert most[0] == 2


def test_turns_go_to_the_waiting_threads_in_the_order_they_asked():
    turns = Turns(1)
    order: list[int] = []
    turns.take()
    threads = []
    for i in range(5):
        def work(i=i):
            with turns:
                order.append(i)
        threads.append(start(work))
        wait_until(lambda n=i + 1: turns.waiting == n, HANG_S, f"thread {i} in line",
                   interval=0.001)
    turns.give()
    for thread in threads:
        thread.join(HANG_S)
    assert order == [0, 1, 2, 3, 4]


def test_a_waiting_holder_lets_another_work_and_gets_its_turn_back():
    turns = Turns(1)
    events: list[str] = []
    other_done = threading.Event()

    def other():
        with turns:
            events.append("other works")
        other_done.set()

    with turns:
        thread = start(other)
        wait_until(lambda: turns.waiting == 1, HANG_S, "the other thread in line",
                   interval=0.001)
        with turns.released():  # as a source does around a network read or a clock
            assert other_done.wait(HANG_S)
        events.append("holder again")
        assert turns.waiting == 0
    thread.join(HANG_S)
    assert events == ["other works", "holder again"]


def test_pass_on_keeps_the_turn_alone_and_hands_it_over_when_others_wait():
    turns = Turns(1)
    events: list[str] = []
    with turns:
        turns.pass_on()  # nobody waits: returns at once, still holding
        events.append("kept")

        def other():
            with turns:
                events.append("other")

        thread = start(other)
        wait_until(lambda: turns.waiting == 1, HANG_S, "the other thread in line",
                   interval=0.001)
        turns.pass_on()
        events.append("back")
    thread.join(HANG_S)
    assert events == ["kept", "other", "back"]


def test_a_count_below_one_is_refused():
    with pytest.raises(ValueError, match="count >= 1"):
        Turns(0)
