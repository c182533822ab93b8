"""Which network hosts a source may open, and URLs told without their secrets.

A station added at run time (over the control socket) is a URL that someone else chose: left
unchecked, it could make the daemon fetch from this machine's loopback services or the private
network it sits in (a server-side request forgery). A ``HostPolicy`` says which hosts may be
opened. The HTTP source checks the URL's name before the first request and on every redirect
(``check_name``), and opens every connection through ``HostPolicy.connect``, which checks each
address the name resolves to at the moment it connects: a public name that resolves to a
private address is refused, and a name cannot resolve to an allowed address when checked and
to another when used (DNS rebinding). A proxy from the environment is a connection like any
other: the policy must allow it.

``redact_url`` is how a URL is shown wherever it is published or logged: the password of its
user part and the values of its query are replaced, since stations put access tokens there.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import socket
import urllib.parse

from streamtag.errors import SourceError

__all__ = ["HostPolicy", "redact_url"]

HIDDEN = "***"

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def _network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        return None


def _plain(address: Address) -> Address:
    """An IPv4-mapped IPv6 address (``::ffff:127.0.0.1``) as the IPv4 address it is."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _is_private(address: Address) -> bool:
    """Loopback, private, link-local, shared (CGNAT), multicast, reserved or unspecified: not
    somewhere a public station lives."""
    address = _plain(address)
    return not address.is_global or address.is_multicast


def _name(host: str) -> str:
    """A host name as names are compared: lower case, no final dot, IDNA-encoded (so that a
    full-width or otherwise disguised spelling compares as the name it resolves as)."""
    host = host.rstrip(".")
    try:
        return host.encode("idna").decode("ascii").lower()
    except UnicodeError:
        return host.lower()


@dataclasses.dataclass(frozen=True)
class HostPolicy:
    """Hosts a source may connect to.

    ``allow``: host names (exact, or ``.example.org`` for a domain and its subdomains) or
    networks (``203.0.113.0/24``); empty allows every host the rest permits. ``deny``: the same
    forms, refused even when allowed. ``private``: whether addresses that are not globally
    routable (loopback, RFC 1918, link-local, CGNAT, ...) may be reached; a listed ``allow``
    network or name opens them explicitly.
    """

    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()
    private: bool = False

    @staticmethod
    def _name_matches(host: str, patterns: tuple[str, ...]) -> bool:
        host = _name(host)
        for pattern in patterns:
            p = pattern.strip()
            domain = p.startswith(".")
            p = _name(p.lstrip("."))
            if host == p or (domain and host.endswith("." + p)):
                return True
        return False

    @staticmethod
    def _address_matches(address: Address, patterns: tuple[str, ...]) -> bool:
        address = _plain(address)
        for pattern in patterns:
            net = _network(pattern)
            if net is not None and address.version == net.version and address in net:
                return True
        return False

    def check_name(self, url: str) -> tuple[str, int]:
        """The host and port of ``url``, once its scheme and its name may be opened (before
        any address is known); SourceError otherwise. Resolves nothing."""
        parts, port = split_url(url)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https"):
            raise SourceError(f"{redact_url(url)}: only http and https URLs are opened")
        host = parts.hostname or ""
        if not host:
            raise SourceError(f"{redact_url(url)}: the URL names no host")
        if self._name_matches(host, self.deny):
            raise SourceError(f"host {host} is denied by the host policy (deny_hosts)")
        networks = any(_network(p) is not None for p in self.allow)
        if self.allow and not networks and not self._name_matches(host, self.allow):
            raise SourceError(f"host {host} is not in the allowed hosts (allow_hosts)")
        return host, port or (443 if scheme == "https" else 80)

    def check_address(self, host: str, address: Address | str) -> None:
        """Raises SourceError unless ``host`` may be reached at ``address`` (one it resolved to)."""
        if isinstance(address, str):
            address = ipaddress.ip_address(address.split("%")[0])
        if self._name_matches(host, self.deny):
            raise SourceError(f"host {host} is denied by the host policy (deny_hosts)")
        if self._address_matches(address, self.deny):
            raise SourceError(f"host {host} ({address}) is denied by the host policy "
                              "(deny_hosts)")
        listed = self._name_matches(host, self.allow) or self._address_matches(address,
                                                                               self.allow)
        if self.allow and not listed:
            raise SourceError(f"host {host} is not in the allowed hosts (allow_hosts)")
        if _is_private(address) and not self.private and not listed:
            raise SourceError(f"host {host} resolves to {address}, a loopback or private "
                              "address, which sources added at run time may not reach; "
                              "list it in [control] allow_hosts (or set "
                              "allow_private_hosts = true) to allow it")

    def addresses(self, host: str, port: int) -> list[str]:
        """The addresses ``host`` resolves to; SourceError when it does not resolve."""
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as exc:
            raise SourceError(f"host {host!r} does not resolve ({exc}); check the URL") from None
        return sorted({str(info[4][0]) for info in infos})

    def check(self, url: str) -> None:
        """Raises SourceError unless ``url``'s host may be opened under this policy: its name,
        then every address it resolves to now."""
        host, port = self.check_name(url)
        for text in self.addresses(host, port):
            self.check_address(host, text)

    def connect(self, address: tuple[str, int], timeout: float | None = None,
                source_address: tuple[str, int] | None = None) -> socket.socket:
        """A TCP connection to ``(host, port)``, made only once every address the host resolves
        to is allowed (SourceError otherwise), to one of those very addresses: the signature of
        ``socket.create_connection``, which http.client calls to connect. A name that does not
        resolve raises ``socket.gaierror`` (an OSError: the network's failure, tried again)."""
        host, port = address[0], address[1]
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        for info in infos:
            self.check_address(host, str(info[4][0]))
        error: OSError = OSError(f"host {host} has no address")
        for *_, sockaddr in infos:
            try:
                return socket.create_connection((str(sockaddr[0]), int(sockaddr[1])), timeout,
                                                source_address)
            except OSError as exc:
                error = exc
        raise error


# user:password@ in a string that urlsplit refuses (an unclosed IPv6 bracket, a bad port).
_USERINFO = re.compile(r"(://[^/?#@:]*):[^/?#@]*@")


def split_url(url: str) -> tuple[urllib.parse.SplitResult, int | None]:
    """``url``'s parts and port; SourceError saying what is wrong with it otherwise (a port
    out of range or not a number, a bracket left open)."""
    try:
        parts = urllib.parse.urlsplit(url)
        return parts, parts.port
    except ValueError as exc:
        raise SourceError(f"{redact_url(url)} is not a valid URL ({exc}); give "
                          "http(s)://HOST[:PORT]/PATH with a PORT from 1 to 65535") from None


def redact_url(url: str) -> str:
    """``url`` with its password and query values replaced by ``***`` (names kept, so a reader
    still sees which parameters there were), whatever its scheme; text that is not a URL with a
    host comes back as it is."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return _USERINFO.sub(rf"\1:{HIDDEN}@", url)
    if not parts.netloc:
        return url
    netloc = parts.netloc
    if "@" in netloc:
        user, _, where = netloc.rpartition("@")
        name = user.split(":", 1)[0]
        netloc = f"{name}:{HIDDEN}@{where}" if ":" in user else f"{name}@{where}"
    query = parts.query
    if query:
        pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
        query = "&".join(f"{urllib.parse.quote(k, safe='')}={HIDDEN}" for k, _ in pairs) \
            if pairs else HIDDEN
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, ""))
