"""The upstream engine: per-origin LIFO pools of HTTP/1.1 connections.

Checkout and return are O(1): each origin has a deque of idle connections (newest at the
right), a count of open connections and a FIFO of waiters.  An idle connection past its
keep-alive expiry is closed when it is popped, or by one sweep timer per pool.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import socket
import ssl
from collections.abc import AsyncIterable

from ._body import UpstreamResponse
from ._buffers import ReadBuffers
from ._burst import WriteBurst
from ._config import Limits, Timeouts
from ._connection import Connection
from ._errors import ConnectError, ConnectTimeout, LocalProtocolError, PoolTimeout
from ._headers import Headers
from ._origin import Origin
from ._send import Retry, exchange

__all__ = ["Engine", "UpstreamResponse"]

_DEFAULT_LIMITS = Limits()


class _Stats:
    __slots__ = ("created", "max_buffered", "max_send_buffer", "reused")

    def __init__(self) -> None:
        self.created = 0  #: connections opened
        self.reused = 0  #: requests sent on a connection that had served one before
        self.max_buffered = 0  #: peak unread response body bytes on one connection
        self.max_send_buffer = 0  #: peak bytes waiting in one transport's write buffer


class _Pool:
    """The connections of one origin."""

    __slots__ = (
        "closed",
        "conns",
        "engine",
        "expiry",
        "idle",
        "loop",
        "max_idle",
        "max_open",
        "open",
        "origin",
        "stats",
        "sweeper",
        "waiters",
    )

    def __init__(self, engine: Engine, origin: Origin, loop: asyncio.AbstractEventLoop) -> None:
        limits = engine.limits
        self.engine = engine
        self.origin = origin
        self.loop = loop
        self.stats = engine._stats
        self.max_open = limits.max_connections
        self.max_idle = limits.max_keepalive
        self.expiry = limits.keepalive_expiry
        self.idle: collections.deque[Connection] = collections.deque()
        self.conns: set[Connection] = set()  # every open connection, idle or in use
        self.open = 0  # open connections plus connection attempts under way
        self.waiters: collections.deque[asyncio.Future[Connection | None]] = collections.deque()
        self.sweeper: asyncio.TimerHandle | None = None
        self.closed = False

    def take(self) -> Connection | None:
        """The most recently used idle connection that is still fresh, or ``None``."""
        idle = self.idle
        while idle:
            conn = idle.pop()
            conn.in_idle = False
            if conn.closed or conn.discarded:
                conn.discard()
                continue
            if self.loop.time() - conn.idle_since >= self.expiry:
                # LIFO: every connection below this one has been idle even longer
                conn.discard()
                while idle:
                    old = idle.pop()
                    old.in_idle = False
                    old.discard()
                return None
            return conn
        return None

    def release(self, conn: Connection) -> None:
        """A connection finished a response cleanly: hand it to a waiter or keep it idle."""
        waiters = self.waiters
        while waiters:
            w = waiters.popleft()
            if not w.done():
                w.set_result(conn)
                return
        if len(self.idle) >= self.max_idle or self.closed:
            conn.discard()
            return
        conn.idle_since = self.loop.time()
        conn.in_idle = True
        self.idle.append(conn)
        if self.sweeper is None:
            self.sweeper = self.loop.call_later(self.expiry, self._sweep)

    def forget(self, conn: Connection) -> None:
        """A connection was closed: free its slot (called once per connection)."""
        if conn in self.conns:
            self.conns.discard(conn)
            self.open -= 1
            if conn.in_idle:
                conn.in_idle = False
                self.idle.remove(conn)
            self._wake_one()

    def _wake_one(self) -> None:
        """Give a free slot to the first live waiter (it will open a connection)."""
        waiters = self.waiters
        while waiters:
            w = waiters.popleft()
            if not w.done():
                self.open += 1
                w.set_result(None)
                return

    def _sweep(self) -> None:
        self.sweeper = None
        idle = self.idle
        now = self.loop.time()
        while idle and now - idle[0].idle_since >= self.expiry:
            conn = idle.popleft()
            conn.in_idle = False
            conn.discard()
        if idle:
            delay = idle[0].idle_since + self.expiry - now
            self.sweeper = self.loop.call_later(max(delay, 0.01), self._sweep)

    def close(self) -> None:
        """Close every connection and fail every waiter (the engine is shutting down)."""
        self.closed = True
        while self.waiters:
            w = self.waiters.popleft()
            if not w.done():
                w.set_exception(PoolTimeout("the upstream engine was closed"))
        if self.sweeper is not None:
            self.sweeper.cancel()
            self.sweeper = None
        for conn in list(self.conns):
            conn.discard()
        self.idle.clear()


class Engine:
    """A pooled HTTP/1.1 client for the proxy: raw headers in, raw headers out.

    ``request`` sends exactly the request line and headers it is given plus the body framing
    (``content-length`` or ``transfer-encoding: chunked``), nothing else: no cookies, no
    ``User-Agent``, no ``Accept-Encoding``, no URL normalisation.
    """

    def __init__(
        self,
        *,
        limits: Limits = _DEFAULT_LIMITS,
        ssl_context: ssl.SSLContext | None = None,
        read_size: int = 1 << 20,
    ) -> None:
        if read_size < 1:
            raise ValueError("read_size must be positive")
        self.limits = limits
        self.read_size = read_size
        self._ssl = ssl_context
        self._pools: dict[tuple[str, str, int], _Pool] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._burst: WriteBurst | None = None
        self._stats = _Stats()
        #: the read buffers every connection shares (see ``Connection``)
        self._buffers = ReadBuffers(read_size)

    # ----------------------------------------------------------------- public API

    async def request(
        self,
        origin: Origin,
        method: bytes,
        target: bytes,
        headers: Headers,
        body: bytes | AsyncIterable[bytes],
        content_length: int | None,
        timeouts: Timeouts,
    ) -> UpstreamResponse:
        """Send one request; return once the head of the final response has arrived.

        ``target`` goes on the request line byte for byte.  ``headers`` must be complete
        (``host`` included); the engine adds only ``content-length`` (known length) or
        ``transfer-encoding: chunked`` (an iterable body of unknown length).
        """
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._rebind(loop)
        pool = self._pools.get(origin._key)
        if pool is None:
            pool = self._pools[origin._key] = _Pool(self, origin, loop)

        # request head
        if body.__class__ is not bytes and isinstance(body, bytearray | memoryview):
            body = bytes(body)
        if isinstance(body, bytes):
            if content_length is None:
                framing = b"content-length: %d\r\n\r\n" % len(body) if body else b"\r\n"
            elif content_length != len(body):
                raise LocalProtocolError("request body length differs from its Content-Length")
            else:
                framing = b"content-length: %d\r\n\r\n" % content_length
        elif content_length is None:
            framing = b"transfer-encoding: chunked\r\n\r\n"
        else:
            framing = b"content-length: %d\r\n\r\n" % content_length
        parts = [method, b" ", target, b" HTTP/1.1\r\n"]
        for name, value in headers:
            parts += (name, b": ", value, b"\r\n")
        parts.append(framing)
        head = b"".join(parts)
        is_head = method == b"HEAD"

        conn = pool.take()
        if conn is None:
            conn = await self._acquire(pool, timeouts)
        if conn.requests:
            self._stats.reused += 1
        try:
            return await exchange(
                conn, head, body, content_length, is_head, timeouts.read, timeouts.write,
                conn.requests > 0, self._burst,
            )  # fmt: skip
        except Retry as retry:
            # a reused connection was already closed by the upstream: once more, on a new one
            conn = await self._acquire(pool, timeouts, fresh=True)
            return await exchange(
                conn,
                head,
                retry.body,
                content_length,
                is_head,
                timeouts.read,
                timeouts.write,
                False,
                self._burst,
            )

    async def aclose(self) -> None:
        """Close every connection (idle and in use); the engine stays usable afterwards."""
        pools = list(self._pools.values())
        self._pools.clear()
        for pool in pools:
            pool.close()

    def stats(self) -> dict[str, int]:
        """Counters for tests and benchmarks."""
        s = self._stats
        open_ = sum(len(p.conns) for p in self._pools.values())
        idle = sum(len(p.idle) for p in self._pools.values())
        return {
            "open": open_,
            "idle": idle,
            "in_use": open_ - idle,
            "created": s.created,
            "reused": s.reused,
            "waiting": sum(sum(not w.done() for w in p.waiters) for p in self._pools.values()),
            "max_buffered": s.max_buffered,
            "max_send_buffer": s.max_send_buffer,
        }

    # ----------------------------------------------------------------- internals

    def _rebind(self, loop: asyncio.AbstractEventLoop) -> None:
        """First use, or use from another event loop: connections of the old loop are dropped."""
        old = self._pools
        self._pools = {}
        self._loop = loop
        self._burst = WriteBurst(loop)
        for pool in old.values():
            pool.closed = True
            pool.waiters.clear()
            for conn in list(pool.conns):
                with contextlib.suppress(RuntimeError):  # the old loop may be closed
                    conn.discard()

    async def _acquire(self, pool: _Pool, timeouts: Timeouts, fresh: bool = False) -> Connection:
        """A connection for ``pool``: an idle one, a new one, or one freed while waiting."""
        if not fresh:
            conn = pool.take()
            if conn is not None:
                return conn
        if pool.max_open is None or pool.open < pool.max_open:
            pool.open += 1
            return await self._connect(pool, timeouts)
        fut: asyncio.Future[Connection | None] = pool.loop.create_future()
        pool.waiters.append(fut)
        timer = None
        if timeouts.pool is not None:
            timer = pool.loop.call_later(timeouts.pool, _pool_timed_out, fut)
        try:
            got = await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                handed = fut.result()
                if handed is None:  # a slot was reserved for us: give it on
                    pool.open -= 1
                    pool._wake_one()
                else:
                    pool.release(handed)
            raise
        finally:
            if timer is not None:
                timer.cancel()
        if got is None:  # a slot was reserved for us
            return await self._connect(pool, timeouts)
        return got

    async def _connect(self, pool: _Pool, timeouts: Timeouts) -> Connection:
        """Open a connection; the caller reserved the slot (``pool.open``) for it."""
        origin = pool.origin
        conn = Connection(pool, pool.loop, self._buffers)
        ctx = None
        if origin.scheme == "https":
            ctx = self._ssl
            if ctx is None:
                ctx = self._ssl = _default_ssl_context()
        try:
            async with asyncio.timeout(timeouts.connect):
                await pool.loop.create_connection(
                    lambda: conn,
                    origin.host,
                    origin.port,
                    ssl=ctx,
                    server_hostname=origin.host if ctx is not None else None,
                )
        except BaseException as exc:
            conn.discarded = True
            pool.open -= 1  # the connection never entered pool.conns: free the slot here
            pool._wake_one()
            if conn.transport is not None:
                conn.transport.abort()
            if isinstance(exc, TimeoutError):
                raise ConnectTimeout("connection to the upstream timed out") from None
            if isinstance(exc, OSError):
                raise ConnectError(_connect_message(exc)) from None
            raise
        self._stats.created += 1
        if conn.discarded:  # pragma: no cover - closed between connect and return
            pool.open -= 1
            pool._wake_one()
            raise ConnectError("upstream closed the connection at once")
        pool.conns.add(conn)
        return conn


def _pool_timed_out(fut: asyncio.Future[Connection | None]) -> None:
    if not fut.done():
        fut.set_exception(PoolTimeout("no upstream connection became free in time"))


def _default_ssl_context() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def _connect_message(exc: OSError) -> str:
    """A description of a connect failure that never contains the address."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return "TLS certificate verification failed"
    if isinstance(exc, ssl.SSLError):
        return "TLS handshake failed"
    if isinstance(exc, socket.gaierror):
        return "name resolution failed"
    code = exc.errno
    if code is None and "Errno 111" in str(exc):  # several addresses, all refused
        code = errno.ECONNREFUSED
    if code == errno.ECONNREFUSED:
        return "connection refused"
    if code in (errno.ENETUNREACH, errno.EHOSTUNREACH):
        return "upstream unreachable"
    if code == errno.ECONNRESET:
        return "connection reset during connect"
    return "connection failed"
