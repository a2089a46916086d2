"""What the proxy needs from an upstream client: the engine's interface, as protocols.

Both the engine and the httpx fallback satisfy :class:`Sender`; :class:`Base` is a parsed base
URL (scheme, host, port, path prefix), the only source of where a request goes.
"""

from __future__ import annotations

from collections.abc import AsyncIterable
from typing import Protocol

from ._buffers import Chunk
from ._config import Timeouts
from ._headers import Headers
from ._origin import Origin

__all__ = ["Base", "Sender", "UpstreamResponse", "parse_base"]

#: A parsed upstream base URL: scheme, host, port, path prefix and ``Host`` value.
Base = Origin


def parse_base(url: str) -> Origin:
    """Parse ``http[s]://host[:port][/prefix]`` (cached); ``ValueError`` for anything else."""
    return Origin.parse(url)


class UpstreamResponse(Protocol):
    """A response whose headers have arrived; the body is read with :meth:`receive`."""

    status: int
    reason: bytes
    http_version: str
    headers: Headers
    content_length: int | None
    has_body: bool

    async def receive(self) -> Chunk:
        """The next body chunk; ``b""`` once the body is complete."""
        ...

    def body_ready(self) -> bool:
        """Whether :meth:`receive` would return without waiting for the upstream."""
        ...

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
