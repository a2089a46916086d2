"""The upstream engine against a real uvicorn upstream: framing, headers, pooling, big bodies."""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from frp_core_kit import read_all
from frp_testing import run_server

from frp_core._config import Limits, Timeouts
from frp_core._errors import LocalProtocolError, PoolTimeout
from frp_core._origin import Origin
from frp_core._pool import Engine

T = Timeouts(5.0, 5.0, 5.0, 5.0)
BLOCK = bytes(range(256)) * 4096  # 1 MiB of a known pattern


async def upstream(scope: Any, receive: Any, send: Any) -> None:
    """Echo what arrived as JSON, or act according to the path."""
    if scope["type"] != "http":
        return
    path = scope["path"]
    digest = hashlib.sha256()
    size = 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        digest.update(chunk)
        size += len(chunk)
        if not message.get("more_body"):
            break
    if path.startswith("/status/"):
        status = int(path.rsplit("/", 1)[1])
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    if path == "/cookies":
        headers = [(b"set-cookie", b"a=1; Path=/"), (b"x-b", b"1"), (b"set-cookie", b"b=2")]
        headers.append((b"content-length", b"2"))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"ok"})
        return
    if path == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for i in range(5):
            await send({"type": "http.response.body", "body": b"part%d;" % i, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    if path.startswith("/download/"):
        total = int(path.rsplit("/", 1)[1])
        headers = [(b"content-length", str(total).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for block in _pattern(total):
            await send({"type": "http.response.body", "body": block, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    body = json.dumps(
        {
            "method": scope["method"],
            "raw_path": scope["raw_path"].decode("latin-1"),
            "query": scope["query_string"].decode("latin-1"),
            "headers": [[n.decode("latin-1"), v.decode("latin-1")] for n, v in scope["headers"]],
            "size": size,
            "sha256": digest.hexdigest(),
            "client_port": scope["client"][1],
        }
    ).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _pattern(size: int) -> Iterator[bytes]:
    while size > 0:
        yield BLOCK[: min(size, len(BLOCK))]
        size -= len(BLOCK)


def _sha(size: int) -> str:
    h = hashlib.sha256()
    for block in _pattern(size):
        h.update(block)
    return h.hexdigest()


async def _apattern(size: int) -> AsyncIterator[bytes]:
    for block in _pattern(size):
        yield block


@pytest.fixture(scope="module")
def server() -> Iterator[Origin]:
    with run_server(upstream) as srv:
        yield Origin.parse(srv.url)


@pytest.fixture
async def engine() -> AsyncIterator[Engine]:
    e = Engine()
    try:
        yield e
    finally:
        await e.aclose()


def host(o: Origin) -> list[tuple[bytes, bytes]]:
    return [(b"host", o.host_header)]


async def get_json(
    engine: Engine, o: Origin, method: bytes = b"GET", target: bytes = b"/echo", **kw: Any
) -> Any:
    resp = await engine.request(
        o,
        method,
        target,
        kw.get("headers", host(o)),
        kw.get("body", b""),
        kw.get("content_length"),
        kw.get("timeouts", T),
    )
    assert resp.status == 200
    return json.loads(await read_all(resp))


async def test_get_sends_exactly_the_given_headers(server: Origin, engine: Engine) -> None:
    headers = [(b"host", server.host_header), (b"x-dup", b"1"), (b"accept", b"*/*")]
    headers.append((b"x-dup", b"2"))
    seen = await get_json(engine, server, target=b"/echo?a=%20&flag", headers=headers)
    assert seen["method"] == "GET"
    assert seen["raw_path"] == "/echo"
    assert seen["query"] == "a=%20&flag"
    # nothing added: no user-agent, no accept-encoding, no content-length for an empty body
    assert seen["headers"] == [[n.decode(), v.decode()] for n, v in headers]


async def test_response_head_is_raw_and_ordered(server: Origin, engine: Engine) -> None:
    resp = await engine.request(server, b"GET", b"/cookies", host(server), b"", None, T)
    try:
        assert (resp.status, resp.reason, resp.http_version) == (200, b"OK", "1.1")
        cookies = [v for n, v in resp.headers if n == b"set-cookie"]
        assert cookies == [b"a=1; Path=/", b"b=2"]  # two headers, never merged
        names = [n for n, _ in resp.headers]
        assert names.index(b"set-cookie") < names.index(b"x-b")
        assert all(n == n.lower() for n in names)
        assert resp.content_length == 2
        assert resp.has_body
    finally:
        assert await read_all(resp) == b"ok"


async def test_post_bytes_body_gets_content_length(server: Origin, engine: Engine) -> None:
    seen = await get_json(engine, server, b"POST", body=b"hello")
    assert ["content-length", "5"] in seen["headers"]
    assert seen["size"] == 5
    assert seen["sha256"] == hashlib.sha256(b"hello").hexdigest()


async def test_get_with_body_is_forwarded(server: Origin, engine: Engine) -> None:
    seen = await get_json(engine, server, b"GET", body=b"abc", content_length=3)
    assert seen["size"] == 3


async def test_chunked_upload(server: Origin, engine: Engine) -> None:
    async def body() -> AsyncIterator[bytes]:
        yield b"hello "
        yield b""
        yield b"world"

    seen = await get_json(engine, server, b"PUT", body=body())
    assert ["transfer-encoding", "chunked"] in seen["headers"]
    assert not any(n == "content-length" for n, _ in seen["headers"])
    assert seen["sha256"] == hashlib.sha256(b"hello world").hexdigest()


async def test_known_length_iterable_upload(server: Origin, engine: Engine) -> None:
    async def body() -> AsyncIterator[bytes]:
        yield b"12345"
        yield b"678"

    seen = await get_json(engine, server, b"POST", body=body(), content_length=8)
    assert ["content-length", "8"] in seen["headers"]
    assert not any(n == "transfer-encoding" for n, _ in seen["headers"])
    assert seen["size"] == 8


@pytest.mark.parametrize(("declared", "chunks"), [(3, [b"12", b"34"]), (10, [b"12", b"34"])])
async def test_upload_not_matching_its_length_fails(
    server: Origin, engine: Engine, declared: int, chunks: list[bytes]
) -> None:
    async def body() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk

    async def send() -> None:
        resp = await engine.request(server, b"POST", b"/echo", host(server), body(), declared, T)
        await read_all(resp)

    with pytest.raises(LocalProtocolError) as info:
        await send()
    assert info.value.request_sent
    assert engine.stats()["open"] == 0  # that connection was discarded


async def test_bytes_body_not_matching_its_length_is_refused(
    server: Origin, engine: Engine
) -> None:
    with pytest.raises(LocalProtocolError) as info:
        await engine.request(server, b"POST", b"/echo", host(server), b"abc", 4, T)
    assert not info.value.request_sent


async def test_chunked_response(server: Origin, engine: Engine) -> None:
    resp = await engine.request(server, b"GET", b"/stream", host(server), b"", None, T)
    assert resp.content_length is None
    assert (b"transfer-encoding", b"chunked") in resp.headers
    assert await read_all(resp) == b"part0;part1;part2;part3;part4;"
    assert engine.stats()["idle"] == 1  # chunked framing is reusable


async def test_head_has_length_but_no_body_and_connection_is_reused(
    server: Origin, engine: Engine
) -> None:
    resp = await engine.request(server, b"HEAD", b"/download/12345", host(server), b"", None, T)
    assert resp.status == 200
    assert not resp.has_body
    assert resp.content_length == 12345
    assert await resp.receive() == b""
    await resp.aclose()
    assert engine.stats()["idle"] == 1
    # the same connection answers the next request correctly (the parser was reset)
    seen = await get_json(engine, server)
    assert seen["method"] == "GET"
    assert engine.stats()["created"] == 1


@pytest.mark.parametrize("status", [204, 304])
async def test_no_body_statuses(server: Origin, engine: Engine, status: int) -> None:
    resp = await engine.request(server, b"GET", b"/status/%d" % status, host(server), b"", None, T)
    assert resp.status == status
    assert not resp.has_body
    assert await read_all(resp) == b""
    assert engine.stats()["idle"] == 1


async def test_connections_are_reused(server: Origin, engine: Engine) -> None:
    ports = {(await get_json(engine, server))["client_port"] for _ in range(5)}
    assert len(ports) == 1
    stats = engine.stats()
    assert (stats["created"], stats["reused"], stats["open"], stats["idle"]) == (1, 4, 1, 1)


async def test_upstream_sockets_have_nodelay(server: Origin, engine: Engine) -> None:
    """Small requests and responses are never held back by Nagle's algorithm."""
    await get_json(engine, server)
    (conn,) = engine._pools[server._key].conns
    sock = conn.transport.get_extra_info("socket")
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


async def test_pool_is_lifo(server: Origin, engine: Engine) -> None:
    first = await engine.request(server, b"GET", b"/echo", host(server), b"", None, T)
    second = await engine.request(server, b"GET", b"/echo", host(server), b"", None, T)
    port_first = json.loads(await read_all(first))["client_port"]
    port_second = json.loads(await read_all(second))["client_port"]
    assert port_first != port_second
    # the most recently returned connection is used next
    assert (await get_json(engine, server))["client_port"] == port_second
    assert (await get_json(engine, server))["client_port"] == port_second


async def test_expired_idle_connection_is_not_reused(server: Origin) -> None:
    engine = Engine(limits=Limits(keepalive_expiry=0.0))
    try:
        a = (await get_json(engine, server))["client_port"]
        b = (await get_json(engine, server))["client_port"]
        assert a != b
        assert engine.stats()["created"] == 2
        assert engine.stats()["reused"] == 0
    finally:
        await engine.aclose()


async def test_max_keepalive_closes_extra_idle_connections(server: Origin) -> None:
    engine = Engine(limits=Limits(max_keepalive=1))
    try:
        r1 = await engine.request(server, b"GET", b"/echo", host(server), b"", None, T)
        r2 = await engine.request(server, b"GET", b"/echo", host(server), b"", None, T)
        await read_all(r1)
        await read_all(r2)
        assert (engine.stats()["open"], engine.stats()["idle"]) == (1, 1)
    finally:
        await engine.aclose()


async def test_pool_limit_waits_then_times_out(server: Origin) -> None:
    engine = Engine(limits=Limits(max_connections=1))
    quick = Timeouts(5.0, 5.0, 5.0, 0.05)
    try:
        held = await engine.request(server, b"GET", b"/echo", host(server), b"", None, quick)
        with pytest.raises(PoolTimeout) as info:
            await engine.request(server, b"GET", b"/echo", host(server), b"", None, quick)
        assert not info.value.request_sent
        assert engine.stats()["open"] == 1
        # a waiter gets the connection as soon as it is returned
        waiter = asyncio.ensure_future(get_json(engine, server, timeouts=T))
        for _ in range(100):
            if engine.stats()["waiting"]:
                break
            await asyncio.sleep(0)
        assert engine.stats()["waiting"] == 1
        await read_all(held)
        assert (await waiter)["method"] == "GET"
        assert engine.stats()["created"] == 1
    finally:
        await engine.aclose()


async def test_closed_connection_frees_a_slot_for_a_waiter(server: Origin) -> None:
    engine = Engine(limits=Limits(max_connections=1))
    try:
        target = b"/download/%d" % (64 * 1024 * 1024)
        held = await engine.request(server, b"GET", target, host(server), b"", None, T)
        waiter = asyncio.ensure_future(get_json(engine, server))
        for _ in range(100):
            if engine.stats()["waiting"]:
                break
            await asyncio.sleep(0)
        await held.aclose()  # unfinished body: the connection is closed, its slot handed on
        assert (await waiter)["method"] == "GET"
        assert engine.stats()["created"] == 2
        assert engine.stats()["open"] == 1
    finally:
        await engine.aclose()


async def test_aclose_closes_everything_and_engine_stays_usable(
    server: Origin, engine: Engine
) -> None:
    await get_json(engine, server)
    assert engine.stats()["open"] == 1
    await engine.aclose()
    await engine.aclose()  # idempotent
    assert engine.stats()["open"] == 0
    assert (await get_json(engine, server))["method"] == "GET"


async def test_big_download_is_intact_with_bounded_buffering(server: Origin) -> None:
    size = 64 * 1024 * 1024
    read_size = 256 * 1024
    engine = Engine(read_size=read_size)
    try:
        resp = await engine.request(
            server, b"GET", b"/download/%d" % size, host(server), b"", None, T
        )
        assert resp.content_length == size
        digest = hashlib.sha256()
        total = 0
        try:
            for _ in range(1_000_000):
                chunk = await resp.receive()
                if not chunk:
                    break
                assert len(chunk) <= read_size
                digest.update(chunk)
                total += len(chunk)
                if total % (4 * read_size) == 0:
                    for _ in range(10):  # a slow consumer: let the socket fill our buffer
                        await asyncio.sleep(0)
        finally:
            await resp.aclose()
        assert total == size
        assert digest.hexdigest() == _sha(size)
        # reading pauses above 2 x read_size; one more read (at most read_size) may land
        assert engine.stats()["max_buffered"] <= 3 * read_size
        assert engine.stats()["idle"] == 1
    finally:
        await engine.aclose()


async def test_big_upload_is_intact_with_bounded_buffering(server: Origin, engine: Engine) -> None:
    size = 64 * 1024 * 1024
    seen = await get_json(engine, server, b"POST", body=_apattern(size), content_length=size)
    assert seen["size"] == size
    assert seen["sha256"] == _sha(size)
    # the writer waits for the transport to drain: at most the high-water mark plus a chunk
    assert engine.stats()["max_send_buffer"] <= 256 * 1024 + len(BLOCK)
