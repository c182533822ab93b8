"""Dead air in the metrics: the per-stream gauge and counters a Prometheus alert reads, scraped
over real HTTP from a daemon playing real music into silence, and the documented alert rule."""

from __future__ import annotations

import re
import time
import tomllib
import urllib.request
from pathlib import Path

import pytest
import yaml
from support.helpers import collect, free_port, make_config, started, tiny_model_file

from streamtag.audio.files import write_audio
from streamtag.daemon.config import MetricsConfig, SourceConfig, config_from_dict
from streamtag.engine.health import HealthConfig
from tests.engine.test_health import RATE, music_with_a_gap

ROOT = Path(__file__).resolve().parents[2]
OPERATIONS = ROOT / "docs" / "operations.md"
SPEED = 10.0  # realtime pacing, ten times faster than real time


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        return reply.read().decode()


def metric(text: str, name: str, stream: str) -> float | None:
    found = re.search(rf'^{name}{{stream="{stream}"}} (\S+)$', text, flags=re.MULTILINE)
    return None if found is None else float(found.group(1))


def test_silent_gauge_and_counters_while_a_live_stream_is_silent(tmp_path):
    path = tmp_path / "music-then-silence.flac"
    write_audio(path, music_with_a_gap(6, 30, 0), RATE)
    model = tiny_model_file(tmp_path / "tiny.pt", window=128, hop=32)
    port = free_port()
    daemon, sub = started(make_config(model, tmp_path, metrics=MetricsConfig(port=port)))
    try:
        daemon.add_source(SourceConfig("live", f"file:{path}",
                                       {"realtime": True, "speed": SPEED}))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            message = sub.recv(200)
            if message is not None and message.msg_type == "silence":
                break
        else:
            pytest.fail("no silence message within 30 s")
        assert message.body.state == "on"
        during = scrape(port)
        collect(sub, {"live"})
        after = scrape(port)
    finally:
        daemon.stop()
        sub.close()
    assert metric(during, "streamtag_silent", "live") == 1.0
    assert metric(during, "streamtag_silences_total", "live") == 1.0
    assert metric(during, "streamtag_silent_seconds_total", "live") >= 10.0
    assert metric(during, "streamtag_clipping_windows_total", "live") == 0.0
    assert 'streamtag_stream_state{state="running",stream="live"} 1.0' in during
    # The stream ended: no longer silent, the silence counted with its whole length.
    assert metric(after, "streamtag_silent", "live") == 0.0
    assert metric(after, "streamtag_silent_seconds_total", "live") == pytest.approx(30.0, abs=1.0)


def yaml_blocks(text: str) -> list[dict]:
    return [yaml.safe_load(block) for block in re.findall(r"```yaml\n(.*?)```", text, re.S)]


def test_the_dead_air_alert_rule_is_valid_and_reads_metrics_the_daemon_serves():
    text = OPERATIONS.read_text(encoding="utf-8")
    section = text.split("\n## Dead air\n", 1)[1].split("\n## ", 1)[0]
    (rules,) = [b for b in yaml_blocks(section) if isinstance(b, dict) and "groups" in b]
    alerts = {rule["alert"]: rule for group in rules["groups"] for rule in group["rules"]}
    dead_air = alerts["StreamtagDeadAir"]
    assert "streamtag_silent == 1" in dead_air["expr"]
    assert re.fullmatch(r"\d+[smh]", dead_air["for"])
    assert dead_air["labels"]["severity"] == "critical"
    served = {"streamtag_silent", "streamtag_silent_seconds_total", "streamtag_silences_total",
              "streamtag_clipping_windows_total", "streamtag_stream_state"}
    for rule in alerts.values():
        names = set(re.findall(r"\bstreamtag_[a-z_]+", rule["expr"]))
        assert names and names <= served, (rule["alert"], names - served)
    # the config block of the section is the [health] section the daemon reads
    config = re.search(r"```toml\n(.*?)```", section, re.S).group(1)
    assert config_from_dict(tomllib.loads(config)).health == HealthConfig()
