"""Sending one request on a :class:`Connection`, and the stale-connection replay.

A bytes body goes out with the head in one ``write``, queued in the loop's :class:`WriteBurst`
(written when the current pass of the event loop ends, with the other requests of that pass).
An iterable body is sent by a writer task (chunked when its length is unknown) so that the
response head, and its body, can be read while the upload is still going; the writer awaits
the transport's drain above the high-water mark.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator

from ._body import UpstreamResponse
from ._burst import WriteBurst
from ._connection import Connection
from ._errors import (
    LocalProtocolError,
    ReadTimeout,
    RemoteProtocolError,
    UpstreamError,
    WriteTimeout,
)

__all__ = ["Retry", "exchange"]

#: Request-body bytes kept (references, no copies) so that a request on a reused connection the
#: peer had already closed can be replayed on a fresh one.  Beyond this, no replay.
KEEP_LIMIT = 256 * 1024
#: Request lines of the methods that may be replayed after bytes were written.
_IDEMPOTENT = (b"GET ", b"HEAD ", b"OPTIONS ", b"TRACE ", b"PUT ", b"DELETE ")
#: A body (or chunk) up to this size is joined with its head (or chunk framing) in one write.
_JOIN_LIMIT = 64 * 1024


class Retry(Exception):
    """A reused connection turned out to be dead: replay ``body`` on a fresh one."""

    def __init__(self, error: UpstreamError, body: bytes | AsyncIterable[bytes]) -> None:
        super().__init__(str(error))
        self.error = error
        self.body = body


async def exchange(
    conn: Connection,
    head: bytes,
    body: bytes | AsyncIterable[bytes],
    content_length: int | None,
    is_head: bool,
    read_to: float | None,
    write_to: float | None,
    may_retry: bool,
    burst: WriteBurst | None = None,
) -> UpstreamResponse:
    """Send one request and wait for the head of its (final) response."""
    t = conn.transport
    if t is None or conn.closed or t.is_closing():
        conn.discard()
        err = RemoteProtocolError("upstream closed the connection", request_sent=False)
        if may_retry:
            raise Retry(err, body)
        raise err
    conn._active = True
    conn._is_head = is_head
    conn._resp = None
    conn._complete = False
    conn._error = None
    conn._headers = []
    conn._cl = None
    conn._te = None
    conn._rx = False
    conn._head_size = 0
    conn._stale = False
    conn._read_to = read_to
    conn._write_to = write_to
    if body.__class__ is bytes:
        assert isinstance(body, bytes)
        if len(body) <= _JOIN_LIMIT:
            data = head + body if body else head
            if burst is not None:
                burst.write(conn, data)
            else:
                t.write(data)
        else:
            t.write(head)
            t.write(body)
        conn._body_done = True
        fut = conn._waiter = conn.loop.create_future()
        if conn._write_paused:
            conn._arm(write_to, WriteTimeout)
        elif read_to is not None:
            conn._arm(read_to, ReadTimeout)
    else:
        conn._body_done = False
        conn._body_iter = None
        conn._kept = None
        t.write(head)
        fut = conn._waiter = conn.loop.create_future()
        conn._writer = conn.loop.create_task(
            send_body(conn, body, content_length, may_retry)  # type: ignore[arg-type]
        )
    try:
        await fut
    except asyncio.CancelledError:
        conn._cancel_wait()
        conn.discard()
        await conn.stop_writer()
        raise
    resp = conn._head()
    if resp is not None:
        resp._conn = conn
        return resp
    return await _failed(conn, head, body, may_retry)


async def _failed(
    conn: Connection, head: bytes, body: bytes | AsyncIterable[bytes], may_retry: bool
) -> UpstreamResponse:
    """No response head: decide between a replay on a fresh connection and an error."""
    err = conn._error
    conn.discard()
    conn._active = False
    if err is None:  # woken with neither a head nor an error: fail, never leak the connection
        err = RemoteProtocolError("no response head from the upstream", request_sent=True)
    if (
        may_retry
        and conn._stale
        and isinstance(err, UpstreamError)
        # once request bytes were written, only an idempotent method may be sent again
        # (RFC 9110 §9.2.2; nginx never re-sends a POST): the upstream may have acted on it
        and (not err.request_sent or head.startswith(_IDEMPOTENT))
    ):
        replay: bytes | AsyncIterable[bytes] | None = None
        w = conn._writer
        if body.__class__ is bytes:
            replay = body
        elif w is not None and not w.done() and conn._body_iter is None:
            await conn.stop_writer()  # the writer never started: the body is untouched
            replay = body
        else:
            if w is not None and not w.done():
                if conn._in_next and conn._kept is not None:
                    # let the body's pending chunk arrive (then the writer stops by itself),
                    # so that the iterator stays usable for the replay
                    try:
                        await asyncio.wait((w,))
                    except asyncio.CancelledError:
                        await conn.stop_writer()
                        raise
                else:
                    await conn.stop_writer()
            conn._writer = None
            if conn._kept is not None and conn._body_iter is not None:
                replay = _replay(conn._kept, conn._body_iter)
        if replay is not None:
            raise Retry(err, replay)
    await conn.stop_writer()
    raise err


async def send_body(
    conn: Connection, body: AsyncIterable[bytes], content_length: int | None, keep: bool
) -> None:
    """The writer task of an iterable body (chunked when the length is unknown)."""
    t = conn.transport
    assert t is not None
    it = conn._body_iter = body.__aiter__()
    kept: list[bytes] | None = [] if keep else None
    conn._kept = kept
    kept_size = sent = 0
    try:
        while True:
            conn._in_next = True
            try:
                chunk = await it.__anext__()
            except StopAsyncIteration:
                break
            finally:
                conn._in_next = False
            n = len(chunk)
            if kept is not None:
                if conn._rx or kept_size + n > KEEP_LIMIT:
                    kept = conn._kept = None
                else:
                    kept.append(chunk)
                    kept_size += n
            if conn._stopped():
                return
            if not n:
                continue
            sent += n
            if content_length is None:
                if n < _JOIN_LIMIT:
                    t.write(b"%x\r\n%b\r\n" % (n, chunk))
                else:
                    # One ``sendmsg`` for the size line and the chunk, then the CRLF by
                    # ``write``: without the fix of CPython gh-127655 (3.12, 3.13.0) the
                    # selector transport's ``writelines`` never calls ``pause_writing``;
                    # ``write`` does, so the upload stays flow-controlled.
                    t.writelines((b"%x\r\n" % n, chunk))
                    t.write(b"\r\n")
            elif sent > content_length:
                raise LocalProtocolError(
                    "request body longer than its Content-Length", request_sent=True
                )
            else:
                t.write(chunk)
            if conn._write_paused:
                await _drain(conn)
                if conn._stopped():
                    return
        if conn._stopped():
            return
        if content_length is None:
            t.write(b"0\r\n\r\n")
        elif sent != content_length:
            raise LocalProtocolError(
                "request body shorter than its Content-Length", request_sent=True
            )
        conn._body_done = True
        if conn._resp is None and conn._waiter is not None and conn._read_to is not None:
            conn._arm(conn._read_to, ReadTimeout)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # the body iterator failed, or its length was wrong
        conn.fail(exc)


async def _drain(conn: Connection) -> None:
    fut = conn._drain_waiter = conn.loop.create_future()
    to = conn._write_to
    timer = None if to is None else conn.loop.call_later(to, conn._drain_timed_out)
    try:
        await fut
    finally:
        conn._drain_waiter = None
        if timer is not None:
            timer.cancel()


async def _replay(kept: list[bytes], rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    for chunk in kept:
        yield chunk
    async for chunk in rest:
        yield chunk
