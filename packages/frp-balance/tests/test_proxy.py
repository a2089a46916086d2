"""LoadBalancer.proxy_pass over real sockets: uvicorn backends, a FastAPI gateway, httpx."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable

import httpx
import pytest
from fastapi import FastAPI
from frp_testing import ServerThread, unused_port

from frp_balance import LoadBalancer, Strategy

Start = Callable[..., ServerThread]


def names(url: str, n: int, path: str = "/x") -> list[str]:
    with httpx.Client(base_url=url) as client:
        return [client.get(path).raise_for_status().text for _ in range(n)]


def test_round_robin_order_and_weights(
    servers: Start, backend: Callable[..., FastAPI], gateway: Callable[..., FastAPI]
) -> None:
    a, b, c = (servers(backend(n)) for n in "abc")
    plain = servers(gateway(LoadBalancer([a.url, b.url, c.url])))
    assert names(plain.url, 7) == list("abcabca")
    weighted = servers(gateway(LoadBalancer([a.url, b.url, c.url], weights={a.url: 2})))
    assert names(weighted.url, 8) == list("abcaabca")


def test_a_refused_get_succeeds_on_another_backend(
    servers: Start,
    backend: Callable[..., FastAPI],
    gateway: Callable[..., FastAPI],
    settled: Callable[..., int],
) -> None:
    live = servers(backend("live"))
    dead = f"http://127.0.0.1:{unused_port()}"
    lb = LoadBalancer([dead, live.url])
    gw = servers(gateway(lb))
    assert names(gw.url, 4) == ["live"] * 4
    stats = lb.stats()
    assert stats["failovers"] >= 1
    assert stats["targets"][dead]["connect_error"] == stats["targets"][dead]["picks"]
    assert settled(lb) == 0


def test_all_down_answers_503_with_retry_after(
    servers: Start, gateway: Callable[..., FastAPI]
) -> None:
    from frp_health import HealthChecker

    checker = HealthChecker([f"http://127.0.0.1:{unused_port()}" for _ in range(2)], timeout=2)
    lb = LoadBalancer(checker)
    gw = servers(gateway(lb, checker))
    r = httpx.get(gw.url + "/x")
    assert r.status_code == 503
    assert "retry-after" in r.headers
    assert lb.stats()["no_target"] == 1


def test_backends_of_different_speed_both_get_traffic_under_load(
    servers: Start,
    backend: Callable[..., FastAPI],
    gateway: Callable[..., FastAPI],
    settled: Callable[..., int],
) -> None:
    from frp_health import HealthChecker

    fast, slow = servers(backend("fast")), servers(backend("slow", delay=0.05))
    checker = HealthChecker([fast.url, slow.url], interval=60)
    lb = LoadBalancer(checker)
    gw = servers(gateway(lb, checker))

    async def load() -> Counter[str]:
        sem = asyncio.Semaphore(16)
        async with httpx.AsyncClient(base_url=gw.url, timeout=30) as client:

            async def one() -> str:
                async with sem:
                    return (await client.get("/x")).raise_for_status().text

            return Counter(await asyncio.gather(*(one() for _ in range(120))))

    shares = asyncio.run(load())
    assert shares["fast"] > shares["slow"] > 0
    assert settled(lb) == 0


@pytest.mark.parametrize("strategy", ["round_robin", "latency"])
def test_a_backend_that_starts_refusing_gets_only_a_handful(
    strategy: Strategy,
    servers: Start,
    serve: Start,
    backend: Callable[..., FastAPI],
    gateway: Callable[..., FastAPI],
    settled: Callable[..., int],
) -> None:
    from frp_health import HealthChecker

    good = servers(backend("good"))
    flaky = serve(backend("flaky"))
    try:
        checker = HealthChecker([good.url, flaky.url], interval=3600)
        lb = LoadBalancer(checker, strategy=strategy)
        gw = servers(gateway(lb, checker))
        assert set(names(gw.url, 10)) <= {"good", "flaky"}
    finally:
        flaky.stop()  # refuses from now on; the next probe is an hour away
    before = lb.stats()["targets"][flaky.url]["picks"]
    assert names(gw.url, 40) == ["good"] * 40  # each refused attempt was retried on "good"
    after = lb.stats()["targets"][flaky.url]
    assert after["picks"] - before <= 5  # frp-health ejects after 5 gateway failures in a row
    assert after.get("connect_error", 0) == after["picks"] - before
    assert settled(lb) == 0


def test_hash_moves_about_a_quarter_of_keys_when_a_fourth_target_is_added(
    servers: Start, backend: Callable[..., FastAPI], gateway: Callable[..., FastAPI]
) -> None:
    ups = [servers(backend(n)) for n in "abcd"]
    three = LoadBalancer([u.url for u in ups[:3]], strategy="hash", hash_key="header:x-user")
    four = LoadBalancer([u.url for u in ups], strategy="hash", hash_key="header:x-user")
    gw3, gw4 = servers(gateway(three)), servers(gateway(four))

    def placement(url: str) -> dict[str, str]:
        with httpx.Client(base_url=url) as client:
            return {
                u: client.get("/x", headers={"x-user": u}).raise_for_status().text
                for u in (f"user{i}" for i in range(120))
            }

    before, after = placement(gw3.url), placement(gw4.url)
    assert placement(gw3.url) == before  # stable
    moved = [u for u in before if before[u] != after[u]]
    assert all(after[u] == "d" for u in moved)  # keys only move to the new target
    assert 0.1 < len(moved) / len(before) < 0.45  # ideal 1/4


def test_quick_start_shape_spreads_sequential_requests_over_equal_backends(
    servers: Start, backend: Callable[..., FastAPI], gateway: Callable[..., FastAPI]
) -> None:
    from frp_health import HealthChecker

    a, b = servers(backend("a")), servers(backend("b"))
    checker = HealthChecker([a.url, b.url])
    gw = servers(gateway(LoadBalancer(checker), checker))
    assert set(names(gw.url, 20)) == {"a", "b"}


def test_load_balancer_is_a_router_for_reverse_proxy(
    servers: Start, backend: Callable[..., FastAPI], settled: Callable[..., int]
) -> None:
    from frp_core import ReverseProxy, Router

    a, b = servers(backend("a")), servers(backend("b"))
    lb = LoadBalancer([a.url, b.url])
    assert isinstance(lb, Router)
    gw = servers(ReverseProxy(lb))
    assert names(gw.url, 4) == ["a", "b", "a", "b"]
    assert settled(lb) == 0


def test_a_plain_list_with_every_backend_down_answers_the_real_error(
    servers: Start, gateway: Callable[..., FastAPI]
) -> None:
    dead = [f"http://127.0.0.1:{unused_port()}" for _ in range(2)]
    lb = LoadBalancer(dead)
    gw = servers(gateway(lb))
    with httpx.Client(base_url=gw.url) as client:
        statuses = {client.get("/x").status_code for _ in range(12)}
    assert statuses == {502}  # fail open: never every target ejected, so no blind 503
    stats = lb.stats()
    # 5 failures in a row eject one target (12 requests are plenty: each of the first ones
    # tries both); the last one standing is never ejected, so nothing answers 503
    assert [t["healthy"] for t in stats["targets"].values()].count(True) == 1
    assert stats["no_target"] == 0
    assert stats["failovers"] >= 1  # the first requests failed over before answering 502
    for t in dead:
        assert stats["targets"][t]["connect_error"] == stats["targets"][t]["picks"] > 0


def test_panic_mode_serves_when_every_probe_fails_but_traffic_works(
    servers: Start, backend: Callable[..., FastAPI], gateway: Callable[..., FastAPI]
) -> None:
    from frp_health import HealthChecker

    ups = [servers(backend(n, probe_status=500)) for n in "ab"]
    strict_checker = HealthChecker([u.url for u in ups], ping_path="/health")
    panic_checker = HealthChecker([u.url for u in ups], ping_path="/health")
    strict = servers(gateway(LoadBalancer(strict_checker), strict_checker))
    panic_lb = LoadBalancer(panic_checker, panic_threshold=0.5)
    panic = servers(gateway(panic_lb, panic_checker))
    assert httpx.get(strict.url + "/x").status_code == 503
    assert set(names(panic.url, 12)) == {"a", "b"}
    assert panic_lb.stats()["panic"] == 12


async def test_a_stopped_backend_fails_over_even_with_the_retry_budget_spent(
    servers: Start,
    serve: Callable[..., ServerThread],
    backend: Callable[..., FastAPI],
    gateway: Callable[..., FastAPI],
    settled: Callable[..., int],
) -> None:
    """Regression (the soak's 502): retries in flight had spent the budget when a GET found
    the killed backend refusing connections, and it answered 502 instead of failing over.
    A connect failure repeats no work upstream, so it fails over outside the budget: here the
    budget is zero, the gateway holds keep-alive connections to the backend that goes away,
    and every request still lands on the live one."""
    import websockets

    live = servers(backend("live"))
    doomed = serve(backend("doomed"))
    try:
        lb = LoadBalancer([doomed.url, live.url], retry_budget=0.0, min_retries=0)
        gw = servers(gateway(lb))
        async with httpx.AsyncClient(base_url=gw.url, timeout=30) as client:
            warm = [(await client.get("/x")).text for _ in range(4)]
            assert warm == ["doomed", "live", "doomed", "live"]  # pooled connections to both
        assert settled(lb) == 0
    finally:
        doomed.stop()  # its keep-alive connections close; its port refuses from now on
    async with httpx.AsyncClient(base_url=gw.url, timeout=30) as client:
        gets = [await client.get("/x") for _ in range(6)]
        posts = [await client.post("/order", content=b"#%d" % i) for i in range(2)]
    assert [(r.status_code, r.text) for r in gets + posts] == [(200, "live")] * 8
    async with websockets.connect(f"{gw.ws_url}/ws/ws", open_timeout=10) as ws:
        await ws.send("hello")
        assert await ws.recv() == "live:hello"
    stats = lb.stats()
    assert stats["failovers"] >= 1
    assert stats["targets"][doomed.url].get("connect_error", 0) >= 1
    assert (stats["retries"], stats["retries_denied"]) == (0, 0)  # nothing was re-sent
    assert settled(lb) == 0
