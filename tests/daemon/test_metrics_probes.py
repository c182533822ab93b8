"""The orchestrator's probes over real HTTP on the metrics port: /healthz while the process
serves, /readyz only once the model is loaded and the sockets bound, and not once a drain
begins."""

from __future__ import annotations

import socket
import threading

import pytest
from support.helpers import free_port, wait_until
from support.helpers import http_get as get

from streamtag.daemon.config import (
    ControlConfig,
    DaemonConfig,
    MetricsConfig,
    ModelConfig,
    PublishConfig,
    SourceConfig,
)
from streamtag.daemon.daemon import Daemon
from streamtag.errors import ModelError


def refused(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def config_for(model_path) -> DaemonConfig:
    return DaemonConfig(model=ModelConfig(path=str(model_path), device="cpu"),
                        publish=PublishConfig(endpoint="tcp://127.0.0.1:*"),
                        control=ControlConfig(endpoint="tcp://127.0.0.1:*"),
                        metrics=MetricsConfig(port=free_port()))


def test_healthz_answers_before_the_model_loads_and_readyz_only_after(model_path):
    daemon = Daemon(config_for(model_path))
    port = daemon.config.metrics.port
    try:
        daemon.serve_health()  # what start() does first, before loading the model
        assert get(port, "/healthz") == (200, "serving\n")
        code, reason = get(port, "/readyz")
        assert code == 503 and "loading the model" in reason
        assert get(port, "/metrics")[0] == 200  # a scrape meanwhile is not an error
        daemon.start()
        code, reason = get(port, "/readyz")
        assert code == 200 and "ready" in reason and "shard 0/1" in reason
        assert get(port, "/healthz")[0] == 200
        assert "streamtag_batches_total" in get(port, "/metrics")[1]
    finally:
        daemon.stop()
    assert refused(port)


def test_a_failed_model_load_releases_the_probe_port(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a model")
    daemon = Daemon(config_for(bad))
    with pytest.raises(ModelError, match="bad.pt"):
        daemon.start()
    assert refused(daemon.config.metrics.port)


def test_readyz_turns_not_ready_as_soon_as_the_drain_begins(model_path):
    # A radio server that accepts and never answers: its source's thread sits in the open
    # until the connection closes, so the drain lasts exactly as long as this test wants.
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    daemon = Daemon(config_for(model_path)).start()
    port = daemon.config.metrics.port
    stopper = threading.Thread(target=daemon.stop)
    try:
        daemon.add_source(SourceConfig(
            "radio", f"http://127.0.0.1:{server.getsockname()[1]}/live",
            {"reconnect": False, "read_timeout_s": 60}))
        connection, _ = server.accept()
        assert get(port, "/readyz")[0] == 200
        assert ", 1 stream, model " in get(port, "/readyz")[1]  # not "1 streams"
        stopper.start()
        wait_until(lambda: get(port, "/readyz")[0] == 503, 10, "readyz to turn 503")
        assert "draining" in get(port, "/readyz")[1]
        assert get(port, "/healthz") == (200, "serving\n")  # draining is not dead
        assert stopper.is_alive()
        connection.close()  # the source gives up; the drain ends
        stopper.join(20)
        assert not stopper.is_alive()
    finally:
        server.close()
        if not stopper.is_alive():
            daemon.stop()
    assert refused(port)
