"""Upstream failures map to short 502/503/504 answers; failures mid-body abort the client."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from frp_core_kit import RawServer, raw_exchange, read_head
from frp_testing import run_server, unused_port

import frp_core

FORMS = ["/p/x", "/mnt/x"]


def _clean(response: httpx.Response) -> None:
    """Error bodies are short and carry no address or exception text."""
    assert len(response.content) < 64
    assert b"127.0.0.1" not in response.content
    assert b"Error" not in response.content


async def test_connection_refused_is_502(make_gateway: Callable[..., Any], mode: str) -> None:
    with run_server(make_gateway(f"http://127.0.0.1:{unused_port()}", mode)) as proxy:
        async with httpx.AsyncClient(base_url=proxy.url) as client:
            for url in FORMS:
                response = await client.get(url)
                assert response.status_code == 502
                assert response.text == "Bad Gateway"
                _clean(response)


async def test_dns_failure_is_502(make_gateway: Callable[..., Any], mode: str) -> None:
    with run_server(make_gateway("http://does-not-exist.invalid", mode)) as proxy:
        async with httpx.AsyncClient(base_url=proxy.url) as client:
            response = await client.get("/mnt/x")
            assert response.status_code == 502
            _clean(response)


async def test_upstream_silent_past_read_timeout_is_504(
    make_gateway: Callable[..., Any], mode: str, upstream: str, recorder: Any
) -> None:
    timeouts = frp_core.Timeouts(connect=5.0, read=0.5, write=5.0, pool=5.0)
    with run_server(make_gateway(upstream, mode, timeout=timeouts)) as proxy:
        async with httpx.AsyncClient(base_url=proxy.url, timeout=30) as client:
            for url in FORMS:
                recorder.disconnected.clear()
                response = await client.get(url, headers={"x-act": "hang"})
                assert response.status_code == 504
                assert response.text == "Gateway Timeout"
                # the proxy gave up on that upstream connection: the upstream sees it closed
                assert await asyncio.to_thread(recorder.disconnected.wait, 15)


async def _garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_head(reader)
    writer.write(b"NOT HTTP AT ALL\r\n\r\n")
    await writer.drain()
    writer.close()


async def _truncated_length(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_head(reader)
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\npartial")
    await writer.drain()
    writer.close()


async def _truncated_chunks(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_head(reader)
    writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n7\r\npartial\r\n")
    await writer.drain()
    writer.close()


async def test_malformed_response_is_502(make_gateway: Callable[..., Any], mode: str) -> None:
    async with RawServer(_garbage) as bad:
        with run_server(make_gateway(bad.url, mode)) as proxy:
            async with httpx.AsyncClient(base_url=proxy.url) as client:
                for url in FORMS:
                    response = await client.get(url)
                    assert response.status_code == 502
                    _clean(response)


@pytest.mark.parametrize("handler", [_truncated_length, _truncated_chunks])
async def test_truncated_body_never_looks_complete(
    make_gateway: Callable[..., Any], mode: str, handler: Any
) -> None:
    async with RawServer(handler) as bad:
        with run_server(make_gateway(bad.url, mode)) as proxy:
            async with httpx.AsyncClient(base_url=proxy.url) as client:
                for url in FORMS:
                    with pytest.raises(httpx.RemoteProtocolError):
                        await client.get(url)


async def test_pool_exhausted_is_503(upstream: str, recorder: Any) -> None:
    app = frp_core.ReverseProxy(
        upstream,
        limits=frp_core.Limits(max_connections=1),
        timeout=frp_core.Timeouts(connect=5.0, read=2.0, write=5.0, pool=0.2),
    )
    with run_server(app) as proxy:
        async with httpx.AsyncClient(base_url=proxy.url, timeout=30) as client:
            first = asyncio.ensure_future(client.get("/x", headers={"x-act": "hang"}))
            assert await asyncio.to_thread(recorder.hanging.wait, 10)
            second = await client.get("/y")
            assert second.status_code == 503
            assert second.text == "Service Unavailable"
            assert (await first).status_code == 504


SMUGGLING = {
    "cl_and_te": b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "te_comma": b"Transfer-Encoding: ,chunked\r\n\r\n0\r\n\r\n",
    "te_gzip": b"Transfer-Encoding: gzip\r\n\r\n",
    "two_cl": b"Content-Length: 1\r\nContent-Length: 1\r\n\r\nx",
    "cl_sign": b"Content-Length: +1\r\n\r\nx",
}
SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: p\r\n\r\n"


@pytest.mark.parametrize("parser", ["httptools", "h11"])
@pytest.mark.parametrize("vector", sorted(SMUGGLING))
async def test_ambiguous_requests_get_400_and_close(
    make_gateway: Callable[..., Any], parser: str, vector: str
) -> None:
    seen: list[bytes] = []

    async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await read_head(reader))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        await writer.drain()
        writer.close()

    async with RawServer(record) as up:
        with run_server(make_gateway(up.url, "httpx"), http=parser) as proxy:
            for path in [b"/p/v", b"/mnt/v"]:
                request = b"POST " + path + b" HTTP/1.1\r\nHost: p\r\nConnection: close\r\n"
                request += SMUGGLING[vector]
                response = await raw_exchange(proxy.port, request + SMUGGLED)
                assert b"/smuggled" not in b"".join(seen)
                if response.startswith(b"HTTP/1.1 400"):
                    head = response.partition(b"\r\n\r\n")[0].lower()
                    assert b"connection: close" in head
                    assert response.count(b"HTTP/1.1") == 1  # the smuggled request was not served
                elif response:
                    # the server's parser merged identical lengths: one clean framing went up
                    assert vector == "two_cl", response
                    last = seen[-1].lower()
                    assert last.count(b"content-length") == 1
                    assert b"transfer-encoding" not in last
    if vector != "two_cl":
        assert seen == []


LONG_POLLS = {
    "get": b"GET {path} HTTP/1.1\r\nHost: p\r\nx-act: hang\r\n\r\n",
    "post": b"POST {path} HTTP/1.1\r\nHost: p\r\nx-act: hang\r\nContent-Length: 5\r\n\r\nhello",
    "chunked": (
        b"POST {path} HTTP/1.1\r\nHost: p\r\nx-act: hang\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n0\r\n\r\n"
    ),
}


@pytest.mark.parametrize("request_kind", sorted(LONG_POLLS))
async def test_client_leaving_during_a_long_poll_frees_the_upstream(
    make_gateway: Callable[..., Any], mode: str, upstream: str, recorder: Any, request_kind: str
) -> None:
    """A client that leaves while the upstream holds its answer (a long poll) closes the
    upstream connection long before the 60 s read timeout: with or without a request body,
    once the body is complete nothing else is reading, so the proxy watches for the leave."""
    timeouts = frp_core.Timeouts(connect=5.0, read=60.0, write=5.0, pool=5.0)
    with run_server(make_gateway(upstream, mode, timeout=timeouts)) as proxy:
        for path in [b"/p/poll", b"/mnt/poll"]:
            recorder.disconnected.clear()
            recorder.hanging.clear()
            _, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            writer.write(LONG_POLLS[request_kind].replace(b"{path}", path))
            await writer.drain()
            assert await asyncio.to_thread(recorder.hanging.wait, 10)
            writer.close()
            assert await asyncio.to_thread(recorder.disconnected.wait, 15), path


async def test_one_connection_pool_survives_aborts_errors_and_timeouts(
    upstream: str, recorder: Any
) -> None:
    """With a single pooled connection, nothing leaks it: every request after still works."""
    app = frp_core.ReverseProxy(
        upstream,
        limits=frp_core.Limits(max_connections=1),
        timeout=frp_core.Timeouts(connect=5.0, read=0.5, write=5.0, pool=5.0),
    )
    with run_server(app) as proxy:
        async with httpx.AsyncClient(base_url=proxy.url, timeout=30) as client:
            assert (await client.get("/ok")).status_code == 200
            async with client.stream("GET", "/s", headers={"x-act": "stream"}) as r:
                async for _ in r.aiter_raw():
                    break  # client abort mid-body
            assert (await client.get("/t", headers={"x-act": "hang"})).status_code == 504
            assert (await client.post("/p", content=b"x" * 100_000)).status_code == 200
            assert (await client.head("/h")).status_code == 200
            for _ in range(3):
                response = await client.get("/after")
                assert response.status_code == 200
                assert response.json()["raw_path"] == "/after"


@pytest.mark.parametrize("answer", ["early 413", "write timeout"])
async def test_an_abandoned_upload_closes_the_client_connection(
    make_gateway: Callable[..., Any], mode: str, answer: str
) -> None:
    """The answer comes before the upload is all read (the upstream's early 413, or the
    proxy's own 504 when the upstream stops reading): it says ``Connection: close`` and the
    connection is closed after it, instead of the server draining the rest of the upload and
    then keeping an idle connection open for ever."""

    async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        if answer == "early 413":
            writer.write(b"HTTP/1.1 413 Content Too Large\r\nContent-Length: 3\r\n\r\nbig")
        await reader.read(1)  # reads nothing more: the proxy's writes back up
        await asyncio.Event().wait()  # until the test ends

    timeouts = frp_core.Timeouts(connect=5.0, read=30.0, write=0.5, pool=5.0)
    async with RawServer(upstream) as up:
        with run_server(make_gateway(up.url, mode, timeout=timeouts)) as proxy:
            for path in [b"/p/up", b"/mnt/up"]:
                reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
                size = 256 << 20
                writer.write(
                    b"POST %b HTTP/1.1\r\nHost: p\r\nContent-Length: %d\r\n\r\n" % (path, size)
                )

                async def upload(writer: asyncio.StreamWriter, blocks: int) -> None:
                    block = b"u" * (1 << 20)
                    with contextlib.suppress(ConnectionError):
                        for _ in range(blocks):
                            writer.write(block)
                            await writer.drain()

                sending = asyncio.ensure_future(upload(writer, size >> 20))
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 15)
                # httpx sends the whole body before it reads a response: its early 413 is
                # never read, and the upload ends in the write timeout (docs/frp-core.md)
                early = answer == "early 413" and mode == "engine"
                assert head.startswith(b"HTTP/1.1 413" if early else b"HTTP/1.1 504")
                assert b"connection: close" in head.lower()
                rest = b""
                with contextlib.suppress(ConnectionError):
                    rest = await asyncio.wait_for(reader.read(), 15)  # EOF: closed by the proxy
                assert len(rest) < 64
                await asyncio.wait_for(sending, 15)
                writer.close()


async def test_client_leaving_before_a_delayed_body_frees_the_upstream(
    make_gateway: Callable[..., Any], mode: str
) -> None:
    """The upstream sends a ``Content-Length`` head, then holds the body; the client leaves:
    the upstream connection is closed then, not after the 60 s read timeout."""
    closed = asyncio.Queue[None]()

    async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n")
        await reader.read()  # until the proxy closes the connection
        closed.put_nowait(None)

    timeouts = frp_core.Timeouts(connect=5.0, read=60.0, write=5.0, pool=5.0)
    async with RawServer(upstream) as up:
        with run_server(make_gateway(up.url, mode, timeout=timeouts)) as proxy:
            for path in [b"/p/slow", b"/mnt/slow"]:
                reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
                writer.write(b"GET %b HTTP/1.1\r\nHost: p\r\n\r\n" % path)
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 15)
                assert head.startswith(b"HTTP/1.1 200")
                writer.close()
                await asyncio.wait_for(closed.get(), 15)
