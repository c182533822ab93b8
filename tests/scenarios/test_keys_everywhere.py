"""Keys for every command, and the caps beside them, each tried the way an attacker would.

One real daemon (``streamtag run`` with ``[security]``: CURVE on its PUB and control sockets)
plays a station at real speed for the module. Behind a keyed ``streamtag proxy``, a subscriber
with an allowed key hears it, and one with another key or none hears nothing, nor does a plain
publisher get forged tags in through the frontend; ``streamtag record`` and ``streamtag
dashboard`` with keys receive from it. A proxy will not bind beyond loopback without keys
unless told ``--insecure``; a 10 MB frame at the proxy's frontend is not forwarded, and a 1 MB
subscription is not kept, by the proxy or by a publisher.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest
import sqlalchemy as sa
import zmq
from support.helpers import (
    free_port,
    is_ready,
    run_streamtag,
    stop_process,
    tiny_model_file,
    wait_until,
)

from streamtag.audio.files import write_audio
from streamtag.audio.testsignals import music_like
from streamtag.history import schema
from streamtag.wire.publisher import Publisher
from streamtag.wire.security import client_curve, generate_keys, load_keys
from streamtag.wire.subscriber import Subscriber

STREAM = "radio"
WAIT_S = 30.0
QUIET_S = 1.5  # how long a refused subscriber is listened to
HUGE_BYTES = 10 * 1024 * 1024  # a frame far past the proxy's cap (4 MiB)


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    """Key pairs of the daemon, the proxy, an allowed client and a stranger, and the folders of
    public keys: the daemon lets in the proxy and the client (to listen and to control), the
    proxy lets in the client."""
    root = tmp_path_factory.mktemp("keys")
    made = {name: generate_keys(root / name, name)
            for name in ("daemon", "proxy", "client", "stranger")}
    folders = {"daemon_clients": ("proxy", "client"), "daemon_admins": ("client",),
               "proxy_clients": ("client",)}
    for folder, names in folders.items():
        (root / folder).mkdir()
        for name in names:
            shutil.copy(made[name][0], root / folder / f"{name}.key")
    paths = {f"{name}_public": public for name, (public, _) in made.items()}
    paths.update({f"{name}_secret": secret for name, (_, secret) in made.items()})
    paths.update({folder: root / folder for folder in folders})
    return paths


def read_line(process, containing: str, timeout_s: float = WAIT_S) -> str:
    """The first stderr line of `process` holding `containing`; fails if it exits first."""
    found: list[str] = []

    def read() -> None:
        for line in process.stderr:
            found.append(line)
            if containing in line:
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout_s)
    assert found and containing in found[-1], f"no {containing!r} in stderr: {found}"
    return found[-1]


def closed(process) -> None:
    stop_process(process, timeout=15)
    for stream in (process.stdout, process.stderr):
        if stream is not None:
            stream.close()


@pytest.fixture(scope="module")
def daemon(keys, tmp_path_factory):
    """``streamtag run`` with CURVE on both sockets, a station playing at real speed; its feed
    and control endpoints."""
    root = tmp_path_factory.mktemp("curve_daemon")
    model = tiny_model_file(root / "tiny.pt")
    audio = root / "station.flac"
    write_audio(audio, music_like(240.0, 16000, seed=3), 16000)
    feed, control = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    metrics_port = free_port()
    config = root / "daemon.toml"
    config.write_text(
        f'[model]\npath = "{model}"\ndevice = "cpu"\n\n'
        f'[publish]\nendpoint = "{feed}"\nheartbeat_s = 0.2\n\n'
        f'[control]\nendpoint = "{control}"\n\n'
        f'[security]\nserver_key = "{keys["daemon_secret"]}"\n'
        f'client_keys = "{keys["daemon_clients"]}"\nadmin_keys = "{keys["daemon_admins"]}"\n\n'
        "[engine]\nmax_wait_ms = 5\n\n"
        f'[[sources]]\nid = "{STREAM}"\nspec = "file:{audio}"\nrealtime = true\n')
    env = {**os.environ, "STREAMTAG_HOME": str(root / "home")}
    process = run_streamtag("run", "--config", str(config), "--metrics-port", str(metrics_port),
                            popen=True, env=env)

    def ready() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"the daemon exited: {process.stderr.read()}")
        return is_ready(metrics_port)

    try:
        wait_until(ready, 60, "the CURVE daemon to be ready")
        yield feed, control
    finally:
        closed(process)


def heard(subscriber: Subscriber, timeout_s: float, stream: str | None = STREAM,
          msg_type: str = "scores") -> bool:
    """Whether `subscriber` receives a `msg_type` message of `stream` within `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        message = subscriber.recv(100)
        if (message is not None and message.msg_type == msg_type
                and (stream is None or message.stream == stream)):
            return True
    return False


# ---------------------------------------------------------------- the proxy with keys


def test_a_keyed_proxy_lets_in_allowed_subscribers_and_real_daemons_only(keys, daemon):
    feed, _ = daemon
    frontend, backend = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    proxy = run_streamtag("proxy", "--upstream", feed, "--frontend", frontend,
                          "--backend", backend, "--server-key", str(keys["proxy_secret"]),
                          "--client-keys", str(keys["proxy_clients"]),
                          "--daemon-key", str(keys["daemon_public"]), popen=True)
    allowed = Subscriber(backend, curve=client_curve(keys["proxy_public"],
                                                     keys["client_secret"]))
    stranger = Subscriber(backend, curve=client_curve(keys["proxy_public"],
                                                      keys["stranger_secret"]))
    plain = Subscriber(backend)
    # A second daemon, connecting to the frontend with the daemons' key pair, gets through;
    # a plain publisher there (forged tags) and one with a key of its own do not.
    second = Publisher(frontend, connect=True, linger_ms=0, context=zmq.Context.instance(),
                       curve=load_keys(keys["daemon_secret"], need_secret=True))
    forger = Publisher(frontend, connect=True, linger_ms=0)
    impostor = Publisher(frontend, connect=True, linger_ms=0,
                         curve=load_keys(keys["stranger_secret"], need_secret=True))
    stop = threading.Event()

    def publish() -> None:
        while not stop.wait(0.05):
            second.publish_status("second", state="running")
            forger.publish_status("forged", state="failed", error="forged")
            impostor.publish_status("impostor", state="failed", error="forged")

    sender = threading.Thread(target=publish, daemon=True)
    try:
        read_line(proxy, "daemons publish to")
        sender.start()
        assert heard(allowed, WAIT_S), "the allowed subscriber hears no scores through the proxy"
        assert heard(allowed, WAIT_S, "second", "status"), "the keyed frontend refused a daemon"
        streams = set()
        deadline = time.monotonic() + QUIET_S
        while time.monotonic() < deadline:
            message = allowed.recv(100)
            if message is not None:
                streams.add(message.stream)
        assert not {"forged", "impostor"} & streams, "forged messages passed the frontend"
        # The refused subscribers have been connected all along, over the allowed one's quiet
        # span too: what reached them waits in their queues.
        assert stranger.recv(100) is None, "a key the proxy does not allow heard it"
        assert plain.recv(100) is None, "a subscriber without keys heard it"
    finally:
        stop.set()
        if sender.is_alive():  # its round under way publishes before the publishers close
            sender.join(10)
        for sock in (allowed, stranger, plain, second, forger, impostor):
            sock.close()
        closed(proxy)


def test_the_proxy_refuses_to_bind_beyond_loopback_without_keys():
    port = free_port()
    exposed = f"tcp://0.0.0.0:{port}"
    backend = f"tcp://127.0.0.1:{free_port()}"
    refused = run_streamtag("proxy", "--frontend", exposed, "--backend", backend, timeout=60)
    assert refused.returncode == 2, refused.stderr
    assert (f"refusing to bind {exposed} (not loopback) without CURVE keys: give "
            "--server-key/--daemon-key, or --insecure to serve it unencrypted and open to "
            "anyone who can reach it") in refused.stderr
    refused = run_streamtag("proxy", "--frontend", f"tcp://127.0.0.1:{free_port()}",
                            "--backend", f"tcp://*:{port}", timeout=60)
    assert refused.returncode == 2, refused.stderr
    assert f"refusing to bind tcp://*:{port} (not loopback)" in refused.stderr
    assert "--server-key/--client-keys" in refused.stderr

    proxy = run_streamtag("proxy", "--frontend", exposed, "--backend", backend, "--insecure",
                          popen=True)
    try:
        warning = read_line(proxy, "WARNING")
        assert exposed in warning and "anyone who can reach it can publish forged tags" in warning
        read_line(proxy, "daemons publish to")
        assert proxy.poll() is None
        proxy.send_signal(signal.SIGTERM)
        assert proxy.wait(30) == 0
    finally:
        closed(proxy)


def test_the_proxy_keys_are_checked_at_start(keys, tmp_path):
    loopback = ("--frontend", f"tcp://127.0.0.1:{free_port()}",
                "--backend", f"tcp://127.0.0.1:{free_port()}")
    alone = run_streamtag("proxy", *loopback, "--server-key", str(keys["proxy_secret"]),
                          timeout=60)
    assert alone.returncode == 2 and "go together" in alone.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    no_keys = run_streamtag("proxy", *loopback, "--server-key", str(keys["proxy_secret"]),
                            "--client-keys", str(empty), timeout=60)
    assert no_keys.returncode == 2 and "--client-keys" in no_keys.stderr
    public_only = run_streamtag("proxy", *loopback, "--server-key", str(keys["proxy_public"]),
                                "--client-keys", str(keys["proxy_clients"]), timeout=60)
    assert public_only.returncode == 2 and "secret" in public_only.stderr


# ---------------------------------------------------------------- record and dashboard


def test_record_with_keys_writes_what_a_curve_daemon_publishes(keys, daemon, tmp_path):
    feed, control = daemon
    url = f"sqlite:///{tmp_path / 'tags.db'}"
    engine = schema.create_db_engine(url)
    schema.upgrade(engine)
    recorder = run_streamtag("record", "--connect", feed, "--control", control, "--db", url,
                             "--server-key", str(keys["daemon_public"]),
                             "--client-key", str(keys["client_secret"]), "--block-s", "1",
                             popen=True)

    def stored() -> int:
        blocks, sessions = schema.window_blocks.c, schema.sessions.c
        with engine.connect() as conn:
            return conn.execute(sa.select(sa.func.sum(blocks.windows))
                                .join_from(schema.window_blocks, schema.sessions)
                                .where(sessions.stream == STREAM)).scalar() or 0

    try:
        read_line(recorder, "recording")
        wait_until(lambda: stored() >= 3, WAIT_S, "scores of the CURVE daemon in the database")
        with engine.connect() as conn:  # the snapshot came through the keyed control socket
            assert conn.execute(sa.select(sa.func.count())
                                .select_from(schema.snapshots)).scalar() >= 1
        recorder.send_signal(signal.SIGTERM)
        assert recorder.wait(30) == 0
    finally:
        closed(recorder)
        engine.dispose()


def test_record_and_dashboard_want_both_keys(keys):
    for command in (("record", "--connect", "tcp://127.0.0.1:1", "--db", "sqlite://"),
                    ("dashboard", "--connect", "tcp://127.0.0.1:1", "--port", "0")):
        done = run_streamtag(*command, "--server-key", str(keys["daemon_public"]), timeout=60)
        assert done.returncode == 2
        assert "--server-key and --client-key go together" in done.stderr


def test_dashboard_with_keys_shows_a_curve_daemon(keys, daemon):
    from websockets.sync.client import connect as ws_connect

    feed, control = daemon
    port = free_port()
    dashboard = run_streamtag("dashboard", "--connect", feed, "--control", control,
                              "--port", str(port), "--server-key", str(keys["daemon_public"]),
                              "--client-key", str(keys["client_secret"]), popen=True)
    page = f"ws://127.0.0.1:{port}/ws"

    def scores_arrive() -> bool:
        with ws_connect(page, open_timeout=10) as ws:
            deadline = time.monotonic() + WAIT_S
            while time.monotonic() < deadline:
                message = json.loads(ws.recv(timeout=WAIT_S))
                if (message["type"] == "message"
                        and message["message"]["header"]["msg_type"] == "scores"
                        and message["message"]["header"]["stream"] == STREAM):
                    return True
        return False

    def snapshot_taken() -> bool:
        # Thresholds come only with a control snapshot: a page that joins once the keyed
        # control socket has answered sees them in its hello.
        with ws_connect(page, open_timeout=10) as ws:
            hello = json.loads(ws.recv(timeout=10))
        return (hello["streams"].get(STREAM) or {}).get("thresholds") is not None

    try:
        read_line(dashboard, "open http://")
        assert scores_arrive(), "no scores of the CURVE daemon reached the page"
        wait_until(snapshot_taken, WAIT_S, "a snapshot from the CURVE daemon's control socket",
                   interval=0.2)
    finally:
        closed(dashboard)


# ---------------------------------------------------------------- size caps


def test_the_proxy_forwards_what_a_subscriber_accepts():
    from streamtag.wire.protocol import MAX_FRAME_BYTES
    from streamtag.wire.proxy import MAX_MESSAGE_BYTES

    assert MAX_MESSAGE_BYTES == MAX_FRAME_BYTES


def test_a_10_mb_frame_at_the_proxy_frontend_is_not_forwarded():
    frontend, backend = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    proxy = run_streamtag("proxy", "--frontend", frontend, "--backend", backend, popen=True)
    ctx = zmq.Context.instance()
    watcher = ctx.socket(zmq.SUB)
    watcher.setsockopt(zmq.SUBSCRIBE, b"")
    watcher.setsockopt(zmq.LINGER, 0)
    honest = Publisher(frontend, connect=True, linger_ms=0)
    attacker = ctx.socket(zmq.PUB)
    attacker.setsockopt(zmq.LINGER, 0)
    received: list[int] = []

    def take(timeout_ms: int) -> list[bytes] | None:
        if watcher.poll(timeout_ms):
            frames = watcher.recv_multipart()
            received.append(max(map(len, frames)))
            return frames
        return None

    try:
        read_line(proxy, "daemons publish to")
        watcher.connect(backend)
        attacker.connect(frontend)

        def attacker_heard() -> bool:  # its link carries the subscription
            attacker.send_multipart([b"status.probe", b"{}", b"{}"])
            frames = take(100)
            return frames is not None and frames[0] == b"status.probe"

        wait_until(attacker_heard, WAIT_S, "the attacker's link to the proxy", interval=0)
        attacker.send_multipart([b"status.huge", b"{}", b"x" * HUGE_BYTES])

        def later_heard() -> bool:
            # What the attacker sends after the frame comes behind it, through the proxy's one
            # loop (or, once the proxy has cut the link for it, over the next): once a later
            # message is heard, the frame would have been heard before it.
            attacker.send_multipart([b"status.later", b"{}", b"{}"])
            honest.heartbeat(1)
            while (frames := take(50)) is not None:
                if frames[0] == b"status.later":
                    return True
            return False

        wait_until(later_heard, WAIT_S, "the attacker's next message through the proxy",
                   interval=0)
        assert max(received) < HUGE_BYTES, "the 10 MB frame was forwarded"
        assert proxy.poll() is None, "the proxy died"
        # It keeps serving: the honest publisher's heartbeats still come through.
        count = len(received)
        wait_until(lambda: (honest.heartbeat(1), take(50))[1] is not None
                   and len(received) > count, WAIT_S, "heartbeats after the attack")
    finally:
        for sock in (watcher, attacker):
            sock.close(linger=0)
        honest.close()
        closed(proxy)


# A peer that subscribes to a 1 MB prefix, in a process of its own: its own socket keeps the
# prefix in a trie that libzmq frees recursively, byte by byte, which overflows the stack of the
# process that closes it (os._exit leaves it be). It tells whether the endpoint hung up on it.
HUGE_SUBSCRIBER = """
import sys, time, os
import zmq
from zmq.utils.monitor import recv_monitor_message
sub = zmq.Context.instance().socket(zmq.SUB)
sub.setsockopt(zmq.RECONNECT_IVL, 10_000)
monitor = sub.get_monitor_socket(zmq.EVENT_DISCONNECTED)
sub.setsockopt(zmq.SUBSCRIBE, b"x" * (1 << 20))
sub.connect(sys.argv[1])
deadline = time.monotonic() + 5.0
while time.monotonic() < deadline:
    if monitor.poll(100):
        recv_monitor_message(monitor)
        print("disconnected", flush=True)
        os._exit(0)
print("kept", flush=True)
os._exit(0)
"""


def hangs_up_on_a_huge_subscription(endpoint: str) -> bool:
    done = subprocess.run([sys.executable, "-c", HUGE_SUBSCRIBER, endpoint],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip() == "disconnected"


def test_a_1_mb_subscription_is_not_kept_by_a_publisher_or_the_proxy():
    with Publisher("tcp://127.0.0.1:*", linger_ms=0) as publisher:
        assert hangs_up_on_a_huge_subscription(publisher.endpoint)
        # An honest subscriber is served as before.
        with Subscriber(publisher.endpoint) as subscriber:
            wait_until(lambda: (publisher.heartbeat(1), subscriber.recv(50))[1] is not None,
                       WAIT_S, "a heartbeat at an honest subscriber")
    backend = f"tcp://127.0.0.1:{free_port()}"
    proxy = run_streamtag("proxy", "--frontend", f"tcp://127.0.0.1:{free_port()}",
                          "--backend", backend, popen=True)
    try:
        read_line(proxy, "daemons publish to")
        assert hangs_up_on_a_huge_subscription(backend)
        assert proxy.poll() is None
    finally:
        closed(proxy)
