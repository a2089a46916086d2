"""Where upstream requests go: scheme, host and port from configuration, never from a request.

``Origin.parse("http://backend:8080/v1")`` is computed once per base URL (cached); the engine
pools connections by :attr:`Origin.key`.
"""

from __future__ import annotations

import dataclasses
import functools
import urllib.parse

_DEFAULT_PORTS = {"http": 80, "https": 443}
_SCHEMES = {"http": "http", "https": "https", "ws": "http", "wss": "https"}
#: Characters left alone when the configured path prefix is percent-encoded (RFC 3986 pchar).
_PATH_SAFE = "/:@!$&'()*+,;=-._~%"


@dataclasses.dataclass(frozen=True, slots=True)
class Origin:
    """An upstream origin plus the path prefix of its configured base URL."""

    scheme: str  #: ``"http"`` or ``"https"``
    host: str  #: host name or IP address; IPv6 without brackets
    port: int
    prefix: bytes  #: path prefix of the base URL, ``b""`` or e.g. ``b"/v1"`` (no trailing slash)
    host_header: bytes  #: ``b"host:port"``, or ``b"host"`` on the scheme's default port
    _key: tuple[str, str, int] = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_key", (self.scheme, self.host, self.port))

    @property
    def key(self) -> tuple[str, str, int]:
        """The connection pool key: ``(scheme, host, port)``."""
        return self._key

    @classmethod
    def parse(cls, url: str) -> Origin:
        """The origin of a base URL such as ``"https://api:8443/v1/"`` (cached).

        ``ws``/``wss`` map to ``http``/``https``.  Raises ``ValueError`` for a missing scheme or
        host, another scheme, credentials, a query or a fragment in the base URL.
        """
        return _parse(url)


@functools.lru_cache(maxsize=1024)
def _parse(url: str) -> Origin:
    if not isinstance(url, str):
        raise TypeError(f"base URL must be a str, not {type(url).__name__}")
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        raise ValueError("base URL must not contain whitespace or control characters")
    parts = urllib.parse.urlsplit(url)
    scheme = _SCHEMES.get(parts.scheme.lower())
    if scheme is None:
        raise ValueError(f"base URL must start with http://, https://, ws:// or wss://: {url!r}")
    netloc = parts.netloc
    if "@" in netloc:
        raise ValueError("base URL must not contain credentials")
    if "?" in url or "#" in url:
        raise ValueError("base URL must not contain a query or a fragment")
    host = parts.hostname
    if not host:
        raise ValueError(f"base URL has no host: {url!r}")
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"base URL has an invalid port: {url!r}") from exc
    if port == 0:
        raise ValueError(f"base URL has an invalid port: {url!r}")
    default = _DEFAULT_PORTS[scheme]
    if port is None:
        port = default
    try:
        host_bytes = host.encode("ascii")
    except UnicodeEncodeError:
        host_bytes = host.encode("idna")
    if ":" in host:  # IPv6 literal (urlsplit already removed the brackets)
        host_bytes = b"[" + host_bytes + b"]"
    host_header = host_bytes if port == default else b"%s:%d" % (host_bytes, port)
    path = urllib.parse.quote(parts.path, safe=_PATH_SAFE).rstrip("/")
    return Origin(scheme, host, port, path.encode("ascii"), host_header)
