"""The venue dashboard: a web page showing a daemon's tags live, and its websocket bridge.

`run_dashboard` is the API (see streamtag/web/server.py); ``streamtag dashboard --connect
ENDPOINT`` is streamtag.commands.dashboard. The server needs the ``websockets`` package;
importing this package does not, so the command can say what to install.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["run_dashboard"]


def run_dashboard(connect: str | Iterable[str], port: int = 8080, host: str = "127.0.0.1",
                  control: str | None = None, ready: Callable[[str], None] | None = None,
                  stop_event: threading.Event | None = None, **options: Any) -> None:
    """Serve the dashboard until `stop_event` is set; see `streamtag.web.server.run_dashboard`."""
    from streamtag.web.server import run_dashboard as run

    run(connect, port, host, control, ready, stop_event, **options)
