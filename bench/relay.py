"""A byte relay: every accepted connection is spliced to a new one to the upstream, no parsing.

The WebSocket ceiling of a proxy written in Python: what nginx does after the upgrade (copy
bytes), on uvloop, with no WebSocket framing and no ASGI server in the way.  A context row of
the benchmark, never a target: it cannot apply per-hop extensions, map close codes, enforce
``max_size`` or keep each hop alive, which frp-ws's tunnel must do.

Run as ``python relay.py --upstream-port N --fd F``, until SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import socket
from typing import Any

HOST = "127.0.0.1"


class Half(asyncio.Protocol):
    """One side of a spliced pair: what it receives is written to its peer."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.peer: Half | None = None
        self.early: list[bytes] = []  # received before the peer exists

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        peer = self.peer
        if peer is None or peer.transport is None:
            self.early.append(data)
        else:
            peer.transport.write(data)

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


def splice(upstream_port: int) -> type[Half]:
    """The protocol of accepted connections, each spliced to ``upstream_port``."""

    class Accepted(Half):
        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            transport.pause_reading()
            asyncio.get_running_loop().create_task(self._connect())

        async def _connect(self) -> None:
            loop = asyncio.get_running_loop()
            try:
                _, up = await loop.create_connection(Half, HOST, upstream_port)
            except OSError:
                if self.transport is not None:
                    self.transport.close()
                return
            up.peer, self.peer = self, up
            if self.transport is None:  # the client left while connecting
                assert up.transport is not None
                up.transport.close()
                return
            for chunk in self.early:
                assert up.transport is not None
                up.transport.write(chunk)
            self.early.clear()
            self.transport.resume_reading()

    return Accepted


async def main(upstream_port: int, fd: int) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    sock = socket.socket(fileno=fd)
    sock.setblocking(False)
    server = await loop.create_server(splice(upstream_port), sock=sock)
    async with server:
        await stop.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--upstream-port", type=int, required=True)
    parser.add_argument("--fd", type=int, required=True)
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:
        asyncio.run(main(args.upstream_port, args.fd))
    else:
        uvloop.run(main(args.upstream_port, args.fd))
