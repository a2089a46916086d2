"""Failover safety and exact in-flight counts over real sockets, with a misbehaving upstream."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from fastapi import FastAPI
from frp_testing import ServerThread

from frp_balance import LoadBalancer

Start = Callable[..., ServerThread]


class Rude:
    """A raw HTTP/1.1 upstream: reads each request with its body, then misbehaves by path.

    ``/drop``: closes the connection without answering.  ``/truncate``: sends a response head
    announcing 1000 bytes and 3 of them, then closes.
    """

    def __init__(self) -> None:
        self.seen: list[tuple[str, bytes]] = []
        self.url = ""

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            method, target, _ = head.split(b"\r\n", 1)[0].decode().split(" ")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            body = await reader.readexactly(length)
            self.seen.append((f"{method} {target}", body))
            if target.startswith("/truncate"):
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nabc")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Rude]:
        server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        async with server:
            yield self


async def test_a_post_whose_body_was_sent_is_not_retried_but_a_get_is(
    servers: Start,
    backend: Callable[..., FastAPI],
    gateway: Callable[..., FastAPI],
    settled: Callable[..., int],
) -> None:
    good = servers(backend("good"))
    async with Rude().running() as rude, httpx.AsyncClient(timeout=30) as client:
        lb = LoadBalancer([rude.url, good.url])  # round robin: the rude one first
        gw = servers(gateway(lb))
        r = await client.post(gw.url + "/drop", content=b"order #1")
        assert r.status_code == 502
        assert rude.seen == [("POST /drop", b"order #1")]
        assert lb.stats()["targets"][good.url]["picks"] == 0  # never sent twice
        lb.set_index(0)
        r = await client.get(gw.url + "/drop")
        assert (r.status_code, r.text) == (200, "good")
        assert rude.seen[-1] == ("GET /drop", b"")
        assert lb.stats()["retries"] == 1
        assert settled(lb) == 0


async def test_in_flight_returns_to_zero_after_streamed_failed_and_cancelled_requests(
    servers: Start,
    backend: Callable[..., FastAPI],
    gateway: Callable[..., FastAPI],
    settled: Callable[..., int],
) -> None:
    up = servers(backend("up"))
    async with Rude().running() as rude, httpx.AsyncClient(timeout=30) as client:
        streamed = LoadBalancer([up.url])
        broken = LoadBalancer([rude.url])
        gw_stream, gw_broken = servers(gateway(streamed)), servers(gateway(broken))

        r = await client.get(gw_stream.url + "/stream?chunks=200")
        assert r.text.count("\n") == 200
        assert settled(streamed) == 0

        with pytest.raises(httpx.HTTPError):  # the body breaks off after 3 of 1000 bytes
            await client.get(gw_broken.url + "/truncate")
        assert settled(broken) == 0
        assert broken.stats()["targets"][rude.url].get("reset", 0) == 1

        async with client.stream("GET", gw_stream.url + "/stream") as endless:
            async for chunk in endless.aiter_raw():
                assert chunk.startswith(b"up:0")
                break  # the client leaves mid-stream
        assert settled(streamed) == 0
        assert streamed.stats()["targets"][up.url]["client_abort"] == 1
