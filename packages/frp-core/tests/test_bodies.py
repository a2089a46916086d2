"""Bodies stream both ways for every method, with their framing and encoding kept."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sys
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from frp_core_kit import pattern, pattern_sha256, raw_exchange
from frp_testing import ServerThread, run_server

import frp_core


def _values(record: dict[str, list[list[str]]], name: str) -> list[str]:
    return [v for n, v in record["headers"] if n == name]


@pytest.mark.parametrize("method", ["GET", "OPTIONS", "PURGE", "DELETE", "POST"])
async def test_every_method_forwards_its_body(client: httpx.AsyncClient, method: str) -> None:
    body = b"payload-" * 100
    for url in ["/p/m", "/mnt/m"]:
        response = await client.request(method, url, content=body)
        record = response.json()
        assert record["method"] == method
        assert record["body_sha256"] == hashlib.sha256(body).hexdigest()
        assert _values(record, "content-length") == [str(len(body))]
        assert _values(record, "transfer-encoding") == []


async def test_chunked_upload_stays_chunked(client: httpx.AsyncClient) -> None:
    async def gen() -> AsyncIterator[bytes]:
        for i in range(20):
            yield b"%d-" % i * 1000

    expected = b"".join(b"%d-" % i * 1000 for i in range(20))
    record = (await client.post("/mnt/up", content=gen())).json()
    assert record["body_sha256"] == hashlib.sha256(expected).hexdigest()
    assert _values(record, "transfer-encoding") == ["chunked"]
    assert _values(record, "content-length") == []


async def test_get_without_body_sends_no_framing(client: httpx.AsyncClient) -> None:
    record = (await client.get("/p/x")).json()
    assert _values(record, "content-length") == []
    assert _values(record, "transfer-encoding") == []
    record = (await client.post("/p/x", content=b"")).json()
    assert _values(record, "content-length") == ["0"]


async def test_download_keeps_content_length(client: httpx.AsyncClient) -> None:
    for url in ["/p/d", "/mnt/d"]:
        response = await client.get(url, headers={"x-act": "download:300000"})
        assert response.headers["content-length"] == "300000"
        assert hashlib.sha256(response.content).hexdigest() == pattern_sha256(300000)


async def test_head_gets_upstream_length_and_no_body(proxy_server: ServerThread) -> None:
    for path in [b"/p/d", b"/mnt/d"]:
        request = (
            b"HEAD " + path + b" HTTP/1.1\r\nHost: p\r\nx-act: download:12345\r\n"
            b"Connection: close\r\n\r\n"
        )
        response = await raw_exchange(proxy_server.port, request)
        head, _, body = response.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        assert b"content-length: 12345" in head.lower()
        assert body == b""


@pytest.mark.parametrize("status", [204, 304])
async def test_no_body_statuses(client: httpx.AsyncClient, status: int) -> None:
    for url in ["/p/s", "/mnt/s"]:
        response = await client.get(url, headers={"x-act": f"status:{status}"})
        assert response.status_code == status
        assert response.content == b""
        assert response.headers["etag"] == '"x"'


async def test_content_encoding_passes_untouched(client: httpx.AsyncClient) -> None:
    for url in ["/p/g", "/mnt/g"]:
        async with client.stream("GET", url, headers={"x-act": "gzip"}) as response:
            raw = b"".join([chunk async for chunk in response.aiter_raw()])
        assert response.headers["content-encoding"] == "gzip"
        assert raw == b"\x1f\x8b\x08\x00pretend-gzip"


async def test_upstream_error_status_is_relayed(client: httpx.AsyncClient) -> None:
    response = await client.get("/mnt/s", headers={"x-act": "status:503"})
    assert response.status_code == 503
    assert response.json()["raw_path"] == "/s"


SIZE = 64 * 1024 * 1024


async def test_64_mib_upload_and_download_intact(client: httpx.AsyncClient) -> None:
    async def upload() -> AsyncIterator[bytes]:
        for block in pattern(SIZE):
            yield block

    headers = {"content-length": str(SIZE)}
    for url in ["/p/big", "/mnt/big"]:
        record = (await client.post(url, content=upload(), headers=headers)).json()
        assert record["body_length"] == SIZE
        assert record["body_sha256"] == pattern_sha256(SIZE)
        digest, size = hashlib.sha256(), 0
        async with client.stream("GET", url, headers={"x-act": f"download:{SIZE}"}) as response:
            assert response.headers["content-length"] == str(SIZE)
            async for chunk in response.aiter_raw():
                digest.update(chunk)
                size += len(chunk)
        assert size == SIZE
        assert digest.hexdigest() == pattern_sha256(SIZE)


async def test_client_disconnect_mid_download_reaches_upstream(
    proxy_server: ServerThread, recorder: object
) -> None:
    for path in ["/p/s", "/mnt/s"]:
        recorder.disconnected.clear()  # type: ignore[attr-defined]
        async with (
            httpx.AsyncClient(base_url=proxy_server.url) as c,
            c.stream("GET", path, headers={"x-act": "stream"}) as response,
        ):
            async for _ in response.aiter_raw():
                break
        seen = await asyncio.to_thread(recorder.disconnected.wait, 15)  # type: ignore[attr-defined]
        assert seen, f"upstream never saw the client leave ({path})"


async def test_client_disconnect_mid_upload_reaches_upstream(
    proxy_server: ServerThread, recorder: Any
) -> None:
    for path in [b"/p/up", b"/mnt/up"]:
        recorder.disconnected.clear()
        _, writer = await asyncio.open_connection("127.0.0.1", proxy_server.port)
        writer.write(b"POST " + path + b" HTTP/1.1\r\nHost: p\r\nContent-Length: 10000000\r\n\r\n")
        writer.write(b"x" * 300_000)
        await writer.drain()
        writer.close()
        assert await asyncio.to_thread(recorder.disconnected.wait, 15), path


async def test_slow_event_stream_outlives_the_timeout(
    make_gateway: Any, mode: str, upstream: str
) -> None:
    """``timeout`` bounds each wait for data, not the whole stream (SSE stays up)."""
    with run_server(make_gateway(upstream, mode, timeout=0.75)) as proxy:
        async with httpx.AsyncClient(base_url=proxy.url, timeout=30) as client:
            for url in ["/p/events"]:
                response = await client.get(url, headers={"x-act": "sse"})
                assert response.status_code == 200
                assert response.text == "".join(f"data: {i}\n\n" for i in range(6))


async def _asgi_call(
    app: Any, scope: dict[str, Any], messages: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Call ``app`` in-process as a server would: ``messages`` are the request, then
    ``http.disconnect`` once the response has ended.  Returns the messages sent."""
    pending = list(messages)
    done = asyncio.Event()
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if pending:
            return pending.pop(0)
        await done.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body"):
            done.set()

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "scheme": "http",
        "query_string": b"", "root_path": "", "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 80), **scope,
    }  # fmt: skip
    await asyncio.wait_for(app(scope, receive, send), 30)
    assert sent[0]["status"] == 200
    return sent[1:]


async def _h2_call(app: Any, method: str, messages: list[dict[str, Any]]) -> dict[str, Any]:
    """Call ``app`` as an HTTP/2 server does: no ``Content-Length`` nor ``Transfer-Encoding``,
    the body in ``messages``, its end the stream's.  Returns the upstream's JSON record."""
    scope = {
        "http_version": "2", "method": method, "scheme": "https", "path": "/h2",
        "raw_path": b"/h2",
        "headers": [(b"host", b"gateway.test"), (b"content-type", b"application/octet-stream")],
    }  # fmt: skip
    sent = await _asgi_call(app, scope, messages)
    record: dict[str, Any] = json.loads(b"".join(bytes(m.get("body", b"")) for m in sent))
    return record


async def test_http2_body_without_length_reaches_the_upstream_whole(
    recorder_server: tuple[Any, ServerThread],
) -> None:
    """HTTP/2 and /3 end a body with the stream: no header announces it, yet it is sent."""
    app = frp_core.ReverseProxy(recorder_server[1].url)
    try:
        parts = [os.urandom(70_000) for _ in range(5)]
        streamed = [
            {"type": "http.request", "body": part, "more_body": i < len(parts) - 1}
            for i, part in enumerate(parts)
        ]
        record = await _h2_call(app, "POST", streamed)
        assert record["body_sha256"] == hashlib.sha256(b"".join(parts)).hexdigest()
        assert _values(record, "transfer-encoding") == ["chunked"]

        one = [{"type": "http.request", "body": b"whole", "more_body": False}]
        record = await _h2_call(app, "PUT", one)  # known at once: sent with its length
        assert record["body_sha256"] == hashlib.sha256(b"whole").hexdigest()
        assert _values(record, "content-length") == ["5"]

        empty = [{"type": "http.request", "body": b"", "more_body": False}]
        record = await _h2_call(app, "GET", empty)
        assert record["body_length"] == 0
        assert _values(record, "content-length") == _values(record, "transfer-encoding") == []

        # HEADERS, then an empty DATA frame that ends the stream: still no body
        ended_late = [{"type": "http.request", "body": b"", "more_body": True}, *empty]
        record = await _h2_call(app, "DELETE", ended_late)
        assert _values(record, "content-length") == _values(record, "transfer-encoding") == []
    finally:
        await app.aclose()


async def _download_chunks(app: Any, size: int) -> list[Any]:
    """The ``http.response.body`` payloads of an in-process GET of ``size`` bytes."""
    scope = {
        "method": "GET", "path": "/dl", "raw_path": b"/dl",
        "headers": [(b"host", b"gateway.test"), (b"x-act", b"download:%d" % size)],
    }  # fmt: skip
    bodies = [m.get("body", b"") for m in await _asgi_call(app, scope, [])]
    assert hashlib.sha256(b"".join(bodies)).hexdigest() == pattern_sha256(size)
    return bodies


async def test_long_bodies_are_bytes_unless_the_server_writes_any_buffer(
    recorder_server: tuple[Any, ServerThread], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The engine lends its read buffers as body chunks only to servers known to write any
    bytes-like body (uvicorn, hypercorn, granian); under another one, such as daphne, whose
    Twisted transport takes ``bytes`` only (as the ASGI spec says), every chunk is ``bytes``."""
    from frp_core import _response

    assert _response.bytes_like_ok()  # uvicorn is loaded: these tests serve with it
    app = frp_core.ReverseProxy(recorder_server[1].url)
    try:
        size = 8 * 1024 * 1024
        lent = await _download_chunks(app, size)
        assert any(type(body) is bytearray for body in lent)
        monkeypatch.setitem(sys.modules, "twisted", sys.modules["asyncio"])  # daphne's reactor
        assert not _response.bytes_like_ok()
        copied = await _download_chunks(app, size)
        assert {type(body) for body in copied} == {bytes}
    finally:
        await app.aclose()


def _reading_gateway(upstream: str) -> Any:
    """A route that reads the request body itself before it calls ``proxy_pass``."""
    app = FastAPI()

    @app.post("/read/{path:path}")
    async def read_first(request: Request, path: str) -> Any:
        assert await request.body()
        return await frp_core.proxy_pass(request, upstream, path=f"/{path}")

    return app


async def test_a_body_the_route_already_read_is_forwarded(
    recorder_server: tuple[Any, ServerThread],
) -> None:
    """``await request.body()`` before ``proxy_pass``: the copy Starlette keeps goes upstream
    (the body is no longer in ``receive()``; waiting for it would hang)."""
    body = os.urandom(100_000)
    with run_server(_reading_gateway(recorder_server[1].url)) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=10.0) as c:
            record = (await c.post("/read/x", content=body)).json()
    assert record["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert _values(record, "content-length") == [str(len(body))]
