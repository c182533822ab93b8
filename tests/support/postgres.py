"""A throwaway PostgreSQL cluster for tests: Debian's server binaries, run as an unprivileged
user (the server refuses root) on a free loopback port, with its data in a temporary folder."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from support.helpers import free_port

SERVER_USER = "postgres"  # the Debian package's system user


def _server_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parent.parent.name) if Path(p).parent.parent
                   .name.isdigit() else 0)
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    pytest.skip("PostgreSQL tests need the server binaries: apt-get install postgresql")


class PostgresServer:
    """initdb in a temporary folder, then `start`, `stop` (the server really goes away) and
    `start` again; `url` is a SQLAlchemy URL to its `postgres` database."""

    def __init__(self) -> None:
        self.bin = _server_bin()
        self.as_root = os.geteuid() == 0
        if self.as_root:
            try:
                import pwd

                pwd.getpwnam(SERVER_USER)
            except KeyError:
                pytest.skip(f"PostgreSQL refuses to run as root and there is no "
                            f"{SERVER_USER!r} user: apt-get install postgresql")
        self.root = Path(tempfile.mkdtemp(prefix="streamtag-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        if self.as_root:
            shutil.chown(self.root, SERVER_USER, SERVER_USER)
        self._run("initdb", "-D", str(self.data), "-U", "streamtag", "-A", "trust",
                  "-E", "UTF8", "--no-sync", "--no-instructions")
        self.url = f"postgresql://streamtag@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str) -> None:
        command = [str(self.bin / tool), *args]
        if self.as_root:
            command = ["runuser", "-u", SERVER_USER, "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120,
                                cwd=self.root)
        if result.returncode != 0:
            log = self.root / "server.log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"{tool} failed: {result.stderr.strip()}\n{tail}")

    def start(self) -> None:
        options = (f"-F -p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
                   "-c max_connections=20 -c shared_buffers=16MB")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"),
                  "-o", options, "-w", "-t", "60", "start")

    def new_database(self) -> str:
        """The URL of a new, empty database on this server (one per test keeps them apart)."""
        import time

        import sqlalchemy as sa

        from streamtag.history import schema

        name = f"t{time.monotonic_ns()}"
        admin = sa.create_engine(schema.normalise_url(self.url), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text(f"CREATE DATABASE {name}"))
        admin.dispose()
        return self.url.rsplit("/", 1)[0] + f"/{name}"

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop")

    def close(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
