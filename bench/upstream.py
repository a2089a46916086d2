"""The benchmark's upstream: a pure ASGI app (stdlib only) served by uvicorn.

Routes: ``GET|HEAD /`` (health probes), ``/small`` (a 100-byte body), ``/bytes/{n}`` (n bytes
streamed in 1 MiB chunks with a ``Content-Length``), ``/upload`` (reads the streamed body,
answers ``{"count": n, "sha256": hex}``), ``/sse`` (five events, the first one at once) and a
WebSocket echo on every path (accepting the first subprotocol offered).
Run as ``python upstream.py --fd N`` or ``--port N``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Literal

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

SMALL_BODY = (b"benchmark small response " * 4)[:100]
CHUNK = 1 << 20
BLOCK = os.urandom(CHUNK)
SSE_EVENTS = 5
SSE_INTERVAL = 0.2


def _headers(ctype: bytes, length: int | None = None) -> list[tuple[bytes, bytes]]:
    headers = [(b"content-type", ctype)]
    if length is not None:
        headers.append((b"content-length", str(length).encode()))
    return headers


async def _simple(send: Send, status: int, body: bytes, ctype: bytes = b"text/plain") -> None:
    await send(
        {"type": "http.response.start", "status": status, "headers": _headers(ctype, len(body))}
    )
    await send({"type": "http.response.body", "body": body})


async def _bytes(send: Send, n: int, head: bool) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": _headers(b"application/octet-stream", n),
        }
    )
    if head:
        await send({"type": "http.response.body", "body": b""})
        return
    left = n
    while left > 0:
        part = BLOCK if left >= CHUNK else BLOCK[:left]
        left -= len(part)
        await send({"type": "http.response.body", "body": part, "more_body": left > 0})
    if n == 0:
        await send({"type": "http.response.body", "body": b""})


async def _upload(receive: Receive, send: Send) -> None:
    digest = hashlib.sha256()
    count = 0
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        body = message.get("body", b"")
        count += len(body)
        digest.update(body)
        more = message.get("more_body", False)
    payload = json.dumps({"count": count, "sha256": digest.hexdigest()}).encode()
    await _simple(send, 200, payload, b"application/json")


async def _sse(send: Send) -> None:
    headers = [
        (b"content-type", b"text/event-stream"),
        (b"cache-control", b"no-cache"),
        (b"x-accel-buffering", b"no"),
    ]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    for i in range(SSE_EVENTS):
        if i:
            await asyncio.sleep(SSE_INTERVAL)
        event = f"id: {i}\ndata: event {i}\n\n".encode()
        await send({"type": "http.response.body", "body": event, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


async def _websocket(scope: Scope, receive: Receive, send: Send) -> None:
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    offered = scope.get("subprotocols") or []
    await send({"type": "websocket.accept", "subprotocol": offered[0] if offered else None})
    for _ in range(1 << 40):  # bounded by the peer closing
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("bytes") is not None:
            await send({"type": "websocket.send", "bytes": message["bytes"]})
        else:
            await send({"type": "websocket.send", "text": message.get("text") or ""})


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """The upstream ASGI application."""
    kind = scope["type"]
    if kind == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if kind == "websocket":
        await _websocket(scope, receive, send)
        return
    path: str = scope["path"]
    head = scope["method"] == "HEAD"
    if path == "/small":
        await _simple(send, 200, b"" if head else SMALL_BODY)
    elif path.startswith("/bytes/") and path[7:].isdigit():
        await _bytes(send, int(path[7:]), head)
    elif path == "/upload":
        await _upload(receive, send)
    elif path == "/sse":
        await _sse(send)
    elif path == "/":
        await _simple(send, 200, b"" if head else b"ok")
    else:
        await _simple(send, 404, b"not found")


def ws_protocol() -> str:
    """The fastest maintained uvicorn WebSocket implementation available."""
    from uvicorn.config import WS_PROTOCOLS

    return "websockets-sansio" if "websockets-sansio" in WS_PROTOCOLS else "websockets"


def serve(
    target: Any,
    fd: int | None,
    port: int | None,
    lifespan: Literal["auto", "on", "off"] = "auto",
    ws: Any = None,
) -> None:
    """Serve ``target`` with one uvicorn worker, uvloop and httptools, on 127.0.0.1.

    ``ws`` is uvicorn's WebSocket protocol (default: :func:`ws_protocol`).

    An inherited ``fd`` is wrapped as the TCP socket it is (uvicorn's own ``fd=`` option
    assumes a UNIX socket, which loses TCP_NODELAY and adds 40 ms delayed-ACK stalls).
    """
    import socket

    import uvicorn

    config = uvicorn.Config(
        target,
        host="127.0.0.1",
        port=port or 0,
        loop="uvloop",
        http="httptools",
        ws=ws if ws is not None else ws_protocol(),
        lifespan=lifespan,
        log_level="warning",
        access_log=False,
    )
    server = uvicorn.Server(config)
    if fd is None:
        server.run()
    else:
        server.run(sockets=[socket.socket(fileno=fd)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--fd", type=int)
    parser.add_argument("--port", type=int)
    args = parser.parse_args()
    serve(app, args.fd, args.port, lifespan="on")


if __name__ == "__main__":
    main()
