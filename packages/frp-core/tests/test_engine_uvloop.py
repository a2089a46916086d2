"""The engine on uvloop (what uvicorn runs in production): the main paths once more."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
from frp_core_kit import read_all
from frp_testing import run_server

from frp_core._config import Timeouts
from frp_core._errors import ConnectError, ReadTimeout, RemoteProtocolError
from frp_core._origin import Origin
from frp_core._pool import Engine

uvloop = pytest.importorskip("uvloop")

T = Timeouts(5.0, 5.0, 5.0, 5.0)


async def app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    digest = hashlib.sha256()
    while True:
        message = await receive()
        digest.update(message.get("body", b""))
        if not message.get("more_body"):
            break
    if scope["path"] == "/big":
        size = 8 * 1024 * 1024
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", b"%d" % size)],
            }
        )
        block = b"z" * (1024 * 1024)
        for _ in range(8):
            await send({"type": "http.response.body", "body": block, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    body = digest.hexdigest().encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


async def scenario(url: str) -> None:
    o = Origin.parse(url)
    h = [(b"host", o.host_header)]
    engine = Engine(read_size=256 * 1024)
    try:
        resp = await engine.request(o, b"GET", b"/", h, b"", None, T)
        assert await read_all(resp) == hashlib.sha256(b"").hexdigest().encode()
        (conn,) = engine._pools[o._key].conns  # no Nagle delay on small requests
        sock = conn.transport.get_extra_info("socket")
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)

        async def body() -> AsyncIterator[bytes]:
            for _ in range(4):
                yield b"q" * 100_000

        resp = await engine.request(o, b"POST", b"/", h, body(), None, T)
        assert await read_all(resp) == hashlib.sha256(b"q" * 400_000).hexdigest().encode()
        resp = await engine.request(o, b"HEAD", b"/big", h, b"", None, T)
        assert (resp.has_body, resp.content_length) == (False, 8 * 1024 * 1024)
        await read_all(resp)
        resp = await engine.request(o, b"GET", b"/big", h, b"", None, T)
        assert len(await read_all(resp)) == 8 * 1024 * 1024
        assert engine.stats()["max_buffered"] <= 2 * 256 * 1024 + 512 * 1024
        assert engine.stats()["created"] == 1

        # cancellation mid-body closes the connection, and the next request still works
        resp = await engine.request(o, b"GET", b"/big", h, b"", None, T)
        task = asyncio.ensure_future(resp.receive())
        await task
        reader = asyncio.ensure_future(read_all(resp))
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        await resp.aclose()
        resp = await engine.request(o, b"GET", b"/", h, b"", None, T)
        assert len(await read_all(resp)) == 64
    finally:
        await engine.aclose()


def test_main_paths_on_uvloop() -> None:
    with run_server(app) as srv:
        uvloop.run(scenario(srv.url))


async def faults() -> None:
    engine = Engine()
    answers = iter(
        [
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",  # then the reused conn dies
            b"",
            b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc",  # truncated
            None,  # silent
        ]
    )

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            while True:
                await r.readuntil(b"\r\n\r\n")
                answer = next(answers)
                if answer is None:
                    await r.read()
                    return
                if not answer:
                    return
                w.write(answer)
                if answer.endswith(b"abc"):
                    return
        except (asyncio.IncompleteReadError, ConnectionError, StopIteration):
            pass
        finally:
            w.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    o = Origin.parse(f"http://127.0.0.1:{port}")
    h = [(b"host", o.host_header)]
    try:
        resp = await engine.request(o, b"GET", b"/", h, b"", None, T)
        assert await read_all(resp) == b"ok"
        # stale: the reused connection is closed without an answer; retried on a new one,
        # which answers with a truncated body
        resp = await engine.request(o, b"GET", b"/", h, b"", None, T)
        with pytest.raises(RemoteProtocolError):
            await read_all(resp)
        with pytest.raises(ReadTimeout):
            await engine.request(o, b"GET", b"/", h, b"", None, Timeouts(5.0, 0.1, 5.0, 5.0))
        server.close()
        await server.wait_closed()
        with pytest.raises(ConnectError):
            await engine.request(o, b"GET", b"/", h, b"", None, T)
        assert engine.stats()["open"] == 0
    finally:
        await engine.aclose()
        server.close()


def test_faults_on_uvloop() -> None:
    uvloop.run(faults())
