"""A small deployment as containers of the CPU image on the host network, every one with a
read-only root and a tmpfs: `streamtag proxy` in front of two shard daemons (`run --shard K/2`)
that play files mounted read-only, `streamtag record` into a PostgreSQL server the test runs on
the host, and `streamtag dashboard`. A subscriber in the test process, on the proxy's backend,
must receive tags from both shards, each stream from the shard its hash names; the recorder's
database gets rows of every stream; the dashboard answers; every container's HEALTHCHECK
reports healthy."""

from __future__ import annotations

import collections
import json
import time
import urllib.error
import urllib.request

import pytest
import sqlalchemy as sa
from support.helpers import free_port, wait_until

from streamtag.audio.files import write_audio
from streamtag.audio.testsignals import music_like
from streamtag.daemon.shard import shard_of
from streamtag.wire.subscriber import Subscriber
from tests.container.conftest import readable
from tests.container.podman import podman

pytestmark = pytest.mark.container

SHARDS = 2
READ_ONLY = ("--read-only", "--tmpfs", "/tmp:rw,mode=1777,size=256m")
START_TIMEOUT_S = 180  # a cold start of a Python process, its imports and the model's load


def stream_ids() -> list[str]:
    """Four stream names that both shards serve some of."""
    ids = [f"radio-{i:02d}" for i in range(4)]
    i = 4
    while {shard_of(s, SHARDS) for s in ids} != set(range(SHARDS)):
        ids[i % 4] = f"radio-{i:02d}"
        i += 1
    return ids


STREAMS = stream_ids()


def running(name: str) -> bool:
    state = json.loads(podman("inspect", "--format", "{{json .State}}", name).stdout)
    return bool(state["Running"])


def logs(name: str) -> str:
    result = podman("logs", "--tail", "40", name, check=False)
    return f"--- {name}\n{result.stdout[-3000:]}{result.stderr[-3000:]}"


def http_status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=3) as reply:
            return reply.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError):
        return None


def wait_for_http(name: str, url: str) -> None:
    def up() -> bool:
        if not running(name):
            raise AssertionError(f"{name} exited\n{logs(name)}")
        return http_status(url) == 200

    wait_until(up, START_TIMEOUT_S, f"{url} of {name}", interval=0.5)


@pytest.fixture(scope="module")
def stack(cpu_image, shared_dir, postgres):
    audio = shared_dir / "stack-audio"
    audio.mkdir(mode=0o755)
    readable(write_audio_file(audio / "station.flac"))
    config_dir = shared_dir / "stack-config"
    config_dir.mkdir(mode=0o755)
    ports = {name: free_port() for name in ("frontend", "backend", "dashboard", "recorder")}
    frontend = f"tcp://127.0.0.1:{ports['frontend']}"
    backend = f"tcp://127.0.0.1:{ports['backend']}"
    (config_dir / "daemon.toml").write_text(
        f'[publish]\nendpoint = "{frontend}"\nconnect = true\nheartbeat_s = 0.5\n\n'
        + "".join(f'[[sources]]\nid = "{sid}"\nspec = "file:/data/station.flac"\n'
                  "realtime = true\nloop = true\n\n" for sid in STREAMS))
    readable(config_dir / "daemon.toml")
    db = postgres.url
    names: list[str] = []

    def start(name: str, *command: str, volumes: tuple[str, ...] = ()) -> str:
        names.append(name)
        mounts = [flag for v in volumes for flag in ("--volume", v)]
        podman("run", "-d", "--name", name, "--network", "host", *READ_ONLY, *mounts,
               cpu_image, "streamtag", *command)
        return name

    try:
        podman("rm", "-f", *(f"streamtag-test-{n}" for n in
                             ("proxy", "shard0", "shard1", "recorder", "dashboard")),
               check=False)
        start("streamtag-test-proxy", "proxy", "--frontend", frontend, "--backend", backend)
        shards = {}
        for k in range(SHARDS):
            metrics = free_port()
            shards[k] = (start(f"streamtag-test-shard{k}", "run", "--config",
                               "/etc/streamtag/daemon.toml", "--shard", f"{k}/{SHARDS}",
                               "--control", f"tcp://127.0.0.1:{free_port()}",
                               "--metrics-port", str(metrics),
                               volumes=(f"{config_dir}:/etc/streamtag:ro",
                                        f"{audio}:/data:ro")), metrics)
        # The schema first, as the Kubernetes init container does; then the recorder.
        podman("run", "--rm", "--network", "host", *READ_ONLY, cpu_image,
               "streamtag", "record", "--db", db, "--upgrade")
        start("streamtag-test-recorder", "record", "--connect", backend, "--db", db,
              "--metrics-port", str(ports["recorder"]))
        start("streamtag-test-dashboard", "dashboard", "--connect", backend,
              "--port", str(ports["dashboard"]))
        yield {"backend": backend, "shards": shards, "ports": ports, "db": db, "names": names}
    finally:
        podman("rm", "-f", "-t", "10", *names, check=False, timeout=180)


def write_audio_file(path):
    write_audio(path, music_like(30.0, 22050, seed=5), 22050)
    return path


def test_two_shards_behind_the_proxy_reach_one_subscriber(stack):
    for name, metrics in stack["shards"].values():
        wait_for_http(name, f"http://127.0.0.1:{metrics}/readyz")
    subscriber = Subscriber(stack["backend"])
    sessions: dict[str, set[str]] = collections.defaultdict(set)
    try:
        deadline = time.monotonic() + 120
        while set(sessions) != set(STREAMS) and time.monotonic() < deadline:
            message = subscriber.recv(200)
            if message is not None and message.header.msg_type == "scores":
                sessions[message.header.stream].add(message.header.session)
    finally:
        subscriber.close()
    assert set(sessions) == set(STREAMS), "\n".join(
        [f"streams seen: {sorted(sessions)}"] + [logs(n) for n in stack["names"]])
    # One daemon per stream, and the streams of one daemon are those of one shard.
    assert all(len(s) == 1 for s in sessions.values()), sessions
    by_session: dict[str, set[int]] = collections.defaultdict(set)
    for stream, its in sessions.items():
        by_session[next(iter(its))].add(shard_of(stream, SHARDS))
    assert len(by_session) == SHARDS and all(len(k) == 1 for k in by_session.values())


def test_the_recorder_writes_every_stream_to_postgresql(stack):
    engine = sa.create_engine(stack["db"].replace("postgresql://", "postgresql+psycopg://"))
    try:
        def recorded() -> set[str]:
            if not running("streamtag-test-recorder"):
                raise AssertionError(logs("streamtag-test-recorder"))
            with engine.connect() as connection:
                return {row[0] for row in connection.execute(
                    sa.text("SELECT DISTINCT s.stream FROM window_blocks b "
                            "JOIN sessions s ON b.session_id = s.id"))}

        # a stream's windows are written a minute at a time (record --block-s)
        wait_until(lambda: recorded() == set(STREAMS), 180, "windows of every stream in the "
                   "database", interval=1.0)
    finally:
        engine.dispose()


def test_the_dashboard_answers(stack):
    port = stack["ports"]["dashboard"]
    wait_for_http("streamtag-test-dashboard", f"http://127.0.0.1:{port}/healthz")
    assert http_status(f"http://127.0.0.1:{port}/") == 200


def test_every_container_reports_healthy(stack):
    for name, metrics in stack["shards"].values():
        wait_for_http(name, f"http://127.0.0.1:{metrics}/healthz")
    wait_for_http("streamtag-test-dashboard",
                  f"http://127.0.0.1:{stack['ports']['dashboard']}/healthz")
    wait_for_http("streamtag-test-recorder",
                  f"http://127.0.0.1:{stack['ports']['recorder']}/metrics")
    for name in stack["names"]:
        result = podman("healthcheck", "run", name, check=False)
        assert result.returncode == 0, (result.stdout, result.stderr, logs(name))
