"""The background task, shutdown, client ownership, subscriptions and logging."""

from __future__ import annotations

import asyncio
import logging

import httpx
import pytest

from frp_health import HealthChecker, StateChange, TargetState

WAIT = 10  # generous bound for anything that should happen "soon"; never a timing assertion


def our_tasks() -> list[asyncio.Task[object]]:
    return [
        t for t in asyncio.all_tasks() if t.get_name().startswith("frp_health") and not t.done()
    ]


async def test_stop_mid_probe_returns_promptly_and_leaves_no_task(backend) -> None:
    app = backend()
    checker = HealthChecker([app.url], interval=0.01, timeout=600, jitter=0)
    await checker.start()
    assert checker.is_healthy(app.url)
    app.mode = "hang"
    assert await asyncio.to_thread(app.hanging.wait, WAIT)  # a probe is now in flight
    await asyncio.wait_for(checker.stop(), WAIT)
    assert not checker.running
    assert our_tasks() == []
    await checker.destroy()


async def test_stop_interrupts_a_start_that_hangs_on_its_first_probe(backend) -> None:
    app = backend()
    app.mode = "hang"
    checker = HealthChecker([app.url], timeout=600)
    starting = asyncio.create_task(checker.start())
    assert await asyncio.to_thread(app.hanging.wait, WAIT)
    await asyncio.wait_for(checker.destroy(), WAIT)
    await asyncio.wait_for(starting, WAIT)
    assert our_tasks() == []


async def test_background_loop_reports_state_changes(backend) -> None:
    app = backend()
    checker = HealthChecker([app.url], interval=0.01, unhealthy_threshold=1, healthy_threshold=1)
    async with checker, checker.changes() as stream:
        assert checker.running
        app.mode = "fail"
        change = await asyncio.wait_for(anext(stream), WAIT)
        assert (change.old, change.new) == (TargetState.HEALTHY, TargetState.UNHEALTHY)
        assert not checker.is_healthy(app.url)
        app.mode = "ok"
        change = await asyncio.wait_for(anext(stream), WAIT)
        assert change.new is TargetState.HEALTHY
        assert change.admitted
    assert our_tasks() == []


class FlakyTransport(httpx.AsyncBaseTransport):
    """A transport whose first calls fail with a bug-like exception."""

    def __init__(self, failures: int) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.failures = failures

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.failures > 0:
            self.failures -= 1
            raise RuntimeError("bug")
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_an_exception_in_a_probe_never_kills_the_loop(backend) -> None:
    app = backend()
    async with httpx.AsyncClient(transport=FlakyTransport(3)) as client:
        checker = HealthChecker([app.url], interval=0.01, httpx_client=client, healthy_threshold=1)
        async with checker, checker.changes() as stream:
            snap = checker.snapshot()[app.url]
            assert snap.state is TargetState.UNHEALTHY
            assert snap.last_error == "error: RuntimeError('bug')"
            change = await asyncio.wait_for(anext(stream), WAIT)
            assert change.new is TargetState.HEALTHY
            assert checker.running


async def test_loop_readmits_an_ejected_target_on_time(backend) -> None:
    one, two = backend(), backend()
    checker = HealthChecker([one.url, two.url], interval=600, base_ejection=0.05, max_ejection=1)
    async with checker, checker.changes() as stream:
        for _ in range(5):
            checker.report(one.url, "connect_error")
        ejected = await asyncio.wait_for(anext(stream), WAIT)
        readmitted = await asyncio.wait_for(anext(stream), WAIT)  # nobody asked: the loop did
    assert ejected.new is TargetState.EJECTED
    assert readmitted.new is TargetState.HEALTHY
    assert readmitted.reason == "ejection time passed"


async def test_internal_client_is_closed_by_aexit_and_destroy(backend) -> None:
    app = backend()
    checker = HealthChecker([app.url])
    async with checker:
        client = checker.httpx_client
        assert client is not None
        assert not client.is_closed
    assert client.is_closed
    assert checker.httpx_client is None

    await checker.check_all()  # a destroyed checker can still probe: a fresh client
    client = checker.httpx_client
    await checker.destroy()
    assert client is not None
    assert client.is_closed


async def test_external_client_is_never_closed(backend) -> None:
    app = backend()
    async with httpx.AsyncClient() as client:
        async with HealthChecker([app.url], httpx_client=client) as checker:
            assert checker.is_healthy(app.url)
        await checker.destroy()
        assert not client.is_closed
        assert (await client.get(app.url)).status_code == 200


async def test_restart_after_stop(backend) -> None:
    app = backend()
    checker = HealthChecker([app.url])
    await checker.start()
    await checker.start()  # idempotent
    await checker.stop()
    await checker.stop()
    app.mode = "fail"
    await checker.start()  # probes again at once
    assert checker.snapshot()[app.url].consecutive_probe_failures == 1
    assert len(app.requests) == 2
    await checker.destroy()
    assert our_tasks() == []


async def test_change_streams_end_on_destroy(backend) -> None:
    app = backend()
    checker = HealthChecker([app.url])
    stream = checker.changes()
    consumer = asyncio.create_task(anext_all(stream))
    await checker.start()
    await checker.destroy()
    changes = await asyncio.wait_for(consumer, WAIT)
    assert [c.new for c in changes] == [TargetState.HEALTHY]


async def anext_all(stream) -> list[StateChange]:
    return [change async for change in stream]


async def test_subscribers_errors_are_contained_and_unsubscribe_works(backend, caplog) -> None:
    app = backend()
    checker = HealthChecker([app.url], unhealthy_threshold=1)
    seen: list[StateChange] = []

    def broken(change: StateChange) -> None:
        raise RuntimeError("subscriber bug")

    checker.subscribe(broken)
    unsubscribe = checker.subscribe(seen.append)
    with caplog.at_level(logging.ERROR, logger="frp_health"):
        await checker.check_all()
    assert [c.new for c in seen] == [TargetState.HEALTHY]
    assert "state-change callback" in caplog.text
    unsubscribe()
    app.mode = "fail"
    await checker.check_all()
    assert len(seen) == 1
    await checker.destroy()


async def test_one_log_line_per_state_change_not_per_probe(backend, caplog) -> None:
    app = backend()
    checker = HealthChecker([app.url])
    with caplog.at_level(logging.DEBUG, logger="frp_health"):
        for mode in ["ok", "ok", "fail", "ok", "fail", "fail", "fail", "fail", "ok", "ok", "ok"]:
            app.mode = mode
            await checker.check_all()
    lines = [r.getMessage() for r in caplog.records if r.name == "frp_health"]
    assert lines == [
        f"target {app.url} unknown -> healthy: first probe passed",
        f"target {app.url} healthy -> unhealthy: 3 probes in a row failed, last: HTTP 500",
        f"target {app.url} unhealthy -> healthy: 2 probes in a row passed",
    ]
    await checker.destroy()


@pytest.mark.parametrize("active", [True, False])
async def test_snapshot_has_every_field_for_every_target(backend, active: bool) -> None:
    app = backend()
    async with HealthChecker([app.url], active=active) as checker:
        snap = checker.snapshot()[app.url]
        assert checker.target_snapshot(app.url + "/") == snap
    assert snap.healthy
    assert snap.state is TargetState.HEALTHY
    assert (snap.probe_latency is not None) == active
    assert (snap.next_probe_at is not None) == active
    assert snap.consecutive_failures == 0
    assert snap.ejection_count == 0
    assert snap.ejection_time_left == 0
    assert snap.ejected_until is None
    assert snap.last_error is None
    assert snap.probe_method == "HEAD"
