"""The upstream engine against raw TCP servers that write exact bytes: protocol faults."""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from frp_core_kit import read_all, read_chunks
from frp_testing import unused_port

from frp_core._config import Limits, Timeouts
from frp_core._errors import (
    ConnectError,
    ConnectTimeout,
    PoolTimeout,
    ReadTimeout,
    RemoteProtocolError,
    WriteTimeout,
)
from frp_core._origin import Origin
from frp_core._pool import Engine

T = Timeouts(5.0, 5.0, 5.0, 5.0)
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]


class RawServer:
    """A TCP server on 127.0.0.1 whose handler writes exact bytes.

    ``handler(reader, writer, n)`` runs per connection (``n`` counts from 1); ``eof`` is set
    whenever a handler saw the client close its side.
    """

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.requests: list[bytes] = []
        self.eof = asyncio.Event()
        self.errors: list[BaseException] = []
        self.tasks: set[asyncio.Task[Any]] = set()

    async def __aenter__(self) -> RawServer:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        self.origin = Origin.parse(f"http://127.0.0.1:{port}")
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()
        for task in list(self.tasks):
            task.cancel()
        if self.tasks:
            await asyncio.wait(self.tasks)
        assert not self.errors, self.errors

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        try:
            await self.handler(reader, writer, self.connections)
        except (asyncio.CancelledError, ConnectionError):
            pass
        except BaseException as exc:  # pragma: no cover - reported at exit
            self.errors.append(exc)
        finally:
            self.tasks.discard(task)
            writer.close()

    async def read_request(self, reader: asyncio.StreamReader) -> bytes | None:
        """One request head (the body is left in the reader); ``None`` at EOF."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return None
        self.requests.append(head)
        return head

    async def wait_eof(self, reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(ConnectionError):
            while await reader.read(65536):
                pass
        self.eof.set()


@pytest.fixture
async def engine() -> AsyncIterator[Engine]:
    e = Engine()
    try:
        yield e
    finally:
        await e.aclose()


def hdrs(o: Origin) -> list[tuple[bytes, bytes]]:
    return [(b"host", o.host_header)]


def no_engine_tasks() -> bool:
    current = asyncio.current_task()
    return all(t is current or "_send_body" not in repr(t.get_coro()) for t in asyncio.all_tasks())


async def test_target_and_headers_are_byte_exact_on_the_wire(engine: Engine) -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        await srv.read_request(r)
        w.write(OK)
        await srv.wait_eof(r)

    async with RawServer(handler) as srv:
        headers = [(b"host", b"example.test"), (b"x-a", b"1"), (b"x-a", b"2"), (b"Via", b"x")]
        target = b"/a/..%2F/b?x=%20&y"
        resp = await engine.request(srv.origin, b"GET", target, headers, b"", None, T)
        assert await read_all(resp) == b"ok"
        assert srv.requests == [
            b"GET /a/..%2F/b?x=%20&y HTTP/1.1\r\n"
            b"host: example.test\r\nx-a: 1\r\nx-a: 2\r\nVia: x\r\n\r\n"
        ]


async def test_interim_responses_are_skipped(engine: Engine) -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        await srv.read_request(r)
        w.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        w.write(b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n")
        w.write(b"HTTP/1.1 201 Created\r\nContent-Length: 3\r\nX-Final: 1\r\n\r\nnew")
        await srv.wait_eof(r)

    async with RawServer(handler) as srv:
        resp = await engine.request(srv.origin, b"POST", b"/", hdrs(srv.origin), b"x", None, T)
        assert (resp.status, resp.reason) == (201, b"Created")
        assert resp.headers == [(b"content-length", b"3"), (b"x-final", b"1")]
        assert await read_all(resp) == b"new"
        assert engine.stats()["idle"] == 1


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 200 OK\r\n\r\n",  # close-delimited
        b"HTTP/1.0 200 OK\r\n\r\n",
    ],
)
async def test_close_delimited_body(engine: Engine, head: bytes) -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        await srv.read_request(r)
        w.write(head + b"until the end")
        await w.drain()
        w.close()

    async with RawServer(handler) as srv:
        resp = await engine.request(srv.origin, b"GET", b"/", hdrs(srv.origin), b"", None, T)
        assert resp.content_length is None
        assert resp.has_body
        assert await read_all(resp) == b"until the end"
        assert engine.stats()["open"] == 0


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n",
        b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n",
    ],
)
async def test_connection_close_is_not_reused(engine: Engine, head: bytes) -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        await srv.read_request(r)
        w.write(head + b"ok")
        await srv.wait_eof(r)

    async with RawServer(handler) as srv:
        resp = await engine.request(srv.origin, b"GET", b"/", hdrs(srv.origin), b"", None, T)
        assert await read_all(resp) == b"ok"
        assert engine.stats()["open"] == 0
        await asyncio.wait_for(srv.eof.wait(), 5)


async def test_http10_keep_alive_is_reused(engine: Engine) -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        while await srv.read_request(r):
            w.write(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok")

    async with RawServer(handler) as srv:
        for _ in range(2):
            resp = await engine.request(srv.origin, b"GET", b"/", hdrs(srv.origin), b"", None, T)
            assert resp.http_version == "1.0"
            assert await read_all(resp) == b"ok"
        assert srv.connections == 1


@pytest.mark.parametrize(
    "response",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",  # truncated
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n",  # cut
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\nzz\r\n",  # bad
    ],
)
async def test_incomplete_body_raises_never_ends_cleanly(engine: Engine, response: bytes) -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        await srv.read_request(r)
        w.write(response)
        await w.drain()
        w.close()

    async with RawServer(handler) as srv:
        resp = await engine.request(srv.origin, b"GET", b"/", hdrs(srv.origin), b"", None, T)
        received: list[bytes] = []

        async def drain() -> None:
            for _ in range(100):
                chunk = await resp.receive()
                assert chunk, "an incomplete body must not end with b''"
                received.append(chunk)

        with pytest.raises(RemoteProtocolError) as info:
            await drain()
        await resp.aclose()
        assert received == [b"abc"]
        assert info.value.request_sent
        assert engine.stats()["open"] == 0


async def test_chunked_trailers_are_dropped(engine: Engine) -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        while await srv.read_request(r):
            w.write(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x-sum\r\n\r\n"
                b"3\r\nabc\r\n0\r\nx-sum: 42\r\n\r\n"
            )

    async with RawServer(handler) as srv:
        for _ in range(2):
            resp = await engine.request(srv.origin, b"GET", b"/", hdrs(srv.origin), b"", None, T)
            assert await read_all(resp) == b"abc"
            assert [n for n, _ in resp.headers] == [b"transfer-encoding", b"trailer"]
        assert srv.connections == 1  # and the connection is reused


async def test_malformed_head(engine: Engine) -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        await srv.read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab")
        await srv.wait_eof(r)

    async with RawServer(handler) as srv:
        with pytest.raises(RemoteProtocolError) as info:
            await engine.request(srv.origin, b"GET", b"/", hdrs(srv.origin), b"", None, T)
        assert info.value.request_sent
        assert engine.stats()["open"] == 0


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 199 Odd\r\nContent-Length: 2\r\n\r\nok",  # an interim response with a body
        b"HTTP/1.1 103 Early Hints\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
        b"HTTP/1.1 099 Low\r\nContent-Length: 2\r\n\r\nok",  # no such status class
        b"HTTP/1.1 999 High\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nzz",  # still transfer-coded
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"2\r\nzz\r\n0\r\n\r\n",
    ],
)
async def test_invalid_response_is_an_error_and_frees_its_connection(head: bytes) -> None:
    """Refused like nginx (502 at the proxy), and the connection is closed: with a pool of
    one, the next request to a sane answer still gets through."""
    engine = Engine(limits=Limits(max_connections=1))

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        await srv.read_request(r)
        w.write(head if n == 1 else OK)
        await srv.wait_eof(r)

    try:
        async with RawServer(handler) as srv:
            with pytest.raises(RemoteProtocolError) as info:  # at the head: 502 at the proxy
                await engine.request(srv.origin, b"GET", b"/", hdrs(srv.origin), b"", None, T)
            assert info.value.request_sent
            assert engine.stats()["open"] == 0
            resp = await engine.request(srv.origin, b"GET", b"/", hdrs(srv.origin), b"", None, T)
            assert await read_all(resp) == b"ok"
    finally:
        await engine.aclose()


async def test_chunked_listed_once_per_field_is_still_chunked(engine: Engine) -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        await srv.read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n")
        await srv.wait_eof(r)

    async with RawServer(handler) as srv:
        resp = await engine.request(srv.origin, b"GET", b"/", hdrs(srv.origin), b"", None, T)
        assert await read_all(resp) == b"ok"


async def test_endless_response_head_is_refused(engine: Engine) -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        await srv.read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\n")
        with contextlib.suppress(ConnectionError):
            for i in range(100_000):  # bounded: far beyond the engine's limit
                w.write(b"x-filler-%d: %s\r\n" % (i, b"v" * 100))
                await w.drain()

    async with RawServer(handler) as srv:
        with pytest.raises(RemoteProtocolError, match="too large"):
            await engine.request(srv.origin, b"GET", b"/", hdrs(srv.origin), b"", None, T)
        assert engine.stats()["max_buffered"] == 0


async def test_unexpected_switching_protocols(engine: Engine) -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        await srv.read_request(r)
        w.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n")
        await srv.wait_eof(r)

    async with RawServer(handler) as srv:
        with pytest.raises(RemoteProtocolError):
            await engine.request(srv.origin, b"GET", b"/", hdrs(srv.origin), b"", None, T)


async def test_bytes_after_a_complete_response_discard_the_connection(engine: Engine) -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        await srv.read_request(r)
        w.write(OK + b"garbage")
        await srv.wait_eof(r)

    async with RawServer(handler) as srv:
        resp = await engine.request(srv.origin, b"GET", b"/", hdrs(srv.origin), b"", None, T)
        assert await read_all(resp) == b"ok"
        assert engine.stats()["open"] == 0


async def test_head_answer_followed_by_a_body_is_not_reused(engine: Engine) -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        await srv.read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
        await srv.wait_eof(r)

    async with RawServer(handler) as srv:
        resp = await engine.request(srv.origin, b"HEAD", b"/", hdrs(srv.origin), b"", None, T)
        assert (resp.has_body, resp.content_length) == (False, 5)
        assert await read_all(resp) == b""
        assert engine.stats()["open"] == 0


async def test_refused_is_connect_error_without_address(engine: Engine) -> None:
    port = unused_port()
    origin = Origin.parse(f"http://127.0.0.1:{port}")
    with pytest.raises(ConnectError) as info:
        await engine.request(origin, b"GET", b"/", hdrs(origin), b"", None, T)
    assert not info.value.request_sent
    assert str(info.value) == "connection refused"
    assert str(port) not in str(info.value)
    assert engine.stats()["open"] == 0


@pytest.mark.skipif(sys.platform != "linux", reason="relies on Linux dropping SYNs")
async def test_connect_timeout(engine: Engine) -> None:
    # a listening socket whose accept queue is full: the kernel drops further SYNs
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = []
        try:
            for _ in range(4):
                filler = socket.socket()
                fillers.append(filler)
                filler.setblocking(False)
                with contextlib.suppress(BlockingIOError):
                    filler.connect(("127.0.0.1", port))
            origin = Origin.parse(f"http://127.0.0.1:{port}")
            quick = Timeouts(0.2, 5.0, 5.0, 5.0)
            with pytest.raises(ConnectTimeout) as info:
                await engine.request(origin, b"GET", b"/", hdrs(origin), b"", None, quick)
            assert not info.value.request_sent
            assert engine.stats()["open"] == 0
        finally:
            for filler in fillers:
                filler.close()


async def test_silent_upstream_is_read_timeout(engine: Engine) -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        await srv.read_request(r)
        await srv.wait_eof(r)

    async with RawServer(handler) as srv:
        quick = Timeouts(5.0, 0.1, 5.0, 5.0)
        with pytest.raises(ReadTimeout) as info:
            await engine.request(srv.origin, b"GET", b"/", hdrs(srv.origin), b"", None, quick)
        assert info.value.request_sent
        await asyncio.wait_for(srv.eof.wait(), 5)  # the connection was closed
        assert engine.stats()["open"] == 0


async def test_read_timeout_is_per_read_in_the_body(engine: Engine) -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        await srv.read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        await srv.wait_eof(r)

    async with RawServer(handler) as srv:
        quick = Timeouts(5.0, 0.1, 5.0, 5.0)
        resp = await engine.request(srv.origin, b"GET", b"/", hdrs(srv.origin), b"", None, quick)
        assert await resp.receive() == b"abc"
        with pytest.raises(ReadTimeout):
            await resp.receive()
        await resp.aclose()
        await asyncio.wait_for(srv.eof.wait(), 5)


@pytest.mark.parametrize("length", [None, 256 * 1024 * 1024], ids=["chunked", "content-length"])
async def test_upstream_that_never_reads_is_write_timeout(
    engine: Engine, length: int | None
) -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        await srv.read_request(r)
        await asyncio.Event().wait()  # never reads the body

    async def body() -> AsyncIterator[bytes]:
        block = b"x" * (1024 * 1024)
        for _ in range(256):
            yield block

    async with RawServer(handler) as srv:
        quick = Timeouts(5.0, 5.0, 0.2, 5.0)
        with pytest.raises(WriteTimeout) as info:
            await engine.request(srv.origin, b"PUT", b"/", hdrs(srv.origin), body(), length, quick)
        assert info.value.request_sent
        # flow control held: the upload waited for the upstream instead of buffering 256 MiB
        # (big chunks go out through ``writelines``, which never pauses the protocol by
        # itself without the fix of CPython gh-127655, e.g. on 3.13.0)
        assert 0 < engine.stats()["max_send_buffer"] < 4 * 1024 * 1024
        assert engine.stats()["open"] == 0
        assert no_engine_tasks()


def _keep_alive_then(action: str) -> Handler:
    """Answer the first request of the first connection, then do ``action`` on its second."""

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        server: RawServer = handler.server  # type: ignore[attr-defined]
        first = True
        while True:
            head = await server.read_request(r)
            if head is None:
                return
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            body = await r.readexactly(length) if length else b""
            if n == 1 and not first:
                if action == "close":
                    w.close()
                else:
                    w.transport.abort()
                return
            first = False
            w.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))

    return handler


@pytest.mark.parametrize("action", ["close", "reset"])
async def test_stale_keep_alive_connection_is_retried_once(engine: Engine, action: str) -> None:
    handler = _keep_alive_then(action)
    async with RawServer(handler) as srv:
        handler.server = srv  # type: ignore[attr-defined]
        o = srv.origin
        resp = await engine.request(o, b"PUT", b"/1", hdrs(o), b"one", None, T)
        assert await read_all(resp) == b"one"
        # the upstream drops the reused connection: the (idempotent) request goes again
        resp = await engine.request(o, b"PUT", b"/2", hdrs(o), b"two", None, T)
        assert await read_all(resp) == b"two"
        assert srv.connections == 2
        assert [h.split(b" ")[1] for h in srv.requests] == [b"/1", b"/2", b"/2"]


async def test_stale_connection_never_sends_a_post_twice(engine: Engine) -> None:
    handler = _keep_alive_then("close")
    async with RawServer(handler) as srv:
        handler.server = srv  # type: ignore[attr-defined]
        o = srv.origin
        resp = await engine.request(o, b"POST", b"/1", hdrs(o), b"one", None, T)
        assert await read_all(resp) == b"one"
        # the upstream read the POST, then closed without answering: it may have acted on it
        with pytest.raises(RemoteProtocolError) as info:
            await engine.request(o, b"POST", b"/2", hdrs(o), b"two", None, T)
        assert info.value.request_sent
        assert [h.split(b" ")[1] for h in srv.requests] == [b"/1", b"/2"]


async def test_post_lost_before_its_write_burst_is_sent_once_on_a_new_connection(
    engine: Engine,
) -> None:
    """A request waits for the end of the loop pass before it is written (``WriteBurst``); a
    reused connection that breaks meanwhile never carried it, so even a POST is sent again."""

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        for _ in range(10):
            head = await srv.read_request(r)
            if head is None:
                return
            await r.readexactly(3)
            w.write(OK)

    async with RawServer(handler) as srv:
        o = srv.origin
        resp = await engine.request(o, b"POST", b"/1", hdrs(o), b"one", None, T)
        assert await read_all(resp) == b"ok"
        task = asyncio.ensure_future(engine.request(o, b"POST", b"/2", hdrs(o), b"two", None, T))
        await asyncio.sleep(0)  # one pass: the request is queued on the pooled connection
        (conn,) = engine._pools[o._key].conns
        assert conn._queued is not None
        assert conn.transport is not None
        conn.transport.abort()
        assert await read_all(await task) == b"ok"
        assert [h.split(b" ")[1] for h in srv.requests] == [b"/1", b"/2"]  # /2 exactly once
        assert srv.connections == 2


async def test_stale_connection_replays_a_streamed_body(engine: Engine) -> None:
    handler = _keep_alive_then("close")

    async def body() -> AsyncIterator[bytes]:
        yield b"stream"
        yield b"ed"

    async with RawServer(handler) as srv:
        handler.server = srv  # type: ignore[attr-defined]
        o = srv.origin
        resp = await engine.request(o, b"PUT", b"/1", hdrs(o), b"one", None, T)
        assert await read_all(resp) == b"one"
        resp = await engine.request(o, b"PUT", b"/2", hdrs(o), body(), 8, T)
        assert await read_all(resp) == b"streamed"
        assert srv.connections == 2


async def test_stale_retry_happens_only_once(engine: Engine) -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        await srv.read_request(r)
        if n == 1:
            w.write(OK)
            await srv.read_request(r)
        # every later request: closed without an answer

    async with RawServer(handler) as srv:
        o = srv.origin
        resp = await engine.request(o, b"GET", b"/", hdrs(o), b"", None, T)
        assert await read_all(resp) == b"ok"
        with pytest.raises(RemoteProtocolError) as info:
            await engine.request(o, b"GET", b"/", hdrs(o), b"", None, T)
        assert info.value.request_sent
        assert srv.connections == 2  # the first (reused) and exactly one fresh connection


async def test_fresh_connection_closed_without_answer_is_not_retried(engine: Engine) -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        await srv.read_request(r)

    async with RawServer(handler) as srv:
        o = srv.origin
        with pytest.raises(RemoteProtocolError) as info:
            await engine.request(o, b"GET", b"/", hdrs(o), b"", None, T)
        assert info.value.request_sent
        assert srv.connections == 1


async def test_idle_connection_closed_by_upstream_is_dropped(engine: Engine) -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        await srv.read_request(r)
        w.write(OK)
        await w.drain()
        if n == 1:
            w.write_eof()  # close our side while the client keeps the connection idle
            await srv.wait_eof(r)
        else:
            await srv.read_request(r)

    async with RawServer(handler) as srv:
        o = srv.origin
        resp = await engine.request(o, b"GET", b"/", hdrs(o), b"", None, T)
        assert await read_all(resp) == b"ok"
        await asyncio.wait_for(srv.eof.wait(), 5)  # the engine closed it on seeing EOF
        assert engine.stats()["open"] == 0
        resp = await engine.request(o, b"GET", b"/", hdrs(o), b"", None, T)
        assert await read_all(resp) == b"ok"
        assert srv.connections == 2


async def test_cancel_mid_body_closes_the_connection(engine: Engine) -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        await srv.read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npart")
        await srv.wait_eof(r)

    async with RawServer(handler) as srv:
        o = srv.origin
        got = asyncio.Event()

        async def client() -> None:
            resp = await engine.request(o, b"GET", b"/", hdrs(o), b"", None, T)
            try:
                for _ in range(100):
                    if not await resp.receive():
                        break
                    got.set()
            finally:
                await resp.aclose()

        task = asyncio.ensure_future(client())
        await asyncio.wait_for(got.wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.wait_for(srv.eof.wait(), 5)  # the upstream sees the disconnect
        assert engine.stats()["open"] == 0


async def test_receive_after_closing_an_unfinished_response_raises(engine: Engine) -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        await srv.read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npart")
        await srv.wait_eof(r)

    async with RawServer(handler) as srv:
        o = srv.origin
        resp = await engine.request(o, b"GET", b"/", hdrs(o), b"", None, T)
        await resp.aclose()
        await resp.aclose()  # idempotent
        with pytest.raises(RemoteProtocolError):
            await resp.receive()
        await asyncio.wait_for(srv.eof.wait(), 5)


async def test_cancel_during_streamed_upload_stops_the_writer(engine: Engine) -> None:
    started = asyncio.Event()

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        await srv.read_request(r)
        await srv.wait_eof(r)

    async def body() -> AsyncIterator[bytes]:
        yield b"first"
        started.set()
        await asyncio.Event().wait()  # the client never sends the rest
        yield b"never"

    async with RawServer(handler) as srv:
        o = srv.origin
        task = asyncio.ensure_future(engine.request(o, b"POST", b"/", hdrs(o), body(), None, T))
        await asyncio.wait_for(started.wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert no_engine_tasks()
        await asyncio.wait_for(srv.eof.wait(), 5)
        assert engine.stats()["open"] == 0


async def test_early_answer_during_upload(engine: Engine) -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        await srv.read_request(r)
        w.write(b"HTTP/1.1 413 Content Too Large\r\nContent-Length: 3\r\n\r\nbig")
        await srv.wait_eof(r)

    async def body() -> AsyncIterator[bytes]:
        yield b"x" * 1000
        await asyncio.Event().wait()  # still uploading when the answer comes
        yield b"never"

    async with RawServer(handler) as srv:
        o = srv.origin
        resp = await engine.request(o, b"POST", b"/", hdrs(o), body(), None, T)
        assert resp.status == 413
        assert await read_all(resp) == b"big"
        assert no_engine_tasks()
        assert engine.stats()["open"] == 0  # request unfinished: not reusable


async def test_streaming_echo_reads_while_uploading(engine: Engine) -> None:
    """The upstream answers each request chunk at once; the next chunk depends on it."""

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        await srv.read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(3):
            size = int((await r.readuntil(b"\r\n"))[:-2], 16)
            data = await r.readexactly(size + 2)
            w.write(b"%x\r\n%s\r\n" % (size, data[:-2].upper()))
        assert await r.readuntil(b"\r\n\r\n") == b"0\r\n\r\n"
        w.write(b"0\r\n\r\n")
        await srv.read_request(r)

    echoed: asyncio.Queue[bytes] = asyncio.Queue()

    async def body() -> AsyncIterator[bytes]:
        for word in (b"a", b"b", b"c"):
            yield word
            assert await asyncio.wait_for(echoed.get(), 5) == word.upper()

    async with RawServer(handler) as srv:
        o = srv.origin
        resp = await engine.request(o, b"POST", b"/", hdrs(o), body(), None, T)
        for _ in range(3):
            await echoed.put(await resp.receive())
        assert await resp.receive() == b""
        await resp.aclose()
        assert engine.stats()["idle"] == 1  # both directions complete: reusable


async def test_response_buffering_is_bounded() -> None:
    read_size = 64 * 1024
    small = Engine(read_size=read_size)
    size = 16 * 1024 * 1024

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        await srv.read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
        block = b"y" * (1024 * 1024)
        for _ in range(16):
            w.write(block)
            await w.drain()
        await srv.read_request(r)

    async with RawServer(handler) as srv:
        o = srv.origin
        try:
            resp = await small.request(o, b"GET", b"/", hdrs(o), b"", None, T)
            for _ in range(200):  # let the upstream push while nobody reads
                await asyncio.sleep(0)
            # reading paused above 2 x read_size (one more read of at most read_size landed)
            assert 2 * read_size < small.stats()["max_buffered"] <= 3 * read_size
            assert len(await read_all(resp)) == size
        finally:
            await small.aclose()


async def test_idle_connections_expire_without_new_traffic() -> None:
    engine = Engine(limits=Limits(keepalive_expiry=0.05))

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        await srv.read_request(r)
        w.write(OK)
        await srv.wait_eof(r)

    async with RawServer(handler) as srv:
        o = srv.origin
        try:
            resp = await engine.request(o, b"GET", b"/", hdrs(o), b"", None, T)
            assert await read_all(resp) == b"ok"
            assert engine.stats()["idle"] == 1
            await asyncio.wait_for(srv.eof.wait(), 5)  # closed by the expiry sweep
            assert engine.stats()["open"] == 0
        finally:
            await engine.aclose()


async def test_engine_aclose_closes_connections_in_use_and_fails_waiters() -> None:
    engine = Engine(limits=Limits(max_connections=1))

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        await srv.read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        await srv.wait_eof(r)

    async with RawServer(handler) as srv:
        o = srv.origin
        resp = await engine.request(o, b"GET", b"/", hdrs(o), b"", None, T)
        waiter = asyncio.ensure_future(engine.request(o, b"GET", b"/", hdrs(o), b"", None, T))
        for _ in range(100):
            if engine.stats()["waiting"]:
                break
            await asyncio.sleep(0)
        await engine.aclose()
        with pytest.raises(PoolTimeout):
            await waiter
        assert await resp.receive() == b"abc"
        with pytest.raises(RemoteProtocolError):
            await resp.receive()
        await resp.aclose()
        await asyncio.wait_for(srv.eof.wait(), 5)
        assert engine.stats()["open"] == 0


async def test_engine_aclose_during_a_close_delimited_body_is_not_a_clean_end() -> None:
    engine = Engine()

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        await srv.read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\n\r\nabc")
        await srv.wait_eof(r)

    async with RawServer(handler) as srv:
        o = srv.origin
        resp = await engine.request(o, b"GET", b"/", hdrs(o), b"", None, T)
        assert await resp.receive() == b"abc"
        waiting = asyncio.ensure_future(resp.receive())
        await asyncio.sleep(0)
        await engine.aclose()
        with pytest.raises(RemoteProtocolError):
            await asyncio.wait_for(waiting, 5)
        await resp.aclose()


async def test_cancelled_pool_waiter_does_not_leak_its_slot() -> None:
    engine = Engine(limits=Limits(max_connections=1))

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        while await srv.read_request(r):
            w.write(OK)

    async with RawServer(handler) as srv:
        o = srv.origin
        try:
            held = await engine.request(o, b"GET", b"/", hdrs(o), b"", None, T)
            waiter = asyncio.ensure_future(engine.request(o, b"GET", b"/", hdrs(o), b"", None, T))
            for _ in range(100):
                if engine.stats()["waiting"]:
                    break
                await asyncio.sleep(0)
            waiter.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiter
            assert await read_all(held) == b"ok"
            for _ in range(3):  # the one connection is still usable, and reused
                resp = await engine.request(o, b"GET", b"/", hdrs(o), b"", None, T)
                assert await read_all(resp) == b"ok"
            assert (engine.stats()["open"], srv.connections) == (1, 1)
        finally:
            await engine.aclose()


async def test_small_pieces_are_joined_up_to_read_size() -> None:
    engine = Engine(read_size=1000)

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        await srv.read_request(r)
        pieces = b"".join(b"1\r\n%d\r\n" % (i % 10) for i in range(1500))
        w.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + pieces + b"0\r\n\r\n")
        await srv.wait_eof(r)

    async with RawServer(handler) as srv:
        o = srv.origin
        try:
            resp = await engine.request(o, b"GET", b"/", hdrs(o), b"", None, T)
            sizes = [len(chunk) for chunk in await read_chunks(resp)]
            assert sum(sizes) == 1500
            assert max(sizes) <= 1000
            assert len(sizes) < 100  # not one chunk per one-byte piece
        finally:
            await engine.aclose()


async def test_pool_wait_is_fifo() -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        while head := await srv.read_request(r):
            w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n" + head[5:6])

    engine = Engine(limits=Limits(max_connections=1))
    async with RawServer(handler) as srv:
        o = srv.origin
        try:
            held = await engine.request(o, b"GET", b"/0", hdrs(o), b"", None, T)
            order: list[bytes] = []

            async def one(i: int) -> None:
                resp = await engine.request(o, b"GET", b"/%d" % i, hdrs(o), b"", None, T)
                order.append(await read_all(resp))

            tasks = []
            for i in range(1, 4):
                tasks.append(asyncio.ensure_future(one(i)))
                for _ in range(100):
                    if engine.stats()["waiting"] == i:
                        break
                    await asyncio.sleep(0)
            assert engine.stats()["waiting"] == 3
            assert await read_all(held) == b"0"
            await asyncio.gather(*tasks)
            assert order == [b"1", b"2", b"3"]
            assert srv.connections == 1
        finally:
            await engine.aclose()


# -- long Content-Length bodies, read past the parser into buffers that become the chunks ---

LONG_READ = 64 * 1024


async def serve_long_body(
    srv: RawServer,
    r: asyncio.StreamReader,
    w: asyncio.StreamWriter,
    body: bytes,
    *,
    then: bytes = b"",
    cut_at: int | None = None,
) -> None:
    """Answer with ``body`` in odd-sized writes (reads end anywhere), then ``then``; with
    ``cut_at``, close the connection after that many body bytes.  A second request on the
    connection is answered ``ok``."""
    await srv.read_request(r)
    w.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body))
    sent = body if cut_at is None else body[:cut_at]
    for i in range(0, len(sent), 77_777):
        w.write(sent[i : i + 77_777])
        await w.drain()
    if cut_at is not None:
        return
    w.write(then)
    if await srv.read_request(r) is not None:
        w.write(OK)
    await srv.wait_eof(r)


def random_bytes(n: int) -> bytes:
    return random.Random(n).randbytes(n)


async def test_long_body_is_intact_kept_chunks_stay_intact_and_connection_is_reused() -> None:
    engine = Engine(read_size=LONG_READ)
    body = random_bytes(20 * LONG_READ + 123)

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        await serve_long_body(srv, r, w, body)

    async with RawServer(handler) as srv:
        o = srv.origin
        try:
            resp = await engine.request(o, b"GET", b"/", hdrs(o), b"", None, T)
            chunks = await read_chunks(resp)  # kept: a kept chunk must never be read into again
            assert b"".join(chunks) == body
            # most of it went past the parser: the read buffers themselves were handed out
            assert sum(type(c) is bytearray for c in chunks) >= 10
            again = await engine.request(o, b"GET", b"/", hdrs(o), b"", None, T)
            assert await read_all(again) == b"ok"
            assert srv.connections == 1  # the parser was replaced: the connection stays usable
        finally:
            await engine.aclose()


async def test_long_body_cut_short_raises_never_ends_cleanly() -> None:
    engine = Engine(read_size=LONG_READ)
    body = random_bytes(20 * LONG_READ)
    cut = 7 * LONG_READ + 5

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        await serve_long_body(srv, r, w, body, cut_at=cut)

    async with RawServer(handler) as srv:
        o = srv.origin
        try:
            resp = await engine.request(o, b"GET", b"/", hdrs(o), b"", None, T)
            received = []

            async def drain() -> None:
                for _ in range(10_000):
                    chunk = await resp.receive()
                    assert chunk, "an incomplete body must not end with b''"
                    received.append(chunk)

            with pytest.raises(RemoteProtocolError):
                await drain()
            await resp.aclose()
            assert b"".join(received) == body[:cut]
            assert engine.stats()["open"] == 0
        finally:
            await engine.aclose()


async def test_bytes_after_a_long_body_discard_the_connection() -> None:
    engine = Engine(read_size=LONG_READ)
    body = random_bytes(3 * LONG_READ + 1)

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        await serve_long_body(srv, r, w, body, then=b"garbage")

    async with RawServer(handler) as srv:
        o = srv.origin
        try:
            resp = await engine.request(o, b"GET", b"/", hdrs(o), b"", None, T)
            assert await read_all(resp) == body  # the body ends at its length
            # the garbage then arrives on the idle connection, which is closed for it
            await asyncio.wait_for(srv.eof.wait(), 5)
            assert engine.stats()["open"] == 0
            assert srv.requests[1:] == []  # never used again
        finally:
            await engine.aclose()
