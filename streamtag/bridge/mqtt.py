"""The MQTT bridge: a daemon's feed as retained MQTT topics, one tree per station.

`station_level` escapes a stream id into one topic level; `StationTree` holds each station's
current payloads (status, tags, mood, content, last track), bounded, and says which changed;
`MqttBridge` publishes what changed to a broker through paho-mqtt (retained, QoS 1), with a last
will, TLS and a login, and a bounded queue; `bridge_feed` reads the feed into it until stopped.
docs/bridges.md describes the tree and its payloads.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import ssl
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from streamtag.errors import ConfigError, ProtocolError
from streamtag.wire.protocol import (
    ScoresBody,
    StatusBody,
    TrackBody,
    validate_stream_id,
)

if TYPE_CHECKING:
    import paho.mqtt.client as mqtt

    from streamtag.wire.security import ClientCurve

__all__ = ["BridgeConfig", "BrokerError", "BrokerUrl", "MqttBridge", "StationTree",
           "bridge_feed", "station_level"]

log = logging.getLogger(__name__)

# The leaves of a station's tree, each a retained JSON object (docs/bridges.md).
LEAVES = ("status", "tags", "mood", "content", "track")
# A station whose source is in one of these states is done: at the cap, the one done longest
# makes room for a new station.
FINISHED_STATES = frozenset({"ended", "failed"})
# The feed's message types the bridge reads: tags, mood and content come with every scores
# message (events and silences are already in them); heartbeats say the feed is alive.
FEED_TOPICS = ("scores", "status", "track", "heartbeat")
DEFAULT_PREFIX = "streamtag"
DEFAULT_DISCOVERY_PREFIX = "homeassistant"
PASSWORD_ENV = "STREAMTAG_MQTT_PASSWORD"
SCHEMES = {"mqtt": 1883, "mqtts": 8883}  # the IANA ports of MQTT and MQTT over TLS
# The bridge's own subtree, <prefix>/bridge/<name>/online: a station whose id is this word is
# written with its first letter escaped, so that no station's tree holds the bridge's topics.
BRIDGE_LEVEL = "bridge"
ONLINE, OFFLINE = b"online", b"offline"
LIVE, SILENT = b"live", b"silent"
# Nothing from the feed this long, not even a heartbeat (a daemon sends one every 2 s by
# default), and its retained values are no longer current: the feed topic says "silent".
FEED_SILENT_S = 10.0

# Bounds, whatever a feed without CURVE keys carries (docs/security.md). The stations held:
# a feed may name any number of stream ids, and each held one costs its payloads and, on every
# reconnect, its publications. Each payload is small: texts and lists are cut, in characters
# and in the bytes of their JSON (a control character is 6 bytes of it), so a station is at
# most 16 kB here and 1024 of them 16 MB.
MAX_STATIONS = 1024
MAX_TEXT_CHARS = 512      # a title, an error, a station name ...
MAX_TEXT_BYTES = 1024     # ... and its JSON
MAX_NAME_CHARS = 128      # a tag name, a mood word ...
MAX_NAME_BYTES = 256      # ... and its JSON
MAX_LISTED_TAGS = 64      # active tags listed; past them a count ("more") ...
MAX_LIST_BYTES = 4096     # ... as many as fit here
MAX_PASSWORD_BYTES = 4096
# What waits for the broker: paho's queue of QoS 1 messages (those not yet acknowledged,
# held through a reconnect) and how many of them may be on the wire at once. Past the queue,
# a station's newer value waits in the bridge (one per leaf, replacing the older one).
MAX_QUEUED = 1000
MAX_INFLIGHT = 20
KEEPALIVE_S = 30
RECONNECT_MAX_S = 30.0
ANSWER_WARN_S = 30.0      # a broker silent this long after the connection is named in the log
CLOSE_WAIT_S = 5.0        # on stop, how long the "offline" message may take to be acknowledged
_READ_MOST = 512          # feed messages taken at once between two looks at the broker
_READ_WAIT_MS = 250

_PLAIN = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.:-")


class BrokerError(Exception):
    """The broker cannot be used as given (a refused login, a certificate not trusted): the
    message says what to change. A broker that is only down is waited for instead."""


def escape_level(text: str) -> str:
    """``text`` as one MQTT topic level: a character outside ``A-Z a-z 0-9 _ . : -`` is written
    as ``%`` and two hex digits per UTF-8 byte, so ``/``, ``+``, ``#``, ``$`` and ``%`` cannot
    split the tree, match as wildcards or reach the broker's ``$SYS`` tree."""
    return "".join(c if c in _PLAIN else "".join(f"%{b:02X}" for b in c.encode("utf-8"))
                   for c in text)


def station_level(stream: str) -> str:
    """A station's topic level: its stream id escaped (``escape_level``), the id ``bridge``
    as ``%62ridge`` (the bridge's own subtree is ``<prefix>/bridge``)."""
    level = escape_level(stream)
    return "%62" + level[1:] if level == BRIDGE_LEVEL else level


def _slug(text: str) -> str:
    """An id Home Assistant takes (``[A-Za-z0-9_-]``, at most 64 characters), different for
    different texts: a text changed to fit carries a hash of itself."""
    slug = re.sub(r"[^A-Za-z0-9_-]", "_", text)
    if slug == text and len(slug) <= 64:
        return slug
    return slug[:55] + "_" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:8]


def _json(value: dict[str, Any]) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def _cut(text: str | None, most: int = MAX_TEXT_CHARS, most_bytes: int = MAX_TEXT_BYTES
         ) -> str | None:
    """``text``'s first ``most`` characters, fewer where their JSON passes ``most_bytes``."""
    if text is None:
        return None
    text = text[:most]
    while len(json.dumps(text, ensure_ascii=False).encode("utf-8")) > most_bytes:
        text = text[:len(text) // 2]
    return text


def _name(text: str) -> str:
    return _cut(text, MAX_NAME_CHARS, MAX_NAME_BYTES) or ""


def _point(value: float) -> float:
    # one decimal: the topic changes when the mood moves, not at every window (+0.0: no -0.0)
    return round(value, 1) + 0.0


def _tag_list(names: Sequence[str]) -> dict[str, Any]:
    """``{"active": [...]}``: the first names, as many as MAX_LISTED_TAGS and MAX_LIST_BYTES
    allow, and ``more``, the count of the rest, where there are any."""
    active, size = [], 0
    for name in names[:MAX_LISTED_TAGS]:
        name = _name(name)
        size += len(json.dumps(name, ensure_ascii=False).encode("utf-8")) + 1
        if size > MAX_LIST_BYTES:
            break
        active.append(name)
    listed: dict[str, Any] = {"active": active}
    if len(names) > len(active):
        listed["more"] = len(names) - len(active)
    return listed


def payloads(body: ScoresBody | StatusBody | TrackBody) -> dict[str, bytes]:
    """The leaves a message body sets, each as its JSON payload (docs/bridges.md)."""
    if isinstance(body, StatusBody):
        return {"status": _json({"state": body.state, "title": _cut(body.title),
                                 "station": _cut(body.station), "error": _cut(body.error)})}
    if isinstance(body, TrackBody):
        return {"track": _json({"title": _cut(body.title), "reason": body.reason,
                                "start_s": round(body.start_s, 3),
                                "end_s": round(body.end_s, 3),
                                "ended_at": round(body.ended_at, 3), **_tag_list(body.active)})}
    out = {"tags": _json(_tag_list(body.active))}
    if body.mood is not None:
        mood = body.mood
        out["mood"] = _json({"words": [_name(w) for w in mood.words],
                             "genres": [_name(g) for g in mood.genres],
                             "valence": _point(mood.valence), "arousal": _point(mood.arousal)})
    if body.content is not None:
        out["content"] = _json({"content": body.content})
    return out


class StationTree:
    """Each station's current payload per leaf, for at most ``max_stations`` stations. At the
    cap, the station whose source ended or failed longest ago is forgotten for a new one (its
    name and leaves put in ``forgotten``, for the caller to clear from the broker, and
    counted); where none has, the new station's messages are not taken (counted in
    ``refused``). Each is said once in the log."""

    def __init__(self, max_stations: int = MAX_STATIONS) -> None:
        if max_stations < 1:
            raise ValueError(f"max_stations must be at least 1, got {max_stations}")
        self.max_stations = max_stations
        self.stations: dict[str, dict[str, bytes]] = {}
        self.refused = 0  # messages of stations past max_stations
        self.replaced = 0  # stations forgotten for new ones
        # held stations whose source ended or failed, the longest ago first
        self._finished: OrderedDict[str, None] = OrderedDict()
        # forgotten since the caller last emptied this: (station, its leaves)
        self.forgotten: list[tuple[str, tuple[str, ...]]] = []

    def apply(self, stream: str, body: Any) -> list[tuple[str, str]]:
        """Takes one message's body; the (stream, leaf) whose payload changed."""
        if not isinstance(body, ScoresBody | StatusBody | TrackBody):
            return []
        return self.set(stream, payloads(body))

    def set(self, stream: str, leaves: Mapping[str, bytes]) -> list[tuple[str, str]]:
        """Sets a station's leaves to these payloads; the (stream, leaf) that changed."""
        held = self.stations.get(stream)
        if held is None:
            if len(self.stations) >= self.max_stations:
                if not self._finished:
                    if not self.refused:
                        log.warning("the MQTT bridge holds %d stations (--max-stations), none "
                                    "ended: messages of further stations are not bridged",
                                    self.max_stations)
                    self.refused += 1
                    return []
                old, _ = self._finished.popitem(last=False)
                self.forgotten.append((old, tuple(self.stations.pop(old))))
                if not self.replaced:
                    log.warning("the MQTT bridge holds %d stations (--max-stations): the one "
                                "ended longest ago is forgotten for each new one, its topics "
                                "cleared", self.max_stations)
                self.replaced += 1
            held = self.stations[stream] = {}
        changed = []
        for leaf, payload in leaves.items():
            if held.get(leaf) != payload:
                held[leaf] = payload
                changed.append((stream, leaf))
        if (stream, "status") in changed:
            if json.loads(held["status"]).get("state") in FINISHED_STATES:
                self._finished.setdefault(stream)
            else:
                self._finished.pop(stream, None)
        return changed


@dataclass(frozen=True)
class BrokerUrl:
    """``mqtt://HOST[:PORT]`` or ``mqtts://HOST[:PORT]`` (TLS), read once."""

    host: str
    port: int
    tls: bool

    @classmethod
    def parse(cls, url: str) -> BrokerUrl:
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise ConfigError(f"--broker {url!r}: {exc}") from None
        scheme = parts.scheme.lower()
        if scheme not in SCHEMES or not parts.hostname:
            raise ConfigError(f"--broker {url!r}: give mqtt://HOST[:PORT] or, for TLS, "
                              "mqtts://HOST[:PORT]")
        if parts.username is not None or parts.password is not None:
            raise ConfigError(f"--broker: give the user with --username and the password in "
                              f"--password-file or ${PASSWORD_ENV}, not in the URL (a command "
                              "line is seen by every user of the machine)")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ConfigError(f"--broker {url!r}: a broker URL has no path or query")
        return cls(parts.hostname, SCHEMES[scheme] if port is None else port,
                   scheme == "mqtts")


@dataclass(frozen=True)
class BridgeConfig:
    """What ``streamtag bridge mqtt`` was given (its flags, docs/bridges.md)."""

    broker: BrokerUrl
    name: str
    prefix: str = DEFAULT_PREFIX
    username: str | None = None
    password: str | None = None
    cafile: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    homeassistant: bool = False
    discovery_prefix: str = DEFAULT_DISCOVERY_PREFIX
    max_stations: int = MAX_STATIONS
    max_queued: int = MAX_QUEUED
    max_inflight: int = MAX_INFLIGHT
    feed_silent_s: float = FEED_SILENT_S

    def __post_init__(self) -> None:
        for flag, prefix in (("--topic-prefix", self.prefix),
                             ("--discovery-prefix", self.discovery_prefix)):
            if (not prefix or prefix.startswith(("$", "/")) or prefix.endswith("/")
                    or any(c in prefix for c in "+#\0") or "//" in prefix):
                raise ConfigError(f"{flag} {prefix!r}: give topic levels joined by /, without "
                                  "wildcards (+ #), empty levels or a leading $")
        if not self.name:
            raise ConfigError("--name must not be empty")
        if not self.broker.tls and (self.cafile or self.certfile or self.keyfile):
            raise ConfigError("--cafile, --certfile and --keyfile are for TLS: give the broker "
                              "as mqtts://HOST[:PORT]")
        if bool(self.certfile) != bool(self.keyfile):
            raise ConfigError("--certfile and --keyfile go together: the client's certificate "
                              "and its private key")
        if self.password is not None and self.username is None:
            raise ConfigError("a password needs --username")
        if not 0 < self.feed_silent_s < float("inf"):
            raise ConfigError("--feed-silent-s must be a number of seconds above 0")
        if min(self.max_stations, self.max_queued, self.max_inflight) < 1:
            raise ConfigError("--max-stations, --max-queued and --max-inflight must be at "
                              "least 1")

    @property
    def online_topic(self) -> str:
        return f"{self.prefix}/{BRIDGE_LEVEL}/{escape_level(self.name)}/online"

    @property
    def feed_topic(self) -> str:
        return f"{self.prefix}/{BRIDGE_LEVEL}/{escape_level(self.name)}/feed"

    def topic(self, stream: str, leaf: str) -> str:
        return f"{self.prefix}/{station_level(stream)}/{leaf}"


def read_password(path: str | None, environ: dict[str, str]) -> str | None:
    """The broker's password: the first line of ``path``, or ``$STREAMTAG_MQTT_PASSWORD``, or
    None. ConfigError for a file that cannot be read or is too long to be a password."""
    if path:
        try:
            with open(path, "rb") as f:
                data = f.read(MAX_PASSWORD_BYTES + 1)
        except OSError as exc:
            raise ConfigError(f"--password-file {path}: {exc.strerror or exc}") from None
        if len(data) > MAX_PASSWORD_BYTES:
            raise ConfigError(f"--password-file {path}: longer than {MAX_PASSWORD_BYTES} bytes, "
                              "not a password file")
        try:
            return data.decode("utf-8").splitlines()[0] if data.strip() else ""
        except UnicodeDecodeError:
            raise ConfigError(f"--password-file {path}: not UTF-8 text") from None
    return environ.get(PASSWORD_ENV)


class MqttBridge:
    """A connection to an MQTT broker that keeps each station's current values retained there.

    `take(stream, body)` notes what a message changed; `flush()` hands the changes to paho,
    as many as its queue (``max_queued``) takes, the rest waiting here, newest value only;
    after each (re)connection every held value is published again (the broker may have
    restarted without them). The will, ``<prefix>/bridge/<name>/online`` = ``offline``
    (retained), tells subscribers the bridge is gone; it says ``online`` on each connection
    and ``offline`` itself on a clean stop.
    """

    def __init__(self, config: BridgeConfig) -> None:
        import paho.mqtt.client as mqtt

        self.config = config
        self.tree = StationTree(config.max_stations)
        # (stream, leaf) waiting to be handed to paho; leaf "ha:tags", "ha:mood": discovery
        self._pending: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._announced: set[str] = set()  # stations whose discovery configs were queued
        self._reconnected = threading.Event()
        self._answered = threading.Event()
        self.refusal: str | None = None  # the broker's last refusal of a login
        self.connected = False
        self.published = 0
        self.queue_full = 0  # times the queue was full and values waited here
        self.feed_state: bytes | None = None  # LIVE or SILENT, once known
        self._last_heard: float | None = None
        self._watched_since = time.monotonic()
        self._client = client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"streamtag-bridge-{config.name}"[:128],
            protocol=mqtt.MQTTv311)
        client.max_queued_messages_set(config.max_queued)
        client.max_inflight_messages_set(config.max_inflight)
        client.reconnect_delay_set(1, int(RECONNECT_MAX_S))
        client.will_set(config.online_topic, OFFLINE, qos=1, retain=True)
        if config.username is not None:
            client.username_pw_set(config.username, config.password)
        if config.broker.tls:
            try:
                client.tls_set(ca_certs=config.cafile, certfile=config.certfile,
                               keyfile=config.keyfile)
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(f"cannot use the TLS files (--cafile, --certfile, --keyfile): "
                                  f"{exc}") from None
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect

    # -- paho's network thread

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                    properties: Any) -> None:
        if reason.is_failure:
            self.refusal = str(reason)
            log.error("the MQTT broker refused the bridge: %s", reason)
        else:
            self.refusal = None
            self.connected = True
            client.publish(self.config.online_topic, ONLINE, qos=1, retain=True)
            self._reconnected.set()
        self._answered.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                       properties: Any) -> None:
        if self.connected:
            log.warning("lost the MQTT broker (%s); connecting again", reason)
        self.connected = False

    # -- the caller's thread

    def connect(self, stop: threading.Event) -> bool:
        """Connects, waiting for a broker that is down (doubling the wait up to 30 s); False
        when ``stop`` came first. BrokerError for a broker that refuses the login or TLS."""
        broker = self.config.broker
        wait_s = 1.0
        while True:
            try:
                self._client.connect(broker.host, broker.port, KEEPALIVE_S)
                break
            except ssl.SSLCertVerificationError as exc:
                raise BrokerError(f"the broker's certificate is not trusted ({exc.verify_message})"
                                  ": give the certificate of its authority with --cafile"
                                  ) from None
            except ssl.SSLError as exc:
                raise BrokerError(f"TLS with {broker.host}:{broker.port} failed ({exc.reason}): "
                                  "is it the broker's TLS port?") from None
            except OSError as exc:
                # a plain MQTT port resets a TLS handshake: say so, though a broker going
                # down does the same
                hint = (" (mqtts://: is it the broker's TLS port?)" if broker.tls and
                        isinstance(exc, ConnectionResetError) else "")
                log.warning("cannot reach the MQTT broker at %s:%d (%s)%s; trying again in "
                            "%g s", broker.host, broker.port, exc.strerror or exc, hint, wait_s)
                if stop.wait(wait_s):
                    return False
                wait_s = min(wait_s * 2, RECONNECT_MAX_S)
        self._client.loop_start()
        asked: float | None = time.monotonic()
        while not self._answered.wait(0.1):
            if stop.is_set():
                return False
            if asked is not None and time.monotonic() - asked > ANSWER_WARN_S:
                # paho connects again and again to a port that closes without answering
                log.warning("no answer from the MQTT broker at %s:%d in %g s: is it a broker's "
                            "port, and does it speak TLS (mqtts://) or not (mqtt://)?",
                            broker.host, broker.port, ANSWER_WARN_S)
                asked = None
        if self.refusal is not None:
            raise BrokerError(f"the broker refused the login ({self.refusal}): check --username "
                              f"and the password (--password-file or ${PASSWORD_ENV})")
        self._watched_since = time.monotonic()  # the feed's silence counts from here
        return True

    def take(self, stream: str, body: Any) -> None:
        """Notes what one message's body changed; `flush` publishes it."""
        self._note(stream, self.tree.apply(stream, body))

    def watch_feed(self, heard: bool, now: float | None = None) -> None:
        """Notes whether a message (any, a heartbeat too) was just heard from the feed, and
        says ``live`` or ``silent`` on the feed topic when that changes: silent after
        ``feed_silent_s`` without one."""
        now = time.monotonic() if now is None else now
        if heard:
            self._last_heard = now
        last = self._last_heard
        if last is not None and now - last < self.config.feed_silent_s:
            state = LIVE
        elif now - (self._watched_since if last is None else last) >= self.config.feed_silent_s:
            state = SILENT
        else:
            return  # not heard yet, and not for long
        if state != self.feed_state:
            if state == SILENT:
                log.warning("nothing heard from the feed in %g s, not even a heartbeat: %s "
                            "says silent", self.config.feed_silent_s, self.config.feed_topic)
            elif self.feed_state is not None:
                log.warning("the feed is heard again: %s says live", self.config.feed_topic)
            self.feed_state = state
            self._pending[("", "bridge:feed")] = None

    def take_snapshot(self, reply: Mapping[str, Any]) -> None:
        """Each stream's state, title and active tags from a control ``snapshot`` reply: what a
        bridge started after its stations would otherwise learn only when they change. A
        stream whose entry is not as the protocol says is left out."""
        streams = reply.get("streams")
        for stream, view in (streams.items() if isinstance(streams, Mapping) else ()):
            try:
                validate_stream_id(stream)
                if not isinstance(view, Mapping):
                    continue
                leaves = payloads(StatusBody.from_dict(
                    {"state": view.get("state"), "title": view.get("title")}))
            except ProtocolError:
                continue
            active = view.get("active")
            if isinstance(active, list) and all(isinstance(tag, str) for tag in active):
                leaves["tags"] = _json(_tag_list(active))
            self._note(stream, self.tree.set(stream, leaves))

    def _note(self, stream: str, changed: list[tuple[str, str]]) -> None:
        for old, leaves in self.tree.forgotten:
            self._clear(old, leaves)
        self.tree.forgotten.clear()
        for key in changed:
            self._pending[key] = None
        if changed and self.config.homeassistant and stream not in self._announced:
            self._announced.add(stream)  # (held stations only: bounded as they are)
            self._pending[(stream, "ha:mood")] = None
            self._pending[(stream, "ha:tags")] = None

    def _clear(self, stream: str, leaves: tuple[str, ...]) -> None:
        """A forgotten station's retained topics are emptied (which deletes them), after what
        was waiting for them and before anything of a new station of that name."""
        for leaf in (*LEAVES, "ha:mood", "ha:tags"):
            self._pending.pop((stream, leaf), None)
        announced = stream in self._announced
        self._announced.discard(stream)
        for leaf in (*leaves, *(("ha:mood", "ha:tags") if announced else ())):
            self._pending[(stream, "clear:" + leaf)] = None

    def flush(self) -> None:
        """Hands waiting values to paho until its queue is full; after a (re)connection, every
        held value first."""
        import paho.mqtt.client as mqtt

        if self._reconnected.is_set():
            self._reconnected.clear()
            if self.feed_state is not None:
                self._pending[("", "bridge:feed")] = None
            for stream, held in self.tree.stations.items():
                for leaf in held:
                    self._pending[(stream, leaf)] = None
                if self.config.homeassistant:
                    self._pending[(stream, "ha:mood")] = None
                    self._pending[(stream, "ha:tags")] = None
        while self._pending:
            key = next(iter(self._pending))
            topic, payload = self._publication(*key)
            info = self._client.publish(topic, payload, qos=1, retain=True)
            if info.rc == mqtt.MQTT_ERR_QUEUE_SIZE:
                self.queue_full += 1
                return
            # (MQTT_ERR_NO_CONN: queued by paho, sent once connected again)
            del self._pending[key]
            self.published += 1

    @property
    def waiting(self) -> int:
        """Values waiting here for room in paho's queue."""
        return len(self._pending)

    def _publication(self, stream: str, leaf: str) -> tuple[str, bytes]:
        if leaf.startswith("clear:"):
            leaf = leaf[6:]
            topic = (self.discovery(stream, leaf[3:])[0] if leaf.startswith("ha:") else
                     self.config.topic(stream, leaf))
            return topic, b""
        if leaf == "bridge:feed":
            return self.config.feed_topic, self.feed_state or SILENT
        if not leaf.startswith("ha:"):
            return self.config.topic(stream, leaf), self.tree.stations[stream][leaf]
        return self.discovery(stream, leaf[3:])

    def discovery(self, stream: str, leaf: str) -> tuple[str, bytes]:
        """Home Assistant's discovery topic and config of a station's ``mood`` or ``tags``
        sensor: its state the leaf's main value, its attributes the whole payload."""
        config = self.config
        node, station = _slug(f"streamtag_{config.name}"), _slug(stream)
        state = config.topic(stream, leaf)
        template = ("{{ (value_json.words | join(', ')) or 'none' }}" if leaf == "mood" else
                    "{{ ((value_json.active | join(', ')) or 'none')[:255] }}")
        return (f"{config.discovery_prefix}/sensor/{node}/{station}_{leaf}/config", _json({
            "name": leaf, "unique_id": f"{node}_{station}_{leaf}", "state_topic": state,
            "value_template": template, "json_attributes_topic": state,
            # unavailable when the bridge is gone or its feed silent
            "availability_mode": "all", "availability": [
                {"topic": config.online_topic, "payload_available": "online",
                 "payload_not_available": "offline"},
                {"topic": config.feed_topic, "payload_available": "live",
                 "payload_not_available": "silent"}],
            "icon": "mdi:music-note" if leaf == "mood"
            else "mdi:tag-multiple",
            "device": {"identifiers": [f"{node}_{station}"], "name": f"streamtag {stream}",
                       "manufacturer": "streamtag", "model": "MQTT bridge"}}))

    def close(self) -> None:
        """Says ``offline`` (retained) and disconnects, waiting up to CLOSE_WAIT_S for what
        paho holds to go out."""
        if self.connected:
            info = self._client.publish(self.config.online_topic, OFFLINE, qos=1, retain=True)
            try:
                info.wait_for_publish(CLOSE_WAIT_S)
            except (RuntimeError, ValueError):
                pass  # the connection went meanwhile: the broker sends the will instead
        self._client.disconnect()
        self._client.loop_stop()


def bridge_feed(endpoints: str | Iterable[str], bridge: MqttBridge, stop: threading.Event, *,
                curve: ClientCurve | None = None, replay: Sequence[str] = (),
                snapshot: Callable[[], Mapping[str, Any] | None] | None = None,
                on_connected: Callable[[], None] | None = None) -> int:
    """Reads the feed at ``endpoints`` into ``bridge`` until ``stop``: subscribes, takes what
    ``snapshot`` returns (a daemon's control ``snapshot`` reply, asked once subscribed, so
    that nothing published meanwhile is older than it), connects to the broker (BrokerError
    for one that cannot be used), calls ``on_connected``, then publishes what changes. With
    ``replay`` (daemons' replay sockets) each stream's latest status and scores come first,
    without the control token. The number of feed messages read."""
    from streamtag.wire.subscriber import Subscriber

    read = 0
    subscriber = Subscriber(endpoints if isinstance(endpoints, str) else list(endpoints),
                            topics=FEED_TOPICS, curve=curve, replay=list(replay) or None)
    try:
        reply = snapshot() if snapshot is not None else None
        if reply is not None:
            bridge.take_snapshot(reply)
        if not bridge.connect(stop):
            return read
        if on_connected is not None:
            on_connected()
        while not stop.is_set():
            messages = subscriber.recv_many(_READ_MOST, _READ_WAIT_MS)
            for message in messages:
                bridge.take(message.stream, message.body)
            read += len(messages)
            bridge.watch_feed(bool(messages))
            bridge.flush()
        return read
    finally:
        subscriber.close()
        bridge.close()

