"""What the proxy needs from an upstream client: the engine's interface, as protocols.

Both the engine and the httpx fallback satisfy :class:`Sender`; :class:`Base` is a parsed base
URL (scheme, host, port, path prefix), the only source of where a request goes.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import AsyncIterable
from typing import Protocol
from urllib.parse import urlsplit

from ._config import Timeouts
from ._headers import Headers

__all__ = ["Base", "Sender", "UpstreamResponse", "parse_base"]

_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclasses.dataclass(frozen=True, slots=True)
class Base:
    """A parsed upstream base URL."""

    url: str
    scheme: str
    host: str
    port: int
    prefix: bytes  #: path prefix, no trailing slash (``b""`` for none)
    host_header: bytes  #: the ``Host`` value for this origin


@functools.lru_cache(maxsize=1024)
def parse_base(url: str) -> Base:
    """Parse ``http[s]://host[:port][/prefix]``; ``ValueError`` for anything else."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise ValueError("upstream must be an http:// or https:// URL with a host")
    if parts.username is not None or parts.password is not None or parts.fragment:
        raise ValueError("upstream URL must not carry credentials or a fragment")
    if parts.query:
        raise ValueError("upstream URL must not carry a query")
    port = parts.port or _DEFAULT_PORTS[scheme]
    host = parts.hostname
    shown = f"[{host}]" if ":" in host else host
    if port != _DEFAULT_PORTS[scheme]:
        shown = f"{shown}:{port}"
    try:
        prefix = parts.path.rstrip("/").encode("ascii")
        host_header = shown.encode("ascii")
    except UnicodeEncodeError:
        raise ValueError("upstream URL must be ASCII (use the xn-- form of a host)") from None
    return Base(url, scheme, host, port, prefix, host_header)


class UpstreamResponse(Protocol):
    """A response whose headers have arrived; the body is read with :meth:`receive`."""

    status: int
    reason: bytes
    http_version: str
    headers: Headers
    content_length: int | None
    has_body: bool

    async def receive(self) -> bytes: ...

    async def aclose(self) -> None: ...


class Sender(Protocol):
    """Sends one request upstream (the engine, or an httpx client behind an adapter)."""

    async def request(
        self,
        base: Base,
        method: bytes,
        target: bytes,
        headers: Headers,
        body: bytes | AsyncIterable[bytes],
        content_length: int | None,
        timeouts: Timeouts,
    ) -> UpstreamResponse: ...

    async def aclose(self) -> None: ...
