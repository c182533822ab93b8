"""What a socket lets in from outside: how much (the size caps every socket sets before it binds
or connects), and from whom: the refusal to serve an endpoint beyond this machine without CURVE
keys, and the client keys a command's flags name, worded once for every command that binds or
subscribes (``streamtag proxy``, ``dashboard``, ``record``; ``run`` says the same). Whether an
endpoint is loopback is `streamtag.wire.security.is_loopback_endpoint`.
"""

from __future__ import annotations

from pathlib import Path

from streamtag.errors import ConfigError
from streamtag.wire.security import ClientCurve, client_curve

# What a PUB or XPUB socket receives is subscriptions, a topic prefix each: ZeroMQ disconnects a
# peer that sends a larger frame (ZMQ_MAXMSGSIZE), before buffering it. A topic is at most 256
# bytes (protocol.MAX_TOPIC_BYTES); a subscription adds a flag byte, or as a ZMTP 3.1 command
# its name. libzmq keeps each distinct subscription in a trie at about 46 bytes of memory per
# byte of topic, and gives none back: at 64 KiB, 200 subscriptions of 60 KB from another
# process grew the daemon by 548 MB (measured; 1,000 by 2.7 GB), at 512 bytes 1,000 cost at
# most about 24 MB.
MAX_SUBSCRIPTION_BYTES = 512


def refusal(endpoint: str, key_flags: str) -> str:
    """The refusal to bind `endpoint` without keys, naming the flags that give them."""
    return (f"refusing to bind {endpoint} (not loopback) without CURVE keys: give {key_flags}, "
            "or --insecure to serve it unencrypted and open to anyone who can reach it")


def optional_client_curve(server_key: str | Path | None,
                          client_key: str | Path | None) -> ClientCurve | None:
    """The client keys of ``--server-key FILE --client-key FILE`` (both or neither); None
    without them. ConfigError naming the missing flag or the unreadable file."""
    if not server_key and not client_key:
        return None
    if not (server_key and client_key):
        raise ConfigError("--server-key and --client-key go together: the server's public key "
                          "(NAME.key) and this client's secret key (NAME.key_secret)")
    return client_curve(server_key, client_key)
