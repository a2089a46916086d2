"""Test support shared by every package's tests: real uvicorn servers on 127.0.0.1.

A server runs in a background thread with its own event loop.  The listening socket is bound
and put in listening state *before* the thread starts, so a client can connect at once: the
kernel queues the connection until uvicorn accepts it.  No sleep is needed to synchronise.
"""

from __future__ import annotations

import asyncio
import contextlib
import pathlib
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from typing import Any

import uvicorn

__all__ = [
    "ServerThread",
    "listening_socket",
    "run_server",
    "self_signed_certificate",
    "unused_port",
    "websocket_echo",
]


def listening_socket() -> socket.socket:
    """A TCP socket bound to an ephemeral port on 127.0.0.1, already listening."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted sockets inherit TCP_NODELAY: without it each keep-alive response waits for
    # a delayed ACK (~40 ms), which slows every suite and hides routing behaviour.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


def self_signed_certificate(directory: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path] | None:
    """A key and certificate for localhost/127.0.0.1 in ``directory``; None without openssl."""
    openssl = shutil.which("openssl")
    if openssl is None:
        return None
    key, crt = directory / "key.pem", directory / "cert.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
         "-out", str(crt), "-days", "2", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return key, crt


def unused_port() -> int:
    """A port on 127.0.0.1 nobody listens on (connections to it are refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


class ServerThread:
    """A uvicorn server for ``app`` running in a daemon thread."""

    def __init__(
        self, app: Any, *, http: str = "httptools", ws: str = "wsproto", **config: Any
    ) -> None:
        self.sock = listening_socket()
        self.port: int = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}"
        config.setdefault("log_level", "warning")
        config.setdefault("lifespan", "auto")
        self.config = uvicorn.Config(app, http=http, ws=ws, **config)
        self.server = uvicorn.Server(self.config)
        self.thread = threading.Thread(target=self._run, daemon=True, name=f"uvicorn:{self.port}")
        self.loop: asyncio.AbstractEventLoop | None = None

    def _run(self) -> None:
        async def main() -> None:
            self.loop = asyncio.get_running_loop()
            await self.server.serve(sockets=[self.sock])

        asyncio.run(main())

    def start(self) -> ServerThread:
        self.thread.start()
        return self

    def stop(self, timeout: float = 15.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)
        if self.thread.is_alive():  # pragma: no cover - diagnostic only
            self.server.force_exit = True
            self.thread.join(timeout)
        self.sock.close()
        if self.thread.is_alive():  # pragma: no cover
            raise RuntimeError(f"uvicorn on port {self.port} did not stop")


@contextlib.contextmanager
def run_server(app: Any, **kwargs: Any) -> Iterator[ServerThread]:
    """Run ``app`` under uvicorn on an ephemeral loopback port for the ``with`` block."""
    server = ServerThread(app, **kwargs).start()
    try:
        yield server
    finally:
        server.stop()


async def websocket_echo(receive: Any, send: Any) -> None:
    """A WebSocket ASGI session that accepts and echoes every message as it came (text as
    text, binary as binary) until the client leaves."""
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    for _ in range(1 << 30):  # bounded by the client leaving
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("text") is not None:
            await send({"type": "websocket.send", "text": message["text"]})
        else:
            await send({"type": "websocket.send", "bytes": message.get("bytes") or b""})
