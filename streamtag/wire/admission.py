"""Which peers a listening TCP socket takes, decided in the kernel: a classic BPF program on
the listening socket (Linux's SO_ATTACH_FILTER) drops the packets of blocked addresses, their
connection requests included, before any descriptor is given for them.

libzmq accepts every connection that arrives. A peer ended by a ZeroMQ port's guard
(streamtag.wire.guard) connects again at once (ZeroMQ peers do so every 100 ms by default), so
a flood of 1,050 peers from a few addresses was accepted and ended thousands of times a second,
faster than a Python thread could end them: the daemon's descriptors still reached their limit.
With the addresses at their cap blocked here, their requests cost nothing until one of their
connections ends; the guard updates the program as connections come and go.

The program reads the packet's network header (``SKF_NET_OFF``): IPv4's source address, or
IPv6's, against each blocked address; ``None`` blocks every address (the port is full). Where
the kernel has no such filter (not Linux), ``set_filter`` says so once and the guard ends
connections as before.
"""

from __future__ import annotations

import ctypes
import ipaddress
import logging
import socket
import struct
import sys
from collections.abc import Iterable

log = logging.getLogger(__name__)

SO_ATTACH_FILTER = getattr(socket, "SO_ATTACH_FILTER", 26)
SO_DETACH_FILTER = getattr(socket, "SO_DETACH_FILTER", 27)
SKF_NET_OFF = -0x100000  # loads relative to the network header
# classic BPF's opcodes (linux/filter.h)
_LD_W_ABS, _LD_B_ABS = 0x20, 0x30
_AND_K, _JEQ_K, _JA, _RET_K = 0x54, 0x15, 0x05, 0x06
_ACCEPT, _DROP = 0xFFFFFFFF, 0
# addresses a program names at most; past it every address is blocked (the port is full)
MAX_BLOCKED = 256

Instruction = tuple[int, int, int, int]  # code, jump if true, jump if false, k


def program(blocked: Iterable[str] | None) -> list[Instruction]:
    """The program that drops packets from ``blocked`` addresses (IPv4 or IPv6, as text) and
    takes the rest; ``None``, or more than MAX_BLOCKED addresses: drops every packet."""
    if blocked is None:
        return [(_RET_K, 0, 0, _DROP)]
    v4: list[bytes] = []
    v6: list[bytes] = []
    for text in set(blocked):
        try:
            address = ipaddress.ip_address(text)
        except ValueError:  # "local" (ipc) and other names: nothing to filter
            continue
        (v4 if address.version == 4 else v6).append(address.packed)
    if len(v4) + len(v6) > MAX_BLOCKED:
        return [(_RET_K, 0, 0, _DROP)]
    four = [(_LD_W_ABS, 0, 0, SKF_NET_OFF + 12)]  # IPv4's source address
    for packed in sorted(v4):
        four += [(_JEQ_K, 0, 1, struct.unpack("!I", packed)[0]), (_RET_K, 0, 0, _DROP)]
    four.append((_RET_K, 0, 0, _ACCEPT))
    six: list[Instruction] = []
    for packed in sorted(v6):  # IPv6's source address, a word at a time from byte 8
        words = struct.unpack("!4I", packed)
        for n, word in enumerate(words):
            left = 2 * (3 - n)  # the instructions after this test, up to this address's drop
            six += [(_LD_W_ABS, 0, 0, SKF_NET_OFF + 8 + 4 * n), (_JEQ_K, 0, left + 1, word)]
        six.append((_RET_K, 0, 0, _DROP))
    six.append((_RET_K, 0, 0, _ACCEPT))
    return [
        (_LD_B_ABS, 0, 0, SKF_NET_OFF),  # the IP version, in the first byte's high nibble
        (_AND_K, 0, 0, 0xF0),
        (_JEQ_K, 0, 1, 0x60),
        (_JA, 0, 0, 2 + len(four)),  # IPv6: past the IPv4 part
        (_JEQ_K, 1, 0, 0x40),
        (_RET_K, 0, 0, _ACCEPT),  # neither: not ours to judge
        *four,
        *six,
    ]


class FilterKeeper:
    """Keeps the program it last set alive (the kernel copies it, but only while the call
    runs) and says once when this kernel has no socket filters."""

    def __init__(self) -> None:
        self.supported = sys.platform.startswith("linux")
        self._told = False

    def set_filter(self, sock: socket.socket, instructions: list[Instruction] | None) -> bool:
        """Attaches ``instructions`` to ``sock`` (None: detaches any); False where it cannot."""
        if not self.supported:
            return False
        try:
            if instructions is None:
                sock.setsockopt(socket.SOL_SOCKET, SO_DETACH_FILTER, 0)
                return True
            code = (ctypes.c_ubyte * (8 * len(instructions)))()
            for i, (op, jt, jf, k) in enumerate(instructions):
                struct.pack_into("HBBI", code, 8 * i, op, jt, jf, k & 0xFFFFFFFF)
            sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER,
                            struct.pack("HP", len(instructions), ctypes.addressof(code)))
            return True
        except OSError as exc:
            if instructions is None and exc.errno == 2:  # ENOENT: none was attached
                return True
            if not self._told:
                self._told = True
                log.warning("the kernel refused a socket filter (%s): connections past a "
                            "ZeroMQ port's caps are ended after they are accepted", exc)
            self.supported = False
            return False
