"""The workloads: each measures one system once and returns ``{metric: value}``.

Clients are raw blocking sockets (bulk transfers, SSE and the WebSocket ping-pong: nothing
between the socket and the count) and the ``websockets`` asyncio client (the 4 MiB WebSocket
message).  Every socket has a timeout and every loop a bound.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import socket
import struct
import time
from typing import Any

import load
import procs
from systems import System

MiB = 1 << 20
BLOCK = os.urandom(MiB)  # upload payload: this block repeated
_HASHES: dict[int, str] = {}


def small_get(
    system: System, connections: int, seconds: float, tool: str = "auto"
) -> dict[str, float]:
    """Small GETs at ``connections``: req/s, p50/p99 ms, proxy CPU µs per request."""
    cpu0 = procs.cpu_seconds(system.pid)
    res = load.run(system.port, "/small", connections, seconds, tool)
    cpu = procs.cpu_seconds(system.pid) - cpu0
    if res["requests"] == 0:
        raise RuntimeError(f"no request completed ({res['errors']} errors)")
    out = {"rps": res["rps"], "cpu_us": cpu / res["requests"] * 1e6, "errors": res["errors"]}
    if res["p50_ms"] is not None:
        out["p50_ms"], out["p99_ms"] = res["p50_ms"], res["p99_ms"]
    return out


def _connect(port: int, timeout: float) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _read_head(sock: socket.socket) -> tuple[bytes, bytes]:
    """(status line + headers lower-cased, bytes already read past them)."""
    buf = b""
    for _ in range(1024):
        chunk = sock.recv(65536)
        if not chunk:
            raise RuntimeError(f"connection closed before the headers: {buf[:200]!r}")
        buf += chunk
        end = buf.find(b"\r\n\r\n")
        if end >= 0:
            return buf[:end].lower(), buf[end + 4 :]
    raise RuntimeError("headers too long")


def _status(head: bytes) -> str:
    line = head.split(b"\r\n")[0].decode(errors="replace")
    return f"status {line}"


def _drain_body(sock: socket.socket, head: bytes, rest: bytes, deadline: float) -> int:
    """Read the response body (Content-Length or chunked) to its end; return its size."""
    buf = bytearray(MiB)
    view = memoryview(buf)
    if b"content-length:" in head:
        length = int(head.split(b"content-length:")[1].split(b"\r\n")[0])
        got = len(rest)
        while got < length:
            n = sock.recv_into(view, min(MiB, length - got))
            if not n or time.monotonic() > deadline:
                raise RuntimeError(f"body cut at {got} of {length} bytes")
            got += n
        return got
    if b"chunked" not in head:
        raise RuntimeError("response has neither Content-Length nor chunked framing")
    pending = bytearray(rest)  # chunked: size lines are parsed, data is only counted
    body = 0
    need = 0  # data bytes (plus CRLF) still to skip in the current chunk
    while time.monotonic() < deadline:
        if need:
            if pending:
                take = min(need, len(pending))
                del pending[:take]
                need -= take
            else:
                n = sock.recv_into(view, min(MiB, need))
                if not n:
                    raise RuntimeError("chunked body cut")
                need -= n
            continue
        line_end = pending.find(b"\r\n")
        if line_end < 0:
            more = sock.recv(65536)
            if not more:
                raise RuntimeError("chunked body cut in a size line")
            pending += more
            continue
        size = int(bytes(pending[:line_end]).split(b";")[0], 16)
        del pending[: line_end + 2]
        if size == 0:
            return body
        body += size
        need = size + 2
    raise RuntimeError("download deadline passed")


def download(system: System, size: int, timeout: float) -> dict[str, float]:
    """GET /bytes/{size}: MB/s and the proxy's peak RSS growth."""
    deadline = time.monotonic() + timeout
    with procs.RssSampler(system.pid) as rss, _connect(system.port, 30) as sock:
        start = time.perf_counter()
        sock.sendall(f"GET /bytes/{size} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        head, rest = _read_head(sock)
        if not head.startswith(b"http/1.1 200"):
            raise RuntimeError(_status(head))
        got = _drain_body(sock, head, rest, deadline)
        elapsed = time.perf_counter() - start
    if got != size:
        raise RuntimeError(f"received {got} bytes, expected {size}")
    return {"mbps": size / elapsed / 1e6, "rss_mib": rss.growth_mib}


def _expected_sha(size: int) -> str:
    if size not in _HASHES:
        digest = hashlib.sha256()
        for _ in range(size // MiB):
            digest.update(BLOCK)
        digest.update(BLOCK[: size % MiB])
        _HASHES[size] = digest.hexdigest()
    return _HASHES[size]


def upload(system: System, size: int, timeout: float) -> dict[str, float]:
    """POST /upload of ``size`` bytes (Content-Length): MB/s, verified by count and sha256."""
    expected = _expected_sha(size)
    deadline = time.monotonic() + timeout
    view = memoryview(BLOCK)
    with procs.RssSampler(system.pid) as rss, _connect(system.port, 60) as sock:
        start = time.perf_counter()
        sock.sendall(
            f"POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/octet-stream"
            f"\r\nContent-Length: {size}\r\n\r\n".encode()
        )
        left = size
        while left > 0:
            if time.monotonic() > deadline:
                raise RuntimeError("upload deadline passed")
            part = view[: min(left, MiB)]
            sock.sendall(part)
            left -= len(part)
        head, rest = _read_head(sock)
        length = (
            int(head.split(b"content-length:")[1].split(b"\r\n")[0])
            if (b"content-length:" in head)
            else None
        )
        body = rest
        for _ in range(1024):
            if length is not None and len(body) >= length:
                break
            if b"}" in body and length is None:
                break
            more = sock.recv(65536)
            if not more:
                break
            body += more
        elapsed = time.perf_counter() - start
    if not head.startswith(b"http/1.1 200"):
        raise RuntimeError(_status(head))
    text = body.decode(errors="replace")
    answer = json.loads(text[text.index("{") : text.rindex("}") + 1])
    if answer.get("count") != size or answer.get("sha256") != expected:
        raise RuntimeError(f"upload corrupted: upstream saw {answer}")
    return {"mbps": size / elapsed / 1e6, "rss_mib": rss.growth_mib}


def sse_first_event(system: System, tries: int) -> dict[str, float]:
    """Median time from connect to the first complete SSE event over ``tries`` streams."""
    times = []
    for _ in range(tries):
        start = time.perf_counter()
        with _connect(system.port, 10) as sock:
            sock.sendall(
                b"GET /sse HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream"
                b"\r\nConnection: close\r\n\r\n"
            )
            head, buf = _read_head(sock)
            if not head.startswith(b"http/1.1 200"):
                raise RuntimeError(_status(head))
            for _ in range(1024):
                at = buf.find(b"data: event 0")
                if at >= 0 and buf.find(b"\n\n", at) >= 0:
                    break
                more = sock.recv(65536)
                if not more:
                    raise RuntimeError(f"stream ended before the first event: {buf[:200]!r}")
                buf += more
            times.append(time.perf_counter() - start)
    times.sort()
    return {"first_event_ms": times[len(times) // 2] * 1e3}


# No permessage-deflate (the payloads are random); one subprotocol offered, because 0.4.0
# refuses clients that offer none (it forwards an empty Sec-WebSocket-Protocol header).
_WS_OPTIONS: dict[str, Any] = {
    "compression": None,
    "max_size": None,
    "open_timeout": 10,
    "close_timeout": 5,
    "subprotocols": ["bench"],
}


def _ws_handshake(sock: socket.socket, port: int, path: str) -> bytes:
    """Open a WebSocket on ``sock`` (one subprotocol offered, no extension); returns the bytes
    read past the 101 response."""
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        "Sec-WebSocket-Protocol: bench\r\n\r\n".encode()
    )
    head, rest = _read_head(sock)
    if not head.startswith(b"http/1.1 101"):
        raise RuntimeError(f"WebSocket refused: {_status(head)}")
    return rest


def _client_frame(opcode: int, payload: bytes) -> bytes:
    """A masked, final client frame (payloads under 64 KiB)."""
    mask = os.urandom(4)
    n = len(payload)
    head = bytes([0x80 | opcode, 0x80 | n]) if n < 126 else bytes([0x80 | opcode, 0xFE])
    if n >= 126:
        head += struct.pack("!H", n)
    masked = bytes(b ^ mask[i & 3] for i, b in enumerate(payload))
    return head + mask + masked


class _FrameReader:
    """Server frames (unmasked) from a blocking socket: ``next()`` is (opcode, payload)."""

    def __init__(self, sock: socket.socket, buf: bytes) -> None:
        self.sock, self.buf = sock, buf

    def _fill(self, n: int) -> None:
        for _ in range(1 << 20):
            if len(self.buf) >= n:
                return
            more = self.sock.recv(65536)
            if not more:
                raise RuntimeError("the WebSocket connection closed")
            self.buf += more
        raise RuntimeError("frame too large")

    def next(self) -> tuple[int, bytes]:
        self._fill(2)
        opcode, n = self.buf[0] & 0x0F, self.buf[1] & 0x7F
        at = 2
        if n == 126:
            self._fill(4)
            n, at = struct.unpack("!H", self.buf[2:4])[0], 4
        elif n == 127:
            self._fill(10)
            n, at = struct.unpack("!Q", self.buf[2:10])[0], 10
        self._fill(at + n)
        payload, self.buf = self.buf[at : at + n], self.buf[at + n :]
        return opcode, payload


def _pingpong(port: int, path: str, seconds: float, pid: int) -> dict[str, float]:
    """1 KiB binary messages, each sent once the previous echo is back, over a raw socket:
    one pre-masked frame, blocking send and receive (the lightest client, like wrk for HTTP,
    so that the round trip is the system's and not the client's)."""
    with _connect(port, 10) as sock:
        reader = _FrameReader(sock, _ws_handshake(sock, port, path))
        payload = os.urandom(1024)
        frame = _client_frame(0x2, payload)

        def round_trip() -> None:
            sock.sendall(frame)
            for _ in range(16):  # control frames (a keepalive ping) may come first
                opcode, data = reader.next()
                if opcode == 0x2:
                    if data != payload:
                        raise RuntimeError("ping-pong echo differs")
                    return
                if opcode == 0x9:
                    sock.sendall(_client_frame(0xA, data))
                elif opcode == 0x8:
                    raise RuntimeError(f"closed by the server: {data[:2].hex()}")
            raise RuntimeError("no echo")

        for _ in range(200):  # warm-up: buffers, caches, the proxy's first-message paths
            round_trip()
        count = 0
        cpu0 = procs.cpu_seconds(pid)
        start = time.perf_counter()
        end = start + seconds
        while time.perf_counter() < end:
            round_trip()
            count += 1
        elapsed = time.perf_counter() - start
        cpu = procs.cpu_seconds(pid) - cpu0
        sock.sendall(_client_frame(0x8, struct.pack("!H", 1000)))
        return {"msgs_per_s": count / elapsed, "cpu_us": cpu / count * 1e6}


async def _big(uri: str, size: int) -> dict[str, float]:
    from websockets.asyncio.client import connect

    async with connect(uri, **_WS_OPTIONS) as ws:
        blob = os.urandom(size)
        start = time.perf_counter()
        await ws.send(blob)
        echo = await asyncio.wait_for(ws.recv(), 30)
        if echo != blob:
            raise RuntimeError(f"the {size}-byte message came back as {len(echo)} bytes")
        return {"rtt_ms": (time.perf_counter() - start) * 1e3}


def ws_pingpong(system: System, seconds: float) -> dict[str, float]:
    """1 KiB binary messages echoed one at a time: messages/s over ``seconds`` and the
    proxy's CPU µs per round trip (two messages relayed; the upstream's for the direct run).
    """
    return _pingpong(system.port, system.ws_path, seconds, system.pid)


def ws_big(system: System, size: int = 4 * MiB) -> dict[str, float]:
    """One ``size``-byte binary message round trip (ms)."""
    uri = f"ws://127.0.0.1:{system.port}{system.ws_path}"
    return _run(asyncio.wait_for(_big(uri, size), 60))


def _run(coro: Any) -> dict[str, float]:
    """Run a WebSocket client on uvloop when installed (the lighter client, the more of each
    round trip is the system under test's), else on asyncio."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    result: dict[str, float] = uvloop.run(coro)
    return result
