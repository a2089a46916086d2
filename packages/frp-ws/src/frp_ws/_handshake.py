"""The upstream opening handshake for a splice, over asyncio and httptools (no ``websockets``).

Offers the client's subprotocols and no extension, so that frames can pass between the hops
untouched.  Refusals, timeouts and unreachable upstreams raise what the message relay's
client raises (:class:`HandshakeRefused`, ``ConnectError``, ``ConnectTimeout``), so the tunnel
answers the client the same way whichever path it takes.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import ssl as _ssl
from collections.abc import Sequence
from typing import Any, cast

import httptools

from frp_core._errors import ConnectError, ConnectTimeout
from frp_core._origin import Origin

from ._compat import HandshakeRefused

__all__ = ["Opened", "open_upstream"]

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_MAX_HEAD = 64 * 1024  # response headers, in bytes
_MAX_HEADERS = 256
_MAX_BODY = 64 * 1024


class Opened:
    """An upstream whose handshake succeeded: its transport and what it sent after the 101."""

    __slots__ = ("handshake", "response_headers", "subprotocol", "transport")

    def __init__(
        self,
        transport: asyncio.Transport,
        handshake: _Handshake,
        subprotocol: str | None,
        response_headers: list[tuple[str, str]],
    ) -> None:
        self.transport = transport
        self.handshake = handshake
        self.subprotocol = subprotocol
        self.response_headers = response_headers

    def abort(self) -> None:
        """Drop the connection (the client could not be accepted)."""
        self.transport.abort()


class _Handshake(asyncio.Protocol):
    """Writes the upgrade request, parses the answer, then buffers until the splice starts."""

    def __init__(self, request: bytes) -> None:
        self.request = request
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.headers: list[tuple[str, str]] = []
        self.size = 0
        self.body: list[bytes] = []
        self.body_size = 0
        self.headers_done = False
        self.head_size = 0
        self.after: list[bytes] = []  # frames that came after the 101
        self.done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.lost = False

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        if self.done.done():
            self.after.append(data)
            if self.transport is not None:  # the splice resumes reading when it starts
                self.transport.pause_reading()
            return
        self.size += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            offset = exc.args[0] if exc.args else len(data)
            if offset < len(data):
                self.after.append(data[offset:])
            self._finish(self.parser.get_status_code())
            return
        except httptools.HttpParserError:
            self._fail(ConnectError())
            return
        if not self.done.done() and self.size > _MAX_HEAD + _MAX_BODY:
            if self.headers_done:  # a refusal with a long body: what was kept is enough
                self._finish(self.parser.get_status_code())
            else:
                self._fail(ConnectError("upstream handshake response too large"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if not self.done.done():
            status = self.parser.get_status_code() if self.headers_done else 0
            if status and status != 101:  # a refusal whose body ends with the connection
                self._finish(status)
            else:
                self._fail(ConnectError())

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self.head_size += len(name) + len(value)
        if self.head_size > _MAX_HEAD or len(self.headers) >= _MAX_HEADERS:
            self._fail(ConnectError("upstream handshake response headers too large"))
        self.headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        self.headers_done = not self.done.done()

    def on_body(self, body: bytes) -> None:
        if self.body_size < _MAX_BODY:
            self.body.append(body[: _MAX_BODY - self.body_size])
            self.body_size += len(self.body[-1])

    def on_message_complete(self) -> None:
        if not self.done.done() and self.parser.get_status_code() != 101:
            self._finish(self.parser.get_status_code())

    def _finish(self, status: int) -> None:
        if not self.done.done():
            self.done.set_result(status)

    def _fail(self, exc: Exception) -> None:
        if not self.done.done():
            self.done.set_exception(exc)


def _request(
    origin: Origin,
    target: str,
    key: bytes,
    subprotocols: Sequence[str],
    headers: Sequence[tuple[str, str]],
) -> bytes:
    lines = [
        b"GET " + target.encode("ascii") + b" HTTP/1.1",
        b"Host: " + origin.host_header,
        b"Upgrade: websocket",
        b"Connection: Upgrade",
        b"Sec-WebSocket-Key: " + key,
        b"Sec-WebSocket-Version: 13",
    ]
    if subprotocols:
        lines.append(b"Sec-WebSocket-Protocol: " + ", ".join(subprotocols).encode("ascii"))
    for name, value in headers:
        try:
            lines.append(name.encode("ascii") + b": " + value.encode("latin-1"))
        except UnicodeEncodeError:
            lines.append(name.encode("ascii") + b": " + value.encode("utf-8"))
    return b"\r\n".join(lines) + b"\r\n\r\n"


def _header(headers: list[tuple[str, str]], name: str) -> list[str]:
    return [v for n, v in headers if n.lower() == name]


def _chosen(hs: _Handshake, key: bytes, offer: Sequence[str]) -> str | None:
    """The upstream's subprotocol, once its 101 is checked; ``ConnectError`` if invalid."""
    headers = hs.headers
    upgrade = _header(headers, "upgrade")
    connection = ",".join(_header(headers, "connection")).lower()
    accept = base64.b64encode(hashlib.sha1(key + _GUID).digest()).decode()
    if (
        [u.lower() for u in upgrade] != ["websocket"]
        or "upgrade" not in [t.strip() for t in connection.split(",")]
        or _header(headers, "sec-websocket-accept") != [accept]
        or _header(headers, "sec-websocket-extensions")  # none was offered
    ):
        raise ConnectError("invalid upstream handshake")
    protocols = _header(headers, "sec-websocket-protocol")
    if not protocols:
        return None
    if len(protocols) != 1 or protocols[0].strip() not in offer:
        raise ConnectError("invalid upstream subprotocol")
    return protocols[0].strip()


async def open_upstream(
    base: str,
    target: str,
    *,
    subprotocols: Sequence[str],
    headers: Sequence[tuple[str, str]],
    timeout: float | None,
    ssl: Any = None,
) -> Opened:
    """Connect to ``base`` and complete a WebSocket handshake for ``target`` (path and query).

    Raises :class:`HandshakeRefused` (any status but 101, body at most 64 KiB), ``ConnectError``
    (unreachable, TLS, invalid answer) or ``ConnectTimeout`` (``timeout`` for the whole
    handshake); messages carry no address.
    """
    origin = Origin.parse(base)
    key = base64.b64encode(os.urandom(16))
    request = _request(origin, origin.prefix.decode("ascii") + target, key, subprotocols, headers)
    loop = asyncio.get_running_loop()
    tls: Any = None
    if origin.scheme == "https":
        tls = ssl if ssl is not None else True
    hs: _Handshake | None = None

    def factory() -> _Handshake:
        nonlocal hs
        hs = _Handshake(request)
        return hs

    def drop() -> None:
        if hs is not None and hs.transport is not None:
            hs.transport.abort()

    try:
        async with asyncio.timeout(timeout):
            await loop.create_connection(factory, origin.host, origin.port, ssl=tls)
            assert hs is not None
            status = await hs.done
    except TimeoutError:
        drop()
        raise ConnectTimeout() from None
    except (OSError, _ssl.SSLError):
        drop()
        raise ConnectError() from None
    except BaseException:
        drop()
        raise
    transport = hs.transport
    assert transport is not None
    if status != 101:
        transport.abort()
        raise HandshakeRefused(status, hs.headers, b"".join(hs.body))
    try:
        chosen = _chosen(hs, key, subprotocols)
    except ConnectError:
        transport.abort()
        raise
    return Opened(transport, hs, chosen, hs.headers)
