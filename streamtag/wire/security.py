"""CURVE encryption and client authentication for the PUB and control sockets.

Keys are ZeroMQ certificate files made by ``streamtag keys generate DIR --name NAME`` (pyzmq's
``zmq.auth.create_certificates``): ``NAME.key`` holds the public key, ``NAME.key_secret`` both.
The daemon reads its own secret certificate and a folder of the public certificates of the
clients it lets in; a ZAP authenticator thread refuses every other client. Subscribers and
control clients need the server's public certificate and their own secret one.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from streamtag.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class CurveKeys:
    public: bytes
    secret: bytes | None = None


@dataclasses.dataclass(frozen=True)
class ClientCurve:
    """What a client needs: the server's public key and its own key pair."""

    server_public: bytes
    client: CurveKeys


def generate_keys(directory: str | Path, name: str) -> tuple[Path, Path]:
    """Writes NAME.key (public) and NAME.key_secret in ``directory``; returns their paths."""
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    public, secret = zmq.auth.create_certificates(folder, name)
    Path(secret).chmod(0o600)
    return Path(public), Path(secret)


def load_keys(path: str | Path, need_secret: bool) -> CurveKeys:
    """A certificate file; ConfigError naming the file when it is missing or lacks a key."""
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


def make_server(sock: zmq.Socket, keys: CurveKeys) -> None:
    """Makes ``sock`` a CURVE server; call before bind."""
    sock.curve_secretkey = keys.secret
    sock.curve_publickey = keys.public
    sock.curve_server = True


def make_client(sock: zmq.Socket, curve: ClientCurve) -> None:
    """Makes ``sock`` a CURVE client of the server; call before connect."""
    sock.curve_secretkey = curve.client.secret
    sock.curve_publickey = curve.client.public
    sock.curve_serverkey = curve.server_public


class Authenticator:
    """Lets in only the clients whose public certificates lie in ``allowed_dir``."""

    def __init__(self, context: zmq.Context, allowed_dir: str | Path) -> None:
        folder = Path(allowed_dir)
        if not folder.is_dir() or not any(folder.glob("*.key")):
            raise ConfigError(f"security.client_keys: {folder} holds no client public key "
                              "(*.key); copy each client's NAME.key there")
        self._auth = ThreadAuthenticator(context)
        self._auth.start()
        self._auth.configure_curve(domain="*", location=str(folder))

    def stop(self) -> None:
        self._auth.stop()
