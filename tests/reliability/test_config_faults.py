"""Bad configuration: every invalid key or value is refused with a message naming it, and a
daemon whose configuration is bad anywhere starts nothing (no thread, no bound port)."""

from __future__ import annotations

import contextlib
import dataclasses
import socket
import threading

import pytest
from support.helpers import free_port, make_config, run_streamtag, wait_until

from streamtag.daemon.config import SECTIONS, MetricsConfig, SourceConfig, load_config
from streamtag.daemon.daemon import Daemon
from streamtag.errors import ConfigError
from tests.reliability.faultkit import port_is_free

CONFIG_PY = "config.py does not check this value"

BAD = [
    ("[engine]\nmax_wait_ms = 1e300", ["engine.max_wait_ms"]),  # killed the inference thread
    ("[engine]\nhop_seconds = 1e5", ["engine.hop_seconds"]),  # a ring of gigabytes per stream
    ("[engine]\nmax_batch = 1.5", ["engine.max_batch", "integer"]),
    ("[smoothing]\nmin_on_s = nan", ["smoothing.min_on_s", "finite"]),
    ("[smoothing]\ntime_constant_s = -1", ["smoothing.time_constant_s"]),
    ("[model]\npath = 5", ["model.path", "str"]),
    ("[model]\ndevice = 'cuda:x'", ["model.device"]),
    ("[control]\nfile_roots = '/srv'", ["control.file_roots", "list"]),
    ("[control]\nfile_roots = [1]", ["control.file_roots", "string"]),
    ("[metrics]\nport = '9100'", ["metrics.port", "integer"]),
    ("[publish]\nsndhwm = true", ["publish.sndhwm", "integer"]),
    ("sources = 5", ["sources", "array of tables"]),
    ("[[sources]]\nid = 'a'\nspec = ''", ["sources.spec", "'a'"]),
    ("[[sources]]\nid = 'a'\nspec = 3", ["sources[0].spec", "string"]),
    ("[publish]\nheartbeat_s = 0", ["publish.heartbeat_s"]),
    ("[publish]\nheartbeat_s = -1", ["publish.heartbeat_s"]),
    ("[publish]\nsndhwm = -1", ["publish.sndhwm"]),
    ("[publish]\nendpoint = 'not an endpoint'", ["publish.endpoint"]),
    ("[control]\nendpoint = 'not an endpoint'", ["control.endpoint"]),
    ("[metrics]\nport = 70000", ["metrics.port"]),
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
    ("[metrics]\naddress = '127.0.0.1:9100'", ["metrics.address", "'127.0.0.1:9100'",
                                               "metrics.port"]),
    ("[metrics]\naddress = '[::1]'", ["metrics.address", "brackets"]),
    ("[metrics]\naddress = ''", ["metrics.address", "''"]),
    ("[metrics]\naddress = 'my metrics host'", ["metrics.address", "host name"]),
    ("[metrics]\naddress = '300.1.1.1'", ["metrics.address", "'300.1.1.1'"]),
    ("[metrics]\naddress = 127", ["metrics.address", "string"]),
    ("[metrics]\nport = -1", ["metrics.port", "65535", "-1"]),
    ("[metrics]\nport = 65536", ["metrics.port", "65536"]),
]


@pytest.mark.parametrize("text, names", BAD)
def test_a_bad_value_is_refused_naming_its_key(tmp_path, text, names):
    path = tmp_path / "bad.toml"
    path.write_text(text + "\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    for name in names:
        assert name in str(info.value)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("section, key", [(name, f.name) for name, cls in SECTIONS.items()
                                          for f in dataclasses.fields(cls)])
def test_every_key_of_every_section_refuses_a_table(tmp_path, section, key):
    path = tmp_path / "bad.toml"
    path.write_text(f"[{section}.{key}]\nx = 1\n")
    with pytest.raises(ConfigError, match=rf"{section}\.{key}"):
        load_config(path)


@pytest.mark.parametrize("options, names", [
    ({"speed": "fast"}, ["'b'", "'speed'", "number"]),
    ({"realtime": "yes"}, ["'b'", "'realtime'", "true or false"]),
    ({"loop": True, "volume": 2}, ["'b'", "'volume'", "realtime, loop"]),
    ({"speed": -1.0}, ["'b'", "speed must be > 0"]),
])
def test_a_bad_option_of_the_second_source_starts_nothing(model_path, tmp_path, options, names):
    good = tmp_path / "a.flac"
    good.write_bytes(b"")  # never opened: the config is refused first
    config = dataclasses.replace(make_config(model_path, tmp_path), sources=(
        SourceConfig("a", str(good)), SourceConfig("b", str(good), options)))
    before = {t.name for t in threading.enumerate()}
    with pytest.raises(ConfigError) as info:
        Daemon(config)
    for name in names:
        assert name in str(info.value)
    left = {t.name for t in threading.enumerate()} - before  # threads the start left running
    assert not left, left  # no source, no engine thread
    assert port_is_free(config.publish.endpoint) and port_is_free(config.control.endpoint)


def test_the_command_line_reports_a_bad_source_option_with_exit_code_2(model_path, tmp_path):
    publish = f"tcp://127.0.0.1:{free_port()}"
    config = tmp_path / "daemon.toml"
    config.write_text(f'[publish]\nendpoint = "{publish}"\n'
                      f'[control]\nendpoint = "tcp://127.0.0.1:{free_port()}"\n'
                      f'[[sources]]\nid = "first"\nspec = "http://127.0.0.1:9/a.mp3"\n'
                      f'[[sources]]\nid = "second"\nspec = "http://127.0.0.1:9/b.mp3"\n'
                      f'read_timeout_s = "soon"\n')
    done = run_streamtag("run", "--config", str(config), "--model", str(model_path),
                         "--device", "cpu", timeout=60)
    assert done.returncode == 2
    assert "'second'" in done.stderr and "'read_timeout_s'" in done.stderr
    assert "Traceback" not in done.stderr
    assert port_is_free(publish)


@contextlib.contextmanager
def a_port_held_by_another_process():
    """A real listening TCP socket on 127.0.0.1 (what another program on the box would hold)."""
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        yield blocker.getsockname()[1]


def config_binding(model_path, tmp_path, key: str, port: int):
    """A config whose `key` names 127.0.0.1:`port`, with every other endpoint free and the
    metrics server on, so a failed start has something of each kind to release."""
    taken = f"tcp://127.0.0.1:{port}"
    config = make_config(model_path, tmp_path, metrics=MetricsConfig(port=free_port()))
    if key == "publish.endpoint":
        return dataclasses.replace(config, publish=dataclasses.replace(config.publish,
                                                                       endpoint=taken))
    if key == "control.endpoint":
        return dataclasses.replace(config, control=dataclasses.replace(config.control,
                                                                       endpoint=taken))
    return dataclasses.replace(config, metrics=MetricsConfig(port=port))


def endpoints_of(config) -> list[str]:
    return [config.publish.endpoint, config.control.endpoint,
            f"tcp://127.0.0.1:{config.metrics.port}"]


BINDS = ["metrics.port", "publish.endpoint", "control.endpoint"]  # in the order start binds


@pytest.mark.parametrize("key", BINDS)
def test_an_endpoint_in_use_is_a_config_error_and_the_start_releases_what_it_took(
        model_path, tmp_path, key):
    before = {t.ident for t in threading.enumerate()}
    with a_port_held_by_another_process() as port:
        config = config_binding(model_path, tmp_path, key, port)
        with pytest.raises(ConfigError) as info:
            Daemon(config).start()
    message = str(info.value)
    assert key in message and f"127.0.0.1:{port}" in message and "in use" in message
    assert "\n" not in message
    # ZeroMQ closes sockets in its I/O thread: a port is released soon after, not at once.
    for endpoint in endpoints_of(config):
        wait_until(lambda e=endpoint: port_is_free(e), 5, f"{endpoint} to be released")
    # No source, engine, control, heartbeat or metrics server thread outlives the failed start.
    wait_until(lambda: not {t.ident for t in threading.enumerate()} - before, 5,
               "the threads the start began to end")


@pytest.mark.parametrize("key", BINDS)
def test_the_command_line_reports_an_endpoint_in_use_in_one_line_with_exit_code_2(
        model_path, tmp_path, key):
    with a_port_held_by_another_process() as port:
        config = config_binding(model_path, tmp_path, key, port)
        path = tmp_path / "daemon.toml"
        path.write_text(f'[publish]\nendpoint = "{config.publish.endpoint}"\n'
                        f'[control]\nendpoint = "{config.control.endpoint}"\n'
                        f'[metrics]\nport = {config.metrics.port}\n')
        done = run_streamtag("run", "--config", str(path), "--model", str(model_path),
                             "--device", "cpu", timeout=60)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr  # no traceback
    assert lines[0].startswith("streamtag run: ")
    assert key in lines[0] and f"127.0.0.1:{port}" in lines[0]


@pytest.mark.parametrize("address, names", [
    ("192.0.2.1", ["metrics.address", "'192.0.2.1'", "not an address of this machine"]),
])
def test_a_metrics_address_not_of_this_machine_is_refused_at_start(model_path, tmp_path,
                                                                   address, names):
    config = make_config(model_path, tmp_path,
                         metrics=MetricsConfig(port=free_port(), address=address))
    with pytest.raises(ConfigError) as info:
        Daemon(config).start()
    for name in names:
        assert name in str(info.value)
    for endpoint in endpoints_of(config)[:2]:
        wait_until(lambda e=endpoint: port_is_free(e), 5, f"{endpoint} to be released")


def test_run_processes_names_a_metrics_address_not_of_this_machine_as_one_process_does(
        model_path, tmp_path):
    # Under --processes the supervisor serves the metrics; it reported any failure to listen
    # as a port in use, where one process names the address and the fix.
    path = tmp_path / "daemon.toml"
    path.write_text(f'[metrics]\nport = {free_port()}\naddress = "192.0.2.1"\n')
    done = run_streamtag("run", "--config", str(path), "--model", str(model_path),
                         "--device", "cpu", "--processes", "2",
                         "--publish", f"tcp://127.0.0.1:{free_port()}",
                         "--control", f"tcp://127.0.0.1:{free_port()}", timeout=120)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "metrics.address '192.0.2.1'" in lines[0]
    assert "not an address of this machine" in lines[0] and "in use" not in lines[0]
