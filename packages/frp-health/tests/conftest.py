"""Real uvicorn backends whose health answer a test changes between probe rounds."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from frp_testing import run_server

Scope = dict[str, Any]
Message = dict[str, Any]


class Backend:
    """An ASGI app answering according to ``mode``; records every request it sees.

    Modes: ``ok`` (200), ``fail`` (500), ``head405``/``head501`` (that status to HEAD, 200 to
    GET), ``hang`` (never answers until teardown), ``redirect`` (302 to /elsewhere),
    ``cookie`` (200 with Set-Cookie), ``endless`` (200 with a body that never ends), or any
    integer status.
    """

    def __init__(self) -> None:
        self.mode: str | int = "ok"
        self.url = ""
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.hanging = threading.Event()  #: set when a request starts hanging
        self._released = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event: asyncio.Event | None = None

    def release(self) -> None:
        """Let every hanging or endless request finish (from the test thread)."""
        self._released = True
        if self._loop is not None and self._event is not None:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._event.set)

    def methods(self) -> list[str]:
        return [method for method, _, _ in self.requests]

    async def __call__(
        self, scope: Scope, receive: Callable[..., Any], send: Callable[..., Any]
    ) -> None:
        assert scope["type"] == "http"
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        self.requests.append((scope["method"], scope["path"], headers))
        if self._event is None:
            self._loop = asyncio.get_running_loop()
            self._event = asyncio.Event()
        mode, method = self.mode, scope["method"]
        extra: list[tuple[bytes, bytes]] = []
        if scope["path"] == "/elsewhere":
            status = 200
        elif mode == "hang":
            self.hanging.set()
            if not self._released:
                await self._event.wait()
            status = 200
        elif mode == "endless":
            await self._endless(receive, send)
            return
        elif mode in ("head405", "head501"):
            status = int(str(mode)[4:]) if method == "HEAD" else 200
        elif mode == "redirect":
            status, extra = 302, [(b"location", b"/elsewhere")]
        elif mode == "cookie":
            status, extra = 200, [(b"set-cookie", b"session=secret; Path=/")]
        else:
            status = {"ok": 200, "fail": 500}.get(str(mode)) or int(mode)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-length", b"2"), *extra],
            }
        )
        await send({"type": "http.response.body", "body": b"ok"})

    async def _endless(self, receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        gone = asyncio.Event()

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()

        watcher = asyncio.create_task(watch())
        await send({"type": "http.response.start", "status": 200, "headers": []})
        chunk = b"x" * 65536
        for _ in range(1_000_000):  # bounded: 64 GB, far more than a probe may read
            if gone.is_set() or self._released:
                break
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        watcher.cancel()


class FakeClock:
    """A monotonic clock that only moves when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def backend() -> Iterator[Callable[[], Backend]]:
    """A factory of running backends; all are released and stopped at teardown."""
    stack = contextlib.ExitStack()
    made: list[Backend] = []

    def make() -> Backend:
        app = Backend()
        server = stack.enter_context(run_server(app, lifespan="off"))
        app.url = server.url
        made.append(app)
        return app

    try:
        yield make
    finally:
        for app in made:  # hanging requests first, or uvicorn waits for them
            app.release()
        stack.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
