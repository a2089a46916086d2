"""Messages and closes through an open tunnel."""

from __future__ import annotations

import asyncio
import os
import socket

import pytest

from frp_ws._compat import UpstreamClosed
from frp_ws.uvicorn import SpliceProtocol

MiB = 1024 * 1024


async def test_text_stays_text_binary_stays_binary(proxy, upstream, ws_client):
    ws = await ws_client(proxy.ws_url + "/")
    for message in ["héllo", b"h\xc3\xa9llo", "", b"", "0" * 70_000, bytes(range(256))]:
        await ws.send(message)
        echoed = await ws.recv()
        assert type(echoed) is type(message)
        assert echoed == message
    await ws.close(1000)
    assert await upstream.closes.get() == (1000, "")
    assert (await proxy.finished())["tasks"] == []


async def test_fragmented_upstream_message_arrives_whole(proxy, upstream, ws_client):
    ws = await ws_client(proxy.ws_url + "/")
    await ws.send("!frag 200")
    assert await ws.recv() == "fragment" * 200
    await ws.close(1000)


async def test_four_mib_messages_pass_both_ways(proxy, upstream, ws_client):
    ws = await ws_client(proxy.ws_url + "/")
    blob = bytes(range(256)) * (4 * MiB // 256)
    await ws.send(blob)
    assert await ws.recv() == blob
    text = "é" * (2 * MiB)  # 4 MiB of UTF-8
    await ws.send(text)
    assert await ws.recv() == text
    await ws.send(f"!big {4 * MiB}")
    assert await ws.recv() == b"\xab" * (4 * MiB)
    await ws.close(1000)


async def test_unlimited_max_size(proxy, make_upstream, ws_client):
    async with make_upstream() as up:
        proxy.state["upstream"] = up.url
        proxy.options["max_size"] = None
        ws = await ws_client(proxy.ws_url + "/")
        await ws.send(f"!big {17 * MiB}")  # over the 16 MiB default
        assert len(await ws.recv()) == 17 * MiB
        await ws.close(1000)


async def test_upstream_message_over_max_size_closes_both_with_1009(
    proxy, upstream, ws_client, closed
):
    proxy.options["max_size"] = 1 * MiB
    ws = await ws_client(proxy.ws_url + "/")
    await ws.send(f"!big {MiB + 1}")
    assert await closed(ws) == (1009, "Message too big")
    code, _ = await upstream.closes.get()
    assert code == 1009
    assert (await proxy.finished())["tasks"] == []


async def test_client_message_over_max_size_closes_both_with_1009(
    proxy, upstream, ws_client, closed
):
    proxy.options["max_size"] = 1 * MiB
    ws = await ws_client(proxy.ws_url + "/")
    await ws.send(b"x" * (MiB + 1))
    assert await closed(ws) == (1009, "Message too big")
    assert await upstream.closes.get() == (1009, "Message too big")


@pytest.mark.parametrize("server", ["wsproto", "splice"])
async def test_client_message_over_uvicorn_ws_max_size(
    server, upstream, ws_client, closed, make_proxy
):
    ws_impl = SpliceProtocol if server == "splice" else server
    with make_proxy(ws=ws_impl, ws_max_size=1 * MiB) as proxy:
        proxy.state["upstream"] = upstream.url
        proxy.options["max_size"] = None
        ws = await ws_client(proxy.ws_url + "/", compression=None)
        await ws.send(b"x" * (MiB + 1))
        code, _ = await closed(ws)
        assert code == 1009  # uvicorn closes the client hop
        assert (await upstream.closes.get())[0] == 1009  # the tunnel closes the upstream hop
        await proxy.finished()
        assert proxy.spliced == ([True] if server == "splice" else [])


CLOSES = [(1000, ""), (1001, "going away"), (3000, "custom"), (4999, "é" * 61)]


@pytest.mark.parametrize(("code", "reason"), CLOSES)
async def test_client_close_reaches_upstream(proxy, upstream, ws_client, code, reason):
    ws = await ws_client(proxy.ws_url + "/")
    await ws.close(code, reason)
    assert await upstream.closes.get() == (code, reason)
    assert (await proxy.finished())["tasks"] == []


@pytest.mark.parametrize(("code", "reason"), CLOSES)
async def test_upstream_close_reaches_client(proxy, upstream, ws_client, closed, code, reason):
    ws = await ws_client(proxy.ws_url + "/")
    await ws.send(f"!close {code} {reason}")
    assert await closed(ws) == (code, reason)
    assert (await proxy.finished())["tasks"] == []


async def test_upstream_close_without_status_becomes_1000(proxy, upstream, ws_client, closed):
    ws = await ws_client(proxy.ws_url + "/")
    await ws.send("!empty-close")
    assert await closed(ws) == (1000, "")
    await proxy.finished()


async def test_client_close_without_status_becomes_1000(proxy, upstream, ws_client):
    ws = await ws_client(proxy.ws_url + "/")
    ws._ws.transport.write(b"\x88\x80\x00\x00\x00\x00")  # masked close frame, no payload
    assert await upstream.closes.get() == (1000, "")
    ws.abort()
    await proxy.finished()


async def test_upstream_vanishing_gives_the_client_1014(proxy, upstream, ws_client, closed):
    ws = await ws_client(proxy.ws_url + "/")
    await ws.send("!abort")
    assert await closed(ws) == (1014, "Bad Gateway")
    finished = await proxy.finished()
    assert finished["tasks"] == []
    assert finished["error"] is None


async def test_client_vanishing_closes_the_upstream(proxy, upstream, ws_client):
    ws = await ws_client(proxy.ws_url + "/")
    await ws.send("ping")
    assert await ws.recv() == "ping"
    ws.abort()
    code, reason = await upstream.closes.get()
    # uvicorn reports a lost client as 1005 (wsproto) or 1006: the upstream sees 1000 or 1001.
    assert code in (1000, 1001)
    assert reason == ""
    assert (await proxy.finished())["tasks"] == []


@pytest.mark.parametrize("server", ["wsproto", "splice"])
async def test_server_shutdown_closes_upstream_with_1001(
    server, upstream, ws_client, closed, make_proxy
):
    with make_proxy(ws=SpliceProtocol if server == "splice" else server) as proxy:
        proxy.state["upstream"] = upstream.url
        ws = await ws_client(proxy.ws_url + "/", compression=None)
        await ws.send("hi")
        assert await ws.recv() == "hi"
        stopping = asyncio.ensure_future(asyncio.to_thread(proxy.server.stop))
        assert (await closed(ws))[0] == 1012  # uvicorn's own code to its clients
        assert await upstream.closes.get() == (1001, "")
        await stopping
        assert (await proxy.finished())["tasks"] == []
        assert proxy.spliced == ([True] if server == "splice" else [])


async def test_messages_keep_their_order_under_load(proxy, upstream, ws_client):
    ws = await ws_client(proxy.ws_url + "/")
    for i in range(200):
        await ws.send(str(i))
    assert [await ws.recv() for _ in range(200)] == [str(i) for i in range(200)]
    await ws.close(1000)


async def test_slow_reader_holds_back_a_fast_sender(proxy, upstream, ws_client):
    """Backpressure: with the client not reading, the upstream cannot push everything."""
    # 128 MiB offered: more than every buffer on the way can hold (loopback autotuning lets
    # a socket buffer grow to 32 MiB here, so the client's receive buffer is pinned small).
    count, size = 2048, 64 * 1024
    proxy.options["compression"] = None  # deflate on 128 MiB of noise would only cost time
    ws = await ws_client(proxy.ws_url + "/", max_size=2 * size, compression=None)
    ws._ws.transport.get_extra_info("socket").setsockopt(
        socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024
    )
    await ws.send(f"!flood {count} {size}")
    with pytest.raises(TimeoutError):  # the upstream stays blocked while nobody reads
        await asyncio.wait_for(upstream.flooded.wait(), 2)
    assert upstream.flood_sent < count
    received = 0
    for i in range(count):
        message = await ws.recv()
        assert message[:4] == i.to_bytes(4, "big")
        received += 1
    assert received == count
    await ws.close(1000)
    await proxy.finished()


async def test_relay_buffers_are_bounded(proxy, upstream, ws_client):
    """The upstream hop reads at most ``max_queue`` frames ahead; nothing else is queued."""
    proxy.options["max_queue"] = 2
    ws = await ws_client(proxy.ws_url + "/")
    await ws.send("!flood 50 1024")
    for i in range(50):
        assert (await ws.recv())[:4] == i.to_bytes(4, "big")
    await ws.close(1000)
    assert (await proxy.finished())["tasks"] == []


async def test_closed_client_sees_closed_errors(proxy, upstream, ws_client):
    ws = await ws_client(proxy.ws_url + "/")
    await ws.close(1000)
    with pytest.raises(UpstreamClosed):
        await ws.send("late")


async def test_upstream_keepalive_timeout_gives_the_client_1014(proxy, upstream, ws_client, closed):
    proxy.options.update(ping_interval=0.1, ping_timeout=0.1, close_timeout=0.1)
    ws = await ws_client(proxy.ws_url + "/")
    await ws.send("!deaf")
    assert await closed(ws) == (1014, "Bad Gateway")
    assert (await proxy.finished())["tasks"] == []


async def test_cancelled_tunnel_leaves_nothing_behind(proxy, upstream, ws_client):
    ws = await ws_client(proxy.ws_url + "/")
    await ws.send("still here")
    assert await ws.recv() == "still here"
    proxy.expire()  # the route's own timeout cancels the tunnel mid-flight
    finished = await proxy.finished()
    assert isinstance(finished["error"], TimeoutError)
    assert finished["tasks"] == []
    code, _ = await upstream.closes.get()
    assert code == 1006  # the upstream connection was dropped, not left open


async def test_slow_upstream_holds_back_a_fast_client(proxy, upstream, ws_client):
    """Backpressure the other way: an upstream that stops reading blocks the client's sends."""
    proxy.options["compression"] = None
    ws = await ws_client(proxy.ws_url + "/", compression=None)
    await ws.send("!deaf")
    block = os.urandom(64 * 1024)
    count = 2048  # 128 MiB, more than every buffer on the way can hold
    sent = 0

    async def flood() -> None:
        nonlocal sent
        for _ in range(count):
            await ws.send(block)
            sent += 1

    with pytest.raises(TimeoutError):  # the client stays blocked while the upstream is deaf
        await asyncio.wait_for(flood(), 2)
    assert sent < count
    # The client leaves while the tunnel waits on the upstream: the tunnel notices once the
    # pending send completes (or the upstream hop's keepalive fails), then ends cleanly.
    ws.abort()
    upstream.hear()
    finished = await proxy.finished()
    assert finished["tasks"] == []
    assert (await upstream.closes.get())[0] in (1000, 1001)
