"""``streamtag bridge mqtt`` against a real Mosquitto and a real daemon.

One daemon (``streamtag run``, the tiny model, two looped stations at real speed) and one
private broker (tests/support/mosquitto.py: an open listener, and one with a password and TLS)
serve the module. Bridges run as users run them, as processes; a paho subscriber checks what a
user of the broker would: each station's current values retained for a subscriber that comes
later, a value that changes, the last will when a bridge is killed, TLS with a password and the
refusal of a wrong one. The tree's escaping and bounds are checked on the bridge in process,
against the same broker.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time

import pytest
import zmq
from support.helpers import (
    daemon_config_file,
    free_port,
    run_streamtag,
    stop_process,
    tiny_model_file,
    wait_until,
)
from support.mosquitto import PASSWORD, USER, mosquitto_broker

from streamtag.audio.files import write_audio
from streamtag.audio.testsignals import music_like
from streamtag.wire.control import control_request
from streamtag.wire.protocol import ScoresBody, StatusBody
from streamtag.wire.publisher import Publisher
from streamtag.wire.security import generate_keys, load_keys

mqtt = pytest.importorskip("paho.mqtt.client",
                           reason="paho-mqtt not installed: pip install 'streamtag[mqtt]'")

STATIONS = ("radio-1", "radio.2")
WAIT_S = 120.0  # a daemon starting on a busy machine, a model loading, a broker answering
LEAVES = ("status", "tags", "mood", "content")


class Watcher:
    """A paho subscriber to ``topics``: every message it got, by topic, with its retain flag."""

    def __init__(self, port: int, topics: tuple[str, ...] = ("#",), *,
                 cafile: str | None = None, username: str | None = None,
                 password: str | None = None) -> None:
        self.got: dict[str, list[tuple[bytes, bool]]] = {}
        self._lock = threading.Lock()
        subscribed = threading.Event()
        client = self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        if cafile:
            client.tls_set(ca_certs=cafile)
        if username:
            client.username_pw_set(username, password)

        def on_connect(client, userdata, flags, reason, properties):
            client.subscribe([(topic, 1) for topic in topics])

        def on_message(client, userdata, message):
            with self._lock:
                self.got.setdefault(message.topic, []).append(
                    (bytes(message.payload), bool(message.retain)))

        client.on_connect = on_connect
        client.on_subscribe = lambda *args: subscribed.set()
        client.on_message = on_message
        client.connect("127.0.0.1", port)
        client.loop_start()
        assert subscribed.wait(WAIT_S), "the watcher's subscription was never acknowledged"

    def topics(self) -> set[str]:
        with self._lock:
            return set(self.got)

    def last(self, topic: str) -> tuple[bytes, bool] | None:
        with self._lock:
            seen = self.got.get(topic)
            return seen[-1] if seen else None

    def wait(self, topic: str, check=lambda payload: True, timeout_s: float = WAIT_S):
        """The first payload of ``topic`` (JSON decoded where it is JSON) that ``check``
        accepts, and whether it came retained."""
        found: list = []

        def seen() -> bool:
            with self._lock:
                for payload, retained in self.got.get(topic, []):
                    try:
                        value = json.loads(payload)
                    except ValueError:
                        value = payload.decode()
                    if check(value):
                        found.append((value, retained))
                        return True
            return False

        wait_until(seen, timeout_s, f"{topic} to say what was wanted (got "
                                    f"{self.got.get(topic, [])[-3:]})", interval=0.05)
        return found[0]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture(scope="module")
def broker():
    with mosquitto_broker() as running:
        yield running


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    """A daemon playing STATIONS in a loop: (feed endpoint, control endpoint, its folder,
    replay endpoint)."""
    root = tmp_path_factory.mktemp("daemon")
    audio = root / "station.flac"
    write_audio(audio, music_like(20.0, 16000, seed=4), 16000)
    feed, control = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    replay = f"tcp://127.0.0.1:{free_port()}"
    config = daemon_config_file(
        root / "daemon.toml", tiny_model_file(root / "tiny.pt"), audio, STATIONS,
        publish=feed, loop=True,
        sections=f'[control]\nendpoint = "{control}"\nfile_roots = ["{root}"]\n\n')
    with open(root / "daemon.log", "wb") as log:  # (a pipe nobody reads could fill)
        process = subprocess.Popen([sys.executable, "-m", "streamtag", "run", "--config",
                                    str(config), "--replay", replay], stdout=log, stderr=log,
                                   stdin=subprocess.DEVNULL, cwd=tempfile.gettempdir())
    try:
        yield feed, control, root, replay
    finally:
        stop_process(process, 30)


def bridge(feed: str, broker_url: str, name: str, *flags: str, env=None):
    return run_streamtag("bridge", "mqtt", "--connect", feed, "--broker", broker_url,
                         "--name", name, *flags, popen=True, env=env)


@pytest.fixture
def closing():
    """Processes, watchers and bridges to stop after the test, last started first."""
    opened: list = []
    yield opened
    for thing in reversed(opened):
        if isinstance(thing, subprocess.Popen):
            stop_process(thing, 10)
            thing.communicate(timeout=10)  # (closes its pipes)
        else:
            thing.close()


def test_a_subscriber_that_comes_later_gets_every_station_s_values_retained(
        broker, daemon, closing):
    feed, control, _, _ = daemon
    url = f"mqtt://127.0.0.1:{broker.open_port}"
    closing.append(bridge(feed, url, "later", "--topic-prefix", "later/st", "--homeassistant",
                          "--discovery-prefix", "later-ha", "--control", control))
    live = Watcher(broker.open_port, ("later/#",))
    closing.append(live)
    for station in STATIONS:
        for leaf in LEAVES:
            live.wait(f"later/st/{station}/{leaf}")

    late = Watcher(broker.open_port, ("later/#", "later-ha/#"))
    closing.append(late)
    assert late.wait("later/st/bridge/later/online") == ("online", True)
    for station in STATIONS:
        status, retained = late.wait(f"later/st/{station}/status")
        assert retained and status["state"] == "running" and set(status) == {
            "state", "title", "station", "error"}
        tags, retained = late.wait(f"later/st/{station}/tags")
        assert retained and isinstance(tags["active"], list)
        mood, retained = late.wait(f"later/st/{station}/mood")
        assert retained and {"words", "genres", "valence", "arousal"} <= set(mood)
        assert -1 <= mood["valence"] <= 1 and -1 <= mood["arousal"] <= 1
        content, retained = late.wait(f"later/st/{station}/content")
        assert retained and content["content"] in ("music", "speech", "silence", "tone", "noise")
        for leaf in ("mood", "tags"):
            config, retained = discovery(late, f"later/st/{station}/{leaf}")
            assert retained and config["availability_mode"] == "all"
            assert [a["topic"] for a in config["availability"]] == [
                "later/st/bridge/later/online", "later/st/bridge/later/feed"]
            assert config["unique_id"] and config["device"]["name"] == f"streamtag {station}"


def test_a_bridge_started_late_gets_each_station_s_state_from_the_replay_socket(
        broker, daemon, closing):
    feed, _, _, replay = daemon
    # no --control: the replay socket gives the state without the control token
    closing.append(bridge(feed, f"mqtt://127.0.0.1:{broker.open_port}", "replayed",
                          "--topic-prefix", "replayed", "--replay", replay))
    watcher = Watcher(broker.open_port, ("replayed/+/status",))
    closing.append(watcher)
    for station in STATIONS:
        status, _ = watcher.wait(f"replayed/{station}/status")
        assert status["state"] == "running"


def discovery(watcher: Watcher, state_topic: str) -> tuple[dict, bool]:
    """The Home Assistant config whose state topic is ``state_topic``, and whether it came
    retained."""
    found: list = []

    def seen() -> bool:
        for topic in watcher.topics():
            if topic.startswith("later-ha/sensor/") and topic.endswith("/config"):
                payload, retained = watcher.last(topic)
                config = json.loads(payload)
                if config["state_topic"] == state_topic:
                    found.append((config, retained))
                    return True
        return False

    wait_until(seen, WAIT_S, f"a discovery config for {state_topic}")
    return found[0]


def test_a_station_s_values_follow_it_and_the_will_says_a_killed_bridge_is_gone(
        broker, daemon, closing):
    feed, control, root, _ = daemon
    url = f"mqtt://127.0.0.1:{broker.open_port}"
    process = bridge(feed, url, "killed")
    closing.append(process)
    watcher = Watcher(broker.open_port, ("streamtag/#",))
    closing.append(watcher)
    watcher.wait("streamtag/bridge/killed/online", lambda v: v == "online")
    watcher.wait(f"streamtag/{STATIONS[0]}/tags")  # the bridge reads the feed

    short = root / "short.flac"
    write_audio(short, music_like(4.0, 16000, seed=5), 16000)
    reply = control_request(control, {"cmd": "add_source", "id": "short", "spec":
                                      f"file:{short}", "realtime": True}, 30_000)
    assert reply["ok"], reply
    watcher.wait("streamtag/short/status", lambda v: v["state"] == "running")
    watcher.wait("streamtag/short/status", lambda v: v["state"] == "ended")
    later = Watcher(broker.open_port, ("streamtag/short/status",))
    closing.append(later)
    assert later.wait("streamtag/short/status")[0]["state"] == "ended"

    process.send_signal(signal.SIGKILL)
    process.wait(30)
    assert watcher.wait("streamtag/bridge/killed/online", lambda v: v == "offline")
    gone = Watcher(broker.open_port, ("streamtag/bridge/killed/online",))
    closing.append(gone)
    assert gone.wait("streamtag/bridge/killed/online") == ("offline", True)


def test_a_stopped_bridge_says_offline_itself_and_sums_up(broker, daemon, closing):
    feed, _, _, _ = daemon
    process = bridge(feed, f"mqtt://127.0.0.1:{broker.open_port}", "stopped")
    closing.append(process)
    watcher = Watcher(broker.open_port, ("streamtag/bridge/stopped/online",
                                         f"streamtag/{STATIONS[1]}/tags"))
    closing.append(watcher)
    watcher.wait("streamtag/bridge/stopped/online", lambda v: v == "online")
    watcher.wait(f"streamtag/{STATIONS[1]}/tags")
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    assert "published" in stderr and "Traceback" not in stderr
    assert watcher.wait("streamtag/bridge/stopped/online",
                        lambda v: v == "offline")[0] == "offline"


def test_tls_with_a_password_works_and_a_wrong_password_is_a_clear_error(
        broker, daemon, closing, tmp_path):
    feed, control, _, _ = daemon
    url = f"mqtts://127.0.0.1:{broker.tls_port}"
    tls = ("--cafile", str(broker.cafile), "--username", USER)
    env = {**os.environ, "STREAMTAG_MQTT_PASSWORD": PASSWORD}
    closing.append(bridge(feed, url, "tls", "--topic-prefix", "secure", "--control", control,
                          *tls, env=env))
    watcher = Watcher(broker.tls_port, ("secure/#",), cafile=str(broker.cafile),
                      username=USER, password=PASSWORD)
    closing.append(watcher)
    assert watcher.wait("secure/bridge/tls/online")[0] == "online"
    status, _ = watcher.wait(f"secure/{STATIONS[0]}/status")
    assert status["state"] == "running"

    wrong = tmp_path / "wrong"
    wrong.write_text("not the password\n")
    refused = bridge(feed, url, "wrong", *tls, "--password-file", str(wrong))
    closing.append(refused)
    _, stderr = refused.communicate(timeout=60)
    assert refused.returncode == 2, stderr
    assert "refused the login" in stderr and "--password-file" in stderr, stderr
    assert "Traceback" not in stderr

    untrusted = bridge(feed, url, "untrusted", "--username", USER, env=env)
    closing.append(untrusted)
    _, stderr = untrusted.communicate(timeout=60)
    assert untrusted.returncode == 2, stderr
    assert "not trusted" in stderr and "--cafile" in stderr, stderr


def test_the_feed_topic_says_whether_the_feed_is_heard(broker, closing):
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    publisher = Publisher(endpoint, linger_ms=0, context=zmq.Context.instance())
    closing.append(bridge(endpoint, f"mqtt://127.0.0.1:{broker.open_port}", "feed",
                          "--topic-prefix", "feed", "--feed-silent-s", "1"))
    watcher = Watcher(broker.open_port, ("feed/bridge/feed/feed",))
    closing.append(watcher)

    def live() -> bool:
        publisher.heartbeat(0)
        return (watcher.last("feed/bridge/feed/feed") or (b"",))[0] == b"live"

    try:
        wait_until(live, WAIT_S, "the feed topic to say live", interval=0.2)
    finally:
        publisher.close()
    assert watcher.wait("feed/bridge/feed/feed", lambda v: v == "silent")[0] == "silent"


def test_a_broker_that_asks_for_a_client_certificate_gets_the_bridge_s(broker, daemon,
                                                                          closing):
    feed, _, _, _ = daemon
    certfile, keyfile = broker.client_cert
    closing.append(bridge(feed, f"mqtts://127.0.0.1:{broker.cert_port}", "cert",
                          "--topic-prefix", "cert", "--cafile", str(broker.cafile),
                          "--certfile", str(certfile), "--keyfile", str(keyfile)))
    watcher = Watcher(broker.open_port, ("cert/#",))
    closing.append(watcher)
    assert watcher.wait("cert/bridge/cert/online")[0] == "online"
    watcher.wait(f"cert/{STATIONS[0]}/tags")


def test_a_feed_with_curve_keys_is_bridged_with_the_client_s_keys(broker, closing, tmp_path):
    server_public, server_secret = generate_keys(tmp_path, "daemon")
    _, client_secret = generate_keys(tmp_path, "bridge")
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    publisher = Publisher(endpoint, linger_ms=0, context=zmq.Context.instance(),
                          curve=load_keys(server_secret, need_secret=True))
    closing.append(publisher)
    closing.append(bridge(endpoint, f"mqtt://127.0.0.1:{broker.open_port}", "curve",
                          "--topic-prefix", "curve", "--server-key", str(server_public),
                          "--client-key", str(client_secret)))
    watcher = Watcher(broker.open_port, ("curve/+/status",))
    closing.append(watcher)

    def heard() -> bool:
        publisher.publish_status("keyed", state="running", title="through CURVE")
        return watcher.last("curve/keyed/status") is not None

    wait_until(heard, WAIT_S, "the keyed feed's status on the broker", interval=0.2)
    assert watcher.wait("curve/keyed/status")[0]["title"] == "through CURVE"


def test_a_password_in_the_url_or_a_missing_key_file_is_refused_before_connecting():
    done = run_streamtag("bridge", "mqtt", "--broker", "mqtt://user:pw@127.0.0.1:1")
    assert done.returncode == 2 and "--password-file" in done.stderr, done.stderr
    done = run_streamtag("bridge", "mqtt", "--broker", "mqtt://127.0.0.1:1", "--cafile", "x")
    assert done.returncode == 2 and "mqtts://" in done.stderr, done.stderr


# -- the bridge in process: the tree's escaping and its bounds ---------------------------------


def _bridge(broker, **changes):
    from streamtag.bridge.mqtt import BridgeConfig, BrokerUrl, MqttBridge

    return MqttBridge(BridgeConfig(broker=BrokerUrl.parse(f"mqtt://127.0.0.1:{broker.open_port}"),
                                   **{"name": "inproc", **changes}))


def _scores(active: list[str]) -> ScoresBody:
    tags = ["calm", "loud", *active]
    return ScoresBody.from_dict({
        "start_s": 0.0, "end_s": 1.0, "start_sample": 0, "end_sample": 16000, "tags": tags,
        "raw": [0.5] * len(tags), "smoothed": [0.5] * len(tags), "active": active,
        "model": {"name": "tiny", "hash": "0" * 64}, "latency_ms": 1.0})


def test_station_ids_with_slashes_and_wildcards_stay_in_their_own_subtree(broker, closing):
    from streamtag.bridge.mqtt import station_level

    assert station_level("a/b") == "a%2Fb" and station_level("+") == "%2B"
    assert station_level("#") == "%23" and station_level("bridge") == "%62ridge"
    assert station_level("radio-1.fm:2_x") == "radio-1.fm:2_x"
    ids = ("a", "a/b", "+", "#", "a/+/#", "$SYS", "%2F", "bridge", "b")
    watcher = Watcher(broker.open_port, ("esc/#",))
    closing.append(watcher)
    stop = threading.Event()
    bridge = _bridge(broker, prefix="esc")
    closing.append(bridge)
    assert bridge.connect(stop)
    for stream in ids:
        bridge.take(stream, StatusBody(state="running", title=f"title of {stream}"))
        bridge.take(stream, _scores([f"tag-of-{stream}"]))
    bridge.flush()
    for stream in ids:
        status, _ = watcher.wait(f"esc/{station_level(stream)}/status")
        assert status["title"] == f"title of {stream}"
    a_only = Watcher(broker.open_port, ("esc/a/#",))
    closing.append(a_only)
    a_only.wait("esc/a/tags")
    a_only.wait("esc/a/status")
    assert a_only.topics() == {"esc/a/status", "esc/a/tags"}
    statuses = Watcher(broker.open_port, ("esc/+/status",))
    closing.append(statuses)
    wait_until(lambda: len(statuses.topics()) == len(ids), WAIT_S, "every station's status")
    assert {json.loads(statuses.last(t)[0])["title"] for t in statuses.topics()} == {
        f"title of {stream}" for stream in ids}
    tags = {t: json.loads(watcher.last(t)[0])["active"] for t in watcher.topics()
            if t.endswith("/tags")}
    assert tags == {f"esc/{station_level(s)}/tags": [f"tag-of-{s}"] for s in ids}


def test_a_forged_feed_of_thousands_of_streams_fills_the_station_cap_and_no_more(
        broker, closing, caplog):
    from streamtag.bridge.mqtt import bridge_feed

    endpoint = f"tcp://127.0.0.1:{free_port()}"
    forger = Publisher(endpoint, linger_ms=0, context=zmq.Context.instance())
    closing.append(forger)
    bridge = _bridge(broker, prefix="forged", max_stations=40)
    stop = threading.Event()
    connected = threading.Event()
    counted: list[int] = []
    thread = threading.Thread(target=lambda: counted.append(bridge_feed(
        endpoint, bridge, stop, on_connected=connected.set)), daemon=True)
    watcher = Watcher(broker.open_port, ("forged/+/status",))
    closing.append(watcher)
    with caplog.at_level(logging.WARNING, logger="streamtag.bridge.mqtt"):
        thread.start()
        try:
            assert connected.wait(WAIT_S)
            # the subscription takes a moment to reach the publisher: sent until heard
            def heard() -> bool:
                forger.publish_status("first", state="running")
                return "first" in bridge.tree.stations

            wait_until(heard, WAIT_S, "the feed to be heard", interval=0.1)
            sent = 0
            while bridge.tree.refused < 1000:
                for _ in range(500):
                    forger.publish_status(f"forged-{sent}", state="running")
                    sent += 1
                time.sleep(0.05)  # the publisher's queue, not this test, decides what is lost
                if sent > 200_000:
                    break
        finally:
            stop.set()
            thread.join(30)
    assert len(bridge.tree.stations) == 40 and bridge.tree.refused >= 1000
    assert counted and counted[0] >= 1040
    wait_until(lambda: len(watcher.topics()) == 40, WAIT_S, "the held stations' statuses")
    assert [r.getMessage() for r in caplog.records
            if "stations" in r.getMessage()] == [
        "the MQTT bridge holds 40 stations (--max-stations), none ended: messages of further "
        "stations are not bridged"]


def test_what_waits_for_the_broker_is_bounded_and_the_newest_value_gets_through(
        broker, closing):
    bridge = _bridge(broker, prefix="queued", max_queued=2, max_inflight=1)
    closing.append(bridge)
    watcher = Watcher(broker.open_port, ("queued/#",))
    closing.append(watcher)
    assert bridge.connect(threading.Event())
    for round_ in range(20):
        for n in range(50):
            bridge.take(f"s{n}", StatusBody(state="running", title=f"round {round_}"))
        bridge.flush()
        assert bridge.waiting <= 50  # one value per station and leaf, the newest
    assert bridge.queue_full > 0
    wait_until(lambda: (bridge.flush(), bridge.waiting)[1] == 0, WAIT_S,
               "the waiting values to go out", interval=0.05)
    for n in range(50):
        watcher.wait(f"queued/s{n}/status", lambda v: v["title"] == "round 19")


def test_a_broker_started_again_gets_every_held_value_again():
    with mosquitto_broker() as first:
        bridge = _bridge(first, prefix="again")
        try:
            assert bridge.connect(threading.Event())
            bridge.take("radio", StatusBody(state="running", title="before the restart"))
            bridge.flush()
            watcher = Watcher(first.open_port, ("again/radio/status",))
            watcher.wait("again/radio/status")
            watcher.close()
        except BaseException:
            bridge.close()
            raise
    try:  # the broker is gone, and its retained values with it; one starts where it was
        with mosquitto_broker((first.open_port, first.tls_port, first.cert_port)) as second:
            watcher = Watcher(second.open_port, ("again/#",))
            try:
                wait_until(lambda: (bridge.flush(), watcher.last("again/radio/status"))[1],
                           WAIT_S, "the bridge to connect again and publish", interval=0.1)
                status, _ = watcher.wait("again/radio/status")
                assert status["title"] == "before the restart"
                assert watcher.wait("again/bridge/inproc/online")[0] == "online"
            finally:
                watcher.close()
    finally:
        bridge.close()


def test_at_the_cap_the_station_ended_longest_ago_makes_room_and_its_topics_go(
        broker, closing):
    bridge = _bridge(broker, prefix="room", max_stations=3, homeassistant=True,
                     discovery_prefix="room-ha")
    closing.append(bridge)
    assert bridge.connect(threading.Event())
    watcher = Watcher(broker.open_port, ("room/#", "room-ha/#"))
    closing.append(watcher)
    for stream, state in (("first", "ended"), ("second", "failed"), ("playing", "running")):
        bridge.take(stream, StatusBody(state="running"))
        bridge.take(stream, _scores(["rock"]))
        bridge.take(stream, StatusBody(state=state))
    bridge.flush()
    watcher.wait("room/first/status", lambda v: v["state"] == "ended")
    bridge.take("new", StatusBody(state="running"))
    bridge.flush()
    assert sorted(bridge.tree.stations) == ["new", "playing", "second"]
    for topic in ("room/first/status", "room/first/tags"):  # emptied: deleted on the broker
        wait_until(lambda topic=topic: watcher.last(topic) == (b"", False), WAIT_S,
                   f"{topic} to be emptied")
    wait_until(lambda: sum(1 for t in watcher.topics() if t.startswith("room-ha/")
                           and watcher.last(t)[0] == b"") == 2, WAIT_S,
               "the forgotten station's discovery configs to be emptied")

    late = Watcher(broker.open_port, ("room/+/status",))
    closing.append(late)
    for stream in ("second", "playing", "new"):
        late.wait(f"room/{stream}/status")
    assert "room/first/status" not in late.topics()

