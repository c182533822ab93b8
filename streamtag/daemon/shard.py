"""Which daemon of N serves a stream: a stable hash of the stream id, the same on every host.

N daemons (a Kubernetes StatefulSet's pods ``NAME-0`` … ``NAME-{N-1}``) are all given the same
source list; each serves only the streams whose id hashes to its own shard K. The hash is
jump consistent hashing (Lamping and Veach, "A Fast, Minimal Memory, Consistent Hash
Algorithm", 2014) over the first 8 bytes of the SHA-256 of the id's UTF-8 bytes:

- stable: SHA-256 and IEEE double arithmetic are the same on every host and Python version
  (Python's ``hash()`` of a string is salted per process, so it is never used);
- balanced: each of the N shards gets 1/N of the ids, up to chance;
- minimal movement: going from N to N+1 shards moves only the ids the new shard K = N takes
  (about 1/(N+1) of them); every other id stays where it was. Shards are numbered 0..N-1
  with no gaps, which is exactly how a StatefulSet numbers its pods and scales (it adds or
  removes the highest ordinal), so jump hashing fits it better than rendezvous hashing, whose
  advantage (removing any shard from the middle) a StatefulSet never needs, and which costs
  N hashes per id instead of about ln N steps.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import socket

from streamtag import values
from streamtag.errors import ConfigError

MAX_SHARDS = 65536
AUTO = "auto"
_LCG_MULTIPLIER = 2862933555777941757  # the 64-bit linear congruential step of the paper
_MASK64 = (1 << 64) - 1
_FLAG = re.compile(r"^\s*(auto|\d+)\s*/\s*(\d+)\s*$")
_ORDINAL = re.compile(r"^(?P<name>.+)-(?P<index>\d+)$")


def stream_key(stream_id: str) -> int:
    """The 64-bit key of a stream id: the first 8 bytes of its SHA-256, big-endian."""
    return int.from_bytes(hashlib.sha256(stream_id.encode("utf-8")).digest()[:8], "big")


def jump_hash(key: int, count: int) -> int:
    """Jump consistent hash of a 64-bit key into ``count`` buckets, 0..count-1."""
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    bucket, jump = -1, 0
    while jump < count:
        bucket = jump
        key = (key * _LCG_MULTIPLIER + 1) & _MASK64
        jump = int((bucket + 1) * (float(1 << 31) / float((key >> 33) + 1)))
    return bucket


def shard_of(stream_id: str, count: int) -> int:
    """The shard (0..count-1) that serves ``stream_id`` among ``count`` shards."""
    return jump_hash(stream_key(stream_id), count)


def worker_key(stream_id: str) -> int:
    """A second 64-bit key of a stream id, the next 8 bytes of its SHA-256: independent of
    ``stream_key``, so the worker processes of a machine that serves one shard of a fleet
    (``run --shard K/M --processes N``) split that shard's streams evenly. Splitting by
    ``stream_key`` again would follow the shard: with M = N = 2, shard 1's streams would all
    hash to worker 1."""
    return int.from_bytes(hashlib.sha256(stream_id.encode("utf-8")).digest()[8:16], "big")


def host_name() -> str:
    """This host's name: $HOSTNAME (Kubernetes sets it to the pod name), else the system's."""
    return os.environ.get("HOSTNAME") or socket.gethostname()


def index_from_host_name(name: str, count: int) -> int:
    """K from a StatefulSet pod's host name ``NAME-K`` (the first DNS label's trailing -K)."""
    label = name.split(".", 1)[0]
    match = _ORDINAL.match(label)
    if match is None:
        raise ConfigError(f"shard.index \"auto\" takes K from a host name ending in -K (a "
                          f"StatefulSet pod NAME-K), but this host is {name!r}; give the shard "
                          f"as --shard K/{count} (or [shard] index = K)")
    index = int(match.group("index"))
    if index >= count:
        raise ConfigError(f"host {name!r} is shard {index}, but shard.count is {count} (shards "
                          "0..N-1): make the StatefulSet's replicas and N of --shard auto/N "
                          "the same")
    return index


@dataclasses.dataclass(frozen=True)
class ShardConfig:
    """``[shard]``: this daemon is shard ``index`` of ``count``; ``index = "auto"`` reads it
    from the host name (``resolve``). The default, 0 of 1, serves every source."""

    index: int | str = values.field(
        0, flag="--shard", help="this daemon's shard K, 0 to count - 1, or \"auto\": from the "
                                "host name's trailing number (NAME-K)")
    count: int = values.field(1, flag="--shard", help="the shards N the source list is split "
                                                      "into (--shard K/N sets both)")

    def __post_init__(self) -> None:
        if isinstance(self.count, bool) or not isinstance(self.count, int) \
                or not 1 <= self.count <= MAX_SHARDS:
            raise ConfigError(f"shard.count must be a whole number of shards 1-{MAX_SHARDS}, "
                              f"got {self.count!r}")
        if self.index == AUTO:
            return
        if isinstance(self.index, bool) or not isinstance(self.index, int):
            raise ConfigError(f"shard.index must be a shard number 0..{self.count - 1} or "
                              f"\"auto\", got {self.index!r}")
        if not 0 <= self.index < self.count:
            raise ConfigError(f"shard.index {self.index} is out of range for shard.count "
                              f"{self.count}: shards are numbered 0..{self.count - 1}")

    @classmethod
    def parse(cls, text: str) -> ShardConfig:
        """The ``--shard`` flag: ``K/N`` or ``auto/N``."""
        match = _FLAG.match(text)
        if match is None:
            raise ConfigError(f"--shard {text!r} is not K/N: write e.g. --shard 0/3 (shard 0 "
                              "of 3) or --shard auto/3 (K from the host name NAME-K, as in a "
                              "StatefulSet)")
        index = match.group(1)
        try:
            return cls(AUTO if index == AUTO else int(index), int(match.group(2)))
        except ConfigError as exc:
            raise ConfigError(f"--shard {text}: {exc}") from None

    def resolve(self, host: str | None = None) -> ShardConfig:
        """The same shard with ``auto`` replaced by K from ``host`` (default: this host)."""
        if self.index != AUTO:
            return self
        return ShardConfig(index_from_host_name(host or host_name(), self.count), self.count)

    def owner(self, stream_id: str) -> int:
        return shard_of(stream_id, self.count)

    def owns(self, stream_id: str) -> bool:
        if self.index == AUTO:
            raise ValueError("resolve() an auto shard before asking what it owns")
        return self.count == 1 or self.owner(stream_id) == self.index

    def check_owns(self, stream_id: str, holder: str = "daemon") -> None:
        """ConfigError naming the shard ``stream_id`` belongs to where it is not this one's
        (``holder``: what serves this shard, a daemon or a machine of worker processes)."""
        if self.owns(stream_id):
            return
        other = self.owner(stream_id)
        raise ConfigError(f"source {stream_id!r} belongs to shard {other}/{self.count}, not to "
                          f"this {holder} (shard {self}); ask the daemon of shard {other} "
                          f"(pod NAME-{other} in a StatefulSet)")

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    @property
    def name(self) -> str:
        """What this part is called in logs and readiness: ``shard K/N``."""
        return f"shard {self}"


@dataclasses.dataclass(frozen=True)
class WorkerShard(ShardConfig):
    """Worker ``index`` of the ``count`` worker processes of a machine that serves the fleet's
    shard ``within`` (``run --shard K/M --processes N``): the streams of that shard whose
    ``worker_key`` hashes to ``index``; on a machine that serves every source (``within`` 0 of
    1), the streams whose ``stream_key`` does, as a shard of N would. Made by the supervisor,
    never read from a config."""

    within: ShardConfig = ShardConfig()

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.index == AUTO or self.within.index == AUTO:
            raise ValueError("a worker's shard is a number within a resolved machine shard")

    def owner(self, stream_id: str) -> int:
        if self.within.count == 1:
            return shard_of(stream_id, self.count)
        return jump_hash(worker_key(stream_id), self.count)

    def owns(self, stream_id: str) -> bool:
        return self.within.owns(stream_id) and (self.count == 1
                                                or self.owner(stream_id) == self.index)

    def __str__(self) -> str:
        worker = f"worker {self.index}/{self.count}"
        return worker if self.within.count == 1 else f"{self.within} ({worker})"

    @property
    def name(self) -> str:
        """``worker K/N``, or ``shard K/M (worker K/N)`` on a machine that serves one shard."""
        return str(self) if self.within.count == 1 else f"shard {self}"
