"""The README's demo gateway (``demo/gateway.py``, run by ``nox -s demo``) keeps working: its
page, the proxied API, the SSE stream, the WebSocket tunnel and the health snapshot, each
through the gateway to its two real demo backends."""

from __future__ import annotations

import importlib.util
import pathlib
import sys
from collections.abc import Iterator
from types import ModuleType

import httpx
import pytest
import websockets
from frp_testing import ServerThread, run_server

DEMO = pathlib.Path(__file__).resolve().parents[1] / "demo" / "gateway.py"


def _load_demo() -> ModuleType:
    spec = importlib.util.spec_from_file_location("frp_demo_gateway", DEMO)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # FastAPI resolves the route annotations through it
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def demo() -> Iterator[tuple[ServerThread, list[str]]]:
    module = _load_demo()
    with run_server(module.backend("a")) as a, run_server(module.backend("b")) as b:
        targets = [a.url, b.url]
        with run_server(module.gateway(targets), ws=module.WS_PROTOCOL) as gw:
            yield gw, targets


def test_page_links_the_api(demo: tuple[ServerThread, list[str]]) -> None:
    gw, _ = demo
    response = httpx.get(gw.url + "/", timeout=10)
    assert response.status_code == 200
    assert 'href="/api/"' in response.text
    assert f"ws://127.0.0.1:{gw.port}/ws/echo" in response.text


def test_api_is_answered_by_a_demo_backend(demo: tuple[ServerThread, list[str]]) -> None:
    gw, _ = demo
    with httpx.Client(base_url=gw.url, timeout=10) as client:
        answers = [client.get("/api/").json() for _ in range(6)]
    assert {a["backend"] for a in answers} <= {"a", "b"}
    assert all(a["hello"] == "from the demo backend" for a in answers)


def test_status_shows_both_backends_healthy(demo: tuple[ServerThread, list[str]]) -> None:
    gw, targets = demo
    status = httpx.get(gw.url + "/status", timeout=10).json()
    assert sorted(status["healthy"]) == sorted(targets)


def test_sse_streams_through_the_gateway(demo: tuple[ServerThread, list[str]]) -> None:
    gw, _ = demo
    events: list[str] = []
    with httpx.stream("GET", gw.url + "/api/sse", timeout=10) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data: "):
                events.append(line)
            if len(events) == 2:
                break
    assert events[0].startswith("data: event 0 from ")
    assert events[1].startswith("data: event 1 from ")


@pytest.mark.parametrize("compression", ["deflate", None])
async def test_websocket_echo_through_the_tunnel(
    demo: tuple[ServerThread, list[str]], compression: str | None
) -> None:
    # With compression the tunnel relays messages; without, it splices frames.
    gw, _ = demo
    url = f"{gw.ws_url}/ws/echo"
    async with websockets.connect(url, open_timeout=10, compression=compression) as ws:
        await ws.send("hello")
        reply = await ws.recv()
    assert reply in ("a: hello", "b: hello")
