"""The daemon's TOML configuration: every bad key or value is reported with its name."""

import pytest

from streamtag.config import DaemonConfig, config_from_dict, load_config, with_overrides
from streamtag.errors import ConfigError

GOOD = """
[model]
path = "m.pt"
device = "cpu"

[[sources]]
id = "radio1"
spec = "http://127.0.0.1:8000/live"
max_backoff_s = 5

[[sources]]
id = "archive"
spec = "file:/srv/a.mp3"
realtime = true

[publish]
endpoint = "tcp://127.0.0.1:7000"
heartbeat_s = 1

[smoothing]
time_constant_s = 3

[engine]
max_batch = 32
hop_seconds = 0.5
"""


def test_a_full_file_loads(tmp_path):
    path = tmp_path / "daemon.toml"
    path.write_text(GOOD)
    config = load_config(path)
    assert config.model.path == "m.pt" and config.model.device == "cpu"
    assert [s.id for s in config.sources] == ["radio1", "archive"]
    assert config.sources[0].options == {"max_backoff_s": 5}
    assert config.publish.endpoint == "tcp://127.0.0.1:7000"
    assert config.publish.heartbeat_s == 1.0 and isinstance(config.publish.heartbeat_s, float)
    assert config.engine.max_batch == 32 and config.engine.hop_seconds == 0.5
    assert config.smoothing.time_constant_s == 3.0
    assert config.control.endpoint.startswith("tcp://127.0.0.1:")  # loopback by default


@pytest.mark.parametrize("text, names", [
    ("[engine]\nmax_batchh = 3", ["engine.max_batchh", "max_batch"]),
    ("[engine]\nmax_batch = 0", ["engine.max_batch"]),
    ("[engine]\nmax_batch = 'many'", ["engine.max_batch", "integer"]),
    ("[smoothing]\nmargin = -0.5", ["smoothing.margin"]),
    ("[model]\ndevice = 'tpu'", ["model.device", "cuda"]),
    ("[publishh]\nendpoint = 'x'", ["publishh", "sections"]),
    ("[[sources]]\nid = 'a b'\nspec = 'x.mp3'", ["sources.id", "a b"]),
    ("[[sources]]\nspec = 'x.mp3'", ["sources[0].id"]),
    ("[[sources]]\nid='a'\nspec='x'\n[[sources]]\nid='a'\nspec='y'", ["'a'", "twice"]),
    ("[publish]\nheartbeat_s = true", ["publish.heartbeat_s", "number"]),
    ("[engine\n", ["not valid TOML"]),
    ("[security]\nserver_key = 'k.key_secret'", ["security.server_key", "client_keys"]),
])
def test_bad_lines_name_their_key(tmp_path, text, names):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    for name in names:
        assert name in str(info.value)
    assert str(path) in str(info.value)


def test_flags_override_the_file():
    config = config_from_dict({"sources": [{"id": "a", "spec": "a.mp3"}]})
    changed = with_overrides(config, model="other.pt", sources=["b.mp3", "live=device:pulse"],
                             publish="tcp://127.0.0.1:9", hop_seconds=2.0, realtime=True)
    assert changed.model.path == "other.pt"
    assert [(s.id, s.spec) for s in changed.sources] == [
        ("a", "a.mp3"), ("s1", "b.mp3"), ("live", "device:pulse")]
    assert changed.sources[1].options == {"realtime": True}
    assert changed.publish.endpoint == "tcp://127.0.0.1:9"
    assert changed.engine.hop_seconds == 2.0
    with pytest.raises(ConfigError, match="hop"):
        with_overrides(DaemonConfig(), hop_seconds=-1.0)


def test_urls_are_not_mistaken_for_ids():
    changed = with_overrides(DaemonConfig(), sources=["http://host:80/x", "file:a.mp3"])
    assert [s.spec for s in changed.sources] == ["http://host:80/x", "file:a.mp3"]
