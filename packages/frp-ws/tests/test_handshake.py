"""The opening handshake through the tunnel: subprotocols, headers, path, refusals, failover."""

from __future__ import annotations

import asyncio
import ssl

import pytest
import websockets
from frp_testing import run_server, self_signed_certificate, unused_port

from frp_core._routing import Outcome
from frp_ws import WebSocketProxy
from frp_ws._compat import IMPLEMENTATION, HandshakeRefused


def header(headers, name):
    return [v for n, v in headers if n.lower() == name]


async def test_no_subprotocol_offered_means_no_header(proxy, upstream, ws_client):
    ws = await ws_client(proxy.ws_url + "/")
    assert ws.subprotocol is None
    assert header(upstream.seen[0]["headers"], "sec-websocket-protocol") == []
    await ws.close(1000)


async def test_upstream_choice_reaches_the_client(proxy, make_upstream, ws_client):
    async with make_upstream(subprotocols=["v2.chat"]) as up:
        proxy.state["upstream"] = up.url
        ws = await ws_client(proxy.ws_url + "/", subprotocols=["v1.chat", "v2.chat"])
        assert ws.subprotocol == "v2.chat"
        assert up.seen[0]["subprotocol"] == "v2.chat"
        assert header(up.seen[0]["headers"], "sec-websocket-protocol") == ["v1.chat, v2.chat"]
        await ws.send("hi")
        assert await ws.recv() == "hi"
        await ws.close(1000)


async def test_single_subprotocol_and_upstream_declining(proxy, make_upstream, ws_client):
    async with make_upstream(subprotocols=["mqtt"]) as up:
        proxy.state["upstream"] = up.url
        ws = await ws_client(proxy.ws_url + "/", subprotocols=["mqtt"])
        assert ws.subprotocol == "mqtt"
        await ws.close(1000)
        # Legacy servers accept without a subprotocol, newer ones answer 400: either reaches
        # the client unchanged.
        outcome = await asyncio.gather(
            ws_client(proxy.ws_url + "/", subprotocols=["stomp"]), return_exceptions=True
        )
        if isinstance(outcome[0], HandshakeRefused):
            assert outcome[0].status == 400
        else:
            assert outcome[0].subprotocol is None
            await outcome[0].close(1000)


async def test_end_to_end_headers_forwarded_hop_by_hop_not(proxy, upstream, ws_client):
    ws = await ws_client(
        proxy.ws_url + "/",
        headers=[
            ("Cookie", "session=abc"),
            ("Authorization", "Bearer t0k3n"),
            ("Origin", "https://app.example"),
            ("User-Agent", "my-browser/1.0"),
            ("X-Custom", "one"),
            ("X-Custom", "two"),
            ("Proxy-Authorization", "Basic secret"),
            ("Keep-Alive", "timeout=5"),
            ("TE", "trailers"),
            ("X-Forwarded-For", "6.6.6.6"),
        ],
    )
    seen = upstream.seen[0]["headers"]
    assert header(seen, "cookie") == ["session=abc"]
    assert header(seen, "authorization") == ["Bearer t0k3n"]
    assert header(seen, "origin") == ["https://app.example"]
    assert header(seen, "user-agent") == ["my-browser/1.0"]  # the library adds none of its own
    assert header(seen, "x-custom") == ["one", "two"]
    for name in ("proxy-authorization", "keep-alive", "te"):
        assert header(seen, name) == []
    assert header(seen, "x-forwarded-for") == ["127.0.0.1"]  # a spoofed value is replaced
    assert header(seen, "host") == [f"127.0.0.1:{upstream.port}"]
    assert header(seen, "sec-websocket-version") == ["13"]  # exactly one handshake's worth
    assert len(header(seen, "sec-websocket-key")) == 1
    assert len(header(seen, "upgrade")) == 1
    await ws.close(1000)


async def test_path_and_query_byte_exact_under_a_prefix(proxy, upstream, ws_client):
    proxy.state["upstream"] = upstream.url + "/base"
    target = "/p/a%2Fb/..%2fc/@127.0.0.1:1/x;jsessionid=1?flag&sig=a%2Bb%3D&e="
    ws = await ws_client(proxy.ws_url + target)
    assert upstream.seen[0]["path"] == "/base" + target
    await ws.close(1000)


async def test_quick_start_path_argument_keeps_the_client_bytes(proxy, upstream, ws_client):
    """``path=`` given the route's decoded path, as the Quick Start does: ``%2F``, ``..%2f``
    and ``%3F`` reach the upstream as sent, never as a traversal or an injected query."""
    raw = "/p/a%2Fb/..%2f..%2fadmin%3Fx=1"
    proxy.options["path"] = "/p/a/b/../../admin?x=1"  # what the server decoded
    ws = await ws_client(proxy.ws_url + raw + "?real=1")
    assert upstream.seen[0]["path"] == raw + "?real=1"
    await ws.close(1000)


async def test_path_cannot_reach_another_host(proxy, upstream, ws_client):
    ws = await ws_client(proxy.ws_url + "//evil.invalid/x")
    assert upstream.seen[0]["path"] == "//evil.invalid/x"
    await ws.close(1000)


async def test_compression_is_negotiated_per_hop(proxy, upstream, ws_client):
    # uvicorn's wsproto server hides the client's offer from the scope: force it upstream.
    proxy.options["compression"] = "deflate"
    ws = await ws_client(proxy.ws_url + "/", compression="deflate")
    assert (
        "permessage-deflate" in (header(ws.response_headers, "sec-websocket-extensions") or [""])[0]
    )
    assert "permessage-deflate" in (upstream.seen[0]["extensions"] or "")
    text = "compressible " * 10_000
    await ws.send(text)
    assert await ws.recv() == text
    await ws.close(1000)

    proxy.options["compression"] = None
    ws = await ws_client(proxy.ws_url + "/", compression="deflate")
    assert upstream.seen[1]["extensions"] is None
    await ws.send(text)
    assert await ws.recv() == text
    await ws.close(1000)


async def test_upstream_compression_mirrors_the_client_unless_forced(proxy, upstream, ws_client):
    # A client that offers no compression: the upstream hop is not compressed either (and
    # random payloads are not deflated for nothing).
    ws = await ws_client(proxy.ws_url + "/", compression=None)
    assert header(ws.response_headers, "sec-websocket-extensions") == []
    assert upstream.seen[0]["extensions"] is None
    data = b"\x00" * 100_000
    await ws.send(data)
    assert await ws.recv() == data
    await ws.close(1000)

    proxy.options["compression"] = "deflate"  # forced: offered upstream whatever the client did
    ws = await ws_client(proxy.ws_url + "/", compression=None)
    assert "permessage-deflate" in (upstream.seen[1]["extensions"] or "")
    await ws.send(data)
    assert await ws.recv() == data
    await ws.close(1000)


async def test_upstream_compression_mirrors_the_clients_offer(upstream, ws_client, make_proxy):
    server = make_proxy(ws="websockets-sansio")  # passes Sec-WebSocket-Extensions in the scope
    proxy = server.__enter__()
    try:
        proxy.state["upstream"] = upstream.url
        text = "compressible " * 10_000
        for offer, expected in (("deflate", True), (None, False)):
            ws = await ws_client(proxy.ws_url + "/", compression=offer)
            assert ("permessage-deflate" in (upstream.seen[-1]["extensions"] or "")) is expected
            await ws.send(text)
            assert await ws.recv() == text
            await ws.close(1000)
            assert await upstream.closes.get() == (1000, "")
        proxy.state["options"] = {"compression": None}  # disabled whatever the client offers
        ws = await ws_client(proxy.ws_url + "/", compression="deflate")
        assert upstream.seen[-1]["extensions"] is None
        await ws.close(1000)
    finally:
        server.__exit__(None, None, None)


def test_unknown_compression_is_refused_at_configuration():
    with pytest.raises(ValueError, match="compression"):
        WebSocketProxy("http://127.0.0.1:9", compression="gzip")


async def test_upstream_response_cookies_reach_the_client(proxy, upstream, ws_client):
    ws = await ws_client(proxy.ws_url + "/")
    assert header(ws.response_headers, "upgrade") == ["websocket"]  # from uvicorn, once
    await ws.close(1000)


@pytest.mark.parametrize(
    ("status", "body"),
    [(401, b"login first"), (403, b"forbidden"), (404, b"no such room"), (500, b"oops")],
)
async def test_refusal_status_and_body_reach_the_client(proxy, upstream, ws_client, status, body):
    upstream.refuse = (status, [("WWW-Authenticate", 'Bearer realm="x"')], body)
    with pytest.raises(HandshakeRefused) as info:
        await ws_client(proxy.ws_url + "/")
    assert info.value.status == status
    assert info.value.body == body
    assert header(info.value.headers, "www-authenticate") == ['Bearer realm="x"']
    assert (await proxy.finished())["tasks"] == []


async def test_redirect_is_passed_back_not_followed(proxy, upstream, ws_client):
    upstream.refuse = (307, [("Location", f"ws://127.0.0.1:{unused_port()}/x")], b"")
    with pytest.raises(HandshakeRefused) as info:
        await ws_client(proxy.ws_url + "/")
    assert info.value.status in (302, 307)  # websockets 11-12 do not expose the exact 3xx
    assert len(upstream.seen) == 0


async def test_unreachable_upstream_is_502_without_address(proxy, ws_client):
    port = unused_port()
    proxy.state["upstream"] = f"http://127.0.0.1:{port}"
    with pytest.raises(HandshakeRefused) as info:
        await ws_client(proxy.ws_url + "/")
    assert info.value.status == 502
    assert info.value.body == b"Bad Gateway"
    assert b"127.0.0.1" not in info.value.body


async def test_silent_upstream_is_504(proxy, ws_client):
    accepted: list[asyncio.StreamWriter] = []

    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)
        await reader.read()  # until the proxy gives up

    server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    async with server:
        port = server.sockets[0].getsockname()[1]
        proxy.state["upstream"] = f"http://127.0.0.1:{port}"
        proxy.options["timeout"] = 0.5
        with pytest.raises(HandshakeRefused) as info:
            await ws_client(proxy.ws_url + "/")
        assert info.value.status == 504
        assert info.value.body == b"Gateway Timeout"
        assert len(accepted) == 1
        for writer in accepted:
            writer.close()


async def test_chunked_refusal_from_a_keep_alive_upstream(proxy, ws_client):
    """A refusal whose body is chunked, from an upstream that keeps the connection open:
    the client gets the status and the decoded body (websockets 11-12 leave the body to the
    tunnel, which once passed the chunk framing on, or waited for an EOF until the timeout)."""
    held: list[asyncio.StreamWriter] = []

    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        await reader.readuntil(b"\r\n\r\n")
        writer.write(
            b"HTTP/1.1 401 Unauthorized\r\nTransfer-Encoding: chunked\r\n"
            b"Content-Type: text/plain\r\n\r\n5\r\nlogin\r\n6;x=1\r\n first\r\n0\r\n\r\n"
        )
        await reader.read()  # keep-alive: the proxy closes, not us

    server = await asyncio.start_server(refuse, "127.0.0.1", 0)
    async with server:
        proxy.state["upstream"] = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        proxy.options["timeout"] = 2
        try:
            with pytest.raises(HandshakeRefused) as info:
                await ws_client(proxy.ws_url + "/")
        finally:
            for writer in held:
                writer.close()
        if proxy.kind != "splice" and websockets.__version__.startswith("13."):
            # websockets 13's HTTP parser refuses transfer codings: the refusal is never
            # read, and the open timeout answers (docs/frp-ws.md, "Refusals")
            assert info.value.status == 504
        else:
            assert (info.value.status, info.value.body) == (401, b"login first")


async def test_server_without_http_response_closes_before_accept(upstream, ws_client, make_proxy):
    upstream.refuse = (401, [], b"login first")
    with make_proxy(ws="wsproto", no_http_response=True) as proxy:
        proxy.state["upstream"] = upstream.url
        with pytest.raises(HandshakeRefused) as info:
            await ws_client(proxy.ws_url + "/")
        assert info.value.status == 403  # uvicorn's answer to a close before accept
        assert b"login" not in info.value.body


async def test_websockets_sansio_server(upstream, ws_client, make_proxy):
    server = make_proxy(ws="websockets-sansio")
    proxy = server.__enter__()
    try:
        proxy.state["upstream"] = upstream.url
        ws = await ws_client(proxy.ws_url + "/", subprotocols=["a"])
        await ws.send(b"\x01" * 1000)
        assert await ws.recv() == b"\x01" * 1000
        await ws.close(4001, "done")
        assert await upstream.closes.get() == (4001, "done")
        upstream.refuse = (403, [], b"nope")
        if IMPLEMENTATION == "legacy":
            # websockets 11-12's reject() adds its own Content-Length, which that version's
            # client refuses to see twice: read the refusal off a raw socket
            head, body = await raw_handshake(proxy.server.port)
            assert head.startswith(b"HTTP/1.1 403")
            assert body.endswith(b"nope")
            return
        with pytest.raises(HandshakeRefused) as info:
            await ws_client(proxy.ws_url + "/")
        assert (info.value.status, info.value.body) == (403, b"nope")
    finally:
        server.__exit__(None, None, None)


async def raw_handshake(port: int) -> tuple[bytes, bytes]:
    """A WebSocket opening handshake on a raw socket: the response head, and what follows
    until the server closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        body = await asyncio.wait_for(reader.read(65536), 10)
    finally:
        writer.close()
    return head, body


class Pool:
    """A minimal ``frp_core.Upstreams``: targets in order, every ``done`` recorded."""

    def __init__(self, targets):
        self.targets = targets
        self.done_calls: list[tuple[str, Outcome]] = []

    def pick(self, tried):
        rest = [t for t in self.targets if t not in tried]
        return rest[0] if rest else None

    def done(self, target, outcome, elapsed):
        assert elapsed >= 0
        self.done_calls.append((target, outcome))


async def test_failover_to_the_next_target_before_accept(proxy, upstream, ws_client):
    dead = f"http://127.0.0.1:{unused_port()}"
    pool = Pool([dead, upstream.url])
    proxy.state["upstream"] = pool
    ws = await ws_client(proxy.ws_url + "/")
    await ws.send("x")
    assert await ws.recv() == "x"
    await ws.close(1000)
    await proxy.finished()
    assert pool.done_calls == [(dead, Outcome.CONNECT_ERROR), (upstream.url, Outcome.SUCCESS)]


async def test_failover_on_gateway_errors_and_last_status_wins(proxy, make_upstream, ws_client):
    async with make_upstream() as a, make_upstream() as b:
        a.refuse = (503, [], b"busy")
        b.refuse = (503, [], b"busy too")
        pool = Pool([a.url, b.url])
        proxy.state["upstream"] = pool
        with pytest.raises(HandshakeRefused) as info:
            await ws_client(proxy.ws_url + "/")
        assert (info.value.status, info.value.body) == (503, b"busy too")
        await proxy.finished()
        assert pool.done_calls == [(a.url, Outcome.HTTP_5XX), (b.url, Outcome.HTTP_5XX)]


async def test_empty_pool_is_503(proxy, ws_client):
    proxy.state["upstream"] = Pool([])
    with pytest.raises(HandshakeRefused) as info:
        await ws_client(proxy.ws_url + "/")
    assert info.value.status == 503


async def test_asgi_app_form(upstream, ws_client):
    with run_server(WebSocketProxy(upstream.url, max_size=None)) as server:
        ws = await ws_client(server.ws_url + "/mounted?q=1")
        await ws.send("via app")
        assert await ws.recv() == "via app"
        await ws.close(1000)
        assert await upstream.closes.get() == (1000, "")
        assert upstream.seen[0]["path"] == "/mounted?q=1"


async def test_asgi_app_form_takes_the_documented_timeout(ws_client):
    """``WebSocketProxy`` accepts ``timeout`` as ``proxy_pass_websocket`` does (and
    ``open_timeout``): a silent upstream is a 504 after it."""
    held: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        await reader.read()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    async with server:
        url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        with run_server(WebSocketProxy(url, timeout=0.3)) as proxy:
            with pytest.raises(HandshakeRefused) as info:
                await ws_client(proxy.ws_url + "/")
            assert info.value.status == 504
        for writer in held:
            writer.close()
    with pytest.raises(TypeError, match="not both"):
        WebSocketProxy(url, timeout=1, open_timeout=1)


async def test_router_and_outcome_of_a_lost_upstream(proxy, upstream, ws_client, closed):
    pool = Pool([upstream.url])

    class Balancer:
        def route(self, scope):
            assert scope["type"] == "websocket"
            return pool

    proxy.state["upstream"] = Balancer()
    ws = await ws_client(proxy.ws_url + "/")
    await ws.send("!abort")
    assert (await closed(ws))[0] == 1014
    await proxy.finished()
    assert pool.done_calls == [(upstream.url, Outcome.RESET)]


async def test_additional_and_override_headers(proxy, upstream, ws_client):
    proxy.options["additional_headers"] = {"X-Tenant": "blue", "Cookie": "replaced=1"}
    ws = await ws_client(proxy.ws_url + "/", headers=[("Cookie", "a=1"), ("X-Keep", "k")])
    seen = upstream.seen[0]["headers"]
    assert header(seen, "x-tenant") == ["blue"]
    assert header(seen, "cookie") == ["replaced=1"]
    assert header(seen, "x-keep") == ["k"]
    await ws.close(1000)
    proxy.options.clear()
    proxy.options["override_headers"] = [("X-Only", "1")]
    ws = await ws_client(proxy.ws_url + "/", headers=[("Cookie", "a=1")])
    seen = upstream.seen[1]["headers"]
    assert header(seen, "x-only") == ["1"]
    assert header(seen, "cookie") == []
    await ws.close(1000)


async def test_client_leaving_during_upstream_handshake(proxy, upstream):
    upstream.gate = asyncio.Event()
    _reader, writer = await asyncio.open_connection("127.0.0.1", proxy.server.port)
    writer.write(
        b"GET /x HTTP/1.1\r\nHost: proxy\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    await writer.drain()
    await asyncio.wait_for(upstream.gate_reached.wait(), 10)  # the proxy is connecting upstream
    writer.close()  # the client gives up before the upstream answered
    await writer.wait_closed()
    upstream.gate.set()
    assert await upstream.closes.get() == (1001, "")
    finished = await proxy.finished()
    assert finished["error"] is None
    assert finished["tasks"] == []


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1 (key file, certificate file)."""
    made = self_signed_certificate(tmp_path_factory.mktemp("tls"))
    if made is None:
        pytest.skip("the openssl command is not installed")
    key, crt = made
    return str(key), str(crt)


async def test_tls_upstream(proxy, make_upstream, ws_client, certificate):
    key, crt = certificate
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(crt, key)
    async with make_upstream(ssl=server_ctx) as up:
        proxy.state["upstream"] = up.url  # https://: the upstream hop is wss
        proxy.options["ssl"] = ssl.create_default_context(cafile=crt)
        ws = await ws_client(proxy.ws_url + "/secure")
        await ws.send("over TLS")
        assert await ws.recv() == "over TLS"
        await ws.send(b"\x01" * (300 * 1024))  # a frame longer than one TLS record
        assert await ws.recv() == b"\x01" * (300 * 1024)
        await ws.close(4000, "done")
        assert await up.closes.get() == (4000, "done")
        assert up.seen[0]["path"] == "/secure"


async def test_untrusted_tls_upstream_is_502_without_details(
    proxy, make_upstream, ws_client, certificate
):
    key, crt = certificate
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(crt, key)
    async with make_upstream(ssl=server_ctx) as up:
        proxy.state["upstream"] = up.url  # the default context does not trust the certificate
        with pytest.raises(HandshakeRefused) as info:
            await ws_client(proxy.ws_url + "/")
        assert info.value.status == 502
        assert b"certificate" not in info.value.body.lower()
        assert b"127.0.0.1" not in info.value.body


@pytest.mark.parametrize(
    "answer",
    [
        b"NOT HTTP AT ALL\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: wrong\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n" + b"X-Filler: " + b"a" * 200_000 + b"\r\n\r\n",
    ],
    ids=["not-http", "wrong-accept", "endless-head"],
)
async def test_invalid_upstream_answer_is_502(proxy, ws_client, answer):
    hung_up: asyncio.Queue[None] = asyncio.Queue()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(answer)
            await writer.drain()
            await reader.read()  # until the proxy hangs up
        except OSError:
            pass
        finally:
            writer.close()
            hung_up.put_nowait(None)

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    proxy.state["upstream"] = f"http://127.0.0.1:{port}"
    try:
        with pytest.raises(HandshakeRefused) as info:
            await asyncio.wait_for(ws_client(proxy.ws_url + "/"), 10)  # not the 10 s timeout
        assert info.value.status == 502
        assert str(port).encode() not in info.value.body
        await asyncio.wait_for(hung_up.get(), 10)  # the proxy dropped the connection
    finally:
        server.close()
        await server.wait_closed()
