"""CURVE: an authorised subscriber receives everything, anyone else nothing."""

from __future__ import annotations

import time

import pytest
import zmq
from support.helpers import collect, make_config, run_streamtag, tiny_model_file

from streamtag.daemon.config import SecurityConfig, SourceConfig
from streamtag.daemon.daemon import Daemon
from streamtag.errors import ConfigError
from streamtag.wire.control import control_request
from streamtag.wire.security import Authenticator, client_curve, generate_keys
from streamtag.wire.subscriber import Subscriber


def test_only_authorised_clients_hear_or_control_the_daemon(tmp_path, audio_files):  # noqa: F811
    keys, allowed, admins = tmp_path / "keys", tmp_path / "allowed", tmp_path / "admins"
    server_public, server_secret = generate_keys(keys, "server")
    good_public, good_secret = generate_keys(keys, "listener")
    admin_public, admin_secret = generate_keys(keys, "admin")
    _, stranger_secret = generate_keys(tmp_path / "elsewhere", "stranger")
    allowed.mkdir()
    admins.mkdir()
    (allowed / "listener.key").write_bytes(good_public.read_bytes())
    (admins / "admin.key").write_bytes(admin_public.read_bytes())
    model = tiny_model_file(tmp_path / "tiny.pt")
    config = make_config(model, tmp_path, security=SecurityConfig(
        str(server_secret), str(allowed), admin_keys=str(admins)))
    daemon = Daemon(config).start()
    endpoint = daemon.publisher.endpoint
    authorised = Subscriber(endpoint, curve=client_curve(server_public, good_secret))
    stranger = Subscriber(endpoint, curve=client_curve(server_public, stranger_secret))
    plain = Subscriber(endpoint)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # the authorised one hears heartbeats
            msg = authorised.recv(200)
            if msg is not None:
                break
        assert msg is not None, "the authorised subscriber hears nothing"
        daemon.add_source(SourceConfig("a", str(audio_files["b"])))
        got = collect(authorised, {"a"})
        assert sum(m.header.msg_type == "scores" for m in got) > 0
        assert stranger.recv(500) is None and plain.recv(500) is None
        assert control_request(daemon.control.endpoint, {"cmd": "ping"},
                               curve=client_curve(server_public, admin_secret))["ok"]
        # A subscriber's key listens but never controls; a stranger's does neither.
        for secret in (good_secret, stranger_secret):
            try:
                control_request(daemon.control.endpoint, {"cmd": "ping"}, timeout_ms=500,
                                curve=client_curve(server_public, secret))
                raise AssertionError(f"{secret.name} was answered on the control socket")
            except TimeoutError:
                pass
    finally:
        for sub in (authorised, stranger, plain):
            sub.close()
        daemon.stop()


class _PausingSocket(zmq.Socket):
    """A socket that pauses after each poll, as a busy machine pauses a thread there."""

    def poll(self, timeout=None, flags=zmq.POLLIN):
        ready = super().poll(timeout, flags)
        time.sleep(0.3)
        return ready


class _PausingContext(zmq.Context):
    _socket_class = _PausingSocket


def test_a_refused_key_gets_no_reply_even_if_its_connection_ends_before_it_sends(tmp_path):
    # A refused CURVE key's connection ends when its handshake fails: a client paused between
    # seeing the connection ready and sending finds none left. It is told no reply came, as
    # every refused client is, and is never answered.
    keys, admins = tmp_path / "keys", tmp_path / "admins"
    server_public, server_secret = generate_keys(keys, "server")
    admin_public, _ = generate_keys(keys, "admin")
    _, stranger_secret = generate_keys(tmp_path / "elsewhere", "stranger")
    admins.mkdir()
    (admins / "admin.key").write_bytes(admin_public.read_bytes())
    config = make_config(tiny_model_file(tmp_path / "tiny.pt"), tmp_path, security=SecurityConfig(
        str(server_secret), str(admins), admin_keys=str(admins)))
    daemon = Daemon(config).start()
    context = _PausingContext()
    try:
        for _ in range(3):
            with pytest.raises(TimeoutError, match="no reply from the control socket"):
                control_request(daemon.control.endpoint, {"cmd": "ping"}, timeout_ms=1000,
                                curve=client_curve(server_public, stranger_secret),
                                context=context)
    finally:
        context.term()
        daemon.stop()


def test_keys_generate_command(tmp_path):
    done = run_streamtag("keys", "generate", str(tmp_path), "--name", "venue", timeout=60)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "venue.key").is_file() and (tmp_path / "venue.key_secret").is_file()
    assert oct((tmp_path / "venue.key_secret").stat().st_mode & 0o777) == "0o600"


def test_a_key_file_that_does_not_exist_is_said_so(tmp_path):
    from streamtag.wire.security import load_keys

    with pytest.raises(ConfigError, match=r"the key file .*nowhere.key does not exist; make "
                                          r"keys with `streamtag keys generate DIR`"):
        load_keys(tmp_path / "nowhere.key", need_secret=False)


def test_a_key_folder_that_is_a_file_or_empty_is_refused_with_the_fix(tmp_path):
    public, _ = generate_keys(tmp_path / "keys", "listener")
    context = zmq.Context.instance()
    with pytest.raises(ConfigError, match=r"security.client_keys: .*listener.key is a file; give "
                                          r"a folder that holds the public keys"):
        Authenticator(context, {"feed": ("security.client_keys", public)})
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"security.admin_keys: .*empty holds no public key"):
        Authenticator(context, {"control": ("security.admin_keys", tmp_path / "empty")})
