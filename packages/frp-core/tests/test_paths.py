"""The path and query reach the configured upstream byte-exact; nothing changes the authority."""

from __future__ import annotations

import asyncio

import httpx
from frp_core_kit import RawServer, raw_exchange
from frp_testing import ServerThread


def _get(path: bytes, extra: bytes = b"") -> bytes:
    return b"GET " + path + b" HTTP/1.1\r\nHost: proxy\r\nConnection: close\r\n" + extra + b"\r\n"


def _json_body(response: bytes) -> dict[str, object]:
    import json

    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    if b"transfer-encoding: chunked" in head.lower():
        size, _, rest = body.partition(b"\r\n")
        body = rest[: int(size, 16)]
    record: dict[str, object] = json.loads(body)
    return record


async def test_encoded_slash_survives_quick_start_route(client: httpx.AsyncClient) -> None:
    record = (await client.get("/p/files/a%2Fb%3Fc%23d")).json()
    assert record["raw_path"] == "/files/a%2Fb%3Fc%23d"


async def test_encoded_dot_segments_are_not_resolved(client: httpx.AsyncClient) -> None:
    record = (await client.get("/p/public/..%2f..%2fadmin")).json()
    assert record["raw_path"] == "/public/..%2f..%2fadmin"


async def test_raw_dot_segments_are_forwarded_unresolved(proxy_server: ServerThread) -> None:
    record = _json_body(await raw_exchange(proxy_server.port, _get(b"/raw/a/../b/./c")))
    assert record["raw_path"] == "/raw/a/../b/./c"
    record = _json_body(await raw_exchange(proxy_server.port, _get(b"/mnt/x/../admin")))
    assert record["raw_path"] == "/x/../admin"


async def test_query_is_byte_exact(client: httpx.AsyncClient) -> None:
    for query in ["flag", "a=%20b&c=d+e&a=2", "sig=abc%2Fdef%3D&x=", "q=%E2%82%AC;z"]:
        record = (await client.get(f"/p/q?{query}")).json()
        assert record["query_string"] == query
        record = (await client.get(f"/mnt/q?{query}")).json()
        assert record["query_string"] == query


async def test_userinfo_like_path_cannot_reach_another_port(
    client: httpx.AsyncClient, proxy_server: ServerThread
) -> None:
    connections = 0

    async def other(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1

    async with RawServer(other) as secret:
        record = (await client.get(f"/p/@127.0.0.1:{secret.port}/secret")).json()
        assert record["raw_path"] == f"/@127.0.0.1:{secret.port}/secret"
        for target, seen in [
            (f"/mnt//127.0.0.1:{secret.port}/x", f"//127.0.0.1:{secret.port}/x"),
            (f"/raw//127.0.0.1:{secret.port}/x", f"/raw//127.0.0.1:{secret.port}/x"),
            (f"/mnt/@127.0.0.1:{secret.port}/x", f"/@127.0.0.1:{secret.port}/x"),
        ]:
            record = _json_body(await raw_exchange(proxy_server.port, _get(target.encode())))
            assert record["raw_path"] == seen
        absolute = f"http://127.0.0.1:{secret.port}/mnt/x".encode()
        await raw_exchange(proxy_server.port, _get(absolute))
    assert connections == 0


async def test_mount_prefix_is_stripped_byte_exact(client: httpx.AsyncClient) -> None:
    record = (await client.get("/mnt/a%2Fb/c?x=%41")).json()
    assert record["raw_path"] == "/a%2Fb/c"
    assert record["query_string"] == "x=%41"
    record = (await client.get("/mnt/")).json()
    assert record["raw_path"] == "/"


async def test_path_none_forwards_the_full_raw_path(client: httpx.AsyncClient) -> None:
    record = (await client.get("/raw/a%2Fb")).json()
    assert record["raw_path"] == "/raw/a%2Fb"
