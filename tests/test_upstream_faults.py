"""Upstream faults: the client gets 502/504 before any response byte, or a visibly truncated
transfer after; the broken connection is discarded, passive health hears about it, and the
next request on the same proxy succeeds.

The upstream is ``fault_server.FaultServer`` (raw asyncio, misbehaves on demand); the proxy runs
under uvicorn on 127.0.0.1, in both public forms: ``ReverseProxy`` and a FastAPI route calling
``proxy_pass``.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fault_server import OK_BODY, FaultServer, fault_server
from frp_testing import run_server, unused_port
from proxy_rig import RecordingRouter, core, proxy_app, route_app, supports_router

#: ``route-httpx``: the route with a stored httpx client that has its own transport, so
#: requests go through httpx (frp-core's fallback path) instead of the engine.
FORMS = ["asgi", "route", "route-httpx"]

#: The outcomes that count against a target (frp_core.routing FAILURES), as plain strings.
FAILURE_OUTCOMES = {"http_5xx", "connect_error", "timeout", "reset"}


@dataclasses.dataclass
class Rig:
    fault: FaultServer
    proxy_url: str
    router: RecordingRouter | None


@pytest.fixture(params=FORMS)
def form(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _timeouts(read: float = 5.0) -> Any:
    return core().Timeouts(connect=5.0, read=read, write=5.0, pool=5.0)


@pytest.fixture
def make_rig(form: str) -> Iterator[Any]:
    stack: list[Any] = []

    def make(mode: str, *, read: float = 5.0, **fault_options: Any) -> Rig:
        timeouts = _timeouts(read)
        fault = fault_server(mode, **fault_options)
        fs = fault.__enter__()
        stack.append(fault)
        router = RecordingRouter(fs.url) if supports_router() else None
        upstream: Any = router if router is not None else fs.url
        if form == "asgi":
            app = proxy_app(upstream, timeouts=timeouts)
        elif form == "route":
            app = route_app(upstream, timeouts=timeouts)
        else:
            app = route_app(upstream, timeouts=timeouts, transport=httpx.AsyncHTTPTransport())
        server = run_server(app)
        srv = server.__enter__()
        stack.append(server)
        return Rig(fs, srv.url, router)

    yield make
    for cm in reversed(stack):
        cm.__exit__(None, None, None)


@dataclasses.dataclass
class Seen:
    """What the client of the proxy saw."""

    status: int | None
    body: bytes
    error: Exception | None  #: raised while reading the body (after the status line)


async def fetch(url: str, method: str = "GET", content: bytes | None = None) -> Seen:
    async with (
        httpx.AsyncClient(timeout=30.0) as client,
        client.stream(method, url, content=content) as response,
    ):
        body = bytearray()
        try:
            async for chunk in response.aiter_raw():
                body += chunk
        except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
            return Seen(response.status_code, bytes(body), exc)
        return Seen(response.status_code, bytes(body), None)


def assert_error_before_bytes(seen: Seen, statuses: set[int], fault_port: int) -> None:
    assert seen.error is None, f"the error page itself was cut: {seen.error!r}"
    assert seen.status in statuses, (seen.status, seen.body[:200])
    assert str(fault_port).encode() not in seen.body, "internal address leaked in the error page"
    assert b"Traceback" not in seen.body


def assert_visible_failure(seen: Seen, declared: int, fault_port: int) -> None:
    """Either an error status before any byte, or a transfer the client sees as broken."""
    if seen.error is None:
        assert_error_before_bytes(seen, {502, 504}, fault_port)
    else:
        assert seen.status == 200
        assert len(seen.body) < declared, "body complete yet an error was raised"


async def assert_next_request_succeeds(rig: Rig) -> None:
    rig.fault.mode = "ok"
    seen = await fetch(rig.proxy_url + "/after")
    assert (seen.status, seen.body, seen.error) == (200, OK_BODY, None)
    assert rig.fault.requests[-1].target == b"/after"


def assert_reported_failure(rig: Rig) -> None:
    if rig.router is None:
        return
    outcomes = rig.router.wait_outcomes(1)
    assert outcomes, "no outcome reported to passive health"
    assert outcomes[0][1] in FAILURE_OUTCOMES, outcomes


async def wait_discarded(fs: FaultServer, index: int = 0) -> None:
    """The connection that carried the fault is closed by the proxy, never reused."""
    conn = fs.wait_for_connection(index)
    assert await asyncio.to_thread(conn.peer_closed.wait, 5.0), "proxy kept the connection"
    assert conn.raw.count(b" HTTP/1.1\r\n") == 1, "a second request reused a broken connection"


def httpx_path_limit(request: pytest.FixtureRequest, form: str, why: str) -> None:
    """What the httpx path leaves to httpcore and h11 (docs/frp-core.md, "The httpx path"):
    expected to fail there, strictly, so that a fix in httpx is noticed."""
    if form == "route-httpx":
        request.applymarker(pytest.mark.xfail(reason=f"httpx path: {why}", strict=True))


# -- before any response byte: 502 / 504 ---------------------------------------------------


async def test_connection_refused_is_502(form: str) -> None:
    port = unused_port()
    target = f"http://127.0.0.1:{port}"
    router = RecordingRouter(target) if supports_router() else None
    upstream: Any = router if router is not None else target
    app = proxy_app(upstream, timeouts=_timeouts()) if form == "asgi" else None
    app = app or route_app(upstream, timeouts=_timeouts())
    with run_server(app) as proxy:
        seen = await fetch(proxy.url + "/x")
        assert_error_before_bytes(seen, {502}, port)
        if router is not None:
            assert router.wait_outcomes(1)[0][1] == "connect_error"
        # and again: nothing got stuck
        seen = await fetch(proxy.url + "/y")
        assert_error_before_bytes(seen, {502}, port)


async def test_upstream_that_never_answers_is_504(make_rig: Any) -> None:
    rig = make_rig("hang", read=1.0)  # generous: the healthy follow-up must answer within it
    seen = await fetch(rig.proxy_url + "/slow")
    assert_error_before_bytes(seen, {504}, rig.fault.port)
    assert_reported_failure(rig)
    if rig.router is not None:
        assert rig.router.outcomes[0][1] == "timeout"
    await wait_discarded(rig.fault)
    await assert_next_request_succeeds(rig)


@pytest.mark.parametrize(
    "mode", ["close_before_status", "reset_before_status", "partial_status", "bad_status_line"]
)
async def test_broken_before_the_status_line_is_502(make_rig: Any, mode: str) -> None:
    rig = make_rig(mode)
    seen = await fetch(rig.proxy_url + "/x")
    assert_error_before_bytes(seen, {502}, rig.fault.port)
    assert_reported_failure(rig)
    await assert_next_request_succeeds(rig)


async def test_post_is_not_resent_after_close_before_status(make_rig: Any) -> None:
    """A POST whose bytes reached the upstream is never replayed on another connection."""
    rig = make_rig("close_before_status")
    seen = await fetch(rig.proxy_url + "/pay", "POST", b"amount=100")
    assert_error_before_bytes(seen, {502}, rig.fault.port)
    posts = [r for r in rig.fault.requests if r.target == b"/pay"]
    assert len(posts) == 1, "a non-idempotent request was sent twice"
    await assert_next_request_succeeds(rig)


@pytest.mark.parametrize(
    "mode",
    [
        "bad_content_length",
        "conflicting_content_length",
        "huge_headers",
        "interim_with_body",
        "status_600",
        "gzip_transfer_coding",
    ],
)
async def test_invalid_response_head_is_502(make_rig: Any, form: str, mode: str) -> None:
    rig = make_rig(mode)
    seen = await fetch(rig.proxy_url + "/x")
    # h11 takes an interim response's body for the next status line and waits for the rest
    late = form == "route-httpx" and mode == "interim_with_body"
    assert_error_before_bytes(seen, {502, 504} if late else {502}, rig.fault.port)
    assert_reported_failure(rig)
    await wait_discarded(rig.fault)
    await assert_next_request_succeeds(rig)


async def test_content_length_with_chunked_response_is_refused_or_decoded(
    make_rig: Any, form: str, request: pytest.FixtureRequest
) -> None:
    """RFC 9112 §6.1: chunked wins and the connection must be closed afterwards; a 502 is
    also acceptable.  The 5-byte body must never be followed by stray chunk framing."""
    httpx_path_limit(request, form, "h11 keeps a connection whose response had CL and TE")
    rig = make_rig("cl_and_te")
    seen = await fetch(rig.proxy_url + "/x")
    if seen.status == 502:
        assert_error_before_bytes(seen, {502}, rig.fault.port)
    else:
        assert (seen.status, seen.body, seen.error) == (200, b"hello", None)
    await wait_discarded(rig.fault)
    await assert_next_request_succeeds(rig)


async def test_trickle_slower_than_read_timeout_is_504(make_rig: Any) -> None:
    rig = make_rig("trickle", read=0.1, interval=0.5)
    seen = await fetch(rig.proxy_url + "/x")
    assert_error_before_bytes(seen, {504}, rig.fault.port)
    assert_reported_failure(rig)
    await wait_discarded(rig.fault)
    await assert_next_request_succeeds(rig)


async def test_trickle_within_read_timeout_arrives_intact(make_rig: Any) -> None:
    """The read timeout bounds idle time, not the whole response: a slow but live upstream
    is relayed completely."""
    rig = make_rig("trickle", read=5.0, interval=0.002)
    seen = await fetch(rig.proxy_url + "/x")
    assert (seen.status, seen.body, seen.error) == (200, OK_BODY, None)
    if rig.router is not None:
        assert rig.router.wait_outcomes(1)[0][1] == "success"
    await assert_next_request_succeeds(rig)


async def test_informational_responses_before_the_final_one(make_rig: Any) -> None:
    rig = make_rig("informational")
    seen = await fetch(rig.proxy_url + "/x")
    assert (seen.status, seen.body, seen.error) == (200, OK_BODY, None)
    await assert_next_request_succeeds(rig)


# -- after response bytes: a truncation the client cannot miss -----------------------------


@pytest.mark.parametrize("mode", ["fixed_close", "fixed_reset"])
async def test_fixed_length_body_cut_short_is_visible(make_rig: Any, mode: str) -> None:
    rig = make_rig(mode)
    seen = await fetch(rig.proxy_url + "/big")
    assert_visible_failure(seen, 100_000, rig.fault.port)
    assert_reported_failure(rig)
    await assert_next_request_succeeds(rig)


@pytest.mark.parametrize("mode", ["chunked_close", "chunked_reset", "bad_chunk"])
async def test_chunked_body_cut_short_is_visible(make_rig: Any, mode: str) -> None:
    rig = make_rig(mode)
    seen = await fetch(rig.proxy_url + "/big")
    if seen.error is None and seen.status == 200:
        pytest.fail(f"a broken chunked body ended cleanly after {len(seen.body)} bytes")
    assert_visible_failure(seen, 1 << 30, rig.fault.port)
    assert_reported_failure(rig)
    await assert_next_request_succeeds(rig)


async def test_truncation_is_seen_on_a_raw_socket_too(make_rig: Any) -> None:
    """Without httpx in between: the client connection is closed before the declared length
    (or the chunked terminator) arrives, so no HTTP client can take it for a full body."""
    rig = make_rig("fixed_reset")
    host, port = "127.0.0.1", int(rig.proxy_url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"GET /big HTTP/1.1\r\nHost: proxy\r\n\r\n")
    await writer.drain()
    data = bytearray()
    for _ in range(10_000):
        chunk = await asyncio.wait_for(reader.read(1 << 16), 30)
        if not chunk:
            break
        data += chunk
    writer.close()
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    status = int(head.split(b" ")[1])
    if status == 200:
        lower = head.lower()
        if b"content-length: 100000" in lower:
            assert len(body) < 100_000
        else:
            assert b"transfer-encoding: chunked" in lower
            assert not body.endswith(b"0\r\n\r\n"), "a truncated body got a clean terminator"
    else:
        assert status == 502


# -- behind the load balancer: passive health and failover ---------------------------------


@pytest.mark.parametrize("mode", ["reset_before_status", "close_before_status", "hang"])
async def test_broken_target_fails_over_and_is_reported_to_passive_health(mode: str) -> None:
    """With real frp-health and frp-balance: idempotent requests fail over to the healthy
    target (every client gets a 200), the failure reaches passive health, and the broken
    target is then left alone."""
    frp_health = pytest.importorskip("frp_health")
    frp_balance = pytest.importorskip("frp_balance")
    with fault_server(mode) as bad, fault_server("ok") as good:
        checker = frp_health.HealthChecker(
            [bad.url, good.url], active=False, consecutive_failures=3
        )
        lb = frp_balance.LoadBalancer(checker)
        with run_server(proxy_app(lb, timeouts=_timeouts(read=2.0))) as proxy:
            async with httpx.AsyncClient(timeout=30.0) as client:
                for i in range(20):
                    response = await client.get(f"{proxy.url}/r/{i}")
                    assert (response.status_code, response.content) == (200, OK_BODY)
        # passive health heard about the failures; the balancer then steered away from it
        seen = checker.target_snapshot(bad.url)
        assert seen.last_error is not None
        assert "traffic" in seen.last_error
        assert checker.target_snapshot(good.url).last_error is None
        assert 1 <= len(bad.requests) <= 3, "a failing target kept receiving requests"
        assert len(good.requests) == 20


# -- a keep-alive connection the upstream closes as a request arrives -----------------------


async def test_idempotent_request_on_a_stale_keepalive_connection_is_retried(
    make_rig: Any, form: str, request: pytest.FixtureRequest
) -> None:
    """The upstream's keep-alive timeout fires as the next request arrives (it closes without
    answering): a GET is retried once on a fresh connection, the client sees only a 200."""
    httpx_path_limit(request, form, "httpcore does not replay a request on a fresh connection")
    rig = make_rig("close_reused")
    for i in range(4):
        seen = await fetch(f"{rig.proxy_url}/get/{i}")
        assert (seen.status, seen.body, seen.error) == (200, OK_BODY, None)
    answered = [r.target for c in rig.fault.connections for r in c.requests[:1]]
    assert answered == [f"/get/{i}".encode() for i in range(4)]


async def test_post_on_a_stale_keepalive_connection_is_never_replayed(make_rig: Any) -> None:
    rig = make_rig("close_reused")
    seen = await fetch(rig.proxy_url + "/warm")  # leaves one idle keep-alive connection
    assert seen.status == 200
    seen = await fetch(rig.proxy_url + "/pay", "POST", b"amount=100")
    posts = [r for r in rig.fault.requests if r.target == b"/pay"]
    assert len(posts) == 1, f"the upstream received the POST {len(posts)} times"
    assert_error_before_bytes(seen, {502}, rig.fault.port)


async def test_unsolicited_bytes_after_a_response_never_answer_another_request(
    make_rig: Any, form: str, request: pytest.FixtureRequest
) -> None:
    """Response-queue poisoning: an upstream sends more than its Content-Length (here a whole
    second response).  The client gets exactly the declared body (or a visible failure), and
    the connection is not reused: the next request never receives the unsolicited response."""
    httpx_path_limit(request, form, "httpcore reuses a connection with bytes left unread")
    rig = make_rig("overlong")
    seen = await fetch(rig.proxy_url + "/first")
    if seen.error is None and seen.status == 200:
        assert seen.body == b"hello"
    else:  # refusing the whole exchange is acceptable too, as long as it is visible
        assert_visible_failure(seen, 5, rig.fault.port)
    rig.fault.mode = "ok"
    for i in range(3):
        seen = await fetch(f"{rig.proxy_url}/next/{i}")
        assert seen.body != b"INJECTED", "a queued unsolicited response answered another request"
        assert (seen.status, seen.body, seen.error) == (200, OK_BODY, None)
    await wait_discarded(rig.fault)
