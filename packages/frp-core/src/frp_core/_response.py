"""Relaying an upstream response with raw ASGI ``send()``, and the response object of
:func:`proxy_pass`.

A failure after the response started raises, so the server drops the connection: a truncated
body never ends with ``more_body: False``.  While the body streams, a client disconnect
(``http.disconnect`` from ``receive``) closes the upstream connection at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.background import BackgroundTask
from starlette.responses import Response

from ._delays import DelayQueues
from ._errors import UpstreamError
from ._exchange import Exchange, Watcher
from ._headers import Headers
from ._incoming import Receive, linger
from ._replies import ErrorReply
from ._routing import Outcome

__all__ = ["ProxyResponse", "error_response", "relay", "send_error"]

Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

#: ASGI servers known to write any bytes-like body; under another one (daphne's Twisted needs
#: ``bytes``, as the ASGI spec says) the engine's lent ``bytearray`` chunks are copied.
_BYTES_LIKE_SERVERS = ("uvicorn", "hypercorn", "granian")


def bytes_like_ok() -> bool:
    """Whether this process serves ASGI with a server that writes ``bytearray`` bodies."""
    modules = sys.modules
    return "twisted" not in modules and any(name in modules for name in _BYTES_LIKE_SERVERS)


#: Keeps background tasks (abandoned-response cleanup) referenced until they finish.
_TASKS: set[asyncio.Task[None]] = set()


async def relay(ex: Exchange, receive: Receive, send: Send, status: int, headers: Headers) -> None:
    """Send the response start and stream the upstream body to the client."""
    up = ex.response
    outcome = Outcome.CLIENT_ABORT
    watcher: Watcher | None = None
    can_watch = ex.body is None or ex.body.complete
    if not can_watch:
        # answered before the request body was all read (a 413, say): the rest of the upload
        # is abandoned, so the client connection must not be kept alive after this response
        headers = [*headers, (b"connection", b"close")]
    try:
        await send({"type": "http.response.start", "status": status, "headers": headers})
        if not up.has_body:
            await send({"type": "http.response.body", "body": b""})
            outcome = Outcome.SUCCESS
            return
        if can_watch and (up.content_length is None or not up.body_ready()):
            # a stream, or a body still to come: nothing else reads ``receive()`` meanwhile
            watcher = Watcher(receive)
        remaining = up.content_length
        lend = bytes_like_ok()
        chunk = await up.receive()
        while chunk:
            if chunk.__class__ is not bytes and not lend:
                chunk = bytes(chunk)
            if remaining is not None:
                remaining -= len(chunk)
                if remaining <= 0:
                    if await up.receive():
                        raise UpstreamError("body longer than its Content-Length")
                    if can_watch:
                        await send({"type": "http.response.body", "body": chunk})
                        outcome = Outcome.SUCCESS
                        return
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                    break
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            if watcher is None and (ex.body is None or ex.body.complete):
                watcher = Watcher(receive)
            chunk = await up.receive()
        if not can_watch:  # the upload is left unread: stop sending it, then linger
            await up.aclose()
            await linger(receive)
        await send({"type": "http.response.body", "body": b""})
        outcome = Outcome.SUCCESS
    except asyncio.CancelledError:
        if watcher is None or not watcher.fired:
            raise
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()
    except UpstreamError as exc:
        outcome = exc.outcome
        raise
    except OSError:  # the server reported the client gone while sending
        pass
    finally:
        if watcher is not None:
            watcher.stop()
        try:
            await up.aclose()
        finally:
            ex.finish(outcome)


async def send_error(reply: ErrorReply, send: Send, receive: Receive | None = None) -> None:
    """Send a proxy-made error reply; one that closes the connection lingers on ``receive``."""
    await send(
        {"type": "http.response.start", "status": reply.status, "headers": reply.asgi_headers()}
    )
    await _finish(reply.message.encode(), send, receive if reply.closes() else None)


async def _finish(body: bytes, send: Send, receive: Receive | None) -> None:
    """The last body message, after :func:`linger` when ``receive`` is given."""
    if receive is not None:
        await send({"type": "http.response.body", "body": body, "more_body": True})
        await linger(receive)
        body = b""
    await send({"type": "http.response.body", "body": body})


class _ErrorResponse(Response):
    """A proxy-made error reply that closes the connection: it lingers before the end."""

    async def __call__(self, scope: Any, receive: Receive, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        await _finish(bytes(self.body), send, receive)
        if self.background is not None:
            await self.background()


def error_response(reply: ErrorReply) -> Response:
    """A proxy-made error reply as a Starlette response (what ``proxy_pass`` returns)."""
    cls = _ErrorResponse if reply.closes() else Response
    response = cls(reply.message, status_code=reply.status, media_type="text/plain")
    response.raw_headers.extend(reply.headers)
    return response


class ProxyResponse(Response):
    """The streamed upstream response returned by :func:`proxy_pass`.

    ``status_code``, ``headers`` (and ``background``) may be changed before it is sent.  If
    the response is never sent, a guard timer (the read timeout, at least 1 s) releases the
    upstream connection.
    """

    def __init__(self, ex: Exchange, guard_delay: float | None) -> None:  # no super(): no body
        self.status_code = ex.status
        self.raw_headers = ex.headers
        self.background: BackgroundTask | None = None
        self._ex: Exchange | None = ex
        self._guard = _GUARDS.get(max(guard_delay or 60.0, 1.0))
        self._guard.add(self)

    def _abandon(self) -> None:
        ex, self._ex = self._ex, None
        if ex is not None:
            task = asyncio.ensure_future(_release(ex))
            _TASKS.add(task)
            task.add_done_callback(_TASKS.discard)

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        self._guard.discard(self)
        ex, self._ex = self._ex, None
        if ex is None:  # sent twice, or abandoned by the guard
            await send_error(ErrorReply(502, "Bad Gateway"), send)
            return
        await relay(ex, receive, send, self.status_code, self.raw_headers)
        if self.background is not None:
            await self.background()


async def _release(ex: Exchange) -> None:
    with contextlib.suppress(Exception):
        await ex.response.aclose()
    ex.finish(Outcome.CLIENT_ABORT)


#: Guard timers of unsent responses: one timer per loop and delay, not one per response.
_GUARDS: DelayQueues[ProxyResponse] = DelayQueues(ProxyResponse._abandon)
