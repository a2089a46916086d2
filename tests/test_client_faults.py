"""Client faults: aborted uploads and downloads, slow readers, slowloris uploads and more
clients than the upstream pool allows.  The proxy frees what the client held, keeps memory
bounded by pushing back on the upstream, and never leaves a request hanging.

The proxy runs under uvicorn on 127.0.0.1, in front of ``fault_server.FaultServer``; clients
are raw sockets (to abort at an exact point) and httpx.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import struct
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fault_server import OK_BODY, FaultServer, fault_server, pattern
from frp_testing import run_server
from proxy_rig import core, proxy_app, route_app


def _timeouts(pool: float = 5.0, read: float = 30.0) -> Any:
    return core().Timeouts(connect=5.0, read=read, write=30.0, pool=pool)


@pytest.fixture
def fault() -> Iterator[FaultServer]:
    with fault_server("record") as fs:
        yield fs


def _one_slot_proxy(fs: FaultServer, pool: float = 5.0) -> Any:
    """A 0.4.0-style gateway whose client allows one upstream connection."""
    return run_server(
        route_app(
            fs.url,
            timeouts=_timeouts(pool=pool),
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
        )
    )


async def _get_ok(url: str) -> None:
    async with httpx.AsyncClient(timeout=30.0) as client:
        response = await client.get(url)
    assert (response.status_code, response.content) == (200, OK_BODY)


def _abort(sock: socket.socket, how: str) -> None:
    if how == "reset":
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


# -- aborted transfers -----------------------------------------------------------------------


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
@pytest.mark.parametrize("how", ["close", "reset"])
async def test_abort_mid_upload_reaches_the_upstream_and_frees_the_slot(
    fault: FaultServer, how: str, framing: str
) -> None:
    declared = 8 << 20
    with _one_slot_proxy(fault) as proxy:
        sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
        if framing == "chunked":
            head = b"Transfer-Encoding: chunked"
            body = b"100000\r\n" + pattern(1 << 20) + b"\r\n" + b"100000\r\n" + pattern(1000)
        else:
            head = b"Content-Length: %d" % declared
            body = pattern(1 << 20)
        sock.sendall(b"POST /upload HTTP/1.1\r\nHost: proxy\r\n" + head + b"\r\n\r\n")
        sock.sendall(body)
        conn = await asyncio.to_thread(fault.wait_for_connection, 0)
        assert await asyncio.to_thread(fault.wait_until, lambda: len(conn.requests[0].body) > 0), (
            "the upload did not stream to the upstream"
        )
        _abort(sock, how)
        assert await asyncio.to_thread(conn.peer_closed.wait, 10.0), "upstream never saw the abort"
        req = conn.requests[0]
        assert not req.complete, "the upstream saw a complete request from an aborted upload"
        assert len(req.body) < declared
        assert bytes(req.body) == pattern(len(req.body)), "upload bytes corrupted on the way"
        # the only pooled slot was given back: a new request goes through
        await _get_ok(proxy.url + "/after")


@pytest.mark.parametrize("how", ["close", "reset"])
async def test_abort_mid_download_stops_the_upstream_and_frees_the_slot(how: str) -> None:
    total = 1 << 30
    with fault_server("stream", total=total) as fs, _one_slot_proxy(fs) as proxy:
        sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
        sock.sendall(b"GET /download HTTP/1.1\r\nHost: proxy\r\n\r\n")
        got = bytearray()
        for _ in range(10_000):
            got += sock.recv(1 << 16)
            if len(got) > (2 << 20):
                break
        assert got.startswith(b"HTTP/1.1 200")
        _abort(sock, how)
        conn = fs.wait_for_connection(0)
        assert await asyncio.to_thread(conn.peer_closed.wait, 20.0), "upstream kept streaming"
        assert conn.sent < total, "the whole download was pulled for a client that left"
        fs.mode = "ok"
        await _get_ok(proxy.url + "/after")


# -- slow readers: backpressure reaches the upstream -------------------------------------------


@pytest.mark.parametrize("form", ["asgi", "route"])
async def test_slow_reader_pushes_back_on_the_upstream(form: str) -> None:
    """While the client reads nothing, the upstream can send only what fits in socket and
    transport buffers; once the client reads again, every byte arrives intact."""
    bound = _kernel_buffers() + (16 << 20)  # + the proxy's own (engine, transport) buffers
    total = max(128 << 20, 2 * bound)
    with fault_server("stream", total=total) as fs:
        app = (
            proxy_app(fs.url, timeouts=_timeouts())
            if form == "asgi"
            else route_app(fs.url, timeouts=_timeouts())
        )
        with run_server(app) as proxy:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
            sock.settimeout(30)
            sock.connect(("127.0.0.1", proxy.port))
            sock.sendall(b"GET /download HTTP/1.1\r\nHost: proxy\r\n\r\n")
            head = bytearray()
            for _ in range(1000):
                head += sock.recv(4096)
                if b"\r\n\r\n" in head:
                    break
            assert head.startswith(b"HTTP/1.1 200")
            conn = fs.wait_for_connection(0)
            # A one-sided check (re-evaluated at every upstream send): the upstream never gets
            # past ``bound`` while the client reads nothing.  A slow machine only sends less.
            overran = await asyncio.to_thread(fs.wait_until, lambda: conn.sent >= bound, 5.0)
            assert not overran, f"{conn.sent} bytes buffered for a client reading none"
            print(f"upstream at {conn.sent} bytes while the client read none")
            # resume reading: the stream completes, byte-exact
            body = head.split(b"\r\n\r\n", 1)[1]
            received = await asyncio.to_thread(_read_exactly_hashed, sock, total, bytes(body))
            sock.close()
            assert received == _pattern_digest(total)


def _kernel_buffers() -> int:
    """The most loopback TCP autotuning may buffer on the way: the upstream's send buffer,
    the proxy's receive and send buffers (Linux ``tcp_rmem``/``tcp_wmem`` maxima)."""
    try:
        with open("/proc/sys/net/ipv4/tcp_rmem") as f:
            rmem = int(f.read().split()[2])
        with open("/proc/sys/net/ipv4/tcp_wmem") as f:
            wmem = int(f.read().split()[2])
    except (OSError, ValueError, IndexError):
        return 32 << 20
    return rmem + 2 * wmem


def _read_exactly_hashed(sock: socket.socket, total: int, first: bytes) -> str:
    digest = hashlib.sha256(first)
    n = len(first)
    for _ in range(total):
        if n >= total:
            break
        data = sock.recv(1 << 20)
        if not data:
            break
        digest.update(data)
        n += len(data)
    assert n == total, f"received {n} of {total} bytes"
    return digest.hexdigest()


def _pattern_digest(total: int) -> str:
    digest = hashlib.sha256()
    block = pattern(1 << 20)
    for _ in range(total >> 20):
        digest.update(block)
    digest.update(block[: total & ((1 << 20) - 1)])
    return digest.hexdigest()


# -- slowloris upload ----------------------------------------------------------------------------


async def test_slowloris_upload_does_not_block_other_clients(fault: FaultServer) -> None:
    """A client trickling its body holds one upstream connection at most; meanwhile others
    are served, and the slow upload still arrives intact."""
    body = pattern(2000)
    half_sent = asyncio.Event()
    others_done = asyncio.Event()
    with run_server(proxy_app(fault.url, timeouts=_timeouts())) as proxy:

        async def slow_client() -> bytes:
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            writer.write(
                b"POST /slow HTTP/1.1\r\nHost: proxy\r\nContent-Length: %d\r\n\r\n" % len(body)
            )
            for i in range(0, len(body), 100):
                if i == 1000:
                    half_sent.set()
                    await asyncio.wait_for(others_done.wait(), 30)
                writer.write(body[i : i + 100])
                await writer.drain()
                await asyncio.sleep(0.01)  # the client is slow: simulation, not sync
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
            writer.close()
            return head

        task = asyncio.create_task(slow_client())
        await asyncio.wait_for(half_sent.wait(), 30)
        async with httpx.AsyncClient(timeout=30.0) as client:
            for i in range(5):
                response = await client.get(f"{proxy.url}/other/{i}")
                assert (response.status_code, response.content) == (200, OK_BODY)
        others_done.set()
        head = await asyncio.wait_for(task, 30)
        assert head.startswith(b"HTTP/1.1 200")
    slow = [r for r in fault.requests if r.target == b"/slow"]
    assert len(slow) == 1
    assert slow[0].complete
    assert bytes(slow[0].body) == body


# -- more clients than the pool allows ------------------------------------------------------------


async def test_pool_exhausted_queues_then_503_never_hangs() -> None:
    with fault_server("hold") as fs, _one_slot_proxy(fs, pool=0.5) as proxy:
        async with httpx.AsyncClient(timeout=30.0) as client:
            first = asyncio.create_task(client.get(proxy.url + "/holder"))
            await asyncio.to_thread(fs.wait_for_connection, 0)
            waiting = await asyncio.gather(
                *(client.get(f"{proxy.url}/waiter/{i}") for i in range(4))
            )
            assert [r.status_code for r in waiting] == [503] * 4
            for response in waiting:
                assert str(fs.port).encode() not in response.content
            assert len(fs.connections) == 1, "the pool opened more connections than allowed"
            assert [r.target for r in fs.requests] == [b"/holder"], "a queued request leaked"
            fs.release()
            holder = await first
            assert (holder.status_code, holder.content) == (200, OK_BODY)
            after = await client.get(proxy.url + "/after")
            assert (after.status_code, after.content) == (200, OK_BODY)


async def test_pool_queue_is_served_when_a_connection_frees_up() -> None:
    with fault_server("hold") as fs, _one_slot_proxy(fs, pool=20.0) as proxy:
        async with httpx.AsyncClient(timeout=30.0) as client:
            first = asyncio.create_task(client.get(proxy.url + "/holder"))
            await asyncio.to_thread(fs.wait_for_connection, 0)
            queued = asyncio.create_task(client.get(proxy.url + "/queued"))
            fs.release()
            responses = await asyncio.gather(first, queued)
            assert [(r.status_code, r.content) for r in responses] == [(200, OK_BODY)] * 2
            assert len(fs.connections) == 1, "the queued request did not reuse the freed slot"
