"""Real backends and gateways on 127.0.0.1 for the frp-balance tests."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import PlainTextResponse, StreamingResponse
from frp_testing import ServerThread

from frp_balance import LoadBalancer
from frp_core import close_httpx_client, create_httpx_client


def backend(name: str, *, delay: float = 0.0, probe_status: int = 200) -> FastAPI:
    """A backend that answers with its name; ``/stream`` streams until the client leaves;
    ``/health`` answers ``probe_status``."""
    app = FastAPI()

    @app.api_route("/health", methods=["GET", "HEAD"])
    async def health() -> PlainTextResponse:
        return PlainTextResponse(name, status_code=probe_status)

    @app.get("/stream")
    async def stream(chunks: int = 0) -> StreamingResponse:
        async def body() -> AsyncIterator[bytes]:
            for i in range(chunks or 10_000):
                yield f"{name}:{i}\n".encode()
                await asyncio.sleep(0.001 if not chunks else 0)

        return StreamingResponse(body(), media_type="text/plain")

    @app.websocket("/ws")
    async def ws_echo(ws: WebSocket) -> None:
        await ws.accept()
        await ws.send_text(f"{name}:{await ws.receive_text()}")
        await ws.close()

    @app.api_route("/{path:path}", methods=["GET", "HEAD", "POST", "PUT", "DELETE"])
    async def echo(request: Request, path: str) -> PlainTextResponse:
        await request.body()
        if delay:
            await asyncio.sleep(delay)  # a slower upstream, not synchronisation
        return PlainTextResponse(name)

    return app


def gateway(lb: LoadBalancer, checker: Any = None) -> FastAPI:
    """The seed Quick Start's gateway shape around ``lb``."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await create_httpx_client(app)
        try:
            if checker is None:
                yield
            else:
                async with checker:
                    yield
        finally:
            await close_httpx_client(app)

    app = FastAPI(lifespan=lifespan)

    @app.api_route("/{path:path}", methods=["GET", "POST", "PUT", "DELETE"])
    async def proxy(request: Request, path: str) -> Any:
        return await lb.proxy_pass(request, path=f"/{path}")

    @app.websocket("/ws/{path:path}")
    async def ws_tunnel(websocket: WebSocket, path: str) -> None:
        await lb.proxy_pass_websocket(websocket, path=f"/{path}")

    return app


def serve(app: Any, **kwargs: Any) -> ServerThread:
    """A started server whose connections have TCP_NODELAY (accepted sockets inherit it from
    the listening socket; without it keep-alive requests wait ~40 ms for delayed ACKs)."""
    server = ServerThread(app, **kwargs)
    server.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return server.start()


@pytest.fixture
def servers() -> Iterator[Callable[..., ServerThread]]:
    """Start uvicorn servers for the test; all stopped at the end."""
    with contextlib.ExitStack() as stack:

        def start(app: Any, **kwargs: Any) -> ServerThread:
            server = serve(app, **kwargs)
            stack.callback(server.stop)
            return server

        yield start


async def until(condition: Callable[[], bool], what: str, limit: float = 10.0) -> None:
    """Wait (bounded) for a condition another thread makes true."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not condition():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.005)


@pytest.fixture(name="backend")
def backend_fixture() -> Callable[..., FastAPI]:
    return backend


@pytest.fixture(name="gateway")
def gateway_fixture() -> Callable[..., FastAPI]:
    return gateway


def settled(lb: LoadBalancer, limit: float = 10.0) -> int:
    """In-flight count once the gateway thread has finished its bookkeeping (bounded wait):
    ``done`` runs just after the last body byte was handed to the client."""
    deadline = time.monotonic() + limit
    while lb.in_flight() and time.monotonic() < deadline:
        time.sleep(0.005)
    return lb.in_flight()


@pytest.fixture(name="settled")
def settled_fixture() -> Callable[..., int]:
    return settled


@pytest.fixture(name="until")
def until_fixture() -> Callable[..., Awaitable[None]]:
    return until


@pytest.fixture(name="serve")
def serve_fixture() -> Callable[..., ServerThread]:
    return serve
