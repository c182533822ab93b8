"""Control authority that never sends its secret, and folders and files that are ours.

Each test is one attack, with a real second user (nobody, through ``setpriv``) where the attack
needs one: a local user who binds the control port while the daemon restarts and collects what
clients send it; a nonce replayed, taken over by another connection, or left to expire; a
``control.token`` that is a link to ``/proc/self/environ``; a ``STREAMTAG_HOME`` another user
made first, or one others may write; a model planted in the store by another user.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import zmq
from support.helpers import (
    free_port,
    make_config,
    run_streamtag,
    stop_process,
    tiny_model_file,
    wait_until,
)

from streamtag.catalog import installed
from streamtag.daemon.daemon import Daemon
from streamtag.errors import ConfigError, ModelError
from streamtag.wire import control
from streamtag.wire.control import ControlServer, control_request, ensure_token, read_token

NOBODY = 65534
REFUSED = "not authorised"

needs_root = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                                reason="a second user needs root and setpriv")


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch) -> Path:
    """streamtag's folder of this test (0700, ours), where clients find the token."""
    folder = tmp_path / "home"
    folder.mkdir(mode=0o700)
    monkeypatch.setenv(installed.HOME_ENV, str(folder))
    return folder


def start(model_path, tmp_path, *, model: str | None = None, **control_changes) -> Daemon:
    config = make_config(model_path, tmp_path)
    changes = {"control": dataclasses.replace(config.control, **control_changes)}
    if model is not None:
        changes["model"] = dataclasses.replace(config.model, path=model)
    return Daemon(dataclasses.replace(config, **changes)).start()


def send(endpoint: str, frames: list[bytes], *, challenge_first: bool = False,
         timeout_ms: int = 3000) -> list[bytes]:
    """``frames`` sent as one message on a plain REQ socket (after a challenge of its own when
    ``challenge_first``); the reply's frames."""
    sock = zmq.Context.instance().socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(endpoint)
        if challenge_first:
            sock.send(b'{"cmd":"challenge"}')
            assert sock.poll(timeout_ms, zmq.POLLIN)
            assert json.loads(sock.recv())["nonce"]
        sock.send_multipart(frames)
        assert sock.poll(timeout_ms, zmq.POLLIN), "no reply"
        return sock.recv_multipart()
    finally:
        sock.close(linger=0)


def mac(token: str, *parts: bytes) -> str:
    return hmac.new(token.encode(), b"".join(parts), hashlib.sha256).hexdigest()


# -- a port squatter -----------------------------------------------------------------------------

# Run as nobody: binds the control endpoint, hands out nonces of its own, answers every request
# with a forged success (signed with a made-up mac, or not at all), and prints every frame it
# was sent once its standard input closes.
SQUATTER = r"""
import json, secrets, select, sys, zmq
sock = zmq.Context.instance().socket(zmq.ROUTER)
sock.bind(sys.argv[1])
print("bound", flush=True)
got = []
while True:
    ready, _, _ = select.select([sys.stdin, sock.getsockopt(zmq.FD)], [], [], 0.05)
    if sys.stdin in ready and not sys.stdin.readline():
        break
    while sock.poll(0, zmq.POLLIN):
        frames = sock.recv_multipart()
        split = frames.index(b"") + 1
        envelope, payload = frames[:split], frames[split:]
        got.append([frame.hex() for frame in payload])
        forged = json.dumps({"ok": True, "session": "f" * 32, "uptime_s": 1.0, "streams": {},
                             "model": {"name": "forged"}}).encode()
        if payload == [b'{"cmd":"challenge"}']:
            reply = [json.dumps({"ok": True, "nonce": secrets.token_hex(32)}).encode()]
        elif len(payload) == 2:
            reply = [json.dumps({"mac": "0" * 64}).encode(), forged]
        else:
            reply = [forged]
        sock.send_multipart([*envelope, *reply])
print(json.dumps(got), flush=True)
"""


@pytest.fixture(scope="module")
def nobody_python():
    """A command line that runs Python as nobody, with a copy of pyzmq that nobody may read
    (the installed one may lie in a folder only root enters)."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("a second user needs root and setpriv")
    folder = Path(tempfile.mkdtemp(prefix="streamtag-nobody-"))
    folder.chmod(0o755)
    package = Path(zmq.__file__).parent
    shutil.copytree(package, folder / "zmq")
    libs = package.parent / "pyzmq.libs"  # the wheel's own libzmq, where it has one
    if libs.is_dir():
        shutil.copytree(libs, folder / "pyzmq.libs")
    for path in folder.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    command = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
               sys.executable]
    env = {**os.environ, "PYTHONPATH": str(folder)}
    probe = subprocess.run([*command, "-c", "import os, zmq; print(os.getuid())"], env=env,
                           capture_output=True, text=True, cwd="/")
    if probe.returncode != 0 or probe.stdout.strip() != str(NOBODY):
        shutil.rmtree(folder)
        pytest.skip(f"cannot run Python with pyzmq as nobody here: {probe.stderr[-300:]}")
    yield command, env
    shutil.rmtree(folder)


@needs_root
def test_a_port_squatter_learns_nothing_it_can_replay_and_cannot_forge_answers(
        nobody_python, model_path, audio_files, tmp_path, home, caplog):
    # The daemon is down (restarting); a local user binds its free control port. Its owner's
    # `streamtag status`, a script and the dashboard's snapshot each ask, unaware. The token is
    # pinned: only the exchange itself protects it, not the next start's new token.
    from streamtag.web.server import _request_snapshot

    token = ensure_token(home / "control.token", pin=True)
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    command, env = nobody_python
    squatter = subprocess.Popen([*command, "-c", SQUATTER, endpoint], env=env, cwd="/",
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert squatter.stdout.readline() == "bound\n"
        status = run_streamtag("status", "--control", endpoint, "--json",
                               env={**os.environ, installed.HOME_ENV: str(home)}, timeout=60)
        assert status.returncode != 0 and "forged" not in status.stdout
        assert "not signed with the daemon's control token" in status.stderr, status.stderr
        with caplog.at_level(logging.INFO, logger="streamtag.wire.control"):
            reply = control_request(endpoint, {"cmd": "add_source", "id": "evil",
                                               "spec": str(audio_files["a"])})
        assert reply["ok"] is False and "not signed" in reply["error"], reply
        assert f"asking the daemon at {endpoint}" in caplog.text  # says where it asked
        assert str(home / "control.token") in caplog.text
        snapshot, _ = _request_snapshot(endpoint, None)
        assert snapshot["ok"] is False and "not signed" in snapshot["error"]
        got, _ = squatter.communicate("", timeout=30)
    finally:
        stop_process(squatter)
    captured = [[bytes.fromhex(frame) for frame in message] for message in json.loads(got)]
    signed = [message for message in captured if len(message) == 2]
    assert len(signed) >= 3, captured  # status, add_source and snapshot were each signed
    everything = b"".join(b"".join(message) for message in captured)
    assert token.encode() not in everything and bytes.fromhex(token) not in everything

    # The daemon is back on its port, with the same token: nothing the squatter got is taken,
    # on a connection of its own or after a challenge of its own.
    daemon = start(model_path, tmp_path, endpoint=endpoint, pin_token=True)
    try:
        assert daemon.control.endpoint == endpoint
        for message in captured:
            for fresh in (False, True):
                reply = json.loads(send(endpoint, message, challenge_first=fresh)[-1])
                if message == [b'{"cmd":"challenge"}']:
                    continue  # anyone may ask for a nonce
                assert reply["ok"] is False, (message, reply)
        assert "evil" not in daemon.status()["streams"]
        assert daemon.control.refused >= 2 * len(signed)
        assert control_request(endpoint, {"cmd": "ping"})["ok"]  # the owner is served
    finally:
        daemon.stop()


def test_a_nonce_serves_once_its_own_connection_and_briefly_and_few_wait(monkeypatch, home):
    token = "t" * 64
    server = ControlServer("tcp://127.0.0.1:*", {"status": lambda _: {"streams": {}}},
                           token=token, poll_ms=20).start()
    endpoint = server.endpoint
    sock = zmq.Context.instance().socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(endpoint)
        sock.send(b'{"cmd":"challenge"}')
        assert sock.poll(3000)
        challenge = json.loads(sock.recv())
        assert challenge["expires_s"] == control.NONCE_LIFETIME_S
        nonce = challenge["nonce"]
        data = b'{"cmd":"status"}'
        request = [json.dumps({"nonce": nonce, "mac": mac(token, nonce.encode(), data)}
                              ).encode(), data]
        # another connection cannot use this connection's nonce
        assert REFUSED in json.loads(send(endpoint, request)[-1])["error"]
        assert REFUSED in json.loads(send(endpoint, request, challenge_first=True)[-1])["error"]
        # its own connection is served, and the reply is signed back over the nonce, the
        # request's mac and the reply's bytes
        sock.send_multipart(request)
        assert sock.poll(3000)
        frames = sock.recv_multipart()
        assert json.loads(frames[1])["ok"] is True
        signed_mac = json.loads(request[0])["mac"]
        assert json.loads(frames[0])["mac"] == mac(token, nonce.encode(), signed_mac.encode(),
                                                   frames[1])
        sock.send_multipart(request)  # once only
        assert sock.poll(3000)
        assert "nonce is unknown, used" in json.loads(sock.recv_multipart()[-1])["error"]

        # A flood of challenges from many connections keeps at most MAX_NONCES waiting, and
        # the owner is still served.
        monkeypatch.setattr(control, "MAX_NONCES", 64)
        flooded = ControlServer("tcp://127.0.0.1:*", {}, token=token, poll_ms=20).start()
        try:
            for _ in range(100):
                send(flooded.endpoint, [b'{"cmd":"challenge"}'])
            assert flooded.challenges_waiting == 64
            assert control_request(flooded.endpoint, {"cmd": "ping"}, token=token)["ok"]
        finally:
            flooded.stop()
        # A nonce older than its lifetime is refused.
        monkeypatch.setattr(control, "NONCE_LIFETIME_S", 0.0)
        stale = ControlServer("tcp://127.0.0.1:*", {}, token=token, poll_ms=20).start()
        try:
            reply = control_request(stale.endpoint, {"cmd": "ping"}, token=token)
            assert reply["ok"] is False and "older than" in reply["error"], reply
        finally:
            stale.stop()
    finally:
        sock.close(linger=0)
        server.stop()


def test_the_protocol_page_s_client_in_plain_pyzmq_is_served(home):
    # docs/protocol.md shows the exchange in a few lines for clients in other languages: they
    # are run as written, against a real server.
    text = (Path(__file__).resolve().parents[2] / "docs" / "protocol.md").read_text()
    block = text.split("The same in a few lines of plain pyzmq", 1)[1]
    code = block.split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict = {}
    exec(compile(code, "docs/protocol.md", "exec"), namespace)
    token = "k" * 64
    server = ControlServer("tcp://127.0.0.1:*", {"status": lambda _: {"streams": {}}},
                           token=token, poll_ms=20).start()
    try:
        assert namespace["ask"](server.endpoint, {"cmd": "status"}, token) == {
            "ok": True, "streams": {}}
        refused = namespace["ask"](server.endpoint, {"cmd": "status"}, "x" * 64)
        assert refused["ok"] is False and REFUSED in refused["error"]
    finally:
        server.stop()


def test_record_says_where_its_unasked_snapshot_requests_go_and_signs_them(tmp_path, home):
    asked = []
    server = ControlServer("tcp://127.0.0.1:*", {"snapshot": lambda request: asked.append(
        request) or {"session": "s" * 32, "model": {}, "streams": {}}}, poll_ms=20).start()
    recorder = run_streamtag("record", "--connect", f"tcp://127.0.0.1:{free_port()}",
                             "--control", server.endpoint, "--db",
                             f"sqlite:///{tmp_path / 'tags.db'}", popen=True,
                             env={**os.environ, installed.HOME_ENV: str(home)})
    try:
        line = recorder.stderr.readline()
        assert f"snapshots from {server.endpoint}, signed with the token in " \
               f"{home / 'control.token'}" in line, line
        wait_until(lambda: asked, 30, "the recorder's snapshot request")
        assert asked == [{"cmd": "snapshot"}] and server.refused == 0
    finally:
        stop_process(recorder, timeout=15)
        recorder.communicate()
        server.stop()


# -- folders and files that are ours -------------------------------------------------------------


def test_a_token_file_that_is_a_link_is_refused(model_path, tmp_path, home):
    # A link to /proc/self/environ passed the owner and mode checks, which followed it: the
    # daemon's environment was its token.
    link = home / "control.token"
    link.symlink_to("/proc/self/environ")
    for pin in (False, True):
        with pytest.raises(ConfigError) as refusal:
            start(model_path, tmp_path, pin_token=pin)
        assert str(link) in str(refusal.value) and "symbolic link" in str(refusal.value)
    assert link.is_symlink()  # left as found
    assert read_token(link) is None  # a client does not sign with it either
    target = tmp_path / "real.token"
    target.write_text("a" * 64 + "\n")
    target.chmod(0o600)
    link.unlink()
    link.symlink_to(target)  # a link to a good file of ours: still a link
    with pytest.raises(ConfigError, match="symbolic link"):
        ensure_token(link, pin=True)


@needs_root
@pytest.mark.parametrize("mode", [0o700, 0o1777])
def test_a_streamtag_home_another_user_made_is_refused(model_path, tmp_path, monkeypatch,
                                                      mode):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o755)
    planted = shared / "streamtag"  # e.g. /tmp/streamtag, made first by another user
    planted.mkdir()
    planted.chmod(mode)
    (planted / "models").mkdir()
    tiny_model_file(planted / "models" / "evil.pt")
    for path in (planted, planted / "models", planted / "models" / "evil.pt"):
        os.chown(path, NOBODY, NOBODY)
    monkeypatch.setenv(installed.HOME_ENV, str(planted))
    with pytest.raises(ConfigError) as refusal:
        start(model_path, tmp_path)
    message = str(refusal.value)
    assert f"streamtag's folder ($STREAMTAG_HOME) {planted} belongs to another user" in message
    assert "set $STREAMTAG_HOME" in message
    assert not (planted / "control.token").exists()  # no token written where others can see
    with pytest.raises(ModelError, match=f"{planted} belongs to another user"):
        installed.resolve_model("evil")
    done = run_streamtag("models", "list", env={**os.environ, installed.HOME_ENV: str(planted)},
                         timeout=60)
    assert done.returncode != 0 and "belongs to another user" in done.stderr, done


def test_a_streamtag_home_others_may_write_is_refused_and_a_new_one_is_private(
        model_path, tmp_path, home):
    home.chmod(0o770)
    with pytest.raises(ConfigError) as refusal:
        start(model_path, tmp_path)
    assert f"chmod 700 {home}" in str(refusal.value)
    assert "open to group or others (mode 0770)" in str(refusal.value)
    home.chmod(0o700)
    fresh = tmp_path / "fresh" / "home"
    daemon = start(model_path, tmp_path, token_file=str(fresh / "control.token"))
    daemon.stop()
    assert fresh.stat().st_mode & 0o777 == 0o700


@needs_root
def test_a_model_planted_in_the_store_is_not_loaded(model_path, tmp_path, home):
    store = home / "models"
    store.mkdir(mode=0o700)
    mine = tiny_model_file(store / "mine.pt", name="mine")
    planted = tiny_model_file(store / "evil.pt", name="evil")
    os.chown(planted, NOBODY, NOBODY)
    writable = tiny_model_file(store / "open.pt", name="open")
    writable.chmod(0o666)
    (store / "link.pt").symlink_to(mine)
    assert installed.resolve_model("mine") == str(mine)
    for name, words in (("evil", "belongs to another user (uid 65534"),
                        ("open", f"chmod go-w {writable}"), ("link", "symbolic link")):
        with pytest.raises(ModelError) as refusal:
            installed.resolve_model(name)
        assert f"installed model {name!r}" in str(refusal.value) and words in str(refusal.value)
        with pytest.raises(ModelError, match=words.replace("(", r"\(")):
            start(model_path, tmp_path, model=name)
    daemon = start(model_path, tmp_path)
    try:  # reload_model by name: refused, the running model serves on
        reply = control_request(daemon.control.endpoint, {"cmd": "reload_model",
                                                          "path": "evil"}, timeout_ms=10000)
        assert reply["ok"] is False and "belongs to another user" in reply["error"], reply
        assert daemon.model.name == "tiny"
        reply = control_request(daemon.control.endpoint, {"cmd": "reload_model",
                                                          "path": "mine"}, timeout_ms=10000)
        assert reply["ok"] and reply["model"]["name"] == "mine", reply
    finally:
        daemon.stop()
    os.chown(store, NOBODY, NOBODY)  # the store itself made by another user
    with pytest.raises(ModelError, match=f"the model store {store} belongs to another user"):
        installed.resolve_model("mine")
