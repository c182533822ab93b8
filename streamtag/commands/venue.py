"""``streamtag run --venue``: a sound card, the best installed real-music model and the venue
page, with nothing to configure (docs/venue.md).

What it picks, each said on the terminal: the default input device as the stream ``venue``
(unless sources are given), the first installed of VENUE_MODELS (unless a model is given; the
shipped model otherwise, with how to install a real one), and the venue page served in the same
process. While it runs it says when the sound card goes away and when it is back.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from streamtag.catalog.installed import installed
from streamtag.errors import ConfigError, SourceError
from streamtag.sources import list_input_devices

VENUE_STREAM = "venue"
# Real-music models in the order a venue wants them: `music` (the recommended one: MSD's moods
# and genres with MTT's instruments), then the Last.fm tags (MSD) that name moods (happy, sad,
# mellow, chill, party, ...); MagnaTagATune's name tempo and loudness only.
VENUE_MODELS = ("music", "musicnn-msd", "vgg-msd", "musicnn-mtt", "vgg-mtt")
# `models install` fetches musicnn's wheel itself (without its dependencies: musicnn 0.1.0
# pins a numpy and TensorFlow that Python 3.11 cannot install)
INSTALL_HINT = "streamtag models install music"
PAGE_WAIT_S = 10.0
WATCH_S = 0.5


def venue_model(given: str | None) -> tuple[str | None, str]:
    """The model to serve (None: the shipped one) and a line saying why."""
    if given:
        return given, f"model {given} (given)"
    found = installed()
    for name in VENUE_MODELS:
        if name in found:
            return name, f"model {name}, the installed real-music model"
    return None, ("no real-music model is installed: the screen shows the shipped model's "
                  "mood, made from synthetic tags (tempo, loudness, mode, brightness). For "
                  f"moods of real music install one: {INSTALL_HINT}")


def venue_source(given: list[str] | None, configured: int) -> tuple[list[str] | None, str]:
    """The sources to add (None: those given or configured) and a line saying which."""
    if given or configured:
        return None, "the sources given"
    try:
        devices = list_input_devices()
    except SourceError as exc:
        raise ConfigError(f"--venue listens to the default sound card, but {exc}") from None
    default = [d for d in devices if d["default"]] or devices[:1]
    if not default:
        raise ConfigError("--venue listens to the default sound card, and there is none: "
                          "connect one (streamtag devices lists what is found) or give "
                          "--source")
    return [f"{VENUE_STREAM}=device:default"], \
        f"the sound card {default[0]['name']!r} as stream {VENUE_STREAM!r}"


def start_page(connect: str, control: str | None, port: int, host: str,
               stop: threading.Event, *, token_file: str | None = None,
               allow_hosts: tuple[str, ...] = ()) -> str:
    """Serves the dashboard (and its venue page) in a thread; its address, or OSError.
    `token_file`: the daemon's control token file; `allow_hosts`: names the page answers to
    (its Host) besides loopback and IP addresses."""
    from streamtag.web import run_dashboard

    ready = threading.Event()
    found: dict[str, Any] = {}

    def on_ready(address: str) -> None:
        found["address"] = address
        ready.set()

    def serve() -> None:
        try:
            run_dashboard(connect, port, host, control, on_ready, stop,
                          token_file=token_file, allow_hosts=allow_hosts)
        except (OSError, ValueError) as exc:
            found["error"] = exc
            ready.set()

    threading.Thread(target=serve, name="streamtag-venue-page", daemon=True).start()
    if not ready.wait(PAGE_WAIT_S):
        raise OSError(f"the venue page did not start within {PAGE_WAIT_S:g} s")
    if "error" in found:
        raise OSError(f"the venue page cannot listen on {host}:{port}: {found['error']}"
                      "; choose another with --dashboard-port")
    return found["address"].rstrip("/")


def watch_sources(status: Callable[[], dict[str, Any]], stop: threading.Event,
                  say: Callable[[str], None]) -> None:
    """Says each change of a stream's state: the sound card lost, back, failed."""
    last: dict[str, str] = {}
    while not stop.wait(WATCH_S):
        try:
            streams = status()["streams"]
        except Exception:  # noqa: BLE001 - the daemon is stopping
            return
        for sid, info in streams.items():
            state, before = info["state"], last.get(sid)
            last[sid] = state
            if state == before:
                continue
            if state == "reconnecting":
                say(f"stream {sid}: the input is gone ({info.get('error') or 'no audio'}); "
                    "waiting for it to come back")
            elif state == "running" and before == "reconnecting":
                say(f"stream {sid}: the input is back")
            elif state == "failed":
                say(f"stream {sid}: failed: {info.get('error')}")


def now() -> str:
    return time.strftime("%H:%M:%S")
