"""The Quick Start of the 0.4.0 README, executed as written, against real servers."""

from __future__ import annotations

import pathlib
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request, WebSocket
from frp_testing import ServerThread, run_server

ROOT = pathlib.Path(__file__).resolve().parents[3]


def quickstart_source() -> str:
    """The first Python block of the seed README; the repository README must carry it too."""
    seed = ROOT.parent / "shared" / "seed-README.md"
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"```python\n(.*?)```", readme, re.S)
    assert block, "README lost its Quick Start"
    code = block.group(1)
    if seed.exists():
        seed_block = re.search(r"```python\n(.*?)```", seed.read_text(), re.S)
        assert seed_block
        squash = re.compile(r"\s+")
        assert squash.sub(" ", seed_block.group(1)) == squash.sub(" ", code)
    return code


def backend(name: str) -> FastAPI:
    app = FastAPI()

    @app.api_route("/{path:path}", methods=["GET", "HEAD", "POST", "PUT", "DELETE"])
    async def echo(request: Request, path: str) -> dict[str, Any]:
        body = await request.body()
        return {"backend": name, "path": path, "method": request.method, "len": len(body)}

    @app.websocket("/echo")
    async def ws_echo(ws: WebSocket) -> None:
        await ws.accept(subprotocol=(ws.scope.get("subprotocols") or [None])[0])
        text = await ws.receive_text()
        await ws.send_text(f"{name}:{text}")
        await ws.close(code=4001, reason="bye")

    return app


@pytest.fixture
def gateway() -> Iterator[ServerThread]:
    with run_server(backend("a")) as a, run_server(backend("b")) as b:
        code = quickstart_source()
        code = code.replace("http://localhost:8080", a.url).replace("http://localhost:8081", b.url)
        namespace: dict[str, Any] = {"__name__": "quickstart"}
        exec(compile(code, "README-quickstart", "exec"), namespace)
        with run_server(namespace["app"]) as gw:
            yield gw


def test_quickstart_spreads_http_over_both_backends(gateway: ServerThread) -> None:
    seen = set()
    with httpx.Client(base_url=gateway.url) as client:
        for i in range(20):
            r = client.post(f"/items/{i}?x=1", content=b"payload")
            assert r.status_code == 200
            body = r.json()
            assert body["path"] == f"items/{i}"
            assert body["method"] == "POST"
            assert body["len"] == 7
            seen.add(body["backend"])
    assert seen == {"a", "b"}


async def test_quickstart_tunnels_websockets(gateway: ServerThread) -> None:
    websockets = pytest.importorskip("websockets")
    async with websockets.connect(gateway.ws_url + "/ws/echo", subprotocols=["chat"]) as ws:
        assert ws.subprotocol == "chat"
        await ws.send("hi")
        reply = await ws.recv()
        assert reply in {"a:hi", "b:hi"}
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await ws.recv()
    code = getattr(closed.value, "rcvd", None)
    assert (code.code if code else closed.value.code) == 4001
