"""The daemon's TOML configuration: every bad key or value is reported with its name."""

import json
import os

import pytest
from support.helpers import run_python

from streamtag.daemon.config import (
    DaemonConfig,
    config_from_dict,
    exposed_endpoints,
    flag_values,
    load_config,
    setting_flags,
    with_overrides,
)
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


def test_flags_override_the_file(tmp_path):
    config = config_from_dict({"sources": [{"id": "a", "spec": "a.mp3"}]})
    there = tmp_path / "c.wav"
    there.write_bytes(b"")
    changed = with_overrides(config, model="other.pt",
                             sources=["b.mp3", "live=device:pulse", f"c={there}", "p=pipe:",
                                      "radio=http://127.0.0.1:8000/live"],
                             publish="tcp://127.0.0.1:9", hop_seconds=2.0, realtime=True)
    assert changed.model.path == "other.pt"
    assert [(s.id, s.spec) for s in changed.sources] == [
        ("a", "a.mp3"), ("s1", "b.mp3"), ("live", "device:pulse"), ("c", str(there)),
        ("p", "pipe:"), ("radio", "http://127.0.0.1:8000/live")]
    # --realtime plays the files at real speed, the config file's too (it left those as
    # fast as they decode); live sources take no such option
    assert [s.options for s in changed.sources] == [{"realtime": True}, {"realtime": True}, {},
                                                    {"realtime": True}, {}, {}]
    # with no --source at all
    assert [s.options for s in with_overrides(config, realtime=True).sources] == [
        {"realtime": True}]
    assert changed.publish.endpoint == "tcp://127.0.0.1:9"
    assert changed.engine.hop_seconds == 2.0
    with pytest.raises(ConfigError, match="hop"):
        with_overrides(DaemonConfig(), hop_seconds=-1.0)


def test_control_allow_lists_default_to_nothing_and_are_checked():
    control = DaemonConfig().control
    assert (control.model_roots, control.file_roots, control.allow_hosts) == ((), (), ())
    assert control.allow_devices is False and control.allow_private_hosts is False
    assert control.max_sources == 1024 and control.token_file is None
    config = config_from_dict({"control": {
        "token_file": "/run/st/token", "model_roots": ["/srv/models"], "allow_devices": True,
        "allow_hosts": [".example.org", "203.0.113.0/24"], "deny_hosts": ["bad.example.org"],
        "allow_private_hosts": True, "max_sources": 10}})
    assert config.control.model_roots == ("/srv/models",) and config.control.max_sources == 10
    for key, value, words in (("max_sources", 0, "control.max_sources must be >= 1"),
                              ("allow_devices", "yes", "control.allow_devices"),
                              ("model_roots", "/srv", "control.model_roots"),
                              ("token_file", " ", "control.token_file is empty"),
                              ("allow_hosts", ["not a host!!"],
                               "control.allow_hosts: 'not a host!!' is neither a host name"),
                              ("deny_hosts", ["300.1.1.1/99"],
                               "control.deny_hosts: '300.1.1.1/99' is neither"),
                              ("token", "x", "token")):
        with pytest.raises(ConfigError, match=words):
            config_from_dict({"control": {key: value}})


def test_an_endpoint_port_outside_1_to_65535_is_refused_in_the_file_too():
    for section, value in (("publish", "tcp://127.0.0.1:99999"), ("control", "tcp://[::1]:0")):
        with pytest.raises(ConfigError, match=f"{section}.endpoint .*the port .* is not a TCP "
                                              "port; write tcp://HOST:PORT with PORT 1-65535"):
            config_from_dict({section: {"endpoint": value}})
    assert config_from_dict({"publish": {"endpoint": "tcp://127.0.0.1:65535"}})


def test_admin_keys_are_curve_keys_and_insecure_is_a_flag_too():
    with pytest.raises(ConfigError, match="admin_keys needs security.server_key"):
        config_from_dict({"security": {"admin_keys": "/etc/st/admins"}})
    for key in ("client_keys", "admin_keys"):  # a list of key files, as one may guess
        with pytest.raises(ConfigError, match=f"security.{key} is a folder of public key files"):
            config_from_dict({"security": {"server_key": "s.key_secret", "client_keys": "c",
                                           key: ["k/one.key"]}})
    config = config_from_dict({"security": {"server_key": "s.key_secret", "client_keys": "c",
                                            "admin_keys": "a", "insecure": True}})
    assert config.security.admin_keys == "a" and config.security.insecure
    assert with_overrides(DaemonConfig(), insecure=True).security.insecure


@pytest.mark.parametrize("publish, control, connect, exposed", [
    ("tcp://127.0.0.1:5556", "tcp://127.0.0.1:5557", False, []),
    ("tcp://[::1]:5556", "ipc:///tmp/st-control", False, []),
    ("tcp://localhost:5556", "", False, []),
    ("tcp://0.0.0.0:5556", "tcp://127.0.0.1:5557", False, ["publish.endpoint"]),
    ("tcp://*:5556", "tcp://*:5557", False, ["publish.endpoint", "control.endpoint"]),
    ("tcp://proxy.example.org:5558", "tcp://127.0.0.1:5557", True, []),  # connects, not binds
    ("tcp://eth0:5556", "tcp://127.0.0.1:5557", False, ["publish.endpoint"]),
])
def test_endpoints_beyond_loopback_without_keys_are_found(publish, control, connect, exposed):
    config = config_from_dict({"publish": {"endpoint": publish, "connect": connect},
                               "control": {"endpoint": control}})
    assert [key for key, _ in exposed_endpoints(config)] == exposed
    keyed = config_from_dict({"publish": {"endpoint": publish},
                              "security": {"server_key": "s", "client_keys": "c"}})
    assert exposed_endpoints(keyed) == []


def test_a_replay_endpoint_beyond_loopback_without_keys_is_found():
    for replay, exposed in (("tcp://127.0.0.1:5560", []), ("", []),
                            ("tcp://*:5560", ["publish.replay_endpoint"])):
        config = config_from_dict({"publish": {"replay_endpoint": replay}})
        assert [key for key, _ in exposed_endpoints(config)] == exposed
    with pytest.raises(ConfigError, match="publish.replay_endpoint 'tcp://x:99999'"):
        config_from_dict({"publish": {"replay_endpoint": "tcp://x:99999"}})


def test_urls_are_not_mistaken_for_ids():
    changed = with_overrides(DaemonConfig(), sources=["http://host:80/x", "file:a.mp3"])
    assert [s.spec for s in changed.sources] == ["http://host:80/x", "file:a.mp3"]


@pytest.mark.parametrize("address", ["127.0.0.1", "::1", "0.0.0.0", "localhost",
                                     "metrics.example.org"])
def test_a_metrics_address_may_be_an_ip_address_or_a_host_name(address):
    assert config_from_dict({"metrics": {"address": address}}).metrics.address == address


def test_a_bad_metrics_port_flag_names_the_flag_and_the_key():
    with pytest.raises(ConfigError) as info:
        with_overrides(DaemonConfig(), metrics_port=70000)
    assert "--metrics-port" in str(info.value) and "metrics.port" in str(info.value)


@pytest.mark.parametrize("key, value, names", [
    ("max_pending_windows", "0", [">= 1", "got 0"]),
    ("max_pending_windows", "-3", [">= 1", "got -3"]),
    ("max_pending_windows", "2.5", ["integer"]),
    ("max_pending_windows", "'16'", ["integer"]),
    ("max_batch", "-1", [">= 1"]),
    ("max_batch", "true", ["integer"]),
    ("decoders", "-1", ["from 0", "got -1"]),
    ("decoders", "1.5", ["integer"]),
    ("max_wait_ms", "-1", [">= 0"]),
    ("max_wait_ms", "60001", ["60000"]),
    ("max_wait_ms", "inf", ["finite"]),
    ("hop_seconds", "0", ["> 0"]),
    ("hop_seconds", "-0.5", ["> 0"]),
    ("hop_seconds", "61", ["<= 60"]),
    ("hop_seconds", "nan", ["finite"]),
])
def test_engine_bounds_are_refused_naming_the_key(tmp_path, key, value, names):
    path = tmp_path / "bad.toml"
    path.write_text(f"[engine]\n{key} = {value}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert f"engine.{key}" in str(info.value)
    for name in names:
        assert name in str(info.value)


def test_engine_bounds_accept_their_edges():
    engine = config_from_dict({"engine": {"max_pending_windows": 1, "max_batch": 1,
                                          "max_wait_ms": 0, "hop_seconds": 60}}).engine
    assert (engine.max_pending_windows, engine.max_batch, engine.max_wait_ms,
            engine.hop_seconds) == (1, 1, 0.0, 60.0)


def test_engine_defaults_follow_the_device_and_the_cores(monkeypatch):
    engine = config_from_dict({}).engine
    assert engine.max_batch is None
    assert (engine.batch_limit("cpu"), engine.batch_limit("cuda")) == (8, 64)
    assert config_from_dict({"engine": {"max_batch": 3}}).engine.batch_limit("cuda") == 3
    # source threads at work: the cores left over from inference, at least 1 and at most 2
    for cores, turns in ((1, 1), (2, 1), (3, 2), (16, 2)):
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid, n=cores: set(range(n)))
        assert engine.decoder_turns() == turns, cores
    assert config_from_dict({"engine": {"workers": 2, "threads": 64}}).engine.decoder_turns() == 1
    assert config_from_dict({"engine": {"decoders": 5}}).engine.decoder_turns() == 5


DEVICE, HTTP, PIPE = "device:pulse", "http://127.0.0.1:9/live.mp3", "pipe:"


@pytest.mark.parametrize("spec, options, names", [
    (DEVICE, {"initial_backoff_s": 0}, ["initial_backoff_s", "max_backoff_s"]),
    (DEVICE, {"initial_backoff_s": -1}, ["initial_backoff_s"]),
    (DEVICE, {"initial_backoff_s": 5, "max_backoff_s": 1}, ["initial_backoff_s <= max_backoff_s"]),
    (DEVICE, {"stall_timeout_s": 0}, ["stall_timeout_s", "> 0"]),
    (DEVICE, {"stall_timeout_s": -2}, ["stall_timeout_s", "-2"]),
    (DEVICE, {"max_queue_s": 0}, ["max_queue_s", "> 0"]),
    (DEVICE, {"blocksize": -1}, ["blocksize", ">= 0"]),
    (DEVICE, {"channels": 0}, ["channels", ">= 1"]),
    (DEVICE, {"device_rate": -48000}, ["device_rate", "> 0"]),
    (DEVICE, {"max_reconnects": -1}, ["max_reconnects", ">= 0"]),
    (DEVICE, {"reconnect": "yes"}, ["'reconnect'", "true or false"]),
    (DEVICE, {"read_timeout_s": 5}, ["'read_timeout_s'", "stall_timeout_s"]),
    (HTTP, {"initial_backoff_s": 0}, ["initial_backoff_s", "max_backoff_s"]),
    (HTTP, {"max_backoff_s": -1}, ["max_backoff_s"]),
    (HTTP, {"read_timeout_s": 0}, ["read_timeout_s", "> 0"]),
    (HTTP, {"read_timeout_s": -1.5}, ["read_timeout_s", "-1.5"]),
    # beyond what the clock's waits take: refused at once, not a traceback in the source later
    (HTTP, {"read_timeout_s": 1e308}, ["read_timeout_s", "at most 3600"]),
    (HTTP, {"max_backoff_s": 1e308}, ["max_backoff_s <= 86400"]),
    (DEVICE, {"stall_timeout_s": 1e308}, ["stall_timeout_s", "<= 3600"]),
    (DEVICE, {"max_queue_s": 1e9}, ["max_queue_s", "<= 600"]),
    (HTTP, {"max_reconnects": -1}, ["max_reconnects", ">= 0"]),
    (HTTP, {"max_reconnects": 2.5}, ["'max_reconnects'", "integer"]),
    (HTTP, {"stall_timeout_s": 5}, ["'stall_timeout_s'", "read_timeout_s"]),
    (PIPE, {"format": "mp3"}, ["format", "'mp3'", "s16le"]),
    (PIPE, {"format": "s16be"}, ["format", "'s16be'"]),
    (PIPE, {"rate": 0}, ["rate", "positive"]),
    (PIPE, {"rate": -8000}, ["rate", "-8000"]),
    (PIPE, {"rate": "44100"}, ["'rate'", "finite number"]),
    (PIPE, {"channels": 0}, ["channels", "at least 1"]),
    (PIPE, {"block_frames": 0}, ["block_frames", "at least 1"]),
    (PIPE, {"stream": "/dev/stdin"}, ["'stream'", "from Python"]),
])
def test_a_bad_source_option_is_refused_naming_the_source_and_the_key(tmp_path, spec, options,
                                                                      names):
    """As a user meets it: a [[sources]] table in the file, refused before anything starts."""
    from streamtag.daemon.daemon import Daemon

    path = tmp_path / "daemon.toml"
    path.write_text("[[sources]]\nid = 'in-1'\nspec = 'file:/srv/a.mp3'\n"
                    f"[[sources]]\nid = 'in-2'\nspec = '{spec}'\n"
                    + "".join(f"{k} = {json.dumps(v)}\n" for k, v in options.items()))
    config = load_config(path)
    with pytest.raises(ConfigError) as info:
        Daemon(config)
    message = str(info.value)
    assert "'in-2'" in message and "'in-1'" not in message
    for name in names:
        assert name in message


def test_parsing_a_config_does_not_import_torch(tmp_path):
    """`streamtag.daemon.config` is read by tools that only check or template daemon files (the
    Kubernetes tests, an operator's linter): it must stay free of torch and the engine."""
    path = tmp_path / "daemon.toml"
    path.write_text('[model]\npath = "m.pt"\n[engine]\nbackend = "onnxruntime"\n'
                    '[[sources]]\nid = "a"\nspec = "a.mp3"\n')
    code = ("import sys; from streamtag.daemon.config import load_config; "
            f"c = load_config({str(path)!r}); "
            "print(c.engine.backend, sorted(m for m in sys.modules "
            "if m.split('.')[0] == 'torch' or m in "
            "('streamtag.engine.batching', 'streamtag.model.inference')))")
    out = run_python(code).split(maxsplit=1)
    assert out == ["onnxruntime", "[]\n"], out


def test_an_unknown_engine_key_lists_processes_among_the_allowed():
    """`[engine] processes` works, but a typo's error left it out of the keys it listed."""
    with pytest.raises(ConfigError, match=r"unknown key engine.procesess; allowed keys in "
                                          r"\[engine\]: .*\bprocesses\b"):
        config_from_dict({"engine": {"procesess": 2}})
    assert config_from_dict({"engine": {"processes": 2}}).processes == 2


def test_a_config_file_past_the_size_cap_is_refused_unparsed(tmp_path):
    # Parsed whole, a config file costs some 5 bytes of memory a byte: 4 MiB holds some
    # 25,000 sources, and a bigger file is refused by its size, naming it, its size and the cap.
    from streamtag.daemon.config import MAX_CONFIG_BYTES

    path = tmp_path / "huge.toml"
    lines = b'[[sources]]\nid = "s"\nspec = "x.wav"\n' + b"# padding\n" * (MAX_CONFIG_BYTES // 10)
    path.write_bytes(lines)
    with pytest.raises(ConfigError, match=rf"config file {path} is {len(lines)} bytes, over the "
                                          rf"{MAX_CONFIG_BYTES} bytes"):
        load_config(path)


def test_run_s_setting_flags_are_the_declared_ones_and_reach_their_keys():
    from streamtag.cli import build_parser

    assert {s.flag for s in setting_flags()} == {
        "--model", "--device", "--publish", "--control", "--allow-file-root", "--loudness",
        "--hop-seconds", "--backend", "--precision", "--metrics-port", "--insecure",
        "--processes", "--replay"}
    args = build_parser().parse_args([
        "run", "--model", "m.pt", "--device", "cpu", "--publish", "tcp://127.0.0.1:9",
        "--control", "", "--allow-file-root", "/a", "--allow-file-root", "/b", "--loudness",
        "--hop-seconds", "0.5", "--backend", "torch", "--precision", "fp32",
        "--metrics-port", "9100", "--insecure", "--processes", "auto",
        "--replay", "tcp://127.0.0.1:10"])
    file = config_from_dict({"control": {"file_roots": ["/srv"]}})
    config = with_overrides(file, **flag_values(args))
    assert (config.model.path, config.model.device) == ("m.pt", "cpu")
    assert (config.publish.endpoint, config.control.endpoint) == ("tcp://127.0.0.1:9", "")
    assert config.publish.replay_endpoint == "tcp://127.0.0.1:10"
    assert config.control.file_roots == ("/srv", "/a", "/b")  # added to the file's
    assert config.health.loudness and config.security.insecure
    assert (config.engine.hop_seconds, config.engine.backend) == (0.5, "torch")
    assert (config.metrics.port, config.processes) == (9100, "auto")
    # a flag left out leaves the file's value, a true one included
    file = config_from_dict({"security": {"insecure": True}, "health": {"loudness": True},
                             "engine": {"hop_seconds": 2.0}})
    kept = with_overrides(file, **flag_values(build_parser().parse_args(["run"])))
    assert kept == file


@pytest.mark.parametrize("flag, value, key", [
    ("--hop-seconds", "-1", "engine.hop_seconds"), ("--metrics-port", "70000", "metrics.port"),
    ("--processes", "0", "engine.processes"), ("--device", "gpu", "model.device"),
    ("--publish", "tcp://127.0.0.1:0", "publish.endpoint")])
def test_a_setting_flag_s_bad_value_is_a_usage_error_naming_the_flag_and_key(
        flag, value, key, capsys):
    from streamtag.cli import build_parser

    with pytest.raises(SystemExit) as done:
        build_parser().parse_args(["run", flag, value])
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}: {key}" in err, err
