"""Helpers for frp-core's tests: raw sockets, raw servers, known payloads."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

BLOCK = bytes(range(256)) * 4096  # 1 MiB of a known pattern


def pattern(size: int) -> Iterator[bytes]:
    """``size`` bytes of the known pattern, in 1 MiB blocks."""
    while size > 0:
        yield BLOCK[: min(size, len(BLOCK))]
        size -= len(BLOCK)


def pattern_sha256(size: int) -> str:
    h = hashlib.sha256()
    for block in pattern(size):
        h.update(block)
    return h.hexdigest()


async def raw_exchange(port: int, data: bytes, *, timeout: float = 10.0) -> bytes:
    """Send raw bytes, read until the server closes (or ``timeout``); return what came."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        chunks = []
        with contextlib.suppress(asyncio.TimeoutError, ConnectionError):
            async with asyncio.timeout(timeout):
                for _ in range(10_000):
                    chunk = await reader.read(65536)
                    if not chunk:
                        break
                    chunks.append(chunk)
        return b"".join(chunks)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


class RawServer:
    """An asyncio TCP server running ``handler(reader, writer)`` in the test's loop."""

    def __init__(
        self, handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
    ) -> None:
        self.handler = handler
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            await self.handler(reader, writer)

    async def __aenter__(self) -> RawServer:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.close()
        await self.server.wait_closed()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


async def read_head(reader: asyncio.StreamReader) -> bytes:
    """Read a request head (up to the blank line)."""
    return await reader.readuntil(b"\r\n\r\n")


async def read_chunks(resp: Any) -> list[bytes | bytearray]:
    """The body chunks of an engine response (an ``UpstreamResponse``), kept, then ``aclose``."""
    parts = []
    try:
        for _ in range(1_000_000):
            chunk = await resp.receive()
            if not chunk:
                break
            parts.append(chunk)
    finally:
        await resp.aclose()
    return parts


async def read_all(resp: Any) -> bytes:
    """The whole body of an engine response (an ``UpstreamResponse``), then ``aclose``."""
    return b"".join(await read_chunks(resp))
