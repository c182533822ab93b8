"""What a stream's audio is, in the daemon's Prometheus metrics: a real daemon plays music and
then a spoken bulletin (real speech from festival, held out of the content classifier's fit),
and a scrape over real HTTP says the stream is hearing speech and counts the windows of each
content as the scores messages it published said them; the rules docs/operations.md gives
read them."""

from __future__ import annotations

import collections
import re
import urllib.request
from pathlib import Path

import numpy as np
import yaml
from support.content_material import RATE, festival_speech, game_music, require
from support.helpers import collect, free_port, make_config, started, tiny_model_file

from streamtag.audio.files import write_audio
from streamtag.daemon.config import MetricsConfig, SourceConfig
from streamtag.engine.content import CONTENT_KINDS


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        return reply.read().decode()


def by_content(text: str, name: str, stream: str) -> dict[str, float]:
    return {m[0]: float(m[1]) for m in re.findall(
        rf'^{name}{{content="(\w+)",stream="{stream}"}} (\S+)$', text, flags=re.MULTILINE)}


def test_the_metrics_say_what_each_stream_hears_and_count_its_windows(tmp_path):
    require()
    speech = festival_speech(tmp_path)[: 20 * RATE]
    audio = np.concatenate([game_music(1, 15), speech / np.abs(speech).max() * 0.5])
    path = tmp_path / "music-then-news.flac"
    write_audio(path, audio.astype(np.float32), RATE)
    model = tiny_model_file(tmp_path / "tiny.pt", window=187, hop=62)
    port = free_port()
    daemon, sub = started(make_config(model, tmp_path, metrics=MetricsConfig(port=port)))
    try:
        daemon.add_source(SourceConfig("news", f"file:{path}"))
        messages = collect(sub, {"news"})
        text = scrape(port)
    finally:
        daemon.stop()
        sub.close()
    published = collections.Counter(m.body.content for m in messages
                                    if m.msg_type == "scores")
    assert published["music"] > 0 and published["speech"] > 0
    # every content has its counter, those never heard at 0
    assert by_content(text, "streamtag_content_windows_total", "news") == {
        kind: float(published.get(kind, 0)) for kind in CONTENT_KINDS}
    # the bulletin is what it hears last
    assert by_content(text, "streamtag_stream_content", "news") == {
        kind: 1.0 if kind == "speech" else 0.0 for kind in CONTENT_KINDS}
    assert "# TYPE streamtag_stream_content gauge" in text
    assert "# TYPE streamtag_content_windows_total counter" in text


def test_the_documented_content_rules_are_valid_and_read_metrics_the_daemon_serves():
    text = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text(
        encoding="utf-8")
    section = text.split("\n## Speech and the rest: what a stream is playing\n", 1)[1]
    section = section.split("\n## ", 1)[0]
    (rules,) = [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", section, re.S)]
    by_name = {rule.get("alert") or rule.get("record"): rule
               for group in rules["groups"] for rule in group["rules"]}
    assert set(by_name) == {"StreamtagNotMusic", "streamtag:speech_share:1h"}
    assert 'streamtag_stream_content{content="music"} == 0' in by_name["StreamtagNotMusic"]["expr"]
    assert re.fullmatch(r"\d+[smh]", by_name["StreamtagNotMusic"]["for"])
    served = {"streamtag_stream_content", "streamtag_content_windows_total",
              "streamtag_stream_state"}
    for rule in by_name.values():
        named = set(re.findall(r"\b(streamtag_\w+)", rule["expr"]))
        assert named and named <= served, named
    for kind in re.findall(r'content="(\w+)"', section):
        assert kind in CONTENT_KINDS
