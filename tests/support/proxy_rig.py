"""Build the proxy under test in its two public forms, and a recording router.

``ReverseProxy`` (the pure ASGI app) and a FastAPI route calling ``proxy_pass`` (the 0.4.0 Quick
Start) are both built from frp-core's public API only.  While frp-core has not landed, every
helper skips the calling test with a clear reason.  Keyword names for timeouts and pool limits
are found from the signatures, so these suites follow frp-core's choice of spelling.
"""

from __future__ import annotations

import contextlib
import inspect
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from fastapi import FastAPI, Request

__all__ = ["RecordingRouter", "core", "proxy_app", "route_app", "supports_router"]


def core() -> Any:
    """The ``frp_core`` module, or skip the test if it (or ``ReverseProxy``) has not landed."""
    frp_core = pytest.importorskip("frp_core")
    for name in ("ReverseProxy", "proxy_pass", "Timeouts", "create_httpx_client"):
        if not hasattr(frp_core, name):
            pytest.skip(f"frp_core.{name} has not landed yet")
    return frp_core


def _keyword(func: Any, *candidates: str) -> str | None:
    try:
        params = inspect.signature(func).parameters
    except (TypeError, ValueError):  # pragma: no cover
        return None
    for name in candidates:
        if name in params:
            return name
    return None


def _options(func: Any, timeouts: Any, limits: Any) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    if timeouts is not None:
        key = _keyword(func, "timeouts", "timeout")
        if key is None:
            pytest.skip(f"{func.__qualname__} takes no timeout option")
        kwargs[key] = timeouts
    if limits is not None:
        key = _keyword(func, "limits")
        if key is None:
            pytest.skip(f"{func.__qualname__} takes no limits option (use route_app)")
        kwargs[key] = limits
    return kwargs


def proxy_app(upstream: Any, *, timeouts: Any = None, limits: Any = None, **extra: Any) -> Any:
    """``frp_core.ReverseProxy(upstream, ...)``."""
    frp_core = core()
    cls = frp_core.ReverseProxy
    return cls(upstream, **_options(cls, timeouts, limits), **extra)


def route_app(
    upstream: Any, *, timeouts: Any = None, limits: Any = None, transport: Any = None
) -> Any:
    """A FastAPI app whose catch-all route returns ``await proxy_pass(request, upstream)``.

    With ``limits`` (an ``httpx.Limits``), the app's lifespan calls
    ``create_httpx_client(app, limits=...)`` as in the 0.4.0 Quick Start; with an httpx
    ``transport``, the client it makes sends through httpx (frp-core's fallback path).
    """
    frp_core = core()
    options = _options(frp_core.proxy_pass, timeouts, None)
    client_options = {
        k: v for k, v in (("limits", limits), ("transport", transport)) if v is not None
    }

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        if not client_options:
            yield
            return
        await frp_core.create_httpx_client(app, **client_options)
        try:
            yield
        finally:
            await frp_core.close_httpx_client(app)

    app = FastAPI(lifespan=lifespan)

    @app.api_route(
        "/{path:path}", methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
    )
    async def gateway(request: Request) -> Any:
        return await frp_core.proxy_pass(request, upstream, **options)

    return app


def supports_router() -> bool:
    """Whether frp-core accepts a ``Router`` in place of a base URL (passive health hook)."""
    frp_core = pytest.importorskip("frp_core")
    return hasattr(frp_core, "Router") and hasattr(frp_core, "Outcome")


class RecordingRouter:
    """A one-target ``frp_core.Router`` that records every ``done(target, outcome, elapsed)``.

    It stands in for a load balancer (the hook frp-balance plugs into), so a test can see what
    the proxy reports to passive health.  It never retries: ``pick`` returns ``None`` once the
    target was tried.
    """

    def __init__(self, target: str) -> None:
        self.target = target
        self.outcomes: list[tuple[str, str]] = []
        self._cond = threading.Condition()

    def route(self, scope: Mapping[str, Any]) -> RecordingRouter._Attempt:
        return RecordingRouter._Attempt(self)

    def wait_outcomes(self, n: int, timeout: float = 10.0) -> list[tuple[str, str]]:
        with self._cond:
            self._cond.wait_for(lambda: len(self.outcomes) >= n, timeout)
            return list(self.outcomes)

    class _Attempt:
        def __init__(self, owner: RecordingRouter) -> None:
            self.owner = owner

        def pick(self, tried: Sequence[str]) -> str | None:
            return None if tried else self.owner.target

        def done(self, target: str, outcome: Any, elapsed: float) -> None:
            with self.owner._cond:
                self.owner.outcomes.append((target, str(outcome)))
                self.owner._cond.notify_all()
