"""What ``streamtag bridge mqtt`` makes of its flags and of messages, before any broker: the
broker URL, the refusals that say what to change, the password's sources, the topic levels and
the payloads' cuts. No broker and no paho-mqtt needed (tests/bridge/test_mqtt.py has both)."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile

import pytest

from streamtag.bridge.mqtt import (
    MAX_LISTED_TAGS,
    PASSWORD_ENV,
    BridgeConfig,
    BrokerUrl,
    StationTree,
    escape_level,
    payloads,
    read_password,
    station_level,
)
from streamtag.errors import ConfigError
from streamtag.wire.protocol import ScoresBody, StatusBody, TrackBody

LOCAL = BrokerUrl.parse("mqtt://127.0.0.1")


def scores(active: list[str], **extra) -> ScoresBody:
    tags = sorted(set(active) | {"calm"})
    return ScoresBody.from_dict({
        "start_s": 0.0, "end_s": 1.0, "start_sample": 0, "end_sample": 16000, "tags": tags,
        "raw": [0.5] * len(tags), "smoothed": [0.5] * len(tags), "active": active,
        "model": {"name": "tiny", "hash": "0" * 64}, "latency_ms": 1.0, **extra})


def test_without_paho_the_command_says_in_one_line_how_to_install_it():
    code = ("import sys; sys.modules['paho'] = None; from streamtag.cli import main; "
            "sys.exit(main(['bridge', 'mqtt']))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=tempfile.gettempdir(), timeout=60)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        "streamtag bridge: this needs paho-mqtt, which is not installed here: "
        "pip install 'streamtag[mqtt]'"]


def test_a_broker_url_gives_host_port_and_tls():
    assert BrokerUrl.parse("mqtt://127.0.0.1") == BrokerUrl("127.0.0.1", 1883, False)
    assert BrokerUrl.parse("MQTTS://[::1]") == BrokerUrl("::1", 8883, True)
    assert BrokerUrl.parse("mqtts://localhost:18883/") == BrokerUrl("localhost", 18883, True)


@pytest.mark.parametrize("url, said", [
    ("tcp://127.0.0.1:1883", "mqtt://HOST[:PORT]"),
    ("mqtt://", "mqtt://HOST[:PORT]"),
    ("mqtt://127.0.0.1:99999", "--broker"),
    ("mqtt://me:secret@127.0.0.1", "--password-file"),
    ("mqtt://me@127.0.0.1", "--username"),
    ("mqtt://127.0.0.1/topic", "no path"),
])
def test_a_broker_url_that_cannot_work_is_refused_saying_what_to_give(url, said):
    with pytest.raises(ConfigError, match=None) as refused:
        BrokerUrl.parse(url)
    assert said in str(refused.value)
    assert "secret" not in str(refused.value)


@pytest.mark.parametrize("changes, said", [
    ({"prefix": "a/+/b"}, "--topic-prefix"),
    ({"prefix": "$SYS/x"}, "--topic-prefix"),
    ({"prefix": "a//b"}, "--topic-prefix"),
    ({"prefix": ""}, "--topic-prefix"),
    ({"discovery_prefix": "ha/#"}, "--discovery-prefix"),
    ({"cafile": "ca.pem"}, "mqtts://"),
    ({"broker": BrokerUrl.parse("mqtts://h"), "certfile": "c.pem"}, "--keyfile"),
    ({"password": "pw"}, "--username"),
    ({"max_stations": 0}, "--max-stations"),
    ({"feed_silent_s": 0.0}, "--feed-silent-s"),
])
def test_flags_that_cannot_work_together_are_refused(changes, said):
    with pytest.raises(ConfigError) as refused:
        BridgeConfig(**{"broker": LOCAL, "name": "n", **changes})
    assert said in str(refused.value)


def test_the_password_comes_from_the_file_s_first_line_else_the_environment(tmp_path):
    path = tmp_path / "password"
    path.write_text("pässword with spaces \nsecond line\n")
    assert read_password(str(path), {PASSWORD_ENV: "env"}) == "pässword with spaces "
    assert read_password(None, {PASSWORD_ENV: "env"}) == "env"
    assert read_password(None, {}) is None
    path.write_bytes(b"x" * 5000)
    with pytest.raises(ConfigError, match="not a password file"):
        read_password(str(path), {})
    with pytest.raises(ConfigError, match="--password-file"):
        read_password(str(tmp_path / "absent"), {})


def test_a_station_id_is_one_topic_level_that_no_other_id_shares():
    ids = ["a", "a/b", "a%2Fb", "+", "#", "$SYS", "bridge", "Bridge", "é", "radio-1.fm:2_x",
           "%62ridge", " "]
    levels = [station_level(i) for i in ids]
    assert len(set(levels)) == len(ids)
    for level in levels:
        assert not set(level) & set("/+#$ ") and level != "bridge"
    assert station_level("radio-1.fm:2_x") == "radio-1.fm:2_x"
    assert station_level("é") == "%C3%A9" and escape_level("bridge") == "bridge"


def test_payloads_are_small_json_with_texts_and_lists_cut():
    long = "t" * 4096  # the protocol's longest text
    many = [long] + [f"tag{n}" for n in range(100)]
    tags = json.loads(payloads(scores(many))["tags"])
    assert len(tags["active"]) == MAX_LISTED_TAGS and tags["more"] == 101 - MAX_LISTED_TAGS
    assert tags["active"][0] == "t" * 128
    status = json.loads(payloads(StatusBody(state="failed", error=long, title=long))["status"])
    assert status == {"state": "failed", "title": "t" * 512, "station": None,
                      "error": "t" * 512}
    out = payloads(scores(["rock"], content="speech", mood={
        "words": ["calm"], "valence": -0.04, "arousal": 0.46, "since_s": 1.0,
        "genres": ["rock"]}))
    assert json.loads(out["mood"]) == {"words": ["calm"], "genres": ["rock"],
                                       "valence": 0.0, "arousal": 0.5}
    assert b"-0.0" not in out["mood"]
    assert json.loads(out["content"]) == {"content": "speech"}


def test_a_hostile_feed_s_texts_make_payloads_no_bigger():
    # control characters: six bytes each in JSON, the worst a text can cost
    hostile = "\x01" * 4096
    names = [hostile[:4000] + str(n) for n in range(200)]
    tags = payloads(scores(names))["tags"]
    assert len(tags) <= 4200 and json.loads(tags)["more"] == 200 - len(json.loads(tags)["active"])
    status = payloads(StatusBody(state="failed", error=hostile, title=hostile,
                                 station=hostile[:4096]))["status"]
    assert len(status) <= 3 * 1024 + 100


def test_a_track_s_payload_is_its_title_span_reason_and_active_tags():
    track = TrackBody.from_dict({
        "title": "Artist - Song", "reason": "title_change", "start_s": 2.99, "end_s": 241.8712,
        "start_sample": 47840, "end_sample": 3869939, "started_at": 1795858548.0,
        "ended_at": 1795858789.41234, "windows": 3, "tags": ["calm", "rock"],
        "mean_raw": [0.1, 0.9], "mean_smoothed": [0.1, 0.8], "active_share": [0.0, 1.0],
        "active": ["rock"], "model": {"name": "tiny", "hash": "0" * 64}})
    assert json.loads(payloads(track)["track"]) == {
        "title": "Artist - Song", "reason": "title_change", "start_s": 2.99, "end_s": 241.871,
        "ended_at": 1795858789.412, "active": ["rock"]}


def test_at_the_cap_the_station_ended_longest_ago_is_forgotten_for_a_new_one():
    tree = StationTree(max_stations=3)
    for stream in ("a", "b", "c"):
        tree.apply(stream, StatusBody(state="running"))
    tree.apply("b", StatusBody(state="ended"))
    tree.apply("a", StatusBody(state="failed"))
    tree.apply("c", scores(["rock"]))
    assert tree.apply("d", StatusBody(state="running")) == [("d", "status")]
    assert tree.forgotten == [("b", ("status",))] and sorted(tree.stations) == ["a", "c", "d"]
    tree.apply("a", StatusBody(state="reconnecting"))  # running again: not done
    assert tree.apply("e", StatusBody(state="running")) == [] and tree.refused == 1
    assert tree.replaced == 1


def test_the_tree_holds_its_stations_and_says_only_what_changed():
    tree = StationTree(max_stations=2)
    assert tree.apply("a", scores(["rock"])) == [("a", "tags")]
    assert tree.apply("a", scores(["rock"])) == []  # a window that changes nothing
    assert tree.apply("a", scores(["pop"])) == [("a", "tags")]
    assert tree.apply("b", StatusBody(state="running")) == [("b", "status")]
    assert tree.apply("c", StatusBody(state="running")) == []
    assert sorted(tree.stations) == ["a", "b"] and tree.refused == 1
