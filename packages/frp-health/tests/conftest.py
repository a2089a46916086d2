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
        self._event = asyncio.Event()

    def reset(self) -> None:
        """Forget the previous test: mode ``ok``, no requests, nothing hanging."""
        self.mode = "ok"
        self.requests = []
        self.hanging.clear()
        self._released = False
        self._event = asyncio.Event()  # binds to the server loop on first wait

    def release(self) -> None:
        """Let every hanging or endless request finish (from the test thread)."""
        self._released = True
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the server loop is gone
                self._loop.call_soon_threadsafe(self._event.set)

    def methods(self) -> list[str]:
        return [method for method, _, _ in self.requests]

    async def __call__(
        self, scope: Scope, receive: Callable[..., Any], send: Callable[..., Any]
    ) -> None:
        assert scope["type"] == "http"
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        self.requests.append((scope["method"], scope["path"], headers))
        self._loop = asyncio.get_running_loop()
        event = self._event
        mode, method = self.mode, scope["method"]
        extra: list[tuple[bytes, bytes]] = []
        if scope["path"] == "/elsewhere":
            status = 200
        elif mode == "hang":
            self.hanging.set()
            if not self._released:
                await event.wait()
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
            await asyncio.sleep(0)  # let the server loop notice a disconnect
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


class Pool:
    """Servers shared by the whole session (starting and stopping uvicorn is the slow part)."""

    def __init__(self, stack: contextlib.ExitStack) -> None:
        self.stack = stack
        self.apps: list[Backend] = []

    def get(self, index: int) -> Backend:
        while len(self.apps) <= index:
            app = Backend()
            app.url = self.stack.enter_context(run_server(app, lifespan="off")).url
            self.apps.append(app)
        app = self.apps[index]
        app.reset()
        return app

    def release(self, count: int | None = None) -> None:
        for app in self.apps[:count]:  # hanging requests first, or uvicorn waits for them
            app.release()


@pytest.fixture(scope="session")
def _pool() -> Iterator[Pool]:
    with contextlib.ExitStack() as stack:
        pool = Pool(stack)
        try:
            yield pool
        finally:
            pool.release()


@pytest.fixture
def backend(_pool: Pool) -> Iterator[Callable[[], Backend]]:
    """A factory of running backends, each fresh (mode ``ok``, no requests seen)."""
    used = 0

    def make() -> Backend:
        nonlocal used
        used += 1
        return _pool.get(used - 1)

    try:
        yield make
    finally:
        _pool.release(used)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
