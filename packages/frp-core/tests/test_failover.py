"""Failover through the ``Upstreams``/``Router`` hooks: safe retries only, outcomes reported."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import httpx
from frp_core_kit import RawServer, read_head
from frp_testing import run_server, unused_port


class ListRouter:
    """Tries its targets in order; records every ``done`` call (thread-safe)."""

    def __init__(self, targets: list[str]) -> None:
        self.targets = targets
        self.outcomes: list[tuple[str, str]] = []
        self.cond = threading.Condition()

    def route(self, scope: Mapping[str, Any]) -> ListRouter:
        return self

    def pick(self, tried: Sequence[str]) -> str | None:
        return next((t for t in self.targets if t not in tried), None)

    def done(self, target: str, outcome: Any, elapsed: float) -> None:
        assert elapsed >= 0
        with self.cond:
            self.outcomes.append((target, str(outcome)))
            self.cond.notify_all()

    def wait(self, n: int) -> list[tuple[str, str]]:
        with self.cond:
            self.cond.wait_for(lambda: len(self.outcomes) >= n, 15)
            out = list(self.outcomes)
            self.outcomes.clear()
            return out


async def _close_after_head(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_head(reader)
    writer.close()


async def test_refused_target_fails_over(
    make_gateway: Callable[..., Any], mode: str, upstream: str
) -> None:
    refused = f"http://127.0.0.1:{unused_port()}"
    router = ListRouter([refused, upstream])
    with run_server(make_gateway(router, mode)) as proxy:
        async with httpx.AsyncClient(base_url=proxy.url) as client:
            for url in ["/p/x", "/mnt/x"]:
                response = await client.post(url, content=b"body")
                assert response.status_code == 200
                assert response.json()["body_length"] == 4
                outcomes = await asyncio.to_thread(router.wait, 2)
                assert outcomes == [(refused, "connect_error"), (upstream, "success")]


async def test_sent_request_retried_only_when_idempotent(
    make_gateway: Callable[..., Any], mode: str, upstream: str
) -> None:
    async with RawServer(_close_after_head) as bad:
        router = ListRouter([bad.url, upstream])
        with run_server(make_gateway(router, mode)) as proxy:
            async with httpx.AsyncClient(base_url=proxy.url) as client:
                response = await client.post("/mnt/x", content=b"not twice")
                assert response.status_code == 502
                assert await asyncio.to_thread(router.wait, 1) == [(bad.url, "reset")]
                response = await client.get("/mnt/x")
                assert response.status_code == 200
                outcomes = await asyncio.to_thread(router.wait, 2)
                assert outcomes == [(bad.url, "reset"), (upstream, "success")]


async def test_body_beyond_replay_buffer_is_not_retried(
    make_gateway: Callable[..., Any], mode: str, upstream: str
) -> None:
    async with RawServer(_close_after_head) as bad:
        router = ListRouter([bad.url, upstream])
        with run_server(make_gateway(router, mode)) as proxy:
            async with httpx.AsyncClient(base_url=proxy.url) as client:
                response = await client.put("/mnt/x", content=b"x" * (1 << 20))
                assert response.status_code == 502
                assert await asyncio.to_thread(router.wait, 1) == [(bad.url, "reset")]


async def test_no_target_is_503_with_retry_after(
    make_gateway: Callable[..., Any], mode: str
) -> None:
    router = ListRouter([])
    with run_server(make_gateway(router, mode)) as proxy:
        async with httpx.AsyncClient(base_url=proxy.url) as client:
            for url in ["/p/x", "/mnt/x"]:
                response = await client.get(url)
                assert response.status_code == 503
                assert response.headers["retry-after"] == "1"


async def test_outcomes_for_5xx_and_client_abort(
    make_gateway: Callable[..., Any], mode: str, upstream: str
) -> None:
    router = ListRouter([upstream])
    with run_server(make_gateway(router, mode)) as proxy:
        async with httpx.AsyncClient(base_url=proxy.url) as client:
            response = await client.get("/p/x", headers={"x-act": "status:502"})
            assert response.status_code == 502  # relayed, not retried
            assert await asyncio.to_thread(router.wait, 1) == [(upstream, "http_5xx")]
            async with client.stream("GET", "/mnt/s", headers={"x-act": "stream"}) as r:
                async for _ in r.aiter_raw():
                    break
            assert await asyncio.to_thread(router.wait, 1) == [(upstream, "client_abort")]
