"""Relays in Python below any ASGI server: the WebSocket context rows of the benchmark.

Every accepted connection is spliced to a new one to the upstream, on uvloop.

- The byte relay (default) copies bytes both ways and parses nothing: what nginx does after
  the upgrade.
- The frame relay (``--frames``) forwards the HTTP exchange, then (after a 101 answer) parses
  each WebSocket frame header and passes payloads through untouched as they come.  It checks that
  client frames are masked and upstream frames not, and counts each message against a 16 MiB
  ``max_size``.  That is the least a tunnel keeping frp-ws's behaviour (``max_size``, the
  close-code mapping, pings on each hop) would parse if it ran below ASGI.

Context rows, never targets: neither negotiates extensions per hop, maps close codes or keeps
each hop alive, which frp-ws's tunnel does.

Run as ``python relay.py --upstream-port N --fd F [--frames]``, until SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import socket
from collections.abc import Callable
from typing import Any

HOST = "127.0.0.1"
MAX_SIZE = 16 << 20


class Half(asyncio.Protocol):
    """One side of a spliced pair: what it receives is written to its peer."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.peer: Half | None = None
        self.early: list[bytes] = []  # received before the peer exists
        self.dial: tuple[int, Callable[[], Half]] | None = None  # set on accepted connections

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        if self.dial is not None:  # accepted: read once the upstream connection exists
            transport.pause_reading()
            asyncio.get_running_loop().create_task(self._connect(*self.dial))

    async def _connect(self, port: int, make: Callable[[], Half]) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, up = await loop.create_connection(make, HOST, port)
        except OSError:
            if self.transport is not None:
                self.transport.close()
            return
        up.peer, self.peer = self, up
        if self.transport is None:  # the client left while connecting
            assert up.transport is not None
            up.transport.close()
            return
        early, self.early = self.early, []
        for chunk in early:
            self.data_received(chunk)
        self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        peer = self.peer
        if peer is None or peer.transport is None:
            self.early.append(data)
        else:
            self.forward(data, peer.transport)

    def forward(self, data: bytes, to: asyncio.Transport) -> None:
        to.write(data)

    def eof_received(self) -> bool:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.write_eof()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()

    # Backpressure: a peer that cannot keep up pauses this side's reading.
    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()


class FrameHalf(Half):
    """Forwards the HTTP exchange as bytes, then (after a 101 answer) WebSocket frames,
    parsing only their headers: payloads pass as they come."""

    def __init__(self, from_client: bool) -> None:
        super().__init__()
        self.from_client = from_client  # client frames must be masked, upstream frames not
        self.frames = False  # set on both halves once the upstream answered 101
        self.head: bytes | None = None if from_client else b""  # the upstream's answer head
        self.pending = b""  # an incomplete frame header
        self.remaining = 0  # payload bytes of the current frame still to pass
        self.message = 0  # bytes of the current message so far

    def forward(self, data: bytes, to: asyncio.Transport) -> None:
        if self.head is not None:  # the upstream's answer: 101 switches both halves to frames
            head = self.head + data
            end = head.find(b"\r\n\r\n")
            if end < 0:
                self.head = head
                return
            to.write(head[: end + 4])
            self.head, data = None, head[end + 4 :]
            if head.startswith((b"HTTP/1.1 101 ", b"HTTP/1.0 101 ")) and self.peer is not None:
                self.frames = True
                assert isinstance(self.peer, FrameHalf)
                self.peer.frames = True
            if not data:
                return
        if not self.frames:
            to.write(data)
            return
        buf = self.pending + data if self.pending else data
        pos, size = 0, len(buf)
        while pos < size:
            if self.remaining:  # payload bytes pass as they come
                step = min(self.remaining, size - pos)
                pos += step
                self.remaining -= step
                continue
            if size - pos < 2:
                break
            opcode, second = buf[pos] & 0x0F, buf[pos + 1]
            masked = bool(second & 0x80)
            if masked != self.from_client:  # a masking violation: fail
                self._fail()
                return
            length = second & 0x7F
            extended = 2 if length == 126 else 8 if length == 127 else 0
            header = 2 + extended + (4 if masked else 0)
            if size - pos < header:
                break
            if extended:
                length = int.from_bytes(buf[pos + 2 : pos + 2 + extended], "big")
            if opcode < 8:  # 0 continues a message, 1 and 2 start one
                self.message = length if opcode else self.message + length
                if self.message > MAX_SIZE:
                    self._fail()
                    return
            pos += header
            self.remaining = length
        if pos:
            to.write(buf if pos == size else buf[:pos])
        self.pending = buf[pos:] if pos < size else b""

    def _fail(self) -> None:
        if self.transport is not None:
            self.transport.close()


def splice(upstream_port: int, frames: bool) -> Callable[[], Half]:
    """The protocol factory of accepted connections, each spliced to ``upstream_port``."""

    def upstream() -> Half:
        return FrameHalf(from_client=False) if frames else Half()

    def accepted() -> Half:
        half = FrameHalf(from_client=True) if frames else Half()
        half.dial = (upstream_port, upstream)
        return half

    return accepted


async def main(upstream_port: int, fd: int, frames: bool) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    sock = socket.socket(fileno=fd)
    sock.setblocking(False)
    server = await loop.create_server(splice(upstream_port, frames), sock=sock)
    async with server:
        await stop.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--upstream-port", type=int, required=True)
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--frames", action="store_true", help="parse WebSocket frame headers")
    args = parser.parse_args()
    run = main(args.upstream_port, args.fd, args.frames)
    try:
        import uvloop
    except ImportError:
        asyncio.run(run)
    else:
        uvloop.run(run)
