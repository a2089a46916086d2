"""The proxy applications under test, each served by one uvicorn worker (uvloop, httptools).

Forms:
- ``quickstart``: the seed README's Quick Start verbatim (``HealthChecker`` over one backend,
  ``LoadBalancer(checker)``, the httpx client created in the lifespan, a FastAPI route calling
  ``lb.proxy_pass`` and a WebSocket route calling ``lb.proxy_pass_websocket``).  The same file
  runs on our meta-package and on ``fastapi-reverse-proxy==0.4.0`` in its own virtualenv.
- ``mounted``: ``app.mount("/", ReverseProxy(upstream))`` in a FastAPI app (``frp_core``), with
  ``app.mount("/ws", WebSocketProxy(upstream))`` before it when frp-ws is installed (frp_core
  answers WebSocket scopes with a close: it never imports frp_ws).
- ``asgi``: the bare ``frp_core.ReverseProxy(upstream)`` ASGI app; WebSocket scopes are handed
  to ``frp_ws.WebSocketProxy(upstream)`` when frp-ws is installed.
- ``route-ceiling``/``mount-ceiling``: no proxy: a Quick Start-shaped FastAPI route, or a
  FastAPI mount, answering 100 bytes itself (the most a proxy in that form could serve).

Our forms run with ``ws=frp_ws.uvicorn:SpliceProtocol``, the deployment frp-ws's docs advise
(WebSocket tunnels then splice frames below ASGI); 0.4.0 runs with uvicorn's default.

Run as ``python proxies.py --form F --upstream URL --fd N``.  An import error exits with
status 3 and one line ``unavailable: <reason>`` on stderr.  No ``from __future__ import
annotations`` here: FastAPI must see the real ``Request``/``WebSocket`` annotations.
"""

import argparse
import sys
from contextlib import asynccontextmanager
from typing import Any

from upstream import serve

UNAVAILABLE_EXIT = 3


def lean_fastapi_options() -> dict[str, Any]:
    """``FastAPI()`` options for a gateway that serves no API docs (and, on a FastAPI with
    native telemetry, exports none): fewer routes to try, no telemetry check per request."""
    import inspect

    from fastapi import FastAPI

    options: dict[str, Any] = {"openapi_url": None, "docs_url": None, "redoc_url": None}
    if "telemetry" in inspect.signature(FastAPI.__init__).parameters:
        options["telemetry"] = {"tracing": False, "metrics": False, "logs": False}
    return options


def quickstart(upstream: str, **fastapi_options: Any) -> Any:
    """The seed README's Quick Start with ``upstream`` as the only backend (``fastapi_options``
    go to ``FastAPI()``: none in the benchmark)."""
    from collections.abc import AsyncIterator

    from fastapi import FastAPI, Request, WebSocket

    from fastapi_reverse_proxy import (
        HealthChecker,
        LoadBalancer,
        close_httpx_client,
        create_httpx_client,
    )

    checker = HealthChecker([upstream])
    lb = LoadBalancer(checker)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await create_httpx_client(app)
        async with checker:
            yield
        await close_httpx_client(app)

    app = FastAPI(lifespan=lifespan, **fastapi_options)

    @app.api_route("/{path:path}", methods=["GET", "POST", "PUT", "DELETE"])
    async def gateway(request: Request, path: str) -> Any:
        return await lb.proxy_pass(request, path=f"/{path}")

    @app.websocket("/ws/{path:path}")
    async def ws_tunnel(websocket: WebSocket, path: str) -> None:
        await lb.proxy_pass_websocket(websocket, path=f"/{path}")

    return app


def _websocket_app(upstream: str) -> Any:
    """frp_ws's pure ASGI WebSocket tunnel, or None when frp-ws is not installed."""
    try:
        from frp_ws import WebSocketProxy
    except ImportError as exc:
        print(f"no WebSocket tunnel: {exc}", file=sys.stderr, flush=True)
        return None
    return WebSocketProxy(upstream)


def mounted(upstream: str) -> Any:
    """FastAPI with the pure ASGI proxy mounted at the root (and frp_ws's at ``/ws``)."""
    from fastapi import FastAPI

    from frp_core import ReverseProxy

    app = FastAPI()
    ws_app = _websocket_app(upstream)
    if ws_app is not None:
        app.mount("/ws", ws_app)
    app.mount("/", ReverseProxy(upstream))
    return app


def bare(upstream: str) -> Any:
    """The pure ASGI proxy as the whole application; WebSocket scopes go to frp_ws's."""
    from frp_core import ReverseProxy

    http_app = ReverseProxy(upstream)
    ws_app = _websocket_app(upstream)
    if ws_app is None:
        return http_app

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            await ws_app(scope, receive, send)
        else:
            await http_app(scope, receive, send)

    return app


# The ceilings: the same frameworks answering ``/small`` themselves, with no proxy and no
# upstream.  No proxy written in that form can serve more requests per second than they do.
SMALL_BODY = b"x" * 100


async def answer(scope: Any, receive: Any, send: Any) -> None:
    """A pure ASGI app answering every HTTP request with 100 bytes (lifespan supported)."""
    if scope["type"] == "lifespan":
        await receive()
        await send({"type": "lifespan.startup.complete"})
        await receive()
        await send({"type": "lifespan.shutdown.complete"})
        return
    headers = [(b"content-type", b"text/plain"), (b"content-length", b"100")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": SMALL_BODY})


def gateway_gc() -> None:
    """The garbage collector as frp-core sets it in a gateway (``frp_core.tune_gc``), so that
    a ceiling compares like for like with the proxy forms."""
    try:
        from frp_core._gc import apply_gc_policy
    except ImportError:  # an frp-core without it: CPython's default everywhere
        return
    apply_gc_policy()


def mount_ceiling(upstream: str) -> Any:
    """``answer`` mounted at the root of ``FastAPI()``: the mounted form's ceiling."""
    from fastapi import FastAPI

    gateway_gc()
    app = FastAPI()
    app.mount("/", answer)
    return app


def route_ceiling(upstream: str) -> Any:
    """The Quick Start's route shape in ``FastAPI()``, returning 100 bytes itself."""
    from fastapi import FastAPI, Request
    from fastapi.responses import Response

    gateway_gc()
    app = FastAPI()

    @app.api_route("/{path:path}", methods=["GET", "POST", "PUT", "DELETE"])
    async def gateway(request: Request, path: str) -> Any:
        return Response(SMALL_BODY, media_type="text/plain")

    return app


FORMS = {
    "quickstart": quickstart,
    "mounted": mounted,
    "asgi": bare,
    "route-ceiling": route_ceiling,
    "mount-ceiling": mount_ceiling,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--form", choices=sorted(FORMS), required=True)
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--fd", type=int)
    parser.add_argument("--port", type=int)
    parser.add_argument("--check", action="store_true", help="build the app, do not serve")
    args = parser.parse_args()
    try:
        app = FORMS[args.form](args.upstream)
    except Exception as exc:  # any failure to build the app makes the system unavailable
        print(f"unavailable: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        sys.exit(UNAVAILABLE_EXIT)
    if not args.check:
        serve(app, args.fd, args.port, ws=_ws_protocol())


def _ws_protocol() -> Any:
    """frp-ws's ``SpliceProtocol`` where frp-ws is installed (as its docs advise for speed),
    uvicorn's default otherwise (0.4.0's virtualenv)."""
    try:
        from frp_ws.uvicorn import SpliceProtocol
    except ImportError:
        return None
    return SpliceProtocol


if __name__ == "__main__":
    main()
