"""Shared fixtures: a recording upstream, raw servers, and proxies over both client paths.

The recording upstream answers, as JSON, exactly what reached it (method, raw path, query,
headers in order, body digest).  A request header ``x-act`` selects other behaviours (cookies,
downloads, endless streams, hangs, errors) so that any path can still be recorded.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from frp_testing import ServerThread, run_server

sys.path.insert(0, os.path.dirname(__file__))

from frp_core_kit import BLOCK, pattern

import frp_core


class Recorder:
    """The recording upstream (pure ASGI, run under uvicorn)."""

    def __init__(self) -> None:
        self.disconnected = threading.Event()  #: set when a stream saw its client leave
        self.hanging = threading.Event()  #: set when a ``hang`` request arrived
        self.hits = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                message = await receive()
                await send({"type": message["type"] + ".complete"})
                message = await receive()
                await send({"type": message["type"] + ".complete"})
            return
        self.hits += 1
        headers = scope["headers"]
        act = dict(headers).get(b"x-act", b"").decode()
        if act == "stream":
            await self._stream(receive, send)
            return
        if act == "sse":
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")],
                }
            )
            for i in range(6):
                await asyncio.sleep(0.25)
                await send(
                    {"type": "http.response.body", "body": b"data: %d\n\n" % i, "more_body": True}
                )
            await send({"type": "http.response.body", "body": b""})
            return
        if act == "hang":
            self.hanging.set()
            for _ in range(300):
                if (await receive())["type"] == "http.disconnect":
                    self.disconnected.set()
                    return
            return
        digest, length = hashlib.sha256(), 0
        for _ in range(1 << 20):
            message = await receive()
            if message["type"] == "http.disconnect":
                self.disconnected.set()
                return
            digest.update(message.get("body", b""))
            length += len(message.get("body", b""))
            if not message.get("more_body"):
                break
        if act.startswith("download:"):
            size = int(act.split(":")[1])
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-length", b"%d" % size)],
                }
            )
            for block in pattern(size):
                await send({"type": "http.response.body", "body": block, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
            return
        record = {
            "method": scope["method"],
            "raw_path": scope["raw_path"].decode("latin-1"),
            "query_string": scope["query_string"].decode("latin-1"),
            "headers": [[n.decode("latin-1"), v.decode("latin-1")] for n, v in headers],
            "body_sha256": digest.hexdigest(),
            "body_length": length,
        }
        body = json.dumps(record).encode()
        out = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        status = 200
        if act == "cookies":
            out += [(b"set-cookie", b"a=1; Path=/"), (b"set-cookie", b"b=2; Path=/")]
        elif act == "gzip":
            body = b"\x1f\x8b\x08\x00pretend-gzip"
            out = [(b"content-encoding", b"gzip"), (b"content-length", b"%d" % len(body))]
        elif act == "hop":
            out += [
                (b"connection", b"x-secret-hop"),
                (b"x-secret-hop", b"1"),
                (b"keep-alive", b"timeout=5"),
                (b"x-kept", b"1"),
            ]
        elif act.startswith("status:"):
            status = int(act.split(":")[1])
            if status in (204, 304):
                body = b""
                out = [(b"etag", b'"x"')]
        await send({"type": "http.response.start", "status": status, "headers": out})
        await send({"type": "http.response.body", "body": body})

    async def _stream(self, receive: Any, send: Any) -> None:
        gone = asyncio.Event()

        async def watch() -> None:
            for _ in range(1000):
                if (await receive())["type"] == "http.disconnect":
                    self.disconnected.set()
                    gone.set()
                    return

        task = asyncio.create_task(watch())
        await send({"type": "http.response.start", "status": 200, "headers": []})
        try:
            for _ in range(3000):  # at most ~200 MiB, bounded
                if gone.is_set():
                    return
                await send({"type": "http.response.body", "body": BLOCK[:65536], "more_body": True})
                await asyncio.sleep(0.005)
        finally:
            task.cancel()


@pytest.fixture(scope="session")
def recorder_server() -> Iterator[tuple[Recorder, ServerThread]]:
    recorder = Recorder()
    with run_server(recorder) as server:
        yield recorder, server


@pytest.fixture
def recorder(recorder_server: tuple[Recorder, ServerThread]) -> Recorder:
    recorder_server[0].disconnected.clear()
    recorder_server[0].hanging.clear()
    return recorder_server[0]


@pytest.fixture
def upstream(recorder_server: tuple[Recorder, ServerThread]) -> str:
    return recorder_server[1].url


PATHS = ["engine", "httpx"]


def client_kwargs(mode: str) -> dict[str, Any]:
    """``create_httpx_client`` arguments selecting the engine or the httpx path."""
    if mode == "engine":
        return {}
    return {"transport": httpx.AsyncHTTPTransport()}


def gateway(upstream: str, mode: str, **options: Any) -> Any:
    """The Quick Start: a FastAPI app whose routes call ``proxy_pass``, plus a mount."""
    kwargs = client_kwargs(mode)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await frp_core.create_httpx_client(app, **kwargs)
        yield
        await frp_core.close_httpx_client(app)

    app = FastAPI(lifespan=lifespan)
    methods = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "PURGE"]

    @app.api_route("/p/{path:path}", methods=methods)
    async def route(request: Request, path: str) -> Any:
        return await frp_core.proxy_pass(request, upstream, path=f"/{path}", **options)

    @app.api_route("/raw/{path:path}", methods=methods)
    async def raw(request: Request) -> Any:
        return await frp_core.proxy_pass(request, upstream, **options)

    app.mount("/mnt", frp_core.ReverseProxy(upstream, **options))
    return app


@pytest.fixture(scope="session", params=PATHS)
def proxy_server(
    request: pytest.FixtureRequest, recorder_server: tuple[Recorder, ServerThread]
) -> Iterator[ServerThread]:
    with run_server(gateway(recorder_server[1].url, request.param), proxy_headers=False) as server:
        yield server


@pytest.fixture
async def client(proxy_server: ServerThread) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=proxy_server.url, timeout=30.0) as c:
        yield c


#: Routes of the options gateway: ``/o/<name>/<path>`` calls ``proxy_pass`` with these options.
OPTION_ROUTES: dict[str, dict[str, Any]] = {
    "json": {"override_body": {"a": 1}},
    "str": {"override_body": "héllo", "method": "PUT"},
    "bytes": {"override_body": b"\x00\x01\x02"},
    "override-headers": {
        "override_headers": {"X-Only": "1", "Connection": "x-gone", "X-Gone": "1"}
    },
    "additional": {"additional_headers": {"X-Extra": "1", "X-Dup": "replaced"}},
    "override-host": {"override_host": "example.test"},
    "preserve-host": {"preserve_host": True},
    "trusted": {"trusted_proxies": ["127.0.0.1"], "forwarded": True},
    "no-query": {"forward_query": False},
    "no-via": {"via": None},
}


def options_gateway(upstream: str, mode: str) -> Any:
    kwargs = client_kwargs(mode)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await frp_core.create_httpx_client(app, **kwargs)
        yield
        await frp_core.close_httpx_client(app)

    def make(options: dict[str, Any]) -> Any:
        async def route(request: Request, path: str) -> Any:
            return await frp_core.proxy_pass(request, upstream, path=f"/{path}", **options)

        return route

    app = FastAPI(lifespan=lifespan)
    for name, options in OPTION_ROUTES.items():
        app.add_api_route(f"/o/{name}/{{path:path}}", make(options), methods=["GET", "POST", "PUT"])
    return app


@pytest.fixture(scope="session", params=PATHS)
def options_server(
    request: pytest.FixtureRequest, recorder_server: tuple[Recorder, ServerThread]
) -> Iterator[ServerThread]:
    with run_server(
        options_gateway(recorder_server[1].url, request.param), proxy_headers=False
    ) as server:
        yield server


@pytest.fixture
async def oclient(options_server: ServerThread) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=options_server.url, timeout=30.0) as c:
        yield c


@pytest.fixture(params=PATHS)
def mode(request: pytest.FixtureRequest) -> str:
    """``"engine"`` or ``"httpx"``: which client path a per-test gateway uses."""
    client_kwargs(request.param)  # skips the engine leg while the engine is absent
    return str(request.param)


@pytest.fixture
def make_gateway() -> Callable[..., Any]:
    """``make_gateway(upstream, mode, **options)``: the Quick Start app (see :func:`gateway`)."""
    return gateway
