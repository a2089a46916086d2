"""The seed's Quick Start as a strictly typed user would write it: ``mypy --strict`` must pass.

Checked by ``nox -s typecheck`` against the installed packages (their ``py.typed``), never run.
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import Response

from fastapi_reverse_proxy import (
    HealthChecker,
    LoadBalancer,
    close_httpx_client,
    create_httpx_client,
    get_httpx_client,
    proxy_pass,
)
from fastapi_reverse_proxy.load_balance import LoadBalancer as LoadBalancer040

checker = HealthChecker(["http://127.0.0.1:8080", "http://127.0.0.1:8081"], interval=5)
lb: LoadBalancer040 = LoadBalancer(checker)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    await create_httpx_client(app)
    async with checker:
        yield
    await close_httpx_client(app)


app = FastAPI(lifespan=lifespan)


@app.api_route("/api/{path:path}", methods=["GET", "POST"])
async def gateway(request: Request, path: str) -> Response:
    return await lb.proxy_pass(request, path=f"/{path}")


@app.get("/direct/{path:path}")
async def direct(request: Request, path: str) -> Response:
    client: httpx.AsyncClient = await get_httpx_client(request)
    assert not client.is_closed
    return await proxy_pass(request, "http://127.0.0.1:8080", path=f"/{path}")


@app.websocket("/ws/{path:path}")
async def tunnel(websocket: WebSocket, path: str) -> None:
    await lb.proxy_pass_websocket(websocket, path=f"/{path}")
