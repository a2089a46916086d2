"""The only module that imports ``websockets``: one small client interface over 11 to 17.

Differences are found by feature detection, never by version numbers: the new asyncio client
(``websockets.asyncio.client``, 13+) is used where it exists, the legacy one (11, 12)
otherwise; on 14+ ``websockets.legacy`` (deprecated, it warns) is never imported.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import importlib
import importlib.util
import inspect
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import websockets.exceptions as _exc
from websockets.datastructures import Headers as _Headers

from frp_core._errors import ConnectError, ConnectTimeout

__all__ = [
    "CLOSED",
    "IMPLEMENTATION",
    "REFUSAL_BODY",
    "HandshakeRefused",
    "UpstreamClosed",
    "UpstreamConnection",
    "closed",
    "connect",
    "http_status",
]


def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


NEW_ASYNCIO = _has_module("websockets.asyncio.client")
#: ``"asyncio"`` (websockets 13+) or ``"legacy"`` (11, 12).
IMPLEMENTATION = "asyncio" if NEW_ASYNCIO else "legacy"
#: Whether the body of a refused handshake is available (always: read by hand on legacy).
REFUSAL_BODY = True
_MAX_REFUSAL_BODY = 64 * 1024


class HandshakeRefused(Exception):
    """The upstream answered the handshake with an HTTP status other than 101."""

    def __init__(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        super().__init__(status)
        self.status = status
        self.headers = headers
        self.body = body


class UpstreamClosed(Exception):
    """The upstream hop is closed.

    ``code``/``reason``: the upstream's close frame (``None``/``""`` when none arrived);
    ``sent_first``: the code our side sent before any frame arrived (the library gave up on
    the hop itself: 1009 message too big, 1011 keepalive timeout, 1002 protocol error).
    """

    def __init__(self, code: int | None, reason: str, sent_first: int | None) -> None:
        super().__init__(code)
        self.code = code
        self.reason = reason
        self.sent_first = sent_first


class _Redirected(Exception):
    """A legacy client met a redirect (only its target is known)."""

    def __init__(self, location: str) -> None:
        super().__init__(location)
        self.location = location


#: What :attr:`UpstreamConnection.raw_recv`/``raw_send`` raise once the hop is closed; turn it
#: into an :class:`UpstreamClosed` with :func:`closed`.
CLOSED: type[Exception] = _exc.ConnectionClosed


def closed(exc: Any) -> UpstreamClosed:
    """The :class:`UpstreamClosed` for a :data:`CLOSED` exception."""
    rcvd, sent = exc.rcvd, exc.sent
    first = None
    if sent is not None and (rcvd is None or exc.rcvd_then_sent is False):
        first = int(sent.code)
    if rcvd is None:
        return UpstreamClosed(None, "", first)
    return UpstreamClosed(int(rcvd.code), str(rcvd.reason), first)


class UpstreamConnection:
    """An open upstream WebSocket: the whole surface ``_tunnel`` uses.

    ``raw_recv``/``raw_send`` are the library's own bound methods, for the relay's hot loop
    (one coroutine less per message): same contract as :meth:`recv`/:meth:`send`, but a closed
    hop raises :data:`CLOSED`, to be turned into :class:`UpstreamClosed` by :func:`closed`.
    """

    __slots__ = ("_ws", "raw_recv", "raw_send", "response_headers", "subprotocol")

    def __init__(self, ws: Any, headers: Any) -> None:
        self._ws = ws
        self.subprotocol: str | None = ws.subprotocol
        self.response_headers: list[tuple[str, str]] = list(headers.raw_items())
        # Both implementations: recv() gives str for text and bytes for binary; send() sends a
        # str as text and bytes as binary, and returns once the write buffer has drained.
        self.raw_recv: Callable[[], Awaitable[str | bytes]] = ws.recv
        self.raw_send: Callable[[str | bytes], Awaitable[None]] = ws.send

    async def recv(self) -> str | bytes:
        """The next whole message (text as ``str``, binary as ``bytes``)."""
        try:
            data: str | bytes = await self._ws.recv()
        except _exc.ConnectionClosed as exc:
            raise closed(exc) from None
        return data

    async def send(self, data: str | bytes) -> None:
        """Send one message; returns once the write buffer is below its high-water mark."""
        try:
            await self._ws.send(data)
        except _exc.ConnectionClosed as exc:
            raise closed(exc) from None

    async def close(self, code: int, reason: str = "") -> None:
        """Close the hop and wait until its socket is closed (bounded by close_timeout)."""
        await self._ws.close(code, reason)

    def abort(self) -> None:
        """Drop the TCP connection at once (used on cancellation)."""
        transport = self._ws.transport
        if transport is not None:
            transport.abort()

    async def aborted(self) -> None:
        """:meth:`abort`, then wait (at most 1 s) until the library's own tasks have ended."""
        self.abort()
        # Legacy connections end their helper tasks in close_connection_task.
        waiter = getattr(self._ws, "close_connection_task", None) or self._ws.wait_closed()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.shield(waiter), 1)


if NEW_ASYNCIO:
    _client: Any = importlib.import_module("websockets.asyncio.client")

    class _Connect(_client.connect):  # type: ignore[misc]
        """A reverse proxy never follows redirects: they go back to the client."""

        def process_redirect(self, exc: Exception) -> Exception:
            return exc

    _CONNECT: Any = _Connect
    _PARAMS = inspect.signature(_client.connect.__init__).parameters
else:  # websockets 11 and 12
    _legacy: Any = importlib.import_module("websockets.legacy.client")

    class _Protocol(_legacy.WebSocketClientProtocol):  # type: ignore[misc]
        """Reads the body of a refused handshake, which the legacy client leaves unread, and
        closes a failed connection without waiting for the upstream's closing handshake."""

        def fail_connection(self, code: int = 1006, reason: str = "") -> None:
            super().fail_connection(code, reason)
            if code != 1006 and self.transport is not None:
                # RFC 6455 §7.1.7: the close frame is written, now close the socket.  An
                # upstream still writing the message we refused (1009) never reads our close;
                # the legacy client would wait 2 x close_timeout for it before recv() ends.
                self.transport.close()

        async def handshake(self, *args: Any, **kwargs: Any) -> None:
            try:
                await super().handshake(*args, **kwargs)
            except _legacy.InvalidStatusCode as exc:
                try:
                    body = await _read_body(self.reader, exc.headers)
                finally:  # refused (or open_timeout): no closing handshake to wait for
                    self.transport.abort()
                raise HandshakeRefused(
                    exc.status_code, list(exc.headers.raw_items()), body
                ) from None
            except asyncio.CancelledError:  # open_timeout: do not wait for a silent server
                self.transport.abort()
                raise

    class _LegacyConnect(_legacy.Connect):  # type: ignore[misc]
        def handle_redirect(self, uri: str) -> None:
            raise _Redirected(uri)

    _CONNECT = _LegacyConnect
    _PARAMS = inspect.signature(_legacy.Connect.__init__).parameters


def http_status(status: int) -> Any:
    """``status`` as ``ServerProtocol.reject`` takes it on every version: 11 and 12 need an
    ``HTTPStatus`` (they read ``.value``), 13+ take either; an unknown code stays an int."""
    try:
        return http.HTTPStatus(status)
    except ValueError:
        return status


async def _read_body(reader: asyncio.StreamReader, headers: Any) -> bytes:
    """The body of a legacy refusal (websockets 11-12 leave it unread), at most 64 KiB."""
    try:
        length = int(headers.get("Content-Length", "-1"))
    except ValueError:
        length = -1
    chunks: list[bytes] = []
    size = 0
    try:
        if length >= 0:
            return await reader.readexactly(min(length, _MAX_REFUSAL_BODY))
        if "chunked" in headers.get("Transfer-Encoding", "").lower():
            return await _read_chunked(reader)
        while size < _MAX_REFUSAL_BODY:  # until EOF, at most 64 KiB
            chunk = await reader.read(_MAX_REFUSAL_BODY - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except (asyncio.IncompleteReadError, OSError):
        pass
    return b"".join(chunks)


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    """A chunked body, decoded (a keep-alive upstream never closes after it)."""
    out = bytearray()
    while len(out) < _MAX_REFUSAL_BODY:  # bounded: every chunk adds at least one byte
        try:
            size = int((await reader.readline()).split(b";")[0].strip(), 16)
        except ValueError:
            break  # malformed: keep what came
        if size <= 0:
            break
        data = await reader.readexactly(min(size, _MAX_REFUSAL_BODY - len(out)))
        out += data
        if len(data) < size:
            break
        await reader.readexactly(2)  # CRLF
    return bytes(out)


async def connect(
    url: str,
    *,
    subprotocols: Sequence[str] | None,
    headers: Sequence[tuple[str, str]],
    open_timeout: float | None,
    close_timeout: float | None,
    max_size: int | None,
    max_queue: int,
    ping_interval: float | None,
    ping_timeout: float | None,
    compression: str | None,
    ssl: Any = None,
) -> UpstreamConnection:
    """Open ``url`` (already ``ws://``/``wss://``, path and query final) and hand it back.

    Only ``headers`` are sent besides the handshake's own: no ``User-Agent`` or ``Origin`` is
    added, no proxy from the environment is used, redirects are not followed.

    Raises :class:`HandshakeRefused`, ``frp_core`` ``ConnectError`` (unreachable, TLS, invalid
    handshake) or ``ConnectTimeout``; messages carry no address.
    """
    kwargs: dict[str, Any] = {
        "subprotocols": list(subprotocols) if subprotocols else None,
        "compression": compression,
        "open_timeout": open_timeout,
        "close_timeout": close_timeout,
        "max_size": max_size,
        "max_queue": max_queue,
        "ping_interval": ping_interval,
        "ping_timeout": ping_timeout,
    }
    header_arg = "additional_headers" if "additional_headers" in _PARAMS else "extra_headers"
    kwargs[header_arg] = _Headers(list(headers))
    if "user_agent_header" in _PARAMS:
        kwargs["user_agent_header"] = None
    if "proxy" in _PARAMS:
        kwargs["proxy"] = None
    protocols: list[Any] = []
    if not NEW_ASYNCIO:

        def create_protocol(*args: Any, **kw: Any) -> Any:
            protocols.append(_Protocol(*args, **kw))
            return protocols[-1]

        kwargs["create_protocol"] = create_protocol
    if ssl is not None:
        kwargs["ssl"] = ssl
    try:
        ws = await _open(url, kwargs)
    except BaseException:
        await _legacy_cleanup(protocols)
        raise
    return UpstreamConnection(ws, ws.response.headers if NEW_ASYNCIO else ws.response_headers)


async def _legacy_cleanup(protocols: list[Any]) -> None:
    """Let a failed legacy handshake's closing task finish (it would outlive the call)."""
    for protocol in protocols:
        task = getattr(protocol, "close_connection_task", None)
        if task is not None and not task.done():
            protocol.transport.abort()  # the handshake failed: no closing handshake to wait for
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(task), 5)


async def _open(url: str, kwargs: dict[str, Any]) -> Any:
    """Open the connection, translating every failure into this module's exceptions."""
    try:
        return await _CONNECT(url, **kwargs)
    except HandshakeRefused:
        raise
    except _exc.InvalidStatus as exc:  # 13+: response and body are on the exception
        response = exc.response
        raise HandshakeRefused(
            int(response.status_code),
            list(response.headers.raw_items()),
            bytes(response.body or b""),
        ) from None
    except TimeoutError:
        raise ConnectTimeout() from None
    except _Redirected as exc:  # legacy only; the exact 3xx status is not known there
        raise HandshakeRefused(302, [("Location", exc.location)], b"") from None
    except (OSError, EOFError, ValueError, _exc.WebSocketException):
        # Some versions (13.1) let the HTTP parser's ValueError or EOFError out for an answer
        # that is not HTTP/1.1 at all: an invalid upstream, 502 like any other.
        raise ConnectError() from None
