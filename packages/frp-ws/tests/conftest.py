"""Fixtures: a real websockets upstream, uvicorn running the proxy, a real websockets client.

The upstream runs in the test's event loop with whichever server API the installed websockets
has (new asyncio on 13+, legacy on 11–12); the proxy runs under uvicorn in its own thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import importlib.util
import json
import os
import queue
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import pytest
import websockets
import websockets.exceptions
from fastapi import FastAPI, WebSocket
from frp_testing import ServerThread, run_server
from websockets.datastructures import Headers

from frp_ws import proxy_pass_websocket
from frp_ws._compat import UpstreamConnection, connect
from frp_ws._splice import SPLICE
from frp_ws.uvicorn import SpliceProtocol

NEW_API = importlib.util.find_spec("websockets.asyncio") is not None
if NEW_API:
    from websockets.asyncio.server import serve as _serve
    from websockets.http11 import Response
else:  # websockets 11, 12
    from websockets.legacy.server import serve as _serve  # type: ignore[assignment]

MiB = 1024 * 1024


class Upstream:
    """A websockets server on 127.0.0.1 that echoes and obeys ``!commands``.

    ``seen`` lists each handshake (path, headers, subprotocol); ``closes`` receives the close
    code and reason the upstream got, once per connection.
    """

    def __init__(
        self,
        *,
        subprotocols: Sequence[str] | None = None,
        max_size: int | None = None,
        ssl: Any = None,
    ):
        self.subprotocols = subprotocols
        self.max_size = max_size
        self.ssl = ssl
        self.seen: list[dict[str, Any]] = []
        self.closes: asyncio.Queue[tuple[int | None, str]] = asyncio.Queue()
        self.refuse: tuple[int, list[tuple[str, str]], bytes] | None = None
        self.flood_sent = 0
        self.flooded = asyncio.Event()
        self.deaf: list[asyncio.Transport] = []
        self.gate: asyncio.Event | None = None
        self.silent = False
        self.greeting: str | None = None  # sent as soon as a connection opens
        self.wake = asyncio.Event()
        self.gate_reached = asyncio.Event()
        self.marked = asyncio.Event()  # a ``!mark`` arrived: every frame before it went through
        self.server: Any = None

    @property
    def url(self) -> str:
        return f"{'https' if self.ssl else 'http'}://127.0.0.1:{self.port}"

    async def __aenter__(self) -> Upstream:
        kwargs: dict[str, Any] = {
            "subprotocols": self.subprotocols,
            "max_size": self.max_size,
            "process_request": self._process_request,
        }
        if self.ssl is not None:
            kwargs["ssl"] = self.ssl
        self.server = await _serve(self._handler, "127.0.0.1", 0, **kwargs)
        self.port = next(iter(self.server.sockets)).getsockname()[1]
        return self

    def hear(self) -> None:
        """Undo ``!deaf``: read again."""
        for transport in self.deaf:
            transport.resume_reading()
        self.deaf.clear()
        self.wake.set()

    async def __aexit__(self, *exc: object) -> None:
        for transport in self.deaf:  # nothing to close gracefully with a peer that never reads
            transport.abort()
        self.wake.set()
        self.server.close()
        await self.server.wait_closed()

    async def _process_request(self, *args: Any) -> Any:
        if self.gate is not None:  # hold the handshake until the test opens the gate
            self.gate_reached.set()
            await self.gate.wait()
        if self.refuse is None:
            return None
        status, headers, body = self.refuse
        headers = [*headers, ("Content-Length", str(len(body)))]
        if NEW_API:
            phrase = http.HTTPStatus(status).phrase
            return Response(status, phrase, Headers(headers), body)
        return _legacy_response(status, headers, body)

    async def _handler(self, ws: Any) -> None:
        if NEW_API:
            path, headers = ws.request.path, ws.request.headers
            response = ws.response.headers
        else:
            path, headers, response = ws.path, ws.request_headers, ws.response_headers
        self.seen.append(
            {
                "path": path,
                "headers": [(k.lower(), v) for k, v in headers.raw_items()],
                "subprotocol": ws.subprotocol,
                "extensions": response.get("Sec-WebSocket-Extensions"),
            }
        )
        try:
            if self.greeting is not None:
                await ws.send(self.greeting)
            async for message in ws:
                if isinstance(message, str) and message.startswith("!"):
                    await self._command(ws, message)
                elif self.silent:  # after ``!deaf``: read, never answer
                    continue
                else:
                    await ws.send(message)
        except websockets.exceptions.ConnectionClosed:
            pass
        finally:
            await ws.wait_closed()
            state = ws.protocol if NEW_API else ws  # 13.x has these on the protocol only
            self.closes.put_nowait((state.close_code, state.close_reason or ""))

    async def _command(self, ws: Any, message: str) -> None:
        verb, _, arg = message[1:].partition(" ")
        if verb == "close":
            code, _, reason = arg.partition(" ")
            await ws.close(int(code), reason)
        elif verb == "abort":
            ws.transport.abort()
        elif verb == "empty-close":  # a close frame without a status code
            ws.transport.write(b"\x88\x00")
        elif verb == "frag":  # one text message in many fragments
            await ws.send(["fragment"] * int(arg))
        elif verb == "big":
            await ws.send(b"\xab" * int(arg))
        elif verb == "flood":
            count, size = map(int, arg.split())
            noise = os.urandom(size - 4)  # incompressible, so the wire carries every byte
            for i in range(count):
                await ws.send(i.to_bytes(4, "big") + noise)
                self.flood_sent = i + 1
            self.flooded.set()
        elif verb == "deaf":  # stop reading: pings go unanswered
            ws.transport.pause_reading()
            self.deaf.append(ws.transport)
            self.silent = True
            await self.wake.wait()  # stop consuming too (legacy readers resume the transport)
        elif verb == "headers":
            await ws.send(json.dumps(self.seen[-1]["headers"]))
        elif verb == "mark":
            self.marked.set()


def _legacy_response(status: int, headers: list[tuple[str, str]], body: bytes) -> Any:
    return http.HTTPStatus(status), headers, body


class Proxy:
    """uvicorn serving a FastAPI app whose every WebSocket route is proxied to ``upstream``."""

    def __init__(self, server: ServerThread, state: dict[str, Any], kind: str = "") -> None:
        self.server = server
        self.state = state
        self.kind = kind

    @property
    def spliced(self) -> list[bool]:
        """For each tunnel on a splicing server: whether it took the client's socket over."""
        taken: list[bool] = self.state["spliced"]
        return taken

    @property
    def ws_url(self) -> str:
        return self.server.ws_url

    @property
    def options(self) -> dict[str, Any]:
        options: dict[str, Any] = self.state["options"]
        return options

    def expire(self) -> None:
        """Make the running tunnel's route timeout expire now (from the test's thread)."""
        self.state["expire"]()

    async def finished(self) -> dict[str, Any]:
        """Wait (bounded) for the proxied handler to return; what it left behind."""
        result: dict[str, Any] = await asyncio.to_thread(self.state["finished"].get, timeout=15)
        return result


def make_app(state: dict[str, Any]) -> FastAPI:
    app = FastAPI()

    @app.websocket("/{rest:path}")
    async def tunnel(websocket: WebSocket, rest: str) -> None:
        _watch_splice(websocket.scope, state["spliced"])
        before = asyncio.all_tasks()
        me = asyncio.current_task()
        error: BaseException | None = None
        try:
            call = proxy_pass_websocket(websocket, state["upstream"], **state["options"])
            loop = asyncio.get_running_loop()
            async with asyncio.timeout(None) as deadline:  # the route's own timeout
                state["expire"] = lambda: loop.call_soon_threadsafe(
                    deadline.reschedule, loop.time()
                )
                await call
        except BaseException as exc:
            error = exc
            raise
        finally:
            left = [
                t for t in asyncio.all_tasks() - before if t is not me and not t.done() and _ours(t)
            ]
            state["finished"].put({"tasks": left, "error": error})

    return app


def _watch_splice(scope: dict[str, Any], taken: list[bool]) -> None:
    """Record whether the tunnel takes the connection over (the server's splice extension)."""
    extensions = scope.get("extensions") or {}
    if SPLICE not in extensions:
        return
    offered = dict(extensions[SPLICE])
    take = offered["take"]

    def watched(shutdown: Any) -> Any:
        side = take(shutdown)
        taken.append(side is not None)
        return side

    offered["take"] = watched
    scope["extensions"] = {**extensions, SPLICE: offered}


def _ours(task: asyncio.Task[Any]) -> bool:
    """A task of the tunnel or of the websockets library (not the server accepting sockets)."""
    code = getattr(task.get_coro(), "cr_code", None)
    filename = code.co_filename if code is not None else ""
    if "uvicorn" in filename:
        return False
    return "websockets" in filename or "frp_ws" in filename or "frp-ws" in filename


def without_http_response(app: Any) -> Any:
    """The same app on a server that lacks the ``websocket.http.response`` extension."""

    async def wrapped(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            scope = dict(scope, extensions={})
        await app(scope, receive, send)

    return wrapped


@contextlib.contextmanager
def proxy_server(**server_options: Any) -> Iterator[Proxy]:
    state: dict[str, Any] = {
        "upstream": None,
        "options": {},
        "finished": queue.Queue(),
        "spliced": [],
    }
    app: Any = make_app(state)
    if server_options.pop("no_http_response", False):
        app = without_http_response(app)
    server_options.setdefault("ws_max_size", 16 * MiB)
    server_options.setdefault("proxy_headers", False)  # the test client is not a proxy
    kind = "splice" if server_options.get("ws") is SpliceProtocol else ""
    with run_server(app, **server_options) as server:
        yield Proxy(server, state, kind)


@pytest.fixture(scope="session")
def proxy_wsproto() -> Iterator[Proxy]:
    with proxy_server(ws="wsproto") as proxy:
        yield proxy


@pytest.fixture(scope="session")
def proxy_splice() -> Iterator[Proxy]:
    with proxy_server(ws=SpliceProtocol) as proxy:
        yield proxy


@pytest.fixture(params=["wsproto", "splice"])
def proxy(request: pytest.FixtureRequest) -> Iterator[Proxy]:
    """A shared proxy, options reset, result queue drained.

    ``wsproto``: the message relay under uvicorn's wsproto server.  ``splice``: uvicorn with
    frp-ws's ``SpliceProtocol``, where clients (which offer no compression there, unless a
    test says otherwise) are spliced to the upstream below ASGI.
    """
    shared: Proxy = request.getfixturevalue(f"proxy_{request.param}")
    shared.state["options"] = {}
    shared.state["expire"] = None
    shared.state["spliced"] = []
    yield shared
    with contextlib.suppress(queue.Empty):
        while True:
            shared.state["finished"].get_nowait()


@pytest.fixture
async def upstream(proxy: Proxy) -> AsyncIterator[Upstream]:
    async with Upstream(subprotocols=None) as up:
        proxy.state["upstream"] = up.url
        yield up


async def client(
    url: str,
    *,
    subprotocols: Sequence[str] | None = None,
    headers: Sequence[tuple[str, str]] = (),
    compression: str | None = "deflate",
    max_size: int | None = 64 * MiB,
) -> UpstreamConnection:
    """A real websockets client (through the version shim, which is a thin wrapper)."""
    return await connect(
        url,
        subprotocols=subprotocols,
        headers=headers,
        open_timeout=10,
        close_timeout=5,
        max_size=max_size,
        max_queue=16,
        ping_interval=None,
        ping_timeout=None,
        compression=compression,
    )


@pytest.fixture
async def ws_client(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """``await ws_client(url, subprotocols=..., headers=...)``: a real websockets client.

    It offers compression unless the test's shared proxy splices (then it offers none, so
    that the splice is taken).  Every client is closed (its socket released) when the test
    ends.
    """
    opened: list[UpstreamConnection] = []
    splicing = "proxy" in request.fixturenames and request.getfixturevalue("proxy").kind
    default = None if splicing else "deflate"

    async def open_client(url: str, **kwargs: Any) -> UpstreamConnection:
        kwargs.setdefault("compression", default)
        ws = await client(url, **kwargs)
        opened.append(ws)
        return ws

    yield open_client
    for ws in opened:
        with contextlib.suppress(Exception):
            await ws.close(1000, "")


@pytest.fixture
def make_upstream() -> Any:
    """``async with make_upstream(subprotocols=...) as up``: an extra upstream server."""
    return Upstream


async def close_of(ws: UpstreamConnection, limit: int = 100) -> tuple[int | None, str]:
    """Read (at most ``limit`` messages) until the connection closes; its close code, reason."""
    from frp_ws._compat import UpstreamClosed

    for _ in range(limit):
        try:
            await ws.recv()
        except UpstreamClosed as exc:
            return exc.code, exc.reason
    raise AssertionError("the connection did not close")


@pytest.fixture
def closed() -> Any:
    """``await closed(ws)``: the close code and reason the client received."""
    return close_of


@pytest.fixture
def make_proxy() -> Any:
    """``with make_proxy(ws=..., **uvicorn_options) as proxy``: a dedicated proxy server."""
    return proxy_server
