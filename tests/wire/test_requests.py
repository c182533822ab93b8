"""The control requests as types: each decoded once from its JSON object, written back the same
way, answered by a ``ControlHandler`` method (the daemon's and the supervisor's), and sent by a
``ControlClient`` method. Real sockets: a ControlServer on 127.0.0.1 answers a client."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from streamtag.daemon.daemon import Daemon
from streamtag.daemon.supervisor import Supervisor
from streamtag.errors import ConfigError
from streamtag.wire import requests
from streamtag.wire.control import ControlClient, ControlServer
from streamtag.wire.protocol import decode_request, encode_request
from streamtag.wire.requests import (
    AddSource,
    ControlHandler,
    ReloadModel,
    RemoveSource,
    Snapshot,
    Status,
    handlers_for,
)

TOKEN = "t" * 64
PROTOCOL_DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"


class Recording:
    """A ControlHandler that answers with the typed request it was given."""

    def __init__(self) -> None:
        self.seen: list[Any] = []

    def _answer(self, request: Any) -> dict[str, Any]:
        self.seen.append(request)
        return {"kind": type(request).__name__}

    handle_status = handle_snapshot = handle_add_source = _answer
    handle_remove_source = handle_reload_model = _answer


@pytest.mark.parametrize("request_", [
    Status(), Status(histograms=True), Snapshot(),
    AddSource("radio", "http://radio.example.org/live", "Morning", {"reconnect": False}),
    AddSource("file", "file:/music/a.wav"), RemoveSource("radio"), ReloadModel("musicnn-msd"),
])
def test_each_request_reads_back_from_its_frame_as_it_was_sent(request_):
    assert requests.decode(decode_request(encode_request(request_.to_dict()))) == request_


def test_an_add_source_takes_every_other_field_as_a_source_option():
    request = requests.decode({"cmd": "add_source", "id": "a", "spec": "x.wav",
                               "realtime": True, "speed": 2.0})
    assert request == AddSource("a", "x.wav", None, {"realtime": True, "speed": 2.0})
    assert request.to_dict() == {"cmd": "add_source", "id": "a", "spec": "x.wav",
                                 "realtime": True, "speed": 2.0}


@pytest.mark.parametrize("raw, said", [
    ({"cmd": "add_source", "id": "a"}, "add_source needs string fields id and spec"),
    ({"cmd": "add_source", "id": 3, "spec": "x.wav"}, "add_source needs string fields id and spec"),
    ({"cmd": "remove_source"}, "remove_source needs a string field id"),
    ({"cmd": "reload_model", "path": ["m"]}, "reload_model needs a string field path"),
])
def test_a_request_without_its_fields_is_refused_naming_them(raw, said):
    with pytest.raises(ConfigError, match=re.escape(said)):
        requests.decode(raw)


def test_only_true_asks_a_status_for_histograms():
    assert requests.decode({"cmd": "status", "histograms": "yes"}) == Status(histograms=False)
    assert Status().to_dict() == {"cmd": "status"}


def test_the_daemon_and_the_supervisor_answer_every_request():
    for cls in (Daemon, Supervisor):
        for kind in requests.REQUESTS:
            assert callable(getattr(cls, f"handle_{kind.cmd}", None)), (cls, kind.cmd)
    assert isinstance(Recording(), ControlHandler)


def test_the_protocol_page_lists_every_request():
    page = PROTOCOL_DOC.read_text(encoding="utf-8")
    listed = set(re.findall(r"^\| `([a-z_]+)` \|", page, flags=re.MULTILINE))
    assert {kind.cmd for kind in requests.REQUESTS} | {"ping"} <= listed


def test_a_client_method_per_request_reaches_its_handler_typed():
    handler = Recording()
    server = ControlServer("tcp://127.0.0.1:*", handlers_for(handler), token=TOKEN,
                           poll_ms=20).start()
    try:
        client = ControlClient(server.endpoint, token=TOKEN)
        assert client.ping()["commands"] == sorted({k.cmd for k in requests.REQUESTS} | {"ping"})
        assert client.status(histograms=True) == {"ok": True, "kind": "Status"}
        assert client.snapshot()["kind"] == "Snapshot"
        assert client.add_source("a", "x.wav", title="T", options={"loop": True})["ok"]
        assert client.remove_source("a")["kind"] == "RemoveSource"
        assert client.reload_model("m")["kind"] == "ReloadModel"
        refused = client.ask({"cmd": "remove_source", "id": 7})
        assert refused == {"ok": False, "error": "remove_source needs a string field id"}
    finally:
        server.stop()
    assert handler.seen == [Status(True), Snapshot(), AddSource("a", "x.wav", "T", {"loop": True}),
                            RemoveSource("a"), ReloadModel("m")]


def test_a_client_that_waits_says_so_once_and_names_the_whole_wait():
    told: list[str] = []
    client = ControlClient("tcp://127.0.0.1:9", token=TOKEN, attempt_ms=100, wait_s=0.4,
                           on_wait=told.append)
    with pytest.raises(TimeoutError, match=r"within 0\.4 s \(--wait\)"):
        client.status()
    assert len(told) == 1 and "waiting up to 0.4 s" in told[0]
