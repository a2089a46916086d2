"""The engine over TLS (a self-signed certificate made with the openssl CLI), and TLS faults."""

from __future__ import annotations

import pathlib
import shutil
import ssl
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
from frp_testing import run_server

from frp_core._config import Timeouts
from frp_core._errors import ConnectError
from frp_core._origin import Origin
from frp_core._pool import Engine

T = Timeouts(5.0, 5.0, 5.0, 5.0)


async def app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = scope["scheme"].encode()
    headers = [(b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[pathlib.Path, pathlib.Path]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is not installed")
    d = tmp_path_factory.mktemp("tls")
    key, crt = d / "key.pem", d / "cert.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
         "-out", str(crt), "-days", "2", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return key, crt


@pytest.fixture(scope="module")
def tls_url(cert: tuple[pathlib.Path, pathlib.Path]) -> Iterator[str]:
    key, crt = cert
    with run_server(app, ssl_keyfile=str(key), ssl_certfile=str(crt)) as srv:
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
