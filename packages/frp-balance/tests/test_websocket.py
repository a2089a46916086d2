"""LoadBalancer.proxy_pass_websocket: a real tunnel through frp-ws, and a clear error without it."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable

import pytest
import websockets
from fastapi import FastAPI
from frp_testing import ServerThread

from frp_balance import LoadBalancer

Start = Callable[..., ServerThread]


async def test_websockets_are_tunnelled_round_robin(
    servers: Start,
    backend: Callable[..., FastAPI],
    gateway: Callable[..., FastAPI],
    until: Callable[..., Awaitable[None]],
) -> None:
    a, b = servers(backend("a")), servers(backend("b"))
    lb = LoadBalancer([a.url, b.url])
    gw = servers(gateway(lb))
    replies = []
    for i in range(4):
        async with websockets.connect(f"{gw.ws_url}/ws/ws") as ws:
            await ws.send(f"m{i}")
            replies.append(await ws.recv())
    assert replies == ["a:m0", "b:m1", "a:m2", "b:m3"]
    await until(lambda: lb.in_flight() == 0, "tunnels to be released")


async def test_missing_frp_ws_raises_an_error_naming_the_package(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "frp_ws", None)  # what an uninstalled package looks like
    lb = LoadBalancer(["http://127.0.0.1:9"])
    with pytest.raises(ImportError, match=r"frp-ws.*pip install 'frp-balance\[ws\]'"):
        await lb.proxy_pass_websocket(object(), path="/ws")
    assert lb.in_flight() == 0  # nothing was picked
