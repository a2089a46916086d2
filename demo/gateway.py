"""Demo gateway: the README's Quick Start in front of two embedded demo backends.

Run with `nox -s demo` (or `python demo/gateway.py --port 8000`).  Everything listens on
127.0.0.1; Ctrl-C stops all three servers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator

import uvicorn
from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import HTMLResponse, StreamingResponse

from fastapi_reverse_proxy import (
    HealthChecker,
    LoadBalancer,
    close_httpx_client,
    create_httpx_client,
)


def backend(name: str) -> FastAPI:
    """A small demo service that says who answered."""
    app = FastAPI(title=f"demo backend {name}")

    @app.get("/")
    async def index() -> dict[str, str]:
        return {"backend": name, "hello": "from the demo backend"}

    @app.get("/sse")
    async def sse() -> StreamingResponse:
        async def events() -> AsyncIterator[bytes]:
            for i in range(5):
                yield f"data: event {i} from {name}\n\n".encode()
                await asyncio.sleep(0.5)

        return StreamingResponse(events(), media_type="text/event-stream")

    @app.websocket("/echo")
    async def echo(ws: WebSocket) -> None:
        await ws.accept()
        with contextlib.suppress(Exception):
            while True:
                await ws.send_text(f"{name}: {await ws.receive_text()}")

    return app


def listen(port: int) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError:
        sock.bind(("127.0.0.1", 0))  # the port is taken: any free one
    sock.listen(128)
    return sock


PAGE = """<!doctype html><title>fastapi-reverse-proxy demo</title>
<h1>fastapi-reverse-proxy demo gateway</h1>
<p>Two backends behind a <code>LoadBalancer</code> with a <code>HealthChecker</code>:</p>
<ul><li><a href="/api/">/api/</a> (reload: both backends answer, the faster more often)</li>
<li><a href="/api/sse">/api/sse</a> (server-sent events, streamed)</li>
<li><a href="/status">/status</a> (health snapshot)</li>
<li>WebSocket: <code>ws://HOST/ws/echo</code></li></ul>"""


def gateway(targets: list[str]) -> FastAPI:
    """The README's Quick Start, with the routes under /api and /ws."""
    checker = HealthChecker(targets, interval=5)
    lb = LoadBalancer(checker)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await create_httpx_client(app)
        async with checker:
            yield
        await close_httpx_client(app)

    app = FastAPI(lifespan=lifespan)

    @app.get("/", response_class=HTMLResponse)
    async def home(request: Request) -> str:
        return PAGE.replace("HOST", request.headers.get("host", ""))

    @app.get("/status")
    async def status() -> dict[str, object]:
        return {"status": checker.status, "healthy": checker.get_healthy_targets()}

    @app.api_route("/api/{path:path}", methods=["GET", "POST", "PUT", "DELETE"])
    async def proxy(request: Request, path: str):  # type: ignore[no-untyped-def]
        return await lb.proxy_pass(request, path=f"/{path}")

    @app.websocket("/ws/{path:path}")
    async def ws_tunnel(websocket: WebSocket, path: str) -> None:
        await lb.proxy_pass_websocket(websocket, path=f"/{path}")

    return app


#: WebSocket tunnels pass frames below ASGI when they can (docs/frp-ws.md, "The splice").
WS_PROTOCOL = "frp_ws.uvicorn:SpliceProtocol"


async def main(port: int) -> None:
    socks = {name: listen(0) for name in ("a", "b")}
    targets = [f"http://127.0.0.1:{s.getsockname()[1]}" for s in socks.values()]
    servers = [
        (uvicorn.Server(uvicorn.Config(backend(n), log_level="warning", access_log=False)), [s])
        for n, s in socks.items()
    ]
    gw_sock = listen(port)
    gw = uvicorn.Server(uvicorn.Config(gateway(targets), log_level="info", ws=WS_PROTOCOL))
    servers.append((gw, [gw_sock]))
    print(f"demo backends: {', '.join(targets)}", flush=True)
    print(f"open http://127.0.0.1:{gw_sock.getsockname()[1]}/  (Ctrl-C to stop)", flush=True)
    await asyncio.gather(*(server.serve(sockets=s) for server, s in servers))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8000, help="gateway port (default 8000)")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(parser.parse_args().port))
