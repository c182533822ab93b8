"""Descriptors kept in reserve (docs/security.md, "ZeroMQ port limits").

Every connection a peer makes costs the process a descriptor. A process that serves peers
raises its open-files limit (RLIMIT_NOFILE) to the hard limit at start (``raise_files_limit``),
and its ZeroMQ connection caps together never exceed what the limit leaves once its own files,
its HTTP listeners and its stations are counted (``fit_caps``): stations, control and
``/healthz`` always find a descriptor, and libzmq never meets EMFILE through peers alone.

The reserve, per process:

- ``FIXED_RESERVE`` (128): what the process holds itself (some 20-40 at rest: libraries,
  the model, ZeroMQ's mailboxes and epoll, log and token files), a control request's and a
  probe's connection, and the connections libzmq accepts in a burst before the guard's thread
  has ended the ones past the caps;
- ``PER_SOURCE_RESERVE`` (4) a running source: its connection, the next one while it
  reconnects, a file it plays or a decoder's pipe;
- twice each HTTP listener's ``max_connections``: asyncio accepts up to that many more in one
  turn before its own cap closes them (streamtag.wire.listener).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence

log = logging.getLogger(__name__)

FIXED_RESERVE = 128
PER_SOURCE_RESERVE = 4


@dataclasses.dataclass(frozen=True)
class ConnectionCaps:
    """The bounds of one ZeroMQ listening socket."""

    max_connections: int
    max_per_address: int

    def __post_init__(self) -> None:
        for name in ("max_connections", "max_per_address"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a whole number above 0, got "
                                 f"{getattr(self, name)!r}")

    def within(self, most: int) -> ConnectionCaps:
        """These caps shrunk to ``most`` connections at once (at least 1)."""
        total = max(1, min(self.max_connections, most))
        return ConnectionCaps(total, min(self.max_per_address, total))


def files_limit() -> int | None:
    """The open-files limit (soft), or None where the system has none to tell."""
    try:
        import resource
    except ImportError:
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else int(soft)


def raise_files_limit(who: str) -> int | None:
    """Raises the open-files limit to the hard limit, logging the change, and returns the
    limit now in force (None: unknown or unlimited)."""
    try:
        import resource
    except ImportError:
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (OSError, ValueError) as exc:  # macOS refuses past OPEN_MAX
            log.info("%s: open-files limit stays at %d (raising it to the hard limit %s "
                     "failed: %s)", who, soft, hard, exc)
            return files_limit()
        log.info("%s: open-files limit raised from %d to %s, the hard limit (LimitNOFILE, "
                 "ulimit -Hn)", who, soft, "unlimited" if hard == resource.RLIM_INFINITY
                 else hard)
    return files_limit()


def room_for_peers(limit: int | None, *, sources: int = 0,
                   http_connections: Sequence[int] = ()) -> int | None:
    """Descriptors left for ZeroMQ connections under ``limit`` once the reserve is counted
    (the module's words); None: no limit."""
    if limit is None:
        return None
    return (limit - FIXED_RESERVE - PER_SOURCE_RESERVE * sources
            - 2 * sum(http_connections))


def fit_caps(wanted: Sequence[ConnectionCaps], room: int | None) -> list[ConnectionCaps]:
    """``wanted`` as they are when their connections together fit in ``room``, else each
    shrunk in proportion to what it wanted (at least 1 connection each)."""
    total = sum(c.max_connections for c in wanted)
    if room is None or total <= room:
        return list(wanted)
    return [c.within(room * c.max_connections // total) for c in wanted]


def say_fitted(who: str, limit: int | None, room: int | None,
               pairs: Sequence[tuple[str, ConnectionCaps, ConnectionCaps]]) -> None:
    """Logs, as a warning, the ports whose caps the open-files limit shrank: (name, wanted,
    given) each."""
    shrunk = [(name, given) for name, wanted, given in pairs if given != wanted]
    if not shrunk:
        return
    log.warning("%s: the open-files limit (%s) leaves room for %s ZeroMQ connections after "
                "the reserve for the process, its stations and its HTTP ports, so %s; raise "
                "the limit (LimitNOFILE in the systemd unit, --ulimit nofile for a container) "
                "to keep the configured caps", who, limit, max(room or 0, 0),
                ", ".join(f"{name} takes at most {caps.max_connections} connections "
                          f"({caps.max_per_address} from one address)"
                          for name, caps in shrunk))
