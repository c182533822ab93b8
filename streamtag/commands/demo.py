"""``streamtag demo``: the daemon tagging a generated piece, watched live from the terminal.

The piece (about a minute of synthetic music moving between calm, soft, slow passages and
loud, dense, fast ones) is written to a temporary file; a daemon tags it with the default model
(or ``--model``), publishing on a free loopback port, and a subscriber in this process prints
the messages as they arrive: tag events stand out, scores lines show the active tags. By default
the piece plays at four times real speed; ``--realtime`` plays it at real speed.

The piece's truth (the tags each section was made with) is printed at the start and again as
each section begins, and a tag that switches on where the piece is not so is marked as the
model's mistake, so that what is shown never contradicts the truth unsaid. The piece is made
to sound like the shipped model's training clips (PIECE_CHANGES, PHRASE_SECONDS). With no
``--seed`` it is one on which that model agrees with the truth in every section (after the few
seconds a window and the smoothing need to leave the section before); ``--seed N`` plays others,
where it may err, and the marks say where.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from streamtag.commands import EXIT_USAGE, stop_on_signals, use_color
from streamtag.commands.flags import add_backend, add_model, port_number, zmq_endpoint
from streamtag.commands.listen import format_message
from streamtag.daemon.config import (
    ControlConfig,
    DaemonConfig,
    EngineConfig,
    ModelConfig,
    PublishConfig,
    SourceConfig,
)
from streamtag.errors import ConfigError, ModelError

if TYPE_CHECKING:
    import numpy as np

    from streamtag.daemon.daemon import Daemon
    from streamtag.wire.subscriber import ReceivedMessage, Subscriber

DEMO_RATE = 16000
# How the demo's piece differs from streamtag.audio.synthetic's default, so that it sounds like
# the shipped model's training clips: a marked beat in the calm sections (their `slow` is heard
# from it); i-iv-i-v progressions; soft chords under the calm melody (a bare melody's mode is
# ambiguous); the energetic sections a little quieter, with softer drums and sustained notes.
PIECE_CHANGES: dict[str, dict[str, Any]] = {
    "calm": {"drums": True, "drum_gain_db": -6.0, "density": 0.3, "progression": 3},
    "build": {"progression": 3, "density": 0.45},
    "energetic": {"progression": 3, "level_dbfs": -17.0, "drum_gain_db": -6.0,
                  "envelope": 1.0, "articulation": "sustained"},
}
# Each section plays as phrases as long as the training clips, each starting on the home chord:
# the mode is heard from where a phrase starts and comes back to.
PHRASE_SECONDS = 6.0
# The piece played when no seed is given: one on which the shipped model agrees with the truth
# throughout (tests/commands/test_demo.py); 10 of seeds 0-23 are such pieces.
DEFAULT_SEED = 0
# A tag that switches on this soon after a section begins may still be hearing the one before:
# a window of the shipped model is 3 s long.
CARRY_OVER_S = 3.0
DEMO_ENDPOINT = "tcp://127.0.0.1:*"  # a free loopback port

Segments = list[tuple[float, float, list[str]]]


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="watch the daemon tag a generated piece live")
    add_model(p)
    p.add_argument("--realtime", action="store_true", help="play at real speed")
    p.add_argument("--speed", type=float, default=4.0, help="playback speed (default 4)")
    p.add_argument("--seconds", type=float, default=60.0, help="length of the piece")
    p.add_argument("--seed", type=int, default=None,
                   help="another piece (a non-negative integer); the default piece is one the "
                        "shipped model gets right throughout")
    p.add_argument("--dashboard", action="store_true",
                   help="also serve the web dashboard and open it in a browser where there is "
                        "one; it stays up after the piece until Ctrl-C")
    p.add_argument("--dashboard-port", type=port_number, default=8080)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--publish", metavar="ENDPOINT", type=zmq_endpoint, default=DEMO_ENDPOINT,
                   help="where the demo's daemon publishes, on this machine, for other readers "
                        "to watch too (streamtag listen ENDPOINT, examples/c/subscriber.c); "
                        "default: a free loopback port")
    add_backend(p, "auto")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    try:
        return run_demo(args.model, realtime=args.realtime, speed=args.speed,
                        seconds=args.seconds, seed=args.seed, dashboard=args.dashboard,
                        dashboard_port=args.dashboard_port, device=args.device,
                        backend=args.backend, publish=args.publish)
    except (ConfigError, ModelError) as exc:
        print(f"streamtag demo: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


def run_demo(model: str | None = None, *, realtime: bool = False, speed: float = 4.0,
             seconds: float = 60.0, seed: int | None = None, dashboard: bool = False,
             dashboard_port: int = 8080, device: str = "auto", backend: str = "auto",
             out: TextIO | None = None, publish: str = DEMO_ENDPOINT) -> int:
    """Plays the piece through a daemon publishing on ``publish`` (loopback only: the demo
    has no keys) and prints what a subscriber hears; returns the exit status."""
    from streamtag.audio.files import write_audio
    from streamtag.daemon.daemon import Daemon
    from streamtag.wire.security import is_loopback_endpoint
    from streamtag.wire.subscriber import Subscriber

    if not is_loopback_endpoint(publish):
        raise ConfigError(f"--publish {publish}: the demo publishes on this machine only "
                          "(tcp://127.0.0.1:PORT, ipc://PATH); to serve other machines run "
                          "`streamtag run` with CURVE keys (docs/operations.md, Keys)")
    out = out or sys.stdout
    seed = DEFAULT_SEED if seed is None else seed
    if seed < 0:
        raise ConfigError(f"--seed must be a non-negative integer, got {seed}")
    color = use_color(out)
    audio, segments = make_piece(seconds, seed)
    with tempfile.TemporaryDirectory(prefix="streamtag-demo-") as folder:
        piece = Path(folder) / "demo.wav"
        write_audio(piece, audio, DEMO_RATE)
        config = DaemonConfig(
            model=ModelConfig(path=model, device=device),
            publish=PublishConfig(endpoint=publish, heartbeat_s=0.25),
            control=ControlConfig(endpoint="tcp://127.0.0.1:*"),
            engine=EngineConfig(backend=backend))
        daemon = Daemon(config).start()
        stop_dashboard = threading.Event()
        try:
            print(f"streamtag demo: {seconds:.0f} s piece, model {daemon.model.name} "
                  f"({len(daemon.model.tags)} tags), publishing on {daemon.publisher.endpoint}"
                  + ("" if realtime else f", playing at {speed:g}x"), file=out, flush=True)
            print("  the piece: " + "; ".join(f"{a:.0f}-{b:.0f} s {', '.join(t)}"
                                            for a, b, t in segments), file=out, flush=True)
            if dashboard:
                _start_dashboard(daemon, dashboard_port, stop_dashboard, out)
            with Subscriber(daemon.publisher.endpoint) as sub:
                _wait_for_heartbeat(sub)
                daemon.add_source(SourceConfig("demo", str(piece), {
                    "realtime": True, "speed": 1.0 if realtime else speed}))
                _print_until_ended(sub, out, color, segments)
            if dashboard:  # the page stays for a look at the piece's course
                # Ctrl-C is taken as "stop" before the line invites it
                with stop_on_signals() as stop:
                    print("  the piece has ended; the dashboard stays up until Ctrl-C",
                          file=out, flush=True)
                    stop.wait()
        finally:
            stop_dashboard.set()
            daemon.stop()
    return 0


def make_piece(seconds: float = 60.0, seed: int = DEFAULT_SEED) -> tuple[np.ndarray, Segments]:
    """The demo's piece: (audio at DEMO_RATE, its sections as (start_s, end_s, tags))."""
    from streamtag.audio.synthetic import demo_piece

    return demo_piece(seconds, seed=seed, sample_rate=DEMO_RATE, changes=PIECE_CHANGES,
                      phrase_seconds=PHRASE_SECONDS)


def _wait_for_heartbeat(sub: Subscriber, timeout_s: float = 10.0) -> None:
    from streamtag.wire.protocol import HeartbeatBody

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        msg = sub.recv(100)
        if msg is not None and isinstance(msg.body, HeartbeatBody):
            return
    raise RuntimeError("the demo daemon publishes no heartbeat")


def _print_until_ended(sub: Subscriber, out: TextIO, color: bool, segments: Segments) -> None:
    from streamtag.wire.protocol import HeartbeatBody, StatusBody

    announced = 0  # the sections whose start has been printed
    while True:
        msg = sub.recv(1000)
        if msg is None or isinstance(msg.body, HeartbeatBody):
            continue
        heard_to = _audio_time(msg)
        while (heard_to is not None and announced < len(segments)
               and segments[announced][0] <= heard_to):
            start, end, tags = segments[announced]
            print(f"  -- {start:.0f}-{end:.0f} s of the piece: {', '.join(tags)}", file=out,
                  flush=True)
            announced += 1
        print(format_message(msg, color=color) + truth_note(msg, segments), file=out,
              flush=True)
        if isinstance(msg.body, StatusBody) and msg.body.state in ("ended", "failed"):
            return


def _audio_time(msg: ReceivedMessage) -> float | None:
    """The audio time a message speaks of: a window's end, an event's time."""
    from streamtag.wire.protocol import EventBody, ScoresBody

    match msg.body:
        case ScoresBody(end_s=end_s):
            return end_s
        case EventBody(time_s=time_s):
            return time_s
        case _:
            return None


def truth_note(msg: ReceivedMessage, segments: Segments) -> str:
    """For a tag switching on where the piece is not so (in the section playing, or in the one
    before within CARRY_OVER_S, which the window may still hear): a note saying so; else ""."""
    from streamtag.audio.synthetic import TAGS
    from streamtag.wire.protocol import EventBody

    body = msg.body
    if not isinstance(body, EventBody) or body.state != "on" or body.tag not in TAGS:
        return ""
    heard = {tag for start, end, tags in segments
             if start < body.time_s and end > body.time_s - CARRY_OVER_S for tag in tags}
    if body.tag in heard:
        return ""
    now = next((tags for start, end, tags in segments if start <= body.time_s < end),
               segments[-1][2])
    return f"  (the model errs: the piece here is {', '.join(now)})"


def _start_dashboard(daemon: Daemon, port: int, stop: threading.Event, out: TextIO) -> None:
    import webbrowser

    from streamtag.web import run_dashboard

    ready = threading.Event()
    url = {}

    def on_ready(address: str) -> None:
        url["address"] = address
        ready.set()

    threading.Thread(target=run_dashboard, name="streamtag-dashboard", daemon=True, kwargs={
        "connect": daemon.publisher.endpoint, "control": daemon.control.endpoint,
        "port": port, "ready": on_ready, "stop_event": stop}).start()
    if ready.wait(10):
        print(f"  dashboard: {url['address']}", file=out, flush=True)
        webbrowser.open(url["address"])
