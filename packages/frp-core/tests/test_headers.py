"""Header policy: order and repeats kept, hop-by-hop removed, Via/X-Forwarded-*, Host, options."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
from frp_core_kit import raw_exchange
from frp_testing import ServerThread, run_server


def _names(record: dict[str, list[list[str]]]) -> list[str]:
    return [n for n, _ in record["headers"]]


def _values(record: dict[str, list[list[str]]], name: str) -> list[str]:
    return [v for n, v in record["headers"] if n == name]


async def test_duplicate_request_headers_kept_in_order(client: httpx.AsyncClient) -> None:
    headers = [("x-dup", "1"), ("x-other", "a"), ("x-dup", "2"), ("x-dup", "3")]
    for url in ["/p/h", "/mnt/h"]:
        record = (await client.get(url, headers=headers)).json()
        assert _values(record, "x-dup") == ["1", "2", "3"]


async def test_every_set_cookie_reaches_the_client(client: httpx.AsyncClient) -> None:
    for url in ["/p/c", "/mnt/c"]:
        response = await client.get(url, headers={"x-act": "cookies"})
        assert response.headers.get_list("set-cookie") == ["a=1; Path=/", "b=2; Path=/"]


async def test_cookies_never_leak_between_users(proxy_server: ServerThread) -> None:
    async with httpx.AsyncClient(base_url=proxy_server.url) as alice:
        r = await alice.get("/p/login", headers={"x-act": "cookies"})
        assert r.headers.get_list("set-cookie")
    async with httpx.AsyncClient(base_url=proxy_server.url) as bob:
        for url in ["/p/next", "/mnt/next"]:
            record = (await bob.get(url)).json()
            assert "cookie" not in _names(record)


async def test_no_client_library_headers_injected(proxy_server: ServerThread) -> None:
    request = b"GET /mnt/x HTTP/1.1\r\nHost: front.test\r\nConnection: close\r\n\r\n"
    response = await raw_exchange(proxy_server.port, request)
    head, _, body = response.partition(b"\r\n\r\n")
    if b"chunked" in head:
        body = body.partition(b"\r\n")[2]
    record = json.loads(body[: body.rindex(b"}") + 1])
    assert sorted(_names(record)) == sorted(
        ["host", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "via"]
    )
    assert _values(record, "x-forwarded-host") == ["front.test"]


async def test_one_date_and_one_server_header(proxy_server: ServerThread) -> None:
    for path in [b"/p/x", b"/mnt/x"]:
        request = b"GET " + path + b" HTTP/1.1\r\nHost: p\r\nConnection: close\r\n\r\n"
        head = (await raw_exchange(proxy_server.port, request)).partition(b"\r\n\r\n")[0]
        lines = [line.split(b":")[0].lower() for line in head.split(b"\r\n")[1:]]
        assert lines.count(b"date") == 1
        assert lines.count(b"server") == 1


async def test_hop_by_hop_and_connection_named_headers_dropped(client: httpx.AsyncClient) -> None:
    headers = {
        "connection": "keep-alive, x-private",
        "x-private": "secret",
        "keep-alive": "timeout=5",
        "te": "trailers",
        "proxy-authorization": "Basic eA==",
        "upgrade": "h2c",
        "x-public": "1",
    }
    for url in ["/p/h", "/mnt/h"]:
        response = await client.get(url, headers={**headers, "x-act": "hop"})
        record = response.json()
        names = _names(record)
        for dropped in ["x-private", "keep-alive", "te", "proxy-authorization", "upgrade"]:
            assert dropped not in names
        assert "connection" not in names
        assert _values(record, "x-public") == ["1"]
        assert "x-secret-hop" not in response.headers
        assert "keep-alive" not in response.headers
        assert response.headers["x-kept"] == "1"


async def test_via_added_both_ways(client: httpx.AsyncClient) -> None:
    response = await client.get("/p/v", headers={"via": "1.0 fred"})
    assert _values(response.json(), "via") == ["1.0 fred, 1.1 frp"]
    assert response.headers["via"] == "1.1 frp"


async def test_forwarding_headers_overwritten_from_untrusted_peer(
    client: httpx.AsyncClient,
) -> None:
    spoof = {"x-forwarded-for": "6.6.6.6", "x-forwarded-host": "evil", "forwarded": "for=6.6.6.6"}
    record = (await client.get("/p/f", headers=spoof)).json()
    assert _values(record, "x-forwarded-for") == ["127.0.0.1"]
    assert _values(record, "x-forwarded-proto") == ["http"]
    assert _values(record, "x-forwarded-host") == [client.base_url.netloc.decode()]
    assert "forwarded" not in _names(record)


async def test_forwarding_headers_appended_from_trusted_peer(oclient: httpx.AsyncClient) -> None:
    record = (await oclient.get("/o/trusted/f", headers={"x-forwarded-for": "6.6.6.6"})).json()
    assert _values(record, "x-forwarded-for") == ["6.6.6.6, 127.0.0.1"]
    assert _values(record, "forwarded")[0].startswith("for=127.0.0.1;proto=http")


async def test_host_header_choices(oclient: httpx.AsyncClient, upstream: str) -> None:
    record = (await oclient.get("/o/no-via/h")).json()
    assert _values(record, "host") == [upstream.removeprefix("http://")]
    assert "via" not in _names(record)
    record = (await oclient.get("/o/override-host/h")).json()
    assert _values(record, "host") == ["example.test"]
    record = (await oclient.get("/o/preserve-host/h", headers={"host": "front.test"})).json()
    assert _values(record, "host") == ["front.test"]


async def test_override_and_additional_headers(oclient: httpx.AsyncClient) -> None:
    record = (await oclient.get("/o/override-headers/h", headers={"x-client": "1"})).json()
    names = _names(record)
    assert _values(record, "x-only") == ["1"]
    assert "x-client" not in names
    assert "x-gone" not in names
    record = (await oclient.get("/o/additional/h", headers=[("x-dup", "1"), ("x-dup", "2")])).json()
    assert _values(record, "x-dup") == ["replaced"]
    assert _values(record, "x-extra") == ["1"]


async def test_override_body_kinds(oclient: httpx.AsyncClient) -> None:
    import hashlib

    record = (await oclient.post("/o/json/b", content=b"ignored")).json()
    assert record["body_sha256"] == hashlib.sha256(b'{"a": 1}').hexdigest()
    assert _values(record, "content-type") == ["application/json"]
    assert _values(record, "content-length") == ["8"]
    # the client's own type described the body it sent, not the JSON that replaced it
    sent = {"content-type": "text/plain"}
    record = (await oclient.post("/o/json/b", content=b"ignored", headers=sent)).json()
    assert _values(record, "content-type") == ["application/json"]
    # a JSON type of the client's is kept, as 0.4.0 kept it (a merge patch stays one)
    sent = {"content-type": "application/merge-patch+json"}
    record = (await oclient.post("/o/json/b", content=b"{}", headers=sent)).json()
    assert _values(record, "content-type") == ["application/merge-patch+json"]
    record = (await oclient.post("/o/str/b")).json()
    assert record["method"] == "PUT"
    assert record["body_sha256"] == hashlib.sha256("héllo".encode()).hexdigest()
    record = (await oclient.get("/o/bytes/b")).json()
    assert record["body_length"] == 3


async def test_forward_query_false_drops_the_query(oclient: httpx.AsyncClient) -> None:
    record = (await oclient.get("/o/no-query/q?secret=1")).json()
    assert record["query_string"] == ""


async def test_upstream_date_server_when_the_server_adds_none(
    make_gateway: Any, mode: str, upstream: str
) -> None:
    app = make_gateway(upstream, mode, upstream_date_server=True)
    with run_server(app, server_header=False, date_header=False) as proxy:
        for path in [b"/p/x", b"/mnt/x"]:
            request = b"GET " + path + b" HTTP/1.1\r\nHost: p\r\nConnection: close\r\n\r\n"
            head = (await raw_exchange(proxy.port, request)).partition(b"\r\n\r\n")[0]
            lines = [line.lower() for line in head.split(b"\r\n")[1:]]
            assert [v for v in lines if v.startswith(b"server:")] == [b"server: uvicorn"]
            assert len([v for v in lines if v.startswith(b"date:")]) == 1


async def test_expect_100_continue_is_answered_by_the_proxy(proxy_server: ServerThread) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy_server.port)
    try:
        writer.write(
            b"POST /mnt/e HTTP/1.1\r\nHost: p\r\nExpect: 100-continue\r\n"
            b"Content-Length: 5\r\nConnection: close\r\n\r\n"
        )
        await writer.drain()
        async with asyncio.timeout(10):
            assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 100")
            writer.write(b"hello")
            response = await reader.read(-1)
    finally:
        writer.close()
    assert response.startswith(b"HTTP/1.1 200")
    record = json.loads(response[response.index(b"{") : response.rindex(b"}") + 1])
    assert record["body_length"] == 5
    assert "expect" not in _names(record)
