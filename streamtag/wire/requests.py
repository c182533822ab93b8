"""The control socket's requests, typed: one frozen dataclass per request, decoded once from the
JSON object the control server framed (``decode``) and written back the same way
(``to_dict``); ``ControlHandler``, what a server that answers them implements (the daemon and
the supervisor); ``handlers_for``, the table a ``ControlServer`` serves. The wire form of each is
in docs/protocol.md (Control socket). A new request is one class here, listed in ``REQUESTS``,
one ``ControlHandler`` method, and one ``ControlClient`` method (streamtag.wire.control).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Protocol, TypeAlias, runtime_checkable

from streamtag.errors import ConfigError

Reply: TypeAlias = Mapping[str, Any]  # merged into {"ok": true, ...}; its own "ok" wins


@dataclasses.dataclass(frozen=True)
class Ping:
    """``ping``: the protocol version and the commands served; the control server answers it
    itself, so no handler does."""

    cmd: ClassVar[str] = "ping"

    def to_dict(self) -> dict[str, Any]:
        return {"cmd": self.cmd}


@dataclasses.dataclass(frozen=True)
class Status:
    """``status``: every stream's state, the model, the engine's counts. ``histograms`` (a
    supervisor asking its workers): the metrics' histogram samples too."""

    cmd: ClassVar[str] = "status"
    histograms: bool = False

    @classmethod
    def decode(cls, request: Mapping[str, Any]) -> Status:
        return cls(histograms=request.get("histograms") is True)

    def to_dict(self) -> dict[str, Any]:
        return {"cmd": self.cmd, **({"histograms": True} if self.histograms else {})}

    def handled_by(self, handler: ControlHandler) -> Reply:
        return handler.handle_status(self)


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """``snapshot``: what a subscriber that joins now needs to draw every stream."""

    cmd: ClassVar[str] = "snapshot"

    @classmethod
    def decode(cls, request: Mapping[str, Any]) -> Snapshot:
        return cls()

    def to_dict(self) -> dict[str, Any]:
        return {"cmd": self.cmd}

    def handled_by(self, handler: ControlHandler) -> Reply:
        return handler.handle_snapshot(self)


@dataclasses.dataclass(frozen=True)
class AddSource:
    """``add_source``: start stream ``id`` from ``spec`` (as ``--source`` takes it), with a fixed
    ``title`` (checked where the source is configured) and the source's ``options``: every
    other field of the request."""

    cmd: ClassVar[str] = "add_source"
    FIELDS: ClassVar[tuple[str, ...]] = ("cmd", "id", "spec", "title")
    id: str
    spec: str
    title: str | None = None
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @classmethod
    def decode(cls, request: Mapping[str, Any]) -> AddSource:
        sid, spec = request.get("id"), request.get("spec")
        if not isinstance(sid, str) or not isinstance(spec, str):
            raise ConfigError("add_source needs string fields id and spec")
        options = {k: v for k, v in request.items() if k not in cls.FIELDS}
        return cls(sid, spec, request.get("title"), options)

    def to_dict(self) -> dict[str, Any]:
        request = {**self.options, "cmd": self.cmd, "id": self.id, "spec": self.spec}
        if self.title is not None:
            request["title"] = self.title
        return request

    def handled_by(self, handler: ControlHandler) -> Reply:
        return handler.handle_add_source(self)


@dataclasses.dataclass(frozen=True)
class RemoveSource:
    """``remove_source``: end stream ``id`` (or forget it, when it has already ended)."""

    cmd: ClassVar[str] = "remove_source"
    id: str

    @classmethod
    def decode(cls, request: Mapping[str, Any]) -> RemoveSource:
        sid = request.get("id")
        if not isinstance(sid, str):
            raise ConfigError("remove_source needs a string field id")
        return cls(sid)

    def to_dict(self) -> dict[str, Any]:
        return {"cmd": self.cmd, "id": self.id}

    def handled_by(self, handler: ControlHandler) -> Reply:
        return handler.handle_remove_source(self)


@dataclasses.dataclass(frozen=True)
class ReloadModel:
    """``reload_model``: serve the model ``path`` names (an installed model's name or a file
    within the allow-list) from now on."""

    cmd: ClassVar[str] = "reload_model"
    path: str

    @classmethod
    def decode(cls, request: Mapping[str, Any]) -> ReloadModel:
        path = request.get("path")
        if not isinstance(path, str):
            raise ConfigError("reload_model needs a string field path")
        return cls(path)

    def to_dict(self) -> dict[str, Any]:
        return {"cmd": self.cmd, "path": self.path}

    def handled_by(self, handler: ControlHandler) -> Reply:
        return handler.handle_reload_model(self)


ControlRequest: TypeAlias = Status | Snapshot | AddSource | RemoveSource | ReloadModel
# The requests a handler answers ("ping" and "challenge" the control server answers itself).
REQUESTS: tuple[type[ControlRequest], ...] = (Status, Snapshot, AddSource, RemoveSource,
                                              ReloadModel)
ClientRequest: TypeAlias = Ping | ControlRequest  # what a client may send


@runtime_checkable
class ControlHandler(Protocol):
    """What answers the control requests: one method per request, given the request decoded.
    A refusal is a ``StreamtagError`` naming the reason and the fix, sent as it is; a reply
    with its own ``"ok": false`` (a worker's refusal passed on) is sent as it is too."""

    def handle_status(self, request: Status) -> Reply: ...

    def handle_snapshot(self, request: Snapshot) -> Reply: ...

    def handle_add_source(self, request: AddSource) -> Reply: ...

    def handle_remove_source(self, request: RemoveSource) -> Reply: ...

    def handle_reload_model(self, request: ReloadModel) -> Reply: ...


def decode(request: Mapping[str, Any]) -> ControlRequest:
    """The typed request a framed request (an object with a string "cmd") names; ConfigError
    naming the field for a request whose fields are not the ones it takes, KeyError for a
    command that no handler answers."""
    return _BY_NAME[request["cmd"]].decode(request)


def handlers_for(handler: ControlHandler) -> dict[str, Callable[[dict[str, Any]], Reply]]:
    """The command table a ``ControlServer`` serves: each request decoded once, then answered
    by ``handler``'s method for it."""
    def serve(kind: type[ControlRequest]) -> Callable[[dict[str, Any]], Reply]:
        return lambda request: kind.decode(request).handled_by(handler)

    return {kind.cmd: serve(kind) for kind in REQUESTS}


_BY_NAME: dict[str, type[ControlRequest]] = {kind.cmd: kind for kind in REQUESTS}
