"""The daemon's configuration: a TOML file, overridden by command-line flags.

Every section is a frozen dataclass. An unknown key or a bad value is a ``ConfigError`` naming
``section.key`` and what is allowed; nothing starts half-configured. Defaults bind to loopback.

    [model]          path, device
    [[sources]]      id, spec (as --source takes it: streamtag.sources.KINDS), title
                     (overrides the titles the source reports: ICY, a file's tags), and
                     the source's options (realtime, reconnect, format, rate, channels, ...)
    [publish]        endpoint, sndhwm, heartbeat_s, connect, and the bound feed's bounds:
                     max_connections, max_connections_per_address (streamtag.wire.guard);
                     the replay socket: replay_endpoint ("" none), replay_bytes (its ring),
                     replay_max_connections, replay_max_connections_per_address
                     (streamtag.wire.replay)
    [control]        endpoint ("" disables the control socket), token_file, pin_token, its
                     bounds (max_connections, max_connections_per_address), and
                     what requests may open or load: file_roots, model_roots, allow_devices,
                     allow_hosts, deny_hosts, allow_private_hosts, max_sources
    [smoothing]      time_constant_s, margin, min_on_s, min_off_s
    [mood]           enabled, dwell_s, silence_dwell_s, time_constant_s (docs/venue.md)
    [health]         enabled, silence_dbfs, silence_s, clip_samples, tone_crest_db (dead air
                     and clipping: streamtag.engine.health, docs/operations.md "Dead air");
                     loudness (EBU R128: docs/operations.md "Loudness")
    [content]        enabled, min_s (music, speech, silence, tone or noise per window:
                     streamtag.engine.content, docs/models.md "Content")
    [engine]         max_batch, max_wait_ms, hop_seconds, max_pending_windows, backend,
                     precision, workers, threads, decoders, processes (worker processes
                     of `streamtag run`, a number or "auto": streamtag.daemon.supervisor)
    [metrics]        port (0: off), address, and the port's bounds: max_connections,
                     max_connections_per_address, header_timeout_s, answer_timeout_s
                     (streamtag.wire.listener)
    [security]       server_key, client_keys, admin_keys (CURVE encryption and client
                     authentication), insecure (let run bind beyond loopback without keys)
    [shard]          index (K, or "auto": from the host name NAME-K), count (N)
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import ipaddress
import os
import re
import tomllib
import typing
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from streamtag import values
from streamtag.daemon.shard import ShardConfig
from streamtag.engine.config import (
    ContentConfig,
    EngineConfig,
    HealthConfig,
    MoodConfig,
    SmoothingConfig,
)
from streamtag.errors import ConfigError
from streamtag.model import DEVICES
from streamtag.text import utf8_file_text
from streamtag.wire.descriptors import ConnectionCaps, fit_caps, room_for_peers
from streamtag.wire.sockets import (
    CONTROL_MAX_CONNECTIONS,
    CONTROL_MAX_CONNECTIONS_PER_ADDRESS,
    DEFAULT_CONTROL_ENDPOINT,
    DEFAULT_FEED_ENDPOINT,
    FEED_MAX_CONNECTIONS,
    FEED_MAX_CONNECTIONS_PER_ADDRESS,
    REPLAY_MAX_CONNECTIONS,
    REPLAY_MAX_CONNECTIONS_PER_ADDRESS,
    REPLAY_RING_BYTES,
)

# The command line's parser reads this module (the settings' flags): what it imports stays free
# of numpy and zmq, and the wire's protocol and keys are imported where they are used.

MAX_PROCESSES = 256
# A config file is read whole and parsed (tomllib takes some 5 bytes of memory a byte): 4 MiB
# holds some 25,000 sources, beyond any one daemon's or shard set's list.
MAX_CONFIG_BYTES = 4 * 1024 * 1024
PROCESSES_AUTO = "auto"


def check_processes(key: str, value: Any) -> int | str:
    """``[engine] processes`` or ``--processes``: a whole number 1-MAX_PROCESSES, or "auto"
    (as many as the CPUs this process may use carry, streamtag.daemon.cpus)."""
    if isinstance(value, str) and value.strip().lower() == PROCESSES_AUTO:
        return PROCESSES_AUTO
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_PROCESSES:
        raise ConfigError(f"{key} must be a whole number of worker processes 1-{MAX_PROCESSES} "
                          f"or \"auto\" (from the CPUs this process may use), got {value!r}")
    return value


ENDPOINT = re.compile(r"^(tcp://(\*|[A-Za-z0-9_.-]+|\[[0-9A-Fa-f:.]+\]):(\*|\d{1,5})"
                      r"|ipc://.+|inproc://.+)$")


def check_endpoint(key: str, value: str) -> None:
    """A ZeroMQ endpoint, in a config file or a flag: tcp://HOST:PORT with PORT 1-65535 or *,
    ipc://PATH or inproc://NAME; ConfigError naming ``key`` otherwise."""
    found = ENDPOINT.match(value)
    if not found:
        raise ConfigError(f"{key} {value!r} is not a ZeroMQ endpoint; write tcp://HOST:PORT "
                          "(PORT * for any free port), ipc://PATH or inproc://NAME")
    port = found.group(3)
    if port is not None and port != "*" and not 1 <= int(port) <= 65535:
        raise ConfigError(f"{key} {value!r}: the port {port!r} is not a TCP port; write "
                          "tcp://HOST:PORT with PORT 1-65535 (or * where the endpoint is bound)")


# A DNS name: dot-separated labels of letters, digits and inner hyphens (RFC 1123).
HOST_NAME = re.compile(r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)"
                       r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$")


def check_listen_address(key: str, value: str) -> None:
    """An address to listen on: an IP address or a host name. Whether a name resolves, or the
    address is this machine's, is known only when the daemon binds it."""
    try:
        ipaddress.ip_address(value)
        return
    except ValueError:
        pass
    # A name ending in a number ("300.1.1.1") is a mistyped IPv4 address, not a host name.
    if not HOST_NAME.match(value) or value.rstrip(".").rsplit(".", 1)[-1].isdigit():
        section = key.split(".")[0]
        raise ConfigError(f"{key} {value!r} is not an IP address or a host name; write e.g. "
                          "127.0.0.1 (loopback), ::1 or 0.0.0.0 (every interface), without "
                          f"brackets or a port (the port goes in {section}.port)")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    path: str | None = values.field(
        None, flag="--model", help="an installed model's name (streamtag models list) or a "
                                   "model file; left out: the shipped default model")
    device: str = values.field(
        "auto", flag="--device", help="cpu, cuda or cuda:N; auto: the GPU where there is one")

    def __post_init__(self) -> None:
        values.check_fields(self, "model", ConfigError)
        if not (self.device in DEVICES or re.fullmatch(r"cuda:\d+", self.device)):
            raise ConfigError(f"model.device must be one of {', '.join(DEVICES)} or cuda:N, "
                              f"got {self.device!r}")


@dataclasses.dataclass(frozen=True)
class SourceConfig:
    id: str
    spec: str
    options: dict[str, Any] = dataclasses.field(default_factory=dict)
    title: str | None = None  # the stream's fixed title; None: the titles the source reports

    def __post_init__(self) -> None:
        from streamtag.wire.protocol import STREAM_ID_PATTERN

        if not isinstance(self.id, str) or not re.fullmatch(STREAM_ID_PATTERN, self.id):
            raise ConfigError(f"sources.id {self.id!r} is not a valid stream id: use 1-128 of "
                              "A-Z a-z 0-9 _ . : -")
        if not self.spec:
            from streamtag.sources import KNOWN_KINDS

            raise ConfigError(f"sources.spec of {self.id!r} is empty; give {KNOWN_KINDS}")
        if self.title is not None and (not isinstance(self.title, str)
                                       or not self.title.strip()):
            raise ConfigError(f"sources.title of {self.id!r} must be a non-empty string (leave "
                              f"it out to use the titles the source reports), got "
                              f"{self.title!r}")


@dataclasses.dataclass(frozen=True)
class PublishConfig:
    endpoint: str = values.field(DEFAULT_FEED_ENDPOINT, flag="--publish",
                                 help="the ZeroMQ PUB endpoint subscribers connect to")
    sndhwm: int = values.field(
        1000, minimum=0, expected=">= 0 (0: no limit)",
        help="messages queued per subscriber before a slow one loses them (0: no limit)")
    heartbeat_s: float = values.field(2.0, positive=True, expected="> 0 seconds",
                                      help="seconds between heartbeat messages")
    connect: bool = values.field(
        False, help="connect to the endpoint (a proxy's frontend) instead of binding it")
    max_connections: int = values.field(
        FEED_MAX_CONNECTIONS, minimum=1, maximum=65536,
        help="subscribers connected at once; past it an unauthenticated one of the most "
             "crowded address is ended (fewer where the open-files limit leaves less: "
             "docs/security.md)")
    max_connections_per_address: int = values.field(
        FEED_MAX_CONNECTIONS_PER_ADDRESS, minimum=1, maximum=65536,
        help="subscribers connected at once from one address")
    replay_endpoint: str = values.field(
        "", flag="--replay",
        help="the replay socket's endpoint, where feed readers ask for each stream's state "
             "and for messages they missed (docs/protocol.md, Replay socket); \"\" serves none")
    replay_bytes: int = values.field(
        REPLAY_RING_BYTES, minimum=0, expected=">= 0 bytes (0: state only, no replay)",
        help="bytes of published messages the replay socket keeps, the oldest pushed out first")
    replay_max_connections: int = values.field(
        REPLAY_MAX_CONNECTIONS, minimum=1, maximum=65536,
        help="replay socket connections at once; past it an unauthenticated one of the "
             "most crowded address is ended")
    replay_max_connections_per_address: int = values.field(
        REPLAY_MAX_CONNECTIONS_PER_ADDRESS, minimum=1, maximum=65536,
        help="replay socket connections at once from one address")

    def __post_init__(self) -> None:
        values.check_fields(self, "publish", ConfigError)
        check_endpoint("publish.endpoint", self.endpoint)
        if self.replay_endpoint:
            check_endpoint("publish.replay_endpoint", self.replay_endpoint)

    @property
    def caps(self) -> tuple[int, int]:
        """(connections at once, from one address) of the bound feed."""
        return self.max_connections, self.max_connections_per_address

    @property
    def replay_caps(self) -> tuple[int, int]:
        """(connections at once, from one address) of the replay socket."""
        return self.replay_max_connections, self.replay_max_connections_per_address


@dataclasses.dataclass(frozen=True)
class ControlConfig:
    """The control socket, and what its requests may open or load: each an allow-list, empty
    (nothing) by default. Sources of the config file and the command line are trusted; these
    rules are for ``add_source`` and ``reload_model`` requests."""

    endpoint: str = values.field(DEFAULT_CONTROL_ENDPOINT, flag="--control",
                                 help="the control socket's endpoint; \"\" disables it")
    token_file: str | None = values.field(
        None, help="the control token's file; left out: control.token in streamtag's folder")
    pin_token: bool = values.field(
        False, help="keep the token the file holds; false: a new token at every start")
    file_roots: tuple[str, ...] = values.field(
        (), flag="--allow-file-root", metavar="DIR",
        help="add_source may open only files below these folders")
    model_roots: tuple[str, ...] = values.field(
        (), help="reload_model loads installed names, and model files below these folders")
    allow_devices: bool = values.field(
        False, help="add_source may open an input device (a microphone)")
    allow_hosts: tuple[str, ...] = values.field(
        (), help="http(s) hosts add_source may reach: names, .domains, addresses, networks; "
                 "empty: any public host")
    deny_hosts: tuple[str, ...] = values.field((), help="hosts refused even when allowed")
    allow_private_hosts: bool = values.field(
        False, help="add_source may reach loopback and private addresses (else list them in "
                    "allow_hosts)")
    max_sources: int = values.field(1024, minimum=1,
                                    expected=">= 1 (streams add_source may have running)",
                                    help="streams running at most; add_source past it is refused")
    max_connections: int = values.field(
        CONTROL_MAX_CONNECTIONS, minimum=1, maximum=65536,
        help="control connections at once; past it one of the most crowded address that has "
             "made no signed request is ended (fewer where the open-files limit leaves less: "
             "docs/security.md)")
    max_connections_per_address: int = values.field(
        CONTROL_MAX_CONNECTIONS_PER_ADDRESS, minimum=1, maximum=65536,
        help="control connections at once from one address")

    def __post_init__(self) -> None:
        values.check_fields(self, "control", ConfigError)
        if self.endpoint:
            check_endpoint("control.endpoint", self.endpoint)
        if self.token_file is not None and not self.token_file.strip():
            raise ConfigError("control.token_file is empty; give a path, or leave it out for "
                              "control.token in streamtag's folder")
        for key in ("allow_hosts", "deny_hosts"):
            for entry in getattr(self, key):
                if not _host_pattern(entry):
                    raise ConfigError(
                        f"control.{key}: {entry!r} is neither a host name (radio.example.org), "
                        "a domain (.example.org), an address nor a network (10.0.0.0/8); a "
                        "typo here would allow or deny nothing")

    @property
    def caps(self) -> tuple[int, int]:
        """(connections at once, from one address) of the control socket."""
        return self.max_connections, self.max_connections_per_address

    def check_room(self, stream_id: str, running: int) -> None:
        """ConfigError naming ``max_sources`` when ``running`` streams leave no room for an
        ``add_source`` of ``stream_id``."""
        if running >= self.max_sources:
            raise ConfigError(f"add_source refuses {stream_id!r}: {running} streams run, the "
                              f"most control.max_sources ({self.max_sources}) allows; remove "
                              "one, or raise control.max_sources")


def _host_pattern(entry: str) -> bool:
    """Whether a host policy entry is a name, a .domain, an address or a network (a name as
    check_listen_address reads one: HOST_NAME, not ending in a number)."""
    text = entry.strip() if isinstance(entry, str) else ""
    if not text:
        return False
    try:
        ipaddress.ip_network(text, strict=False)
        return True
    except ValueError:
        pass
    name = text.removeprefix(".")
    return bool(HOST_NAME.match(name)) and not name.rstrip(".").rsplit(".", 1)[-1].isdigit()


@dataclasses.dataclass(frozen=True)
class SecurityConfig:
    """CURVE for the PUB and control sockets: the daemon's secret certificate, a folder of
    the public certificates of the subscribers it lets in on the PUB socket, and one of the
    administrators it lets in on the control socket (``streamtag keys generate``).
    ``insecure`` lets ``streamtag run`` bind a socket beyond loopback without keys."""

    server_key: str | None = values.field(
        None, help="the daemon's secret CURVE certificate (NAME.key_secret, from streamtag "
                   "keys generate)")
    client_keys: str | None = values.field(
        None, help="a folder of the public keys (NAME.key) of the subscribers let in")
    admin_keys: str | None = values.field(
        None, help="a folder of the public keys of the control clients let in (no token)")
    insecure: bool = values.field(
        False, flag="--insecure",
        help="let run bind the publish or control endpoint beyond loopback without keys")

    def __post_init__(self) -> None:
        values.check_fields(self, "security", ConfigError)
        if (self.server_key is None) != (self.client_keys is None):
            raise ConfigError("security.server_key and security.client_keys go together: give "
                              "both (encrypted, authenticated) or neither (plain)")
        if self.admin_keys is not None and self.server_key is None:
            raise ConfigError("security.admin_keys needs security.server_key and "
                              "security.client_keys: admin keys are CURVE keys")

    @property
    def curve(self) -> bool:
        return self.server_key is not None


@dataclasses.dataclass(frozen=True)
class MetricsConfig:
    """The metrics and probe port, and its bounds (docs/security.md, "Listener limits"): at
    most ``max_connections`` connections at once and ``max_connections_per_address`` from one
    address (past either the oldest unanswered one is closed), a request head within
    ``header_timeout_s`` of connecting, the answer under way within ``answer_timeout_s``."""

    port: int = values.field(0, minimum=0, maximum=65535, expected="0 (off) or a TCP port 1-65535",
                             flag="--metrics-port",
                             help="the Prometheus metrics and /healthz, /readyz port; 0: off")
    address: str = values.field("127.0.0.1", help="the address the metrics port listens on")
    max_connections: int = values.field(64, minimum=1, maximum=4096,
                                        help="connections at once")
    max_connections_per_address: int = values.field(
        16, minimum=1, maximum=4096, help="connections at once from one address")
    header_timeout_s: float = values.field(
        10.0, minimum=0.1, maximum=600.0,
        help="seconds a connection has to send its request head")
    answer_timeout_s: float = values.field(
        30.0, minimum=0.1, maximum=600.0, help="seconds within which an answer is under way")

    def __post_init__(self) -> None:
        values.check_fields(self, "metrics", ConfigError)
        check_listen_address("metrics.address", self.address)

    @property
    def limits(self):
        """The port's bounds, as streamtag.wire.listener takes them."""
        from streamtag.wire.listener import ListenerLimits  # websockets: only with a port

        return ListenerLimits(self.max_connections, self.max_connections_per_address,
                              self.header_timeout_s, self.answer_timeout_s)


@dataclasses.dataclass(frozen=True)
class DaemonConfig:
    model: ModelConfig = ModelConfig()
    sources: tuple[SourceConfig, ...] = ()
    publish: PublishConfig = PublishConfig()
    control: ControlConfig = ControlConfig()
    smoothing: SmoothingConfig = SmoothingConfig()
    mood: MoodConfig = MoodConfig()
    health: HealthConfig = HealthConfig()
    content: ContentConfig = ContentConfig()
    engine: EngineConfig = EngineConfig()
    metrics: MetricsConfig = MetricsConfig()
    security: SecurityConfig = SecurityConfig()
    shard: ShardConfig = ShardConfig()
    # [engine] processes (kept here: the engine's own settings are one process's)
    processes: int | str = values.field(
        1, flag="--processes", metavar="N|auto",
        help="worker processes of streamtag run, each serving its part of the sources behind "
             "the same publish and control endpoints, restarted when one dies; or \"auto\": as "
             "many as the CPUs this process may use (and its memory) carry")

    def __post_init__(self) -> None:
        values.set_field(self, "processes", check_processes("engine.processes",
                                                            self.processes))

    def port_caps(self, files_limit: int | None, sources: int
                  ) -> tuple[dict[str, ConnectionCaps], dict[str, ConnectionCaps], int | None]:
        """The caps of the ZeroMQ ports this config binds ("publish" unless it connects,
        "control" and "replay" where served) as configured and as fitted within what
        ``files_limit`` leaves with ``sources`` running, and that room
        (streamtag.wire.descriptors)."""
        wanted = {}
        if not self.publish.connect:
            wanted["publish"] = ConnectionCaps(*self.publish.caps)
        if self.control.endpoint:
            wanted["control"] = ConnectionCaps(*self.control.caps)
        if self.publish.replay_endpoint:
            wanted["replay"] = ConnectionCaps(*self.publish.replay_caps)
        room = room_for_peers(files_limit, sources=sources, http_connections=(
            [self.metrics.max_connections] if self.metrics.port else []))
        fitted = dict(zip(wanted, fit_caps(list(wanted.values()), room), strict=True))
        return wanted, fitted, room


SECTIONS = {"model": ModelConfig, "publish": PublishConfig, "control": ControlConfig,
             "smoothing": SmoothingConfig, "mood": MoodConfig, "health": HealthConfig,
             "content": ContentConfig, "engine": EngineConfig,
             "metrics": MetricsConfig, "security": SecurityConfig, "shard": ShardConfig}


def exposed_endpoints(config: DaemonConfig) -> list[tuple[str, str]]:
    """The sockets that would listen beyond this machine in the clear, as ``(key, endpoint)``:
    the publish, control and replay endpoints bound to an address that is not loopback,
    without CURVE keys."""
    from streamtag.wire.security import is_loopback_endpoint

    if config.security.curve:
        return []
    found = []
    if not config.publish.connect and not is_loopback_endpoint(config.publish.endpoint):
        found.append(("publish.endpoint", config.publish.endpoint))
    if config.control.endpoint and not is_loopback_endpoint(config.control.endpoint):
        found.append(("control.endpoint", config.control.endpoint))
    if (config.publish.replay_endpoint
            and not is_loopback_endpoint(config.publish.replay_endpoint)):
        found.append(("publish.replay_endpoint", config.publish.replay_endpoint))
    return found


def parse_source_line(text: str, index: int) -> SourceConfig:
    """A ``--source`` flag: ``SPEC`` or ``ID=SPEC`` (an id is made from the position)."""
    from streamtag.wire.protocol import STREAM_ID_PATTERN

    match = re.match(rf"^({STREAM_ID_PATTERN})=(.+)$", text)
    if match and "://" not in match.group(1) and not match.group(1).endswith(":"):
        return SourceConfig(id=match.group(1), spec=match.group(2))
    return SourceConfig(id=f"s{index}", spec=text)


def config_from_dict(data: dict[str, Any]) -> DaemonConfig:
    known = ["sources", *SECTIONS]
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(f"unknown section [{unknown[0]}]; sections are {', '.join(known)}")
    processes = 1
    if isinstance(data.get("engine"), dict):  # processes among the keys an unknown one lists
        values.check_keys(data["engine"], [*(f.name for f in dataclasses.fields(EngineConfig)),
                                           "processes"], "engine", ConfigError)
    if isinstance(data.get("engine"), dict) and "processes" in data["engine"]:
        data = {**data, "engine": dict(data["engine"])}
        processes = data["engine"].pop("processes")
    security = data.get("security")
    for key in ("client_keys", "admin_keys"):
        if isinstance(security, dict) and isinstance(security.get(key), list):
            raise ConfigError(f"security.{key} is a folder of public key files (NAME.key), not a "
                              "list: put the keys it lets in into one folder and give its path")
    parts: dict[str, Any] = {name: values.from_table(cls, data[name], name, ConfigError)
                             for name, cls in SECTIONS.items() if name in data}
    parts["processes"] = processes
    sources = []
    raw_sources = data.get("sources", [])
    if not isinstance(raw_sources, list):
        raise ConfigError("sources must be an array of tables: [[sources]] id = ..., spec = ...")
    for i, entry in enumerate(raw_sources):
        if not isinstance(entry, dict):
            raise ConfigError(f"sources[{i}] must be a table with id and spec")
        for key in ("id", "spec"):
            if not isinstance(entry.get(key), str):
                raise ConfigError(f"sources[{i}].{key} is required and must be a string")
        options = {k: v for k, v in entry.items() if k not in ("id", "spec", "title")}
        sources.append(SourceConfig(entry["id"], entry["spec"], options, entry.get("title")))
    # A Counter, not ids.count: a sharded fleet gives every daemon the whole list (10,000s).
    duplicates = sorted(i for i, n in collections.Counter(s.id for s in sources).items() if n > 1)
    if duplicates:
        raise ConfigError(f"sources.id {duplicates[0]!r} is used twice; ids must be unique")
    return DaemonConfig(sources=tuple(sources), **parts)


def load_config(path: str | Path) -> DaemonConfig:
    path = Path(path)
    try:
        with path.open("rb") as file:
            size = os.fstat(file.fileno()).st_size
            data = file.read(MAX_CONFIG_BYTES + 1) if size <= MAX_CONFIG_BYTES else b""
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    if size > MAX_CONFIG_BYTES or len(data) > MAX_CONFIG_BYTES:  # a pipe tells no size
        told = f"{size} bytes" if size > MAX_CONFIG_BYTES else "longer"
        raise ConfigError(f"config file {path} is {told}, over the {MAX_CONFIG_BYTES} bytes "
                          "streamtag reads (some 25,000 sources): is it the right file?")
    text = utf8_file_text(data, f"config file {path}")
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from exc
    try:
        return config_from_dict(table)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def _plays_a_file(spec: str) -> bool:
    """Whether ``spec`` names a file source (or nothing known yet: a path that is not there,
    whose source then says so), not a live one (http, device, pipe) that plays at its own pace."""
    from streamtag.errors import SourceError
    from streamtag.sources import parse_spec

    try:
        return parse_spec(spec).kind == "file"
    except SourceError:
        return True


@dataclasses.dataclass(frozen=True)
class SettingFlag:
    """A setting that declares its command-line flag (``values.field(flag=...)``): ``--flag``
    overrides ``[section] key`` of the config file."""

    flag: str
    key: str  # as the file names it: "engine.hop_seconds"
    holder: str | None  # the DaemonConfig field holding it ("engine"); None: DaemonConfig's own
    declared: dataclasses.Field
    annotation: Any

    @property
    def dest(self) -> str:
        """Its name in the parsed arguments and as a keyword of ``with_overrides``."""
        return self.flag.removeprefix("--").replace("-", "_")

    @property
    def repeatable(self) -> bool:
        """A list setting: each flag given adds to the file's list."""
        return typing.get_origin(self.annotation) is tuple

    def help(self) -> str:
        """The flag's help: the setting's meaning, then its key and default."""
        section, name = self.key.split(".")
        if self.annotation is bool:
            where = f"[{section}] {name} = true"
        else:
            shown = self.declared.default
            where = f"[{section}] {name}" + ("; repeatable" if self.repeatable else "") + (
                f"; default {shown}" if shown not in (None, (), "") else "")
        return f"{values.help_of(self.declared)} ({where})".replace("%", "%%")  # argparse's %

    def value(self, text: str) -> Any:
        """The flag's text in the setting's type, checked by the setting's own rule with the
        other settings at their defaults (so that argparse names the flag in the error)."""
        value = values.from_text(text, self.annotation)
        overridden(DaemonConfig(), self, (value,) if self.repeatable else value)
        return value


def setting_flags() -> list[SettingFlag]:
    """Every setting with a flag of its own, in the file's order. A flag that sets several
    keys at once (``--shard K/N``) is not among them: ``run``'s parser writes it by hand."""
    found = []
    for holder, cls in [*SECTIONS.items(), (None, DaemonConfig)]:
        hints = typing.get_type_hints(cls)
        for declared in dataclasses.fields(cls):
            flag = values.flag_of(declared)
            if flag is not None:
                # [engine] processes is a field of DaemonConfig itself
                key = f"{holder or 'engine'}.{declared.name}"
                found.append(SettingFlag(flag, key, holder, declared, hints[declared.name]))
    counts = collections.Counter(s.flag for s in found)
    return [s for s in found if counts[s.flag] == 1]


def add_setting_flags(parser: argparse.ArgumentParser) -> None:
    """Adds each setting's flag (``setting_flags``) to ``parser``: its help is the setting's,
    naming its key; a flag not given is None, so the file's value stands."""
    for s in setting_flags():
        rule = s.declared.metadata.get(values.RULE)
        extra: dict[str, Any] = {}
        if s.annotation is bool:
            extra["action"] = "store_true"
        else:
            extra["type"] = _flag_type(s)
            extra["action"] = "append" if s.repeatable else "store"
            if rule is not None and rule.choices is not None:
                extra["choices"] = rule.choices
        if values.metavar_of(s.declared):
            extra["metavar"] = values.metavar_of(s.declared)
        parser.add_argument(s.flag, dest=s.dest, default=None, help=s.help(), **extra)


def _flag_type(setting: SettingFlag) -> Any:
    def parse(text: str) -> Any:
        try:
            return setting.value(text)
        except ConfigError as exc:  # argparse names the flag itself
            raise argparse.ArgumentTypeError(str(exc.__cause__ or exc)) from None

    parse.__name__ = setting.flag  # what argparse says when the type refuses without a message
    return parse


def flag_values(args: argparse.Namespace) -> dict[str, Any]:
    """The settings' flags in parsed arguments, by dest, for ``with_overrides``."""
    return {s.dest: getattr(args, s.dest, None) for s in setting_flags()}


def overridden(config: DaemonConfig, setting: SettingFlag, value: Any) -> DaemonConfig:
    """``config`` with one setting set by its flag; a list setting adds to the file's list. A
    value the setting's rule refuses is a ConfigError naming the flag and the key."""
    name = setting.declared.name
    holder = getattr(config, setting.holder) if setting.holder else config
    if setting.repeatable:
        value = (*getattr(holder, name), *value)
    try:
        changed: Any = dataclasses.replace(holder, **{name: value})
    except (ConfigError, ValueError) as exc:
        raise ConfigError(f"{setting.flag}: {exc}") from exc
    if setting.holder is None:
        return changed
    return dataclasses.replace(config, **{setting.holder: changed})


def with_overrides(config: DaemonConfig, *, sources: list[str] | None = None,
                   realtime: bool | None = None, shard: str | None = None,
                   **flags: Any) -> DaemonConfig:
    """Command-line flags override the file: each keyword of ``flags`` is a setting's flag by
    its dest (``hop_seconds=2.0``, as ``flag_values`` gives them), None where not given.
    ``--source`` flags add to the file's sources, and ``--realtime`` plays every file source at
    real speed, the file's and the flags' alike; ``--shard K/N`` sets the shard."""
    by_dest = {s.dest: s for s in setting_flags()}
    unknown = sorted(set(flags) - set(by_dest))
    if unknown:
        raise TypeError(f"with_overrides: {unknown[0]!r} is no setting's flag; they are "
                        f"{', '.join(by_dest)}")
    for dest, value in flags.items():
        if value is not None:
            config = overridden(config, by_dest[dest], value)
    changes: dict[str, Any] = {}
    if sources or realtime is not None:
        extra = [parse_source_line(s, len(config.sources) + i)
                 for i, s in enumerate(sources or [])]
        every = [*config.sources, *extra]
        if realtime is not None:  # files at real speed; live sources keep their own pace
            every = [dataclasses.replace(s, options={**s.options, "realtime": realtime})
                     if _plays_a_file(s.spec) else s for s in every]
        merged = config_from_dict({"sources": [
            {"id": s.id, "spec": s.spec, **s.options,
             **({"title": s.title} if s.title is not None else {})}
            for s in every]}).sources
        changes["sources"] = merged
    if shard is not None:
        changes["shard"] = ShardConfig.parse(shard)
    return dataclasses.replace(config, **changes)


# Under ``run --exit-when-done`` a live source that reconnects for ever would keep the command
# from ending: one that brings no audio in this many reconnects in a row has failed for good.
EXIT_WHEN_DONE_RECONNECTS = 5


def ending_sources(config: DaemonConfig) -> DaemonConfig:
    """``config`` for ``run --exit-when-done``: each live source (http, device) that sets
    neither ``max_reconnects`` nor ``reconnect`` gives up after EXIT_WHEN_DONE_RECONNECTS
    reconnects without audio (a station answering 404 for ever), and fails."""
    from streamtag.errors import SourceError
    from streamtag.sources import KINDS, parse_spec

    live_kinds = {cls.kind for cls in KINDS if cls.live}

    def live(spec: str) -> bool:
        try:
            return parse_spec(spec).kind in live_kinds
        except SourceError:
            return False  # said when the source is built

    sources = tuple(
        dataclasses.replace(s, options={**s.options, "max_reconnects": EXIT_WHEN_DONE_RECONNECTS})
        if live(s.spec) and not {"max_reconnects", "reconnect"} & set(s.options) else s
        for s in config.sources)
    return dataclasses.replace(config, sources=sources)


# How unknown_stream's refusal begins: the supervisor knows a worker's by it, and names every
# worker's streams instead of that worker's.
UNKNOWN_STREAM = "no source with id"


def unknown_stream(stream_id: str, streams: Iterable[str]) -> str:
    """The refusal of a request for a stream the daemon does not have, naming those it has
    (running, ended or failed: all that status lists)."""
    names = sorted(streams)
    shown = ", ".join(names[:20]) + (f" and {len(names) - 20} more" if len(names) > 20 else "")
    return f"{UNKNOWN_STREAM} {stream_id!r}; the daemon's streams: {shown or 'none'}"
