"""A controllable raw HTTP/1.1 upstream on 127.0.0.1 that misbehaves on demand.

The server runs its own asyncio loop in a daemon thread (like ``frp_testing.run_server``), so it
serves any test whatever its event loop.  Its listening socket is bound and listening before
the thread starts: no sleep is needed before connecting.  It records everything it receives,
per connection, and signals with ``threading.Event`` objects that tests wait on.

``server.mode`` selects the behaviour for the *next* request (read when a request head has
arrived); see :data:`MODES`.  Every mode first reads the complete request (head and body, by
``Content-Length`` or chunked framing) unless the client stops sending first.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import socket
import struct
import threading
from collections.abc import Iterator
from typing import Any

__all__ = ["MODES", "PATTERN", "Connection", "FaultServer", "Request", "fault_server", "pattern"]

#: 1 MiB of deterministic bytes; large bodies repeat it (see :func:`pattern`).
PATTERN = bytes(range(256)) * 4096

OK_BODY = b"hello from the fault server"


def pattern(n: int, offset: int = 0) -> bytes:
    """``n`` bytes of the endless repetition of :data:`PATTERN`, starting at ``offset``."""
    out = bytearray()
    pos = offset % len(PATTERN)
    while len(out) < n:
        take = min(n - len(out), len(PATTERN) - pos)
        out += PATTERN[pos : pos + take]
        pos = 0
    return bytes(out)


@dataclasses.dataclass
class Request:
    """One request as it arrived: raw head bytes, body bytes, and whether the body completed."""

    head: bytes
    body: bytearray = dataclasses.field(default_factory=bytearray)
    complete: bool = False
    expected: int | None = None  #: declared Content-Length, ``None`` for chunked/no body

    @property
    def request_line(self) -> bytes:
        return self.head.split(b"\r\n", 1)[0]

    @property
    def target(self) -> bytes:
        return self.request_line.split(b" ")[1]

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        out = []
        for line in self.head.split(b"\r\n")[1:]:
            if line:
                name, _, value = line.partition(b":")
                out.append((name.lower(), value.strip(b" \t")))
        return out

    def header(self, name: bytes) -> list[bytes]:
        return [v for n, v in self.headers if n == name.lower()]


@dataclasses.dataclass
class Connection:
    """One accepted upstream connection."""

    index: int
    raw: bytearray = dataclasses.field(default_factory=bytearray)
    requests: list[Request] = dataclasses.field(default_factory=list)
    sent: int = 0  #: body bytes written in ``stream`` mode
    peer_closed: threading.Event = dataclasses.field(default_factory=threading.Event)
    request_started: threading.Event = dataclasses.field(default_factory=threading.Event)
    finished: threading.Event = dataclasses.field(default_factory=threading.Event)


class _PeerGone(Exception):
    pass


#: Behaviours (``server.mode``), each described by what the client of the proxy should see.
MODES = {
    "ok": "a normal 200 with a fixed-length body",
    "hang": "accept, read the request, never answer",
    "hold": "answer 200 only once release() is called",
    "close_before_status": "close (FIN) without a byte of response",
    "reset_before_status": "reset (RST) without a byte of response",
    "partial_status": "send half a status line, then close",
    "fixed_close": "Content-Length body, close after 1000 of 100000 bytes",
    "fixed_reset": "Content-Length body, reset after 1000 of 100000 bytes",
    "chunked_close": "chunked body, close after the first chunk",
    "chunked_reset": "chunked body, reset after the first chunk",
    "bad_content_length": "Content-Length: abc",
    "conflicting_content_length": "two different Content-Length headers",
    "cl_and_te": "Content-Length and Transfer-Encoding: chunked together",
    "bad_chunk": "a chunk size that is not hex",
    "bad_status_line": "a status line that is not HTTP",
    "trickle": "a normal 200 written one byte per `interval` seconds",
    "huge_headers": "a 1 MiB response header",
    "informational": "100 Continue and 103 Early Hints before the final 200",
    "interim_with_body": "a 1xx response declaring a body (llhttp would read one)",
    "status_600": "a final status outside 100-599 (no status class)",
    "gzip_transfer_coding": "Transfer-Encoding: gzip with no chunked: still transfer-coded",
    "stream": "200 with `total` bytes of PATTERN, counting what it manages to send",
    "record": "read the whole request (or up to the peer's abort) and answer 200",
    "overlong": "a 5-byte Content-Length body followed by a second, unsolicited response",
    "close_reused": "answer the first request on a connection; close on the next (a keep-alive "
    "timeout firing as a request arrives)",
}


#: Modes that write fixed bytes, then keep the connection open until the proxy closes it.
_CANNED = {
    "bad_content_length": b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\nhello",
    "conflicting_content_length": (
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"
    ),
    "cl_and_te": (
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n0\r\n\r\n"
    ),
    "bad_chunk": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    "bad_status_line": b"SSH-2.0-OpenSSH_9.6\r\n\r\n",
    "interim_with_body": b"HTTP/1.1 199 Odd\r\nContent-Length: 2\r\n\r\nok",
    "status_600": b"HTTP/1.1 600 Beyond\r\nContent-Length: 2\r\n\r\nok",
    "gzip_transfer_coding": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n\x1f\x8b\x08",
}


class FaultServer:
    """A raw asyncio HTTP/1.1 server whose behaviour is chosen per request by ``mode``."""

    def __init__(self, mode: str = "ok", *, interval: float = 0.05, total: int = 0) -> None:
        if mode not in MODES:
            raise ValueError(mode)
        self.mode = mode
        self.interval = interval
        self.total = total
        self.connections: list[Connection] = []
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(1024)
        self._sock.setblocking(False)
        self.port: int = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._release: asyncio.Event | None = None
        self._stop: asyncio.Event | None = None
        self._lock = threading.Lock()
        self._new_connection = threading.Condition(self._lock)
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"fault:{self.port}")

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> FaultServer:
        self._thread.start()
        if not self._ready.wait(10):  # pragma: no cover
            raise RuntimeError("fault server did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
        self._sock.close()

    def release(self) -> None:
        """Let every request held by ``hold`` mode (now and later) be answered."""
        assert self._loop is not None
        assert self._release is not None
        self._loop.call_soon_threadsafe(self._release.set)

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._release = asyncio.Event()
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._handle, sock=self._sock, limit=4 << 20)
        self._ready.set()
        async with server:
            await self._stop.wait()
            server.close()
            for task in [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]:
                task.cancel()

    # -- inspection ------------------------------------------------------------------------

    @property
    def requests(self) -> list[Request]:
        with self._lock:
            return [r for c in self.connections for r in c.requests]

    def wait_for_connection(self, index: int, timeout: float = 10.0) -> Connection:
        """The ``index``-th connection (0-based), once it has started sending a request."""
        with self._new_connection:
            if not self._new_connection.wait_for(lambda: len(self.connections) > index, timeout):
                raise TimeoutError(f"no connection #{index}")
            conn = self.connections[index]
        if not conn.request_started.wait(timeout):
            raise TimeoutError(f"connection #{index} sent no request")
        return conn

    def wait_until(self, predicate: Any, timeout: float = 10.0) -> bool:
        """Wait until ``predicate()`` is true; it is re-checked whenever a connection opens,
        body bytes arrive or ``stream`` mode sends more.  Returns the predicate's last value."""
        with self._new_connection:
            return bool(self._new_connection.wait_for(predicate, timeout))

    def _notify(self) -> None:
        with self._new_connection:
            self._new_connection.notify_all()

    # -- protocol --------------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with self._lock:
            conn = Connection(index=len(self.connections))
            self.connections.append(conn)
            self._new_connection.notify_all()
        try:
            while True:
                req = await self._read_request(conn, reader)
                if req is None:
                    break
                keep = await self._respond(self.mode, conn, req, reader, writer)
                if not keep:
                    break
        except (_PeerGone, ConnectionError, asyncio.IncompleteReadError):
            conn.peer_closed.set()
        except asyncio.CancelledError:
            pass
        finally:
            conn.finished.set()
            self._notify()
            with contextlib.suppress(Exception):
                writer.close()

    async def _read_request(self, conn: Connection, reader: asyncio.StreamReader) -> Request | None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            conn.raw += exc.partial
            if exc.partial:
                conn.request_started.set()
            conn.peer_closed.set()
            return None
        conn.raw += head
        req = Request(head=head[:-4])
        with self._lock:
            conn.requests.append(req)
        conn.request_started.set()
        lengths = req.header(b"content-length")
        chunked = any(b"chunked" in v.lower() for v in req.header(b"transfer-encoding"))
        try:
            if chunked:
                await self._read_chunked(conn, req, reader)
            elif lengths:
                req.expected = int(lengths[0])
                remaining = req.expected
                while remaining:
                    data = await reader.read(min(remaining, 1 << 20))
                    if not data:
                        conn.peer_closed.set()
                        return req  # incomplete: the client of the proxy aborted
                    conn.raw += data
                    req.body += data
                    remaining -= len(data)
                    self._notify()
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            conn.peer_closed.set()
            return req
        req.complete = True
        return req

    async def _read_chunked(
        self, conn: Connection, req: Request, reader: asyncio.StreamReader
    ) -> None:
        for _ in range(1 << 24):
            line = await reader.readuntil(b"\r\n")
            conn.raw += line
            size = int(line.split(b";")[0].strip(), 16)
            if size == 0:
                for _ in range(1024):  # trailers, then the empty line
                    trailer = await reader.readuntil(b"\r\n")
                    conn.raw += trailer
                    if trailer == b"\r\n":
                        return
                return
            data = await reader.readexactly(size + 2)
            conn.raw += data
            req.body += data[:-2]
            self._notify()

    async def _respond(
        self,
        mode: str,
        conn: Connection,
        req: Request,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> bool:
        if not req.complete:
            return False
        if mode == "overlong":
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
                b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nINJECTED"
            )
            await writer.drain()
            return await _linger(reader, conn)
        if mode == "close_reused":
            if len(conn.requests) > 1:
                return False
            writer.write(_ok())
            await writer.drain()
            return True
        if mode in ("ok", "record"):
            writer.write(_ok())
            await writer.drain()
            return True
        if mode == "hang":
            assert self._stop is not None
            waiter = asyncio.ensure_future(reader.read(1))
            stop = asyncio.ensure_future(self._stop.wait())
            await asyncio.wait({waiter, stop}, return_when=asyncio.FIRST_COMPLETED)
            if waiter.done():
                conn.peer_closed.set()
            for t in (waiter, stop):
                t.cancel()
            return False
        if mode == "hold":
            assert self._release is not None
            await self._release.wait()
            writer.write(_ok())
            await writer.drain()
            return True
        if mode == "close_before_status":
            return False
        if mode == "reset_before_status":
            _reset(writer)
            return False
        if mode == "partial_status":
            writer.write(b"HTTP/1.1 20")
            await writer.drain()
            return False
        if mode in ("fixed_close", "fixed_reset"):
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + pattern(1000))
            await writer.drain()
            if mode == "fixed_reset":
                _reset(writer)
            return False
        if mode in ("chunked_close", "chunked_reset"):
            writer.write(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"3e8\r\n" + pattern(1000) + b"\r\n"
            )
            await writer.drain()
            if mode == "chunked_reset":
                _reset(writer)
            return False
        canned = _CANNED.get(mode)
        if canned is not None:
            writer.write(canned)
            await writer.drain()
            return await _linger(reader, conn)
        if mode == "trickle":
            for byte in _ok():
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(self.interval)
            return True
        if mode == "huge_headers":
            writer.write(
                b"HTTP/1.1 200 OK\r\nX-Huge: "
                + b"a" * (1 << 20)
                + b"\r\nContent-Length: 2\r\n\r\nok"
            )
            await writer.drain()
            return await _linger(reader, conn)
        if mode == "informational":
            writer.write(
                b"HTTP/1.1 100 Continue\r\n\r\n"
                b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n" + _ok()
            )
            await writer.drain()
            return True
        if mode == "stream":
            return await self._stream(conn, reader, writer)
        raise AssertionError(mode)  # pragma: no cover

    async def _stream(
        self, conn: Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        total = self.total
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % total)
        eof = asyncio.ensure_future(reader.read(1))
        chunk = 64 * 1024
        try:
            while conn.sent < total and not eof.done():
                n = min(chunk, total - conn.sent)
                writer.write(pattern(n, conn.sent))
                await writer.drain()
                conn.sent += n
                self._notify()
        except ConnectionError:
            conn.peer_closed.set()
            return False
        finally:
            if eof.done():
                conn.peer_closed.set()
            eof.cancel()
        return not conn.peer_closed.is_set()


def _ok() -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n" % len(OK_BODY)
        + OK_BODY
    )


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST instead of FIN (SO_LINGER with a zero timeout)."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def _linger(reader: asyncio.StreamReader, conn: Connection) -> bool:
    """Keep the connection open until the peer closes it (a proxy must discard it); anything
    the peer sends meanwhile (a reused connection) is recorded in ``conn.raw``."""
    with contextlib.suppress(ConnectionError):
        for _ in range(1 << 16):
            data = await reader.read(1 << 16)
            if not data:
                break
            conn.raw += data
    conn.peer_closed.set()
    return False


@contextlib.contextmanager
def fault_server(mode: str = "ok", **kwargs: Any) -> Iterator[FaultServer]:
    """Run a :class:`FaultServer` for the ``with`` block."""
    server = FaultServer(mode, **kwargs).start()
    try:
        yield server
    finally:
        server.stop()
