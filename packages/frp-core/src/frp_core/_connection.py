"""One upstream HTTP/1.1 connection: an asyncio ``BufferedProtocol`` driving ``httptools``.

No ``StreamReader``: bytes go from the transport into the parser, whose callbacks fill the
response head and a list of body chunks.  A coroutine waits on at most one future at a time
(``_waiter`` for the head or body, ``_drain_waiter`` for the request body writer); each wait has
at most one ``call_later`` timer.  The response to HEAD is complete at its head (the parser,
which still expects the announced body, is replaced before the connection is reused); 1xx
interim responses are skipped; a body with neither length nor chunking ends at EOF and makes
the connection not reusable.  Anything unexpected discards the connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, cast

import httptools

from ._body import UpstreamResponse
from ._buffers import Chunk, Lent, ReadBuffers
from ._errors import (
    ReadTimeout,
    RemoteProtocolError,
    UpstreamError,
    WriteTimeout,
)
from ._headers import Headers

if TYPE_CHECKING:
    from ._pool import _Pool, _Stats

__all__ = ["Connection"]

#: Bytes an upstream may send before its (final) response head is complete.
MAX_HEAD = 256 * 1024
#: Body chunks at least this big are handed out as they are; smaller ones are joined.
_JOIN_BELOW = 64 * 1024
#: Write buffer limits of each transport (``pause_writing`` above ``WRITE_HIGH``).
WRITE_HIGH = 256 * 1024
WRITE_LOW = 64 * 1024

_HttpParserError: type[Exception] = httptools.HttpParserError
_HttpParserUpgrade: type[Exception] = httptools.HttpParserUpgrade
_ResponseParser: Any = httptools.HttpResponseParser


class Connection(asyncio.BufferedProtocol):
    """An HTTP/1.1 client connection.  Driven by :class:`frp_core._pool.Engine`.

    A ``BufferedProtocol``: the transport reads (up to ``read_size`` bytes at once) straight
    into a buffer shared by every connection of the engine (``get_buffer`` and
    ``buffer_updated`` run back to back, and the parser copies the body out), so a read costs
    one copy and no per-connection buffer.  While at least ``read_size`` bytes of a
    ``Content-Length`` body are still to come, reads go instead into a buffer lent by
    :class:`~frp_core._buffers.ReadBuffers`, which becomes the body chunk as it is: no copy
    at all, and the parser, which no longer sees those bytes, is replaced at the body's end.
    """

    __slots__ = (
        "_active",
        "_body_done",
        "_body_iter",
        "_buf",
        "_buffered",
        "_bypass",
        "_cl",
        "_complete",
        "_deadline",
        "_deadline_exc",
        "_drain_waiter",
        "_error",
        "_head_size",
        "_headers",
        "_high",
        "_in_next",
        "_interim",
        "_is_head",
        "_keep_alive",
        "_kept",
        "_left",
        "_lent",
        "_low",
        "_queued",
        "_read_to",
        "_reading_paused",
        "_reason",
        "_resp",
        "_rx",
        "_stale",
        "_te",
        "_timer",
        "_timer_due",
        "_waiter",
        "_write_paused",
        "_write_to",
        "_writer",
        "buffers",
        "closed",
        "discarded",
        "idle_since",
        "in_idle",
        "loop",
        "parser",
        "pool",
        "rbuf",
        "read_size",
        "requests",
        "stats",
        "transport",
    )

    def __init__(self, pool: _Pool, loop: asyncio.AbstractEventLoop, buffers: ReadBuffers) -> None:
        self.pool = pool
        self.buffers = buffers
        self.rbuf = buffers.shared
        read_size = buffers.size
        self.stats: _Stats = pool.stats
        self.loop = loop
        self.read_size = read_size
        self._high = 2 * read_size
        self._low = read_size
        self.transport: asyncio.Transport | None = None
        self.parser: Any = _ResponseParser(self)
        self.closed = False
        self.discarded = False
        self.in_idle = False
        self.idle_since = 0.0
        self.requests = 0  # requests completed on this connection
        self._reading_paused = False
        self._write_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self._waiter: asyncio.Future[None] | None = None
        #: The phase timeout is a deadline checked by a lazily re-armed timer: disarming it is
        #: ``_deadline = None`` (no ``TimerHandle`` made and cancelled per request).
        self._timer: asyncio.TimerHandle | None = None
        self._timer_due = 0.0
        self._deadline: float | None = None
        self._deadline_exc: type[UpstreamError] = ReadTimeout
        self._active = False
        self._buf: list[Chunk] = []
        self._buffered = 0
        self._writer: asyncio.Task[None] | None = None
        self._error: BaseException | None = None
        self._resp: UpstreamResponse | None = None
        self._complete = False
        self._kept: list[bytes] | None = None
        self._body_iter: AsyncIterator[bytes] | None = None
        self._in_next = False
        self._body_done = False
        self._rx = False
        self._stale = False
        self._interim = False
        self._is_head = False
        #: the request, while it waits in the loop's ``WriteBurst`` (not yet written)
        self._queued: bytes | None = None
        self._keep_alive = False
        self._headers: Headers = []
        self._head_size = 0
        self._reason = b""
        self._cl: int | None = None
        self._te: bytes | None = None
        #: body bytes still to come (a ``Content-Length`` body), and the buffer lent for a read
        self._left = 0
        self._lent: Lent | None = None
        self._bypass = False  # this body's reads go past the parser (see ``get_buffer``)
        self._read_to: float | None = None
        self._write_to: float | None = None

    # ----------------------------------------------------------------- asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.transport = transport  # TCP_NODELAY is already set: asyncio and uvloop both do
        transport.set_write_buffer_limits(WRITE_HIGH, WRITE_LOW)

    def get_buffer(self, sizehint: int) -> memoryview:
        left = self._left
        if left and (self._bypass or (left >= self.read_size and self.buffers.direct)):
            # the rest of this body is read past the parser (which is replaced at its end)
            self._bypass = True
            lent = self._lent = self.buffers.lend()
            return lent[1] if left >= self.read_size else lent[1][:left]
        self._lent = None
        return self.rbuf

    def buffer_updated(self, nbytes: int) -> None:
        lent = self._lent
        if lent is None:
            self.data_received(self.rbuf[:nbytes])
            return
        self._lent = None
        if not self._active:
            self.discard()
            return
        self._rx = True
        buf, view = lent
        self.on_body(buf if nbytes == len(buf) else bytes(view[:nbytes]))
        if not self._left:  # the parser still expects the body it did not see: a new one
            self._bypass = False
            self.parser = _ResponseParser(self)
            self.on_message_complete()
        self._after_read()

    def data_received(self, data: bytes | memoryview) -> None:
        if not self._active:  # bytes nobody asked for: the connection is out of sync
            self.discard()
            return
        self._rx = True
        if self._resp is None:
            self._head_size += len(data)
        try:
            self.parser.feed_data(data)
        except _HttpParserUpgrade:
            self.fail(RemoteProtocolError("upstream switched protocols", request_sent=True))
        except _HttpParserError:
            if self._resp is None:
                msg = "malformed HTTP response head"
            else:
                msg = "malformed HTTP response body"
            self.fail(RemoteProtocolError(msg, request_sent=True))
        if self._resp is None and self._head_size > MAX_HEAD and self._error is None:
            self.fail(RemoteProtocolError("response head too large", request_sent=True))
        self._after_read()

    def _after_read(self) -> None:
        n = self._buffered
        if n > self._high and not self._reading_paused and not self.discarded:
            self._reading_paused = True
            self.transport.pause_reading()  # type: ignore[union-attr]
        if n > self.stats.max_buffered:
            self.stats.max_buffered = n

    def eof_received(self) -> bool:
        self._lost(None)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost(exc)
        self.discard()
        dw = self._drain_waiter
        if dw is not None and not dw.done():
            dw.set_result(None)

    def pause_writing(self) -> None:
        self._write_paused = True
        # Called from within ``transport.write``: some loops (rloop) cannot take a call back
        # into the transport there, so its buffer is measured once that write has returned.
        self.loop.call_soon(self._note_send_buffer)
        if self._waiter is not None and self._resp is None and self._writer is None:
            # a large bytes body is still being flushed: the wait is for the upstream to read
            self._arm(self._write_to, WriteTimeout)

    def _note_send_buffer(self) -> None:
        t = self.transport
        if t is not None and not t.is_closing():
            size = t.get_write_buffer_size()
            if size > self.stats.max_send_buffer:
                self.stats.max_send_buffer = size

    def resume_writing(self) -> None:
        self._write_paused = False
        dw = self._drain_waiter
        if dw is not None and not dw.done():
            dw.set_result(None)
        if self._waiter is not None and self._resp is None and self._writer is None:
            self._arm(self._read_to, ReadTimeout)

    # ----------------------------------------------------------------- httptools callbacks

    def on_message_begin(self) -> None:
        if self._complete:
            self._keep_alive = False  # more bytes after a complete response
        self._reason = b""

    def on_status(self, status: bytes) -> None:
        self._reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == b"content-length":
            self._cl = int(value)
        elif name == b"transfer-encoding":  # several fields form one list (RFC 9110 §5.3)
            self._te = value if self._te is None else self._te + b"," + value
        self._headers.append((name, value.rstrip(b" \t")))

    def on_headers_complete(self) -> None:
        if self._resp is not None:  # a second response after a HEAD answer
            self._keep_alive = False
            return
        p = self.parser
        status: int = p.get_status_code()
        if status < 100 or status > 599:
            self.fail(RemoteProtocolError("invalid response status", request_sent=True))
            return
        if status < 200:
            if status == 101:
                self.fail(RemoteProtocolError("upstream switched protocols", request_sent=True))
                return
            if self._cl or self._te is not None:
                # an interim response ends with its head (RFC 9110 §15.2); llhttp would read
                # a body for it
                self.fail(RemoteProtocolError("interim response with a body", request_sent=True))
                return
            self._interim = True  # 100 Continue, 102, 103 Early Hints: skipped
            self._headers = []
            self._cl = None
            self._te = None
            return
        version: str = p.get_http_version()
        if self._is_head:
            has_body = False
            keep_alive = _keep_alive(version, self._headers)
            self._complete = True
        else:
            has_body = status != 204 and status != 304
            keep_alive = p.should_keep_alive()
            if has_body and self._te is not None and not _only_chunked(self._te):
                # bytes still transfer-coded (gzip...) are not the content: nginx answers 502
                self.fail(RemoteProtocolError("unsupported transfer coding", request_sent=True))
                return
        self._keep_alive = keep_alive
        self._left = self._cl if has_body and self._cl is not None else 0
        self._resp = UpstreamResponse(
            None, status, self._reason, version, self._headers, self._cl, has_body
        )
        self._headers = []  # chunked trailers (reported through on_header) land here: dropped
        self._wake()

    def on_body(self, body: Chunk) -> None:
        if self._is_head:
            self._keep_alive = False
            return
        self._buf.append(body)
        self._buffered += len(body)
        self._left -= len(body)
        if self._waiter is not None:
            self._wake()

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        if self._is_head:
            return
        self._complete = True
        w = self._writer
        if w is not None and not self._body_done:
            # answered before the whole request body was sent (e.g. 413): stop sending
            self._keep_alive = False
            w.cancel()
        if self._waiter is not None:
            self._wake()

    # ----------------------------------------------------------------- internals

    def _cancel_wait(self) -> None:
        self._deadline = None
        self._waiter = None

    def _wake(self) -> None:
        self._deadline = None
        w = self._waiter
        if w is not None:
            self._waiter = None
            if not w.done():
                w.set_result(None)

    def _arm(self, timeout: float | None, exc_cls: type[UpstreamError]) -> None:
        """Fail with ``exc_cls`` unless disarmed within ``timeout`` seconds (``None``: never)."""
        if timeout is None:
            self._deadline = None
            return
        due = self.loop.time() + timeout
        self._deadline = due
        self._deadline_exc = exc_cls
        t = self._timer
        if t is not None:
            if self._timer_due <= due:
                return  # it fires first and re-arms for the rest
            t.cancel()
        self._timer_due = due
        self._timer = self.loop.call_at(due, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        due = self._deadline
        if due is None or self.discarded:
            return
        if self.loop.time() < due:  # the deadline moved on since the timer was set
            self._timer_due = due
            self._timer = self.loop.call_at(due, self._on_timer)
            return
        self._deadline = None
        self._timed_out(self._deadline_exc)

    def _stop_timer(self) -> None:
        self._deadline = None
        t = self._timer
        if t is not None:
            self._timer = None
            t.cancel()

    def _timed_out(self, exc_cls: type[UpstreamError]) -> None:
        if exc_cls is WriteTimeout:
            msg = "upstream did not accept the request in time"
        elif self._resp is None:
            msg = "upstream did not answer in time"
        else:
            msg = "upstream sent no data in time"
        self.fail(exc_cls(msg, request_sent=True))

    def _drain_timed_out(self) -> None:
        """The body writer's drain timer fired (its own timer: ``_timer`` is left alone)."""
        self.fail(WriteTimeout("upstream did not accept the request in time", request_sent=True))

    def _lost(self, exc: Exception | None) -> None:
        """End of the byte stream (EOF or connection lost)."""
        if self.closed:
            return
        self.closed = True
        if not self._active or self._error is not None:
            return
        if self._resp is None:
            if exc is None:
                msg = "upstream closed the connection without answering"
            else:
                msg = "upstream reset the connection without answering"
            unsent = self._queued is not None  # still waiting for its burst: never written
            self._queued = None
            self._error = RemoteProtocolError(msg, request_sent=not unsent)
            self._stale = not self._rx
            self._keep_alive = False
        elif not self._complete:
            self._keep_alive = False
            if exc is None and self._cl is None and self._te is None:
                self._complete = True  # close-delimited body: EOF is its end
            else:
                self._error = RemoteProtocolError(
                    "upstream closed the connection before the body was complete",
                    request_sent=True,
                )
        else:
            self._keep_alive = False
        self._wake()

    def fail(self, exc: BaseException) -> None:
        """Record the error the current request ends with, and close the connection."""
        if self._error is None and not self._complete:
            self._error = exc
        self._keep_alive = False
        self.discard()
        self._wake()
        dw = self._drain_waiter
        if dw is not None and not dw.done():
            dw.set_result(None)

    def discard(self) -> None:
        """Close the connection at once and forget it in the pool (idempotent)."""
        self._keep_alive = False
        if not self.discarded:
            self.discarded = True
            self._stop_timer()  # a closed connection is not kept alive by its timer
            unsent = self._queued is not None
            self._queued = None
            if self._active and not self._complete and self._error is None:
                # closed on our side (engine closed): never mistake this for a clean EOF
                self._error = RemoteProtocolError(
                    "the upstream connection was closed", request_sent=not unsent
                )
            t = self.transport
            if t is not None:
                t.abort()
            self.pool.forget(self)
            if self._waiter is not None:
                self._wake()
            dw = self._drain_waiter
            if dw is not None and not dw.done():
                dw.set_result(None)

    async def stop_writer(self) -> None:
        """Cancel the request body writer, if still running, and wait for it."""
        w = self._writer
        if w is not None:
            self._writer = None
            if not w.done():
                w.cancel()
                await asyncio.wait((w,))

    def _take(self) -> Chunk:
        buf = self._buf
        rs = self.read_size
        first = buf[0]
        n = len(first)
        if n >= rs:
            if n == rs:
                del buf[0]
                data = first
            else:
                data = first[:rs]
                buf[0] = first[rs:]
        elif n >= _JOIN_BELOW or len(buf) == 1:
            del buf[0]
            data = first
        else:  # join the leading small pieces (never a big one), up to read_size
            i = total = 0
            for chunk in buf:
                if len(chunk) >= _JOIN_BELOW or total + len(chunk) > rs:
                    break
                total += len(chunk)
                i += 1
            data = b"".join(buf[:i])
            del buf[:i]
        self._buffered -= len(data)
        if self._reading_paused and self._buffered <= self._low:
            self._reading_paused = False
            if self.transport is not None and not self.closed and not self.discarded:
                self.transport.resume_reading()
        return data

    async def _wait_body(self) -> None:
        fut = self._waiter = self.loop.create_future()
        to = self._read_to
        if to is not None:
            self._arm(to, ReadTimeout)
        try:
            await fut
        except asyncio.CancelledError:
            self._cancel_wait()
            self.discard()
            await self.stop_writer()
            raise

    def _finish(self) -> None:
        """The response is complete: back to the pool if possible, else close."""
        self._active = False
        self._resp = None
        if (
            self._keep_alive
            and not self.closed
            and self.transport is not None
            and self.transport.get_write_buffer_size() == 0
        ):
            self._writer = None
            self._kept = None
            self._body_iter = None
            self._left = 0
            self._bypass = False
            if self._buf:
                self._buf = []
                self._buffered = 0
            if self._reading_paused:
                self._reading_paused = False
                self.transport.resume_reading()
            if self._is_head:  # the parser still expects the announced body: replace it
                self.parser = _ResponseParser(self)
            self.requests += 1
            self.pool.release(self)
        else:
            self.discard()

    def _head(self) -> UpstreamResponse | None:
        return self._resp

    def _stopped(self) -> bool:
        return self._error is not None or self.discarded


def _only_chunked(te: bytes) -> bool:
    """Whether ``chunked`` is the only transfer coding (empty list members ignored)."""
    codings = [c for c in (c.strip().lower() for c in te.split(b",")) if c]
    return codings == [b"chunked"]


def _keep_alive(version: str, headers: Headers) -> bool:
    """Keep-alive from the version and the ``Connection`` header (used for HEAD answers)."""
    tokens: set[bytes] = set()
    for name, value in headers:
        if name == b"connection":
            tokens.update(t.strip().lower() for t in value.split(b","))
    if version == "1.1":
        return b"close" not in tokens
    return b"keep-alive" in tokens and b"close" not in tokens
