"""The engine over TLS (a self-signed certificate made with the openssl CLI), TLS faults, and
HTTPS upstreams through ``proxy_pass`` and ``ReverseProxy``."""

from __future__ import annotations

import contextlib
import pathlib
import ssl
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from frp_core_kit import read_all
from frp_testing import run_server, self_signed_certificate

import frp_core
from frp_core._config import Timeouts
from frp_core._errors import ConnectError
from frp_core._origin import Origin
from frp_core._pool import Engine

T = Timeouts(5.0, 5.0, 5.0, 5.0)


#: A long body, not a repeated byte: a piece handed out twice or out of order would show.
BIG = b"".join(b"%08d" % i for i in range(3 * 1024 * 1024 // 8 + 1))


async def app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = BIG if scope["path"] == "/big" else scope["scheme"].encode()
    headers = [(b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[pathlib.Path, pathlib.Path]:
    made = self_signed_certificate(tmp_path_factory.mktemp("tls"))
    if made is None:
        pytest.skip("the openssl command is not installed")
    return made


@pytest.fixture(scope="module")
def tls_url(cert: tuple[pathlib.Path, pathlib.Path]) -> Iterator[str]:
    key, crt = cert
    # no proxy_headers: the scheme the app answers is the connection's, not X-Forwarded-Proto
    with run_server(app, ssl_keyfile=str(key), ssl_certfile=str(crt), proxy_headers=False) as srv:
        yield f"https://127.0.0.1:{srv.port}"


async def test_https_request_with_a_trusted_certificate(
    tls_url: str, cert: tuple[pathlib.Path, pathlib.Path]
) -> None:
    ctx = ssl.create_default_context(cafile=str(cert[1]))
    engine = Engine(ssl_context=ctx)
    o = Origin.parse(tls_url)
    try:
        for _ in range(2):
            resp = await engine.request(o, b"GET", b"/", [(b"host", o.host_header)], b"", None, T)
            assert resp.status == 200
            assert await resp.receive() == b"https"
            assert await resp.receive() == b""
            await resp.aclose()
        assert engine.stats()["created"] == 1
    finally:
        await engine.aclose()


async def test_long_https_body_is_intact_and_the_connection_reused(
    tls_url: str, cert: tuple[pathlib.Path, pathlib.Path]
) -> None:
    # read past the parser into the chunks over TLS too, then the connection is used again
    engine = Engine(ssl_context=ssl.create_default_context(cafile=str(cert[1])), read_size=65536)
    o = Origin.parse(tls_url)
    h = [(b"host", o.host_header)]
    try:
        resp = await engine.request(o, b"GET", b"/big", h, b"", None, T)
        assert await read_all(resp) == BIG
        resp = await engine.request(o, b"GET", b"/", h, b"", None, T)
        assert await read_all(resp) == b"https"
        assert engine.stats()["created"] == 1
    finally:
        await engine.aclose()


async def test_untrusted_certificate_is_connect_error(tls_url: str) -> None:
    engine = Engine()  # the system trust store does not know the self-signed certificate
    o = Origin.parse(tls_url)
    try:
        with pytest.raises(ConnectError) as info:
            await engine.request(o, b"GET", b"/", [(b"host", o.host_header)], b"", None, T)
        assert str(info.value) == "TLS certificate verification failed"
        assert not info.value.request_sent
        assert engine.stats()["open"] == 0
    finally:
        await engine.aclose()


async def test_tls_to_a_plain_http_server_is_connect_error() -> None:
    with run_server(app) as srv:
        o = Origin.parse(f"https://127.0.0.1:{srv.port}")
        engine = Engine()
        try:
            with pytest.raises(ConnectError) as info:
                await engine.request(o, b"GET", b"/", [(b"host", o.host_header)], b"", None, T)
            assert "TLS" in str(info.value)
            assert str(srv.port) not in str(info.value)
        finally:
            await engine.aclose()


# -- through the proxy: both public forms, over the engine and over the httpx fallback ----------


def _gateway(upstream: str, ctx: ssl.SSLContext, mounted: bool, **client: Any) -> FastAPI:
    """The client made in the lifespan, then a Quick Start route calling ``proxy_pass`` or a
    mounted ``ReverseProxy`` (which uses the app's client)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await frp_core.create_httpx_client(app, verify=ctx, **client)
        yield
        await frp_core.close_httpx_client(app)

    gateway = FastAPI(lifespan=lifespan)
    if mounted:
        gateway.mount("/", frp_core.ReverseProxy(upstream))
    else:

        @gateway.get("/{path:path}")
        async def route(request: Request, path: str) -> Any:
            return await frp_core.proxy_pass(request, upstream, path=f"/{path}")

    return gateway


@pytest.mark.parametrize("mounted", [False, True], ids=["proxy_pass", "ReverseProxy"])
# headers= is an option only httpx has: the httpx fallback then serves the requests
@pytest.mark.parametrize("client", [{}, {"headers": {"x-extra": "1"}}], ids=["engine", "httpx"])
async def test_https_upstream_through_the_proxy(
    tls_url: str, cert: tuple[pathlib.Path, pathlib.Path], mounted: bool, client: dict[str, Any]
) -> None:
    ctx = ssl.create_default_context(cafile=str(cert[1]))
    with run_server(_gateway(tls_url, ctx, mounted, **client)) as proxy:
        async with httpx.AsyncClient(base_url=proxy.url, timeout=10) as http:
            for _ in range(3):  # the pooled TLS connection is reused
                r = await http.get("/any?q=1")
                assert (r.status_code, r.text) == (200, "https")


async def test_untrusted_https_upstream_is_502_without_details(tls_url: str) -> None:
    with run_server(frp_core.ReverseProxy(tls_url)) as proxy:
        async with httpx.AsyncClient(base_url=proxy.url, timeout=10) as client:
            r = await client.get("/")
    assert r.status_code == 502
    assert r.text == "Bad Gateway"  # no address, no certificate details
