"""The 0.4.0 client lifecycle, the default engine, and the response object's guard."""

from __future__ import annotations

import asyncio
import http.cookiejar
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import BackgroundTasks, FastAPI, Request
from fastapi.responses import PlainTextResponse
from frp_testing import run_server

import frp_core
from frp_core._client import aclose_default_sender


async def test_create_and_close_store_a_cookieless_client() -> None:
    app = FastAPI()
    client = await frp_core.create_httpx_client(app)
    try:
        assert app.state.http_proxy_client is client
        assert client.follow_redirects is False
        jar = client.cookies.jar
        cookie = http.cookiejar.Cookie(
            0,
            "a",
            "1",
            None,
            False,
            "h.test",
            True,
            False,
            "/",
            True,
            False,
            None,
            False,
            None,
            None,
            {},
        )
        request = httpx.Request("GET", "http://h.test/")
        assert not jar._policy.set_ok(cookie, request)  # type: ignore[attr-defined]
    finally:
        await frp_core.close_httpx_client(app)
    assert client.is_closed


async def test_proxy_context_manager_and_get_httpx_client() -> None:
    app = FastAPI()
    async with frp_core.Proxy(app) as proxy:
        request = Request({"type": "http", "app": app, "headers": []})
        assert await frp_core.get_httpx_client(request) is proxy.client
    assert proxy.client.is_closed


async def test_redirects_are_relayed_not_followed(oclient: httpx.AsyncClient) -> None:
    response = await oclient.get("/o/no-via/r", headers={"x-act": "status:302"})
    assert response.status_code == 302


async def test_proxy_pass_without_stored_client_uses_default_engine(upstream: str) -> None:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await aclose_default_sender()

    app = FastAPI(lifespan=lifespan)

    @app.get("/{path:path}")
    async def route(request: Request, path: str) -> Any:
        return await frp_core.proxy_pass(request, upstream, path=f"/{path}")

    with run_server(app) as proxy:
        async with httpx.AsyncClient(base_url=proxy.url) as client:
            for _ in range(3):
                assert (await client.get("/a%2Fb")).json()["raw_path"] == "/a%2Fb"


async def test_reverse_proxy_as_top_app_with_lifespan(upstream: str) -> None:
    with run_server(frp_core.ReverseProxy(upstream + "/base"), lifespan="on") as proxy:
        async with httpx.AsyncClient(base_url=proxy.url) as client:
            assert (await client.get("/x?y")).json()["raw_path"] == "/base/x"


async def test_reverse_proxy_refuses_websocket_scopes(upstream: str) -> None:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "websocket.connect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await frp_core.ReverseProxy(upstream)({"type": "websocket"}, receive, send)
    assert sent == [{"type": "websocket.close", "code": 1000}]


async def test_response_never_sent_still_releases_the_upstream(
    upstream: str, recorder: Any
) -> None:
    timeouts = frp_core.Timeouts(connect=5.0, read=1.0, write=5.0, pool=5.0)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await frp_core.create_httpx_client(app)
        yield
        await frp_core.close_httpx_client(app)

    app = FastAPI(lifespan=lifespan)

    @app.get("/drop")
    async def drop(request: Request) -> Any:
        await frp_core.proxy_pass(request, upstream, timeout=timeouts)  # never sent
        return PlainTextResponse("dropped")

    with run_server(app) as proxy:
        async with httpx.AsyncClient(base_url=proxy.url) as client:
            response = await client.get("/drop", headers={"x-act": "stream"})
            assert response.text == "dropped"
            assert await asyncio.to_thread(recorder.disconnected.wait, 15)


async def test_response_headers_can_be_edited_before_sending(upstream: str) -> None:
    app = FastAPI()

    @app.get("/{path:path}")
    async def route(request: Request, path: str) -> Any:
        response = await frp_core.proxy_pass(request, upstream)
        response.headers["x-added"] = "yes"
        response.status_code = 201
        return response

    app.router.lifespan_context = _default_engine_lifespan
    with run_server(app) as proxy:
        async with httpx.AsyncClient(base_url=proxy.url) as client:
            response = await client.get("/e")
            assert response.status_code == 201
            assert response.headers["x-added"] == "yes"
            assert response.json()["raw_path"] == "/e"


@asynccontextmanager
async def _default_engine_lifespan(app: Any) -> AsyncIterator[None]:
    yield
    await aclose_default_sender()


async def test_background_tasks_run_after_the_body(upstream: str) -> None:
    ran = threading.Event()
    app = FastAPI(lifespan=_default_engine_lifespan)

    @app.get("/{path:path}")
    async def route(request: Request, path: str, tasks: BackgroundTasks) -> Any:
        tasks.add_task(ran.set)
        return await frp_core.proxy_pass(request, upstream)

    with run_server(app) as proxy:
        async with httpx.AsyncClient(base_url=proxy.url) as client:
            assert (await client.get("/bg")).json()["raw_path"] == "/bg"
            assert await asyncio.to_thread(ran.wait, 10)


async def test_user_built_client_never_sends_its_cookies(upstream: str) -> None:
    user_client = httpx.AsyncClient(cookies={"leaked": "1"})  # a 0.4.0-style hand-made client

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.http_proxy_client = user_client
        yield
        await user_client.aclose()

    app = FastAPI(lifespan=lifespan)

    @app.get("/{path:path}")
    async def route(request: Request, path: str) -> Any:
        return await frp_core.proxy_pass(request, upstream)

    app.mount("/own", frp_core.ReverseProxy(upstream, client=user_client))
    with run_server(app) as proxy:
        async with httpx.AsyncClient(base_url=proxy.url) as alice:
            assert (await alice.get("/in", headers={"x-act": "cookies"})).headers.get_list(
                "set-cookie"
            ) == ["a=1; Path=/", "b=2; Path=/"]
        async with httpx.AsyncClient(base_url=proxy.url) as bob:
            for url in ["/next", "/own/next"]:
                record = (await bob.get(url)).json()
                assert "cookie" not in [n for n, _ in record["headers"]]
                assert "user-agent" in [n for n, _ in record["headers"]]  # bob's own, passed on


def test_httpx_unlimited_limits_keep_connections_alive() -> None:
    """httpx's None ("unlimited") must not turn keep-alive off in the engine."""
    from frp_core._client import _limits

    limits = _limits(
        httpx.Limits(max_connections=50, max_keepalive_connections=None, keepalive_expiry=None)
    )
    assert limits.max_connections == 50
    assert limits.max_keepalive == 50
    assert limits.keepalive_expiry > 3600
    assert (
        _limits(httpx.Limits(max_connections=None, max_keepalive_connections=None)).max_keepalive
        > 0
    )
