"""A private Mosquitto broker for tests: Debian's ``mosquitto`` on two free loopback ports, one
listener open to anyone and one with a password file and TLS (a self-signed certificate for
127.0.0.1 made by ``openssl req``), its config and files in a temporary folder. As root it runs
as the Debian package's ``mosquitto`` user, as the broker itself would switch to."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from support.helpers import free_port, wait_until
from support.servers import port_open

SERVER_USER = "mosquitto"  # the Debian package's system user
USER, PASSWORD = "bridge", "s3cret-" + os.urandom(4).hex()

CONFIG = """\
per_listener_settings true
persistence false
log_dest stderr
log_type error
log_type warning
log_type notice

listener {open_port} 127.0.0.1
allow_anonymous true

listener {tls_port} 127.0.0.1
allow_anonymous false
password_file {dir}/passwords
certfile {dir}/broker.crt
keyfile {dir}/broker.key

listener {cert_port} 127.0.0.1
allow_anonymous true
require_certificate true
cafile {dir}/broker.crt
certfile {dir}/broker.crt
keyfile {dir}/broker.key
"""


@dataclass(frozen=True)
class Broker:
    open_port: int  # anonymous, plain MQTT
    tls_port: int   # TLS, USER and PASSWORD only
    cert_port: int  # TLS, clients with a certificate the broker's signed (client_cert) only
    cafile: Path    # the broker's self-signed certificate, which clients trust it by
    log: Path

    @property
    def client_cert(self) -> tuple[Path, Path]:
        """A client's certificate, signed by the broker's, and its key."""
        return self.cafile.parent / "client.crt", self.cafile.parent / "client.key"


def require_mosquitto() -> None:
    """Skips, naming the packages, unless mosquitto, mosquitto_passwd, openssl and paho-mqtt
    are here."""
    missing = [tool for tool in ("mosquitto", "mosquitto_passwd", "openssl")
               if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"the MQTT bridge's tests need a broker: {', '.join(missing)} not "
                    "installed; apt-get install mosquitto openssl")
    pytest.importorskip("paho.mqtt.client",
                        reason="paho-mqtt not installed: pip install 'streamtag[mqtt]'")


@contextlib.contextmanager
def mosquitto_broker(ports: tuple[int, int, int] | None = None) -> Iterator[Broker]:
    """A running broker (``Broker``) on free ports, or on ``ports`` (open, TLS and password,
    TLS and certificate: a broker started again where one was); stopped, and its folder
    removed, afterwards.
    It keeps nothing on disk: one started again has no retained messages."""
    require_mosquitto()
    folder = Path(tempfile.mkdtemp(prefix="streamtag-mosquitto-"))
    try:
        open_port, tls_port, cert_port = ports or (free_port(), free_port(), free_port())
        broker = Broker(open_port, tls_port, cert_port, folder / "broker.crt",
                        folder / "broker.log")
        client_crt, client_key = broker.client_cert
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
             "-keyout", str(folder / "broker.key"), "-out", str(broker.cafile)],
            check=True, capture_output=True, timeout=60)
        subprocess.run(
            ["openssl", "req", "-new", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=bridge",
             "-keyout", str(client_key), "-out", str(folder / "client.csr")],
            check=True, capture_output=True, timeout=60)
        subprocess.run(
            ["openssl", "x509", "-req", "-days", "2", "-in", str(folder / "client.csr"),
             "-CA", str(broker.cafile), "-CAkey", str(folder / "broker.key"),
             "-CAcreateserial", "-out", str(client_crt)],
            check=True, capture_output=True, timeout=60)
        subprocess.run(["mosquitto_passwd", "-c", "-b", str(folder / "passwords"), USER,
                        PASSWORD], check=True, capture_output=True, timeout=60)
        (folder / "mosquitto.conf").write_text(CONFIG.format(
            open_port=broker.open_port, tls_port=broker.tls_port, cert_port=broker.cert_port,
            dir=folder))
        for name in ("passwords", "broker.key", "client.key"):
            os.chmod(folder / name, 0o600)
        if os.geteuid() == 0:
            # Mosquitto started as root runs as this user: its files must be that user's.
            try:
                import pwd

                user = pwd.getpwnam(SERVER_USER)
            except KeyError:
                pytest.skip(f"running as root but the Debian {SERVER_USER!r} user does not "
                            "exist: apt-get install mosquitto")
            for path in (folder, *folder.iterdir()):
                os.chown(path, user.pw_uid, user.pw_gid)
        with open(broker.log, "wb") as log:
            process = subprocess.Popen(["mosquitto", "-c", str(folder / "mosquitto.conf")],
                                       stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        try:
            wait_until(lambda: process.poll() is not None or (
                port_open(broker.open_port) and port_open(broker.tls_port)
                and port_open(broker.cert_port)), 30,
                "mosquitto to listen")
            assert process.poll() is None, broker.log.read_text()
            yield broker
        finally:
            process.kill()
            process.wait(10)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
