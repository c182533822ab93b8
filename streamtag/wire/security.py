"""CURVE encryption and client authentication for the PUB and control sockets.

Keys are ZeroMQ certificate files made by ``streamtag keys generate DIR --name NAME`` (pyzmq's
``zmq.auth.create_certificates``): ``NAME.key`` holds the public key, ``NAME.key_secret`` both.
The daemon reads its own secret certificate and two folders of public certificates: the
subscribers it lets in on the PUB socket (``client_keys``) and the administrators it lets in on
the control socket (``admin_keys``); a ZAP authenticator thread refuses every other client, each
socket in its own ZAP domain, so a screen's key can listen but never control. Subscribers and
control clients need the server's public certificate and their own secret one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import os
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from streamtag.errors import ConfigError
from streamtag.wire.sockets import endpoint_host


@dataclasses.dataclass(frozen=True)
class CurveKeys:
    public: bytes
    secret: bytes | None = None


@dataclasses.dataclass(frozen=True)
class ClientCurve:
    """What a client needs: the server's public key and its own key pair."""

    server_public: bytes
    client: CurveKeys


# The ZAP domains of the daemon's sockets: each lets in the keys of its own folder.
FEED_DOMAIN = "streamtag-feed"
CONTROL_DOMAIN = "streamtag-control"


@contextlib.contextmanager
def private_files() -> Iterator[None]:
    """Files created inside the block are readable by their owner only (umask 077), from the
    moment they exist: no window in which a secret could be read by others. The umask is the
    process's: use it in a command, not in a daemon with threads that create files."""
    previous = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(previous)


def generate_keys(directory: str | Path, name: str) -> tuple[Path, Path]:
    """Writes NAME.key (public, mode 0644) and NAME.key_secret (mode 0600, never readable by
    others, not even while it is written) in ``directory``; returns their paths. ConfigError
    when NAME.key_secret exists already: replacing a key pair is a decision, not a side
    effect (remove the old files first)."""
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or name.startswith("."):
        raise ConfigError(f"key name {name!r}: use letters, digits, _, - and . (not first), "
                          "no folders (the folder is the DIRECTORY argument)")
    folder = Path(directory)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{folder} is a file, not a folder; give the folder the keys go in")
    secret_path = folder / f"{name}.key_secret"
    if secret_path.exists() or secret_path.is_symlink():
        raise ConfigError(f"{secret_path} exists; keep it, or remove {name}.key and "
                          f"{name}.key_secret first to make a new pair")
    try:
        with private_files():
            folder.mkdir(parents=True, exist_ok=True)
            public, secret = zmq.auth.create_certificates(folder, name)
    except OSError as exc:
        raise ConfigError(f"cannot write keys in {folder}: {exc.strerror or exc}; give a "
                          "folder this user may create and write") from None
    Path(secret).chmod(0o600)
    Path(public).chmod(0o644)  # the public half is meant to be copied
    return Path(public), Path(secret)


def load_keys(path: str | Path, need_secret: bool) -> CurveKeys:
    """A certificate file; ConfigError naming the file when it is missing or lacks a key."""
    if not Path(path).is_file():
        raise ConfigError(f"the key file {path} does not exist; make keys with `streamtag keys "
                          "generate DIR`, or give the path of one")
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the key file {path}: {exc}; make keys with "
                          "`streamtag keys generate DIR`") from exc
    if need_secret and not secret:
        raise ConfigError(f"{path} holds no secret key; give the .key_secret file")
    return CurveKeys(public, secret)


def client_curve(server_key: str | Path, client_key: str | Path) -> ClientCurve:
    return ClientCurve(load_keys(server_key, False).public, load_keys(client_key, True))


def make_server(sock: zmq.Socket[Any], keys: CurveKeys, domain: str = FEED_DOMAIN) -> None:
    """Makes ``sock`` a CURVE server whose clients the authenticator checks against
    ``domain``'s keys; call before bind."""
    sock.curve_secretkey = keys.secret
    sock.curve_publickey = keys.public
    sock.curve_server = True
    sock.zap_domain = domain.encode()


def make_client(sock: zmq.Socket[Any], curve: ClientCurve) -> None:
    """Makes ``sock`` a CURVE client of the server; call before connect."""
    sock.curve_secretkey = curve.client.secret
    sock.curve_publickey = curve.client.public
    sock.curve_serverkey = curve.server_public


def _key_folder(key: str, folder: str | Path) -> str:
    path = Path(folder)
    if path.is_file():
        raise ConfigError(f"{key}: {path} is a file; give a folder that holds the public keys "
                          "(NAME.key) of the clients it lets in, and only those")
    if not path.is_dir() or not any(path.glob("*.key")):
        raise ConfigError(f"{key}: {path} holds no public key (*.key); copy each client's "
                          "NAME.key there")
    return str(path)


class Authenticator:
    """Lets in, socket by socket (by ZAP domain), only the clients whose public certificates
    lie in that domain's folder: ``domains`` maps a domain to its folder and the config key
    that named it. A domain with no folder (None) admits no key at all."""

    def __init__(self, context: zmq.Context[Any],
                 domains: dict[str, tuple[str, str | Path | None]]) -> None:
        folders = {domain: _key_folder(key, folder)
                   for domain, (key, folder) in domains.items() if folder is not None}
        self._auth = ThreadAuthenticator(context)
        self._auth.start()
        for domain, folder in folders.items():
            self._auth.configure_curve(domain=domain, location=folder)

    def stop(self) -> None:
        self._auth.stop()


def is_loopback_endpoint(endpoint: str) -> bool:
    """Whether only this machine can reach ``endpoint`` when it is bound: ipc and inproc, or tcp
    on a loopback address (or a name that resolves only to loopback addresses). ``*``, 0.0.0.0,
    an interface's name or an address of the network are not."""
    scheme, host = endpoint_host(endpoint)
    if scheme != "tcp":
        return scheme in ("ipc", "inproc")
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    if host in ("", "*"):
        return False
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        return False  # an interface name (eth0), or a name that does not resolve
    return bool(infos) and all(ipaddress.ip_address(str(info[4][0]).split("%")[0]).is_loopback
                               for info in infos)
