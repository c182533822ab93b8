"""The daemon's configuration: a TOML file, overridden by command-line flags.

Every section is a frozen dataclass. An unknown key or a bad value is a ``ConfigError`` naming
``section.key`` and what is allowed; nothing starts half-configured. Defaults bind to loopback.

    [model]          path, device
    [[sources]]      id, spec (file:PATH | PATH | http(s)://... | device:NAME | pipe:), title
                     (overrides the titles the source reports: ICY, a file's tags), and
                     the source's options (realtime, reconnect, format, rate, channels, ...)
    [publish]        endpoint, sndhwm, heartbeat_s
    [control]        endpoint ("" disables the control socket), file_roots
    [smoothing]      time_constant_s, margin, min_on_s, min_off_s
    [engine]         max_batch, max_wait_ms, hop_seconds, max_pending_windows, backend,
                     precision, workers, threads, decoders
    [metrics]        port (0: off), address
    [security]       server_key, client_keys (CURVE encryption and client authentication)
    [shard]          index (K, or "auto": from the host name NAME-K), count (N)
"""

from __future__ import annotations

import collections
import dataclasses
import ipaddress
import math
import os
import re
import tomllib
import typing
from pathlib import Path
from typing import Any

from streamtag.daemon.shard import ShardConfig
from streamtag.engine.smoothing import SmoothingConfig
from streamtag.errors import ConfigError

DEFAULT_PUBLISH = "tcp://127.0.0.1:5556"
DEFAULT_CONTROL = "tcp://127.0.0.1:5557"
STREAM_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
DEVICES = ("auto", "cpu", "cuda")
# engine.max_batch left out: on the CPU the cheapest batch size up to this, measured on the model
# as it loads (streamtag.model.inference.cheapest_batch); on CUDA this.
CPU_MAX_BATCH = 8
CUDA_MAX_BATCH = 64
# Source threads at work at once by default, however many cores: they share one GIL, and on a
# 16-core box 4 or 15 of them ran 64 MP3 streams slower (246x, 186x real time) than 2 (424x)
# or 1 (349x), with 2.3-3.9 ms per window of system time (docs/operations.md)
DEFAULT_DECODERS = 2


ENDPOINT = re.compile(r"^(tcp://(\*|[A-Za-z0-9_.-]+|\[[0-9A-Fa-f:.]+\]):(\*|\d{1,5})"
                      r"|ipc://.+|inproc://.+)$")


def check_endpoint(key: str, value: str) -> None:
    if not ENDPOINT.match(value):
        raise ConfigError(f"{key} {value!r} is not a ZeroMQ endpoint; write tcp://HOST:PORT "
                          "(PORT * for any free port), ipc://PATH or inproc://NAME")


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


# Upper bounds: a longer wait overflows the condition timeout and kills the inference thread;
# the frame ring holds window + 4 hops of frames per stream, so a huge hop would allocate GBs.
MAX_WAIT_MS = 60_000.0
MAX_HOP_SECONDS = 60.0
BACKENDS = ("auto", "torch", "onnxruntime")  # the names streamtag.model.inference serves
# fp32: the file's graph; int8: its int8 graph (`streamtag models quantize`), ONNX Runtime only
PRECISIONS = ("fp32", "int8")


@dataclasses.dataclass(frozen=True)
class EngineConfig:
    """How the engine batches windows and runs the model (the engine is in
    streamtag.engine.batching;
    this module stays free of torch so that reading a config is cheap)."""

    # Windows per forward pass; None: 64 on CUDA, and on the CPU the size up to 8 at which this
    # model's forward costs least per window, measured as it loads (1-2 for the default model
    # on ONNX Runtime, whose forward per window grows with the batch; 4-8 for an LSTM's, which
    # shrinks), so batching serves where it pays.
    max_batch: int | None = None
    max_wait_ms: float = 10.0  # how long a due window may wait for others to fill a batch
    hop_seconds: float | None = None  # overrides the model file's default hop
    max_pending_windows: int = 16  # per stream: queued windows before waiting or dropping
    backend: str = "auto"  # auto: ONNX Runtime on the CPU, TorchScript on CUDA
    precision: str = "fp32"  # int8: the model file's int8 graph on ONNX Runtime (opt-in)
    workers: int = 1  # inference threads, each running whole batches (one model shared)
    threads: int = 1  # intra-op threads of one forward pass
    # Source threads working at once, taking turns (streamtag.sources.decode_turns); 0: one per
    # core left
    # over from the inference threads, at least one and at most DEFAULT_DECODERS.
    decoders: int = 0
    # Overlapping windows share work: a window's forward takes what an earlier window of its
    # stream computed for the frames they share (streamtag.model.window_reuse; the default model on
    # ONNX
    # Runtime). The same probabilities within 1e-4; false computes every window whole.
    reuse_windows: bool = True

    def __post_init__(self) -> None:
        if self.max_batch is not None and not (
                isinstance(self.max_batch, int) and not isinstance(self.max_batch, bool)
                and self.max_batch >= 1):
            raise ConfigError(f"engine.max_batch must be an integer >= 1 (or left out: on "
                              f"the CPU measured up to {CPU_MAX_BATCH}, {CUDA_MAX_BATCH} on "
                              f"CUDA), got {self.max_batch!r}")
        if not (math.isfinite(self.max_wait_ms) and 0 <= self.max_wait_ms <= MAX_WAIT_MS):
            raise ConfigError(f"engine.max_wait_ms must be >= 0 and <= {MAX_WAIT_MS:g}, got "
                              f"{self.max_wait_ms!r}")
        if self.hop_seconds is not None and not (math.isfinite(self.hop_seconds)
                                                 and 0 < self.hop_seconds <= MAX_HOP_SECONDS):
            raise ConfigError(f"engine.hop_seconds must be > 0 and <= {MAX_HOP_SECONDS:g}, got "
                              f"{self.hop_seconds!r}")
        if not (isinstance(self.max_pending_windows, int) and self.max_pending_windows >= 1):
            raise ConfigError("engine.max_pending_windows must be an integer >= 1, got "
                              f"{self.max_pending_windows!r}")
        if self.backend not in BACKENDS:
            raise ConfigError(f"engine.backend must be one of {', '.join(BACKENDS)}, got "
                              f"{self.backend!r}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"engine.precision must be one of {', '.join(PRECISIONS)}, got "
                              f"{self.precision!r}")
        if self.precision == "int8" and self.backend == "torch":
            raise ConfigError("engine.precision int8 serves the model file's int8 graph on ONNX "
                              "Runtime: set engine.backend to auto or onnxruntime, or precision "
                              "to fp32")
        for key in ("workers", "threads"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 256:
                raise ConfigError(f"engine.{key} must be an integer from 1 to 256, got "
                                  f"{value!r}")
        if not isinstance(self.reuse_windows, bool):
            raise ConfigError(f"engine.reuse_windows must be true or false, got "
                              f"{self.reuse_windows!r}")
        if isinstance(self.decoders, bool) or not isinstance(self.decoders, int) \
                or not 0 <= self.decoders <= 256:
            raise ConfigError(f"engine.decoders must be an integer from 0 (one per core left "
                              f"over from the workers) to 256, got {self.decoders!r}")

    def batch_limit(self, device_type: str) -> int:
        """``max_batch``, or its largest default for a model on ``device_type`` ("cpu",
        "cuda"); on the CPU the engine measures the model for a smaller one
        (``Engine.batch_limit_for``)."""
        if self.max_batch is not None:
            return self.max_batch
        return CUDA_MAX_BATCH if device_type == "cuda" else CPU_MAX_BATCH

    def decoder_turns(self) -> int:
        """How many source threads work at once: ``decoders``, or for 0 the cores this
        process may use less the inference threads, at least one and at most
        ``DEFAULT_DECODERS``."""
        if self.decoders:
            return self.decoders
        spare = len(os.sched_getaffinity(0)) - self.workers * self.threads
        return max(1, min(DEFAULT_DECODERS, spare))


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    path: str | None = None  # None: the shipped default model
    device: str = "auto"

    def __post_init__(self) -> None:
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
        if not STREAM_ID.match(self.id):
            raise ConfigError(f"sources.id {self.id!r} is not a valid stream id: use 1-128 of "
                              "A-Z a-z 0-9 _ . : -")
        if not self.spec:
            raise ConfigError(f"sources.spec of {self.id!r} is empty; give file:PATH, a path, "
                              "an http(s) URL, device:NAME or pipe:")
        if self.title is not None and (not isinstance(self.title, str)
                                       or not self.title.strip()):
            raise ConfigError(f"sources.title of {self.id!r} must be a non-empty string (leave "
                              f"it out to use the titles the source reports), got "
                              f"{self.title!r}")


@dataclasses.dataclass(frozen=True)
class PublishConfig:
    endpoint: str = DEFAULT_PUBLISH
    sndhwm: int = 1000
    heartbeat_s: float = 2.0
    connect: bool = False  # connect to the endpoint (a proxy's frontend) instead of binding

    def __post_init__(self) -> None:
        check_endpoint("publish.endpoint", self.endpoint)
        if self.sndhwm < 0:
            raise ConfigError(f"publish.sndhwm must be >= 0 (0: no limit), got {self.sndhwm}")
        if not self.heartbeat_s > 0:
            raise ConfigError(f"publish.heartbeat_s must be > 0 seconds, got {self.heartbeat_s}")


@dataclasses.dataclass(frozen=True)
class ControlConfig:
    endpoint: str = DEFAULT_CONTROL  # "" disables the control socket
    file_roots: tuple[str, ...] = ()  # add_source may only open files below these

    def __post_init__(self) -> None:
        if self.endpoint:
            check_endpoint("control.endpoint", self.endpoint)


@dataclasses.dataclass(frozen=True)
class SecurityConfig:
    """CURVE for the PUB and control sockets: the daemon's secret certificate and a folder of
    the public certificates of the clients it lets in (``streamtag keys generate``)."""

    server_key: str | None = None  # NAME.key_secret
    client_keys: str | None = None  # folder of NAME.key files

    def __post_init__(self) -> None:
        if (self.server_key is None) != (self.client_keys is None):
            raise ConfigError("security.server_key and security.client_keys go together: give "
                              "both (encrypted, authenticated) or neither (plain)")


@dataclasses.dataclass(frozen=True)
class MetricsConfig:
    port: int = 0  # 0: no metrics endpoint
    address: str = "127.0.0.1"

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"metrics.port must be 0 (off) or a TCP port 1-65535, got "
                              f"{self.port}")
        check_listen_address("metrics.address", self.address)


@dataclasses.dataclass(frozen=True)
class DaemonConfig:
    model: ModelConfig = ModelConfig()
    sources: tuple[SourceConfig, ...] = ()
    publish: PublishConfig = PublishConfig()
    control: ControlConfig = ControlConfig()
    smoothing: SmoothingConfig = SmoothingConfig()
    engine: EngineConfig = EngineConfig()
    metrics: MetricsConfig = MetricsConfig()
    security: SecurityConfig = SecurityConfig()
    shard: ShardConfig = ShardConfig()


_SECTIONS = {"model": ModelConfig, "publish": PublishConfig, "control": ControlConfig,
             "smoothing": SmoothingConfig, "engine": EngineConfig, "metrics": MetricsConfig,
             "security": SecurityConfig, "shard": ShardConfig}


def _describe(annotation: Any) -> str:
    return str(annotation).replace("typing.", "")


def _coerce(section: str, key: str, value: Any, annotation: Any) -> Any:
    """Checks a TOML value against a field's type; ints are accepted for floats."""
    where = f"{section}.{key}"
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if value is None and type(None) in args:
            return None
        options = [arg for arg in args if arg is not type(None)]
        for arg in options:
            try:
                return _coerce(section, key, value, arg)
            except ConfigError:
                if len(options) == 1:  # "must be finite" says more than "float | None"
                    raise
        raise ConfigError(f"{where} must be {_describe(annotation)}, got {value!r}")
    if origin is tuple:
        if not isinstance(value, list):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        return tuple(_coerce(section, key, v, args[0]) for v in value)
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{where} must be finite, got {value!r}")
        return float(value)
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        return value
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
        return value
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {value!r}")
        return value
    return value


def _build(section: str, cls: type, table: Any) -> Any:
    if not isinstance(table, dict):
        raise ConfigError(f"[{section}] must be a table of settings, got {table!r}")
    hints = typing.get_type_hints(cls)
    fields = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(table) - set(fields))
    if unknown:
        raise ConfigError(f"unknown key {section}.{unknown[0]}; [{section}] takes "
                          f"{', '.join(fields)}")
    values = {k: _coerce(section, k, v, hints[k]) for k, v in table.items()}
    try:
        return cls(**values)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(str(exc) if section in str(exc) else f"[{section}]: {exc}") from exc


def parse_source_line(text: str, index: int) -> SourceConfig:
    """A ``--source`` flag: ``SPEC`` or ``ID=SPEC`` (an id is made from the position)."""
    match = re.match(r"^([A-Za-z0-9_.:-]{1,128})=(.+)$", text)
    if match and "://" not in match.group(1) and not match.group(1).endswith(":"):
        return SourceConfig(id=match.group(1), spec=match.group(2))
    return SourceConfig(id=f"s{index}", spec=text)


def config_from_dict(data: dict[str, Any]) -> DaemonConfig:
    known = ["sources", *_SECTIONS]
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(f"unknown section [{unknown[0]}]; sections are {', '.join(known)}")
    parts: dict[str, Any] = {name: _build(name, cls, data[name])
                             for name, cls in _SECTIONS.items() if name in data}
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
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from exc
    try:
        return config_from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def with_overrides(config: DaemonConfig, *, model: str | None = None,
                   device: str | None = None, sources: list[str] | None = None,
                   publish: str | None = None, control: str | None = None,
                   hop_seconds: float | None = None, metrics_port: int | None = None,
                   realtime: bool | None = None, shard: str | None = None,
                   backend: str | None = None, precision: str | None = None) -> DaemonConfig:
    """Command-line flags override the file; ``--source`` flags add to its sources."""
    changes: dict[str, Any] = {}
    if model is not None or device is not None:
        changes["model"] = dataclasses.replace(
            config.model, **{k: v for k, v in (("path", model), ("device", device))
                             if v is not None})
    if sources:
        extra = [parse_source_line(s, len(config.sources) + i) for i, s in enumerate(sources)]
        if realtime is not None:
            extra = [dataclasses.replace(s, options={**s.options, "realtime": realtime})
                     for s in extra]
        merged = config_from_dict({"sources": [
            {"id": s.id, "spec": s.spec, **s.options,
             **({"title": s.title} if s.title is not None else {})}
            for s in (*config.sources, *extra)]}).sources
        changes["sources"] = merged
    if publish is not None:
        changes["publish"] = dataclasses.replace(config.publish, endpoint=publish)
    if control is not None:
        changes["control"] = dataclasses.replace(config.control, endpoint=control)
    for flag, key, value in (("--hop-seconds", "hop_seconds", hop_seconds),
                             ("--backend", "backend", backend),
                             ("--precision", "precision", precision)):
        if value is not None:
            try:
                changes["engine"] = dataclasses.replace(changes.get("engine", config.engine),
                                                        **{key: value})
            except ValueError as exc:
                raise ConfigError(f"{flag}: {exc}") from exc
    if metrics_port is not None:
        try:
            changes["metrics"] = dataclasses.replace(config.metrics, port=metrics_port)
        except ConfigError as exc:
            raise ConfigError(f"--metrics-port: {exc}") from exc
    if shard is not None:
        changes["shard"] = ShardConfig.parse(shard)
    return dataclasses.replace(config, **changes)
