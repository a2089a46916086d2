"""The splice: frames between the client's socket and the upstream's, below ASGI.

Behaviour common to both paths is tested through the ``proxy`` fixture's two servers; here
is what only the splice does: when it is taken, what it does with frames a client should not
send, each hop's keepalive, and the frame scanner on its own.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct

import pytest

from frp_ws._frames import (
    CLOSE,
    PING,
    Control,
    FrameScanner,
    ProtocolViolation,
    TooBig,
    close_frame,
    control_frame,
    parse_close,
)
from frp_ws.uvicorn import SpliceProtocol

HANDSHAKE = (
    b"GET /raw HTTP/1.1\r\nHost: proxy\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: " + base64.b64encode(b"0123456789abcdef") + b"\r\n"
    b"Sec-WebSocket-Version: 13\r\n\r\n"
)


def frame(opcode: int, payload: bytes, *, fin: bool = True, mask: bool = True) -> bytes:
    """A frame as a client (masked) or a server (unmasked) writes it."""
    first = (0x80 if fin else 0) | opcode
    n = len(payload)
    if n < 126:
        head = bytes((first, (0x80 if mask else 0) | n))
    elif n < 65536:
        head = bytes((first, (0x80 if mask else 0) | 126)) + struct.pack("!H", n)
    else:
        head = bytes((first, (0x80 if mask else 0) | 127)) + struct.pack("!Q", n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


async def raw_client(
    port: int, rcvbuf: int | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A client that completes the opening handshake by hand, then speaks raw frames
    (``rcvbuf``: its socket's receive buffer, set before it connects)."""
    sock = socket.socket()
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock)
    writer.write(HANDSHAKE)
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert head.startswith(b"HTTP/1.1 101")
    return reader, writer


async def read_close(reader: asyncio.StreamReader) -> tuple[int | None, str]:
    """Read frames (at most 100) until a close frame; its code and reason."""
    for _ in range(100):
        b0, b1 = await asyncio.wait_for(reader.readexactly(2), 10)
        payload = await reader.readexactly(b1 & 0x7F)
        if b0 & 0x0F == CLOSE:
            parsed = parse_close(payload)
            assert parsed is not None
            return parsed
    raise AssertionError("no close frame")


async def test_plain_clients_are_spliced_compressing_ones_relayed(
    make_upstream, make_proxy, ws_client
):
    async with make_upstream() as up:
        with make_proxy(ws=SpliceProtocol) as proxy:
            proxy.state["upstream"] = up.url
            plain = await ws_client(proxy.ws_url + "/", compression=None)
            await plain.send("spliced")
            assert await plain.recv() == "spliced"
            deflating = await ws_client(proxy.ws_url + "/", compression="deflate")
            await deflating.send("relayed")
            assert await deflating.recv() == "relayed"
            assert proxy.spliced == [True]  # the compressing client never asked for the splice
            assert up.seen[0]["extensions"] is None
            assert up.seen[1]["extensions"] is not None  # per hop: compressed upstream too


async def test_frames_the_upstream_sends_with_its_101_reach_the_client(proxy, upstream, ws_client):
    upstream.greeting = "welcome"
    ws = await ws_client(proxy.ws_url + "/")
    assert await ws.recv() == "welcome"
    await ws.send("after")
    assert await ws.recv() == "after"


async def test_pings_interleaved_in_a_fragmented_message(make_upstream, make_proxy):
    async with make_upstream() as up:
        with make_proxy(ws=SpliceProtocol) as proxy:
            proxy.state["upstream"] = up.url
            reader, writer = await raw_client(proxy.server.port)
            writer.write(
                frame(0x1, b"frag", fin=False)
                + frame(PING, b"are you there")
                + frame(0x0, b"mented")
            )
            pong = await asyncio.wait_for(reader.readexactly(2 + 13), 10)
            assert pong == bytes((0x8A, 13)) + b"are you there"  # answered on the client hop
            echo = await asyncio.wait_for(reader.readexactly(2 + 10), 10)
            assert echo == bytes((0x81, 10)) + b"fragmented"  # the message arrived whole
            writer.write(frame(CLOSE, struct.pack("!H", 4001) + b"done"))
            assert await read_close(reader) == (4001, "done")
            assert await up.closes.get() == (4001, "done")
            writer.close()
            assert (await proxy.finished())["tasks"] == []
            assert proxy.spliced == [True]


async def test_unmasked_client_frame_is_a_protocol_error_on_both_hops(make_upstream, make_proxy):
    async with make_upstream() as up:
        with make_proxy(ws=SpliceProtocol) as proxy:
            proxy.state["upstream"] = up.url
            reader, writer = await raw_client(proxy.server.port)
            writer.write(frame(0x1, b"not masked", mask=False))
            assert await read_close(reader) == (1002, "")
            assert await up.closes.get() == (1002, "")
            writer.close()
            await proxy.finished()


async def test_a_client_that_stops_answering_pings_is_closed(make_upstream, make_proxy):
    async with make_upstream() as up:
        with make_proxy(ws=SpliceProtocol, ws_ping_interval=0.1, ws_ping_timeout=0.1) as proxy:
            proxy.state["upstream"] = up.url
            _reader, writer = await raw_client(proxy.server.port)  # never reads, never pongs
            assert await asyncio.wait_for(up.closes.get(), 10) == (1011, "")
            writer.close()
            assert (await proxy.finished())["tasks"] == []


async def test_a_hop_lost_mid_frame_drops_the_other_at_once_even_without_close_timeout(
    make_upstream, make_proxy
):
    """The client dies 300 KB into a 1 MiB frame: the upstream can never be sent a valid close
    frame, so its connection is dropped at once (1006), not left open for ever."""
    async with make_upstream() as up:
        with make_proxy(ws=SpliceProtocol) as proxy:
            proxy.state["upstream"] = up.url
            proxy.state["options"] = {"close_timeout": None}
            _reader, writer = await raw_client(proxy.server.port)
            big = frame(0x2, b"\x01" * (1 << 20))
            writer.write(big[:300_000])
            await writer.drain()
            writer.transport.abort()  # gone in the middle of the frame
            assert await asyncio.wait_for(up.closes.get(), 10) == (1006, "")
            assert (await proxy.finished())["tasks"] == []


async def test_pings_from_a_peer_that_does_not_read_do_not_pile_up(make_upstream, make_proxy):
    """A client pings without reading: once the proxy cannot write to it, only its last ping
    is answered, when it reads again.  It reads far fewer pongs than it sent pings (more
    than the kernel's buffers can hold), and the last ping still gets its pong."""
    # Twice what the kernel can queue towards the client, so the proxy must stop writing.
    pings = max(50_000, 2 * _tcp_wmem_max() // 127)
    async with make_upstream() as up:
        with make_proxy(ws=SpliceProtocol) as proxy:
            proxy.state["upstream"] = up.url
            reader, writer = await raw_client(proxy.server.port, rcvbuf=4096)
            try:
                ping = bytes((0x80 | PING, 0x80 | 125)) + bytes(4)  # masked with a zero key
                for i in range(pings):
                    writer.write(ping + b"%08d" % i + b"p" * 117)
                    if i % 1000 == 999:
                        await writer.drain()
                writer.write(frame(0x1, b"!mark") + frame(0x1, b"after"))
                await writer.drain()
                # Not a byte read until the proxy has taken in every ping (frames go in order): the
                # kernel may hold them all in its buffers before the proxy reads the first one.
                await asyncio.wait_for(up.marked.wait(), 60)
                buf = bytearray()
                pongs, last = 0, b""
                for _ in range(100_000):  # bounded: reads until the echo of "after"
                    buf += await asyncio.wait_for(reader.read(1 << 20), 10)
                    while len(buf) >= 2 and len(buf) >= 2 + (buf[1] & 0x7F):
                        opcode, n = buf[0] & 0x0F, buf[1] & 0x7F
                        payload = bytes(buf[2 : 2 + n])
                        del buf[: 2 + n]
                        if opcode == 0xA:
                            pongs, last = pongs + 1, payload
                        else:
                            assert (opcode, payload) == (0x1, b"after")
                            break
                    else:
                        continue
                    break
                assert last[:8] == b"%08d" % (pings - 1)  # the last ping was answered
                assert pongs < pings * 2 // 3, pongs
            finally:  # a failed assertion leaves no socket behind for a later test
                writer.close()


def _tcp_wmem_max() -> int:
    """The most a TCP socket may queue for sending here (Linux's ``tcp_wmem``), 4 MiB if
    unknown."""
    try:
        with open("/proc/sys/net/ipv4/tcp_wmem") as f:
            return int(f.read().split()[2])
    except (OSError, ValueError, IndexError):
        return 4 << 20


# The scanner alone (pure logic).


def test_scanner_passes_data_frames_untouched_and_stops_at_control_frames():
    scanner = FrameScanner(masked=True, limit=None)
    text, ping = frame(0x1, b"hello"), frame(PING, b"p")
    events = scanner.feed(text + ping + text)
    assert events[0] == text
    assert isinstance(events[1], Control)
    assert events[1].opcode == PING
    assert events[1].payload == b"p"
    assert events[2] == text


def test_scanner_reassembles_headers_and_short_frames_split_anywhere():
    scanner = FrameScanner(masked=True, limit=None)
    data = frame(0x2, os.urandom(300)) + frame(0x1, b"x" * 70000)
    passed = b""
    for i in range(0, len(data), 7):
        for event in scanner.feed(data[i : i + 7]):
            assert isinstance(event, bytes)
            passed += event
    assert passed == data
    assert scanner.at_boundary


def test_scanner_passes_a_long_frame_in_parts():
    scanner = FrameScanner(masked=False, limit=None)
    data = frame(0x2, b"\0" * (1024 * 1024), mask=False)
    first = scanner.feed(data[:1000])
    assert first == [data[:1000]]  # not held back: too long to wait for
    assert not scanner.at_boundary
    assert scanner.feed(data[1000:]) == [data[1000:]]
    assert scanner.at_boundary


def test_scanner_counts_fragments_against_max_size():
    scanner = FrameScanner(masked=True, limit=10)
    first = frame(0x1, b"123456", fin=False)
    events = scanner.feed(first + frame(0x0, b"78901"))
    assert events[0] == first  # within the limit so far
    assert isinstance(events[1], TooBig)
    assert scanner.feed(frame(0x1, b"ignored")) == []


@pytest.mark.parametrize(
    ("data", "masked"),
    [
        (frame(0x1, b"x", mask=False), True),  # a client must mask
        (frame(0x1, b"x"), False),  # a server must not
        (bytes((0xC1, 0x80)) + b"\0\0\0\0", True),  # RSV1 without an extension
        (frame(0x0, b"x"), True),  # a continuation with no message started
        (frame(0x3, b"x"), True),  # a reserved opcode
        (frame(PING, b"x", fin=False), True),  # a fragmented control frame
        # a 64-bit length with its most significant bit set (RFC 6455 §5.2), no max_size
        (bytes((0x82, 127)) + struct.pack("!Q", 1 << 63), False),
    ],
)
def test_scanner_reports_protocol_violations(data, masked):
    events = FrameScanner(masked=masked, limit=None).feed(data)
    assert len(events) == 1
    assert isinstance(events[0], ProtocolViolation)


def test_close_frames_round_trip_and_invalid_ones_are_refused():
    frame_bytes = close_frame(4000, "bye", mask=False)
    assert parse_close(frame_bytes[2:]) == (4000, "bye")
    assert parse_close(b"") == (None, "")
    assert parse_close(b"\x03") is None  # one byte
    assert parse_close(struct.pack("!H", 1005)) is None  # reserved: never sent
    assert parse_close(struct.pack("!H", 1000) + b"\xff") is None  # reason not UTF-8
    masked = control_frame(PING, b"abc", mask=True)
    events = FrameScanner(masked=True, limit=None).feed(masked)
    assert isinstance(events[0], Control)
    assert events[0].payload == b"abc"
