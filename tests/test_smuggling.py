"""Request smuggling and header hygiene, under both uvicorn HTTP parsers (h11 and httptools).

Each vector is sent as raw bytes over a socket to the proxy under uvicorn, in both public forms
(``ReverseProxy`` and a FastAPI route calling ``proxy_pass``); the upstream is a recording raw
server.  A vector passes if it is rejected with 400 and the connection
closed, or (where the table allows it) provably normalised: what reached the upstream is one
well-formed request with unambiguous framing and clean headers.  In no case does the upstream
see the smuggled request or the ambiguous header as it was sent.
"""

from __future__ import annotations

import contextlib
import itertools
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from fault_server import OK_BODY, FaultServer, Request, fault_server
from frp_testing import run_server
from proxy_rig import core, proxy_app, route_app

PARSERS = ["h11", "httptools"]
_ids = itertools.count()

SMUGGLED = b"GET /smuggled-{id} HTTP/1.1\r\nHost: proxy\r\n\r\n"


def _post(headers: bytes, body: bytes) -> bytes:
    return b"POST /v/{id} HTTP/1.1\r\nHost: proxy\r\n" + headers + b"\r\n" + body


_CHUNKED_SMUGGLE = b"0\r\n\r\n" + SMUGGLED
_CL_SMUGGLE = b"%d" % len(_CHUNKED_SMUGGLE)

#: name -> (raw request with ``{id}`` placeholders, must it be a 400?)
VECTORS: dict[str, tuple[bytes, bool]] = {
    # framing ambiguity: always 400 (frp-core refuses, whatever the parser accepted)
    "cl_then_te": (
        _post(
            b"Content-Length: " + _CL_SMUGGLE + b"\r\nTransfer-Encoding: chunked\r\n",
            _CHUNKED_SMUGGLE,
        ),
        True,
    ),
    "te_then_cl": (
        _post(
            b"Transfer-Encoding: chunked\r\nContent-Length: " + _CL_SMUGGLE + b"\r\n",
            _CHUNKED_SMUGGLE,
        ),
        True,
    ),
    "te_comma_chunked": (
        _post(b"Transfer-Encoding: ,chunked\r\n", b"5\r\nhello\r\n0\r\n\r\n" + SMUGGLED),
        True,
    ),
    "te_chunked_not_last": (
        _post(b"Transfer-Encoding: chunked, identity\r\n", b"5\r\nhello\r\n0\r\n\r\n"),
        True,
    ),
    "te_xchunked_with_cl": (
        _post(b"Transfer-Encoding: xchunked\r\nContent-Length: 5\r\n", b"hello"),
        True,
    ),
    "te_twice": (
        _post(
            b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
            b"5\r\nhello\r\n0\r\n\r\n",
        ),
        False,
    ),
    "te_uppercase_with_cl": (
        _post(b"Transfer-Encoding: CHUNKED\r\nContent-Length: 5\r\n", b"hello"),
        True,
    ),
    "te_space_before_colon": (
        _post(b"Transfer-Encoding : chunked\r\nContent-Length: 5\r\n", b"hello"),
        True,
    ),
    "te_obs_fold": (
        _post(b"Transfer-Encoding:\r\n chunked\r\nContent-Length: 5\r\n", b"hello"),
        True,
    ),
    "cl_duplicate_different": (
        _post(b"Content-Length: 5\r\nContent-Length: 6\r\n", b"hello!"),
        True,
    ),
    "cl_duplicate_same": (_post(b"Content-Length: 5\r\nContent-Length: 5\r\n", b"hello"), False),
    "cl_list": (_post(b"Content-Length: 5, 5\r\n", b"hello"), False),
    "cl_plus_sign": (_post(b"Content-Length: +5\r\n", b"hello"), True),
    "cl_minus_sign": (_post(b"Content-Length: -1\r\n", b"hello"), True),
    "cl_hex": (_post(b"Content-Length: 0x5\r\n", b"hello"), True),
    "cl_two_numbers": (_post(b"Content-Length: 5 5\r\n", b"hello"), True),
    "bad_chunk_size": (_post(b"Transfer-Encoding: chunked\r\n", b"zz\r\nhello\r\n0\r\n\r\n"), True),
    "chunk_size_overflow": (
        _post(b"Transfer-Encoding: chunked\r\n", b"fffffffffffffffffffff\r\nhello\r\n0\r\n\r\n"),
        True,
    ),
    # header hygiene: 400, or forwarded in a clean form
    "obs_fold": (_post(b"X-Folded: a\r\n b\r\nContent-Length: 5\r\n", b"hello"), False),
    "bare_cr_in_value": (_post(b"X-Bad: a\rb\r\nContent-Length: 5\r\n", b"hello"), False),
    "bare_lf_in_value": (
        _post(b"X-Bad: a\nX-Injected: 1\r\nContent-Length: 5\r\n", b"hello"),
        False,
    ),
    "bare_lf_line_endings": (b"GET /v/{id} HTTP/1.1\nHost: proxy\n\n", False),
    "nul_in_value": (_post(b"X-Bad: a\x00b\r\nContent-Length: 5\r\n", b"hello"), False),
    "space_in_name": (_post(b"X Bad: 1\r\nContent-Length: 5\r\n", b"hello"), False),
    "space_before_colon": (_post(b"X-Bad : 1\r\nContent-Length: 5\r\n", b"hello"), False),
    "empty_name": (_post(b": value\r\nContent-Length: 5\r\n", b"hello"), False),
    "two_hosts": (b"GET /v/{id} HTTP/1.1\r\nHost: proxy\r\nHost: evil.example\r\n\r\n", False),
    "oversized_header": (
        b"GET /v/{id} HTTP/1.1\r\nHost: proxy\r\nX-Big: " + b"a" * (128 << 10) + b"\r\n\r\n",
        True,
    ),
    "too_many_headers": (
        b"GET /v/{id} HTTP/1.1\r\nHost: proxy\r\n"
        + b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 100) for i in range(2000))
        + b"\r\n",
        True,
    ),
}


@pytest.fixture(scope="module")
def upstream() -> Iterator[FaultServer]:
    with fault_server("record") as fs:
        yield fs


@pytest.fixture(
    scope="module",
    params=[(p, f) for p in PARSERS for f in ("asgi", "route")],
    ids=lambda param: "-".join(param),
)
def proxy(request: pytest.FixtureRequest, upstream: FaultServer) -> Iterator[Any]:
    """The proxy under one uvicorn parser, as ``ReverseProxy`` or as the Quick Start route."""
    parser, form = request.param
    timeouts = core().Timeouts(connect=5.0, read=5.0, write=5.0, pool=5.0)
    make = proxy_app if form == "asgi" else route_app
    with run_server(make(upstream.url, timeouts=timeouts), http=parser) as server:
        yield server


def _read_response(sock: socket.socket, buf: bytearray) -> tuple[int, bytes, bytes] | None:
    """One response (status, head, body) from ``sock``; ``None`` if it closed first."""
    for _ in range(100_000):
        if b"\r\n\r\n" in buf:
            break
        data = sock.recv(65536)
        if not data:
            return None
        buf += data
    else:  # pragma: no cover
        raise AssertionError("response head never ended")
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    del buf[:]
    buf += rest
    status = int(head.split(b" ")[1])
    lower = head.lower()
    length = 0
    for line in lower.split(b"\r\n")[1:]:
        if line.startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    if b"transfer-encoding: chunked" in lower:
        for _ in range(100_000):
            if buf.endswith(b"0\r\n\r\n"):
                break
            data = sock.recv(65536)
            if not data:
                break
            buf += data
        body = bytes(buf)
        del buf[:]
        return status, head, body
    for _ in range(100_000):
        if len(buf) >= length:
            break
        data = sock.recv(65536)
        if not data:
            break
        buf += data
    body = bytes(buf[:length])
    del buf[:length]
    return status, head, body


def _rest_until_closed(sock: socket.socket, buf: bytearray) -> bytes | None:
    """Everything the server sends until it closes, or ``None`` if it keeps the connection
    open (waits up to the socket timeout)."""
    rest = bytearray(buf)
    try:
        for _ in range(1000):
            data = sock.recv(65536)
            if not data:
                return bytes(rest)
            rest += data
    except (ConnectionResetError, BrokenPipeError):
        return bytes(rest)
    except TimeoutError:
        return None
    return None


def _assert_clean(req: Request) -> None:
    """One unambiguous, well-formed request as the upstream received it."""
    names = [n for n, _ in req.headers]
    lengths = req.header(b"content-length")
    encodings = req.header(b"transfer-encoding")
    assert len(lengths) <= 1, f"several Content-Length upstream: {lengths}"
    assert not (lengths and encodings), "Content-Length and Transfer-Encoding both forwarded"
    assert encodings in ([], [b"chunked"]), f"Transfer-Encoding forwarded as {encodings}"
    assert names.count(b"host") == 1, "not exactly one Host upstream"
    for line in req.head.split(b"\r\n")[1:]:
        name, sep, value = line.partition(b":")
        assert sep, f"header line without a colon: {line!r}"
        assert name, f"empty header name: {line!r}"
        assert all(33 <= c < 127 for c in name), f"bad header name {name!r}"
        assert not set(value) & {0, 10, 13}, f"CR/LF/NUL in a header value: {line!r}"
    for line in req.head.split(b"\r\n"):
        assert b"\n" not in line
        assert b"\r" not in line
        assert b"\x00" not in line


@pytest.mark.parametrize("vector", list(VECTORS))
def test_vector_is_rejected_or_normalised(proxy: Any, upstream: FaultServer, vector: str) -> None:
    raw, must_reject = VECTORS[vector]
    vid = b"%d" % next(_ids)
    payload = raw.replace(b"{id}", vid)
    before = len(upstream.requests)
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        # refused while still sending (e.g. oversized headers): check what follows
        with contextlib.suppress(ConnectionResetError, BrokenPipeError):
            sock.sendall(payload)
        buf = bytearray()
        try:
            first = _read_response(sock, buf)
        except ConnectionResetError:
            first = None
        if first is None:
            pytest.fail(f"{vector}: connection closed without any response")
        status, head, body = first
        if status == 400:
            assert b"\r\nconnection: close" in head.lower(), (
                f"{vector}: 400 without Connection: close"
            )
            rest = _rest_until_closed(sock, buf)
            assert rest is not None, f"{vector}: 400 but the connection stayed open"
            assert b"HTTP/1." not in rest, f"{vector}: a second response followed the 400"
        else:
            assert not must_reject, f"{vector}: answered {status}, must be 400"
            assert status == 200, (status, body[:200])
            assert body == OK_BODY
            # a sentinel on the same connection: any pipelined smuggled request was processed
            # (or swallowed) before it, so the upstream recordings below are final
            if not _closed_quickly(sock, buf):
                sock.sendall(b"GET /v/%s/sentinel HTTP/1.1\r\nHost: proxy\r\n\r\n" % vid)
                sentinel = _read_response(sock, buf)
                assert sentinel is not None
                assert sentinel[0] == 200
                assert sentinel[2] == OK_BODY, "the sentinel got someone else's response"
    seen = upstream.requests[before:]
    mine = [r for r in seen if r.target.startswith(b"/v/" + vid)]
    assert not [r for r in seen if b"smuggled-" + vid in r.target], "smuggled request forwarded"
    for conn in upstream.connections:
        assert b"/smuggled-" + vid not in conn.raw, "smuggled bytes reached the upstream"
    if status == 400:
        # A body-framing error found while streaming (a bad chunk) may come after the head
        # went upstream: then the upstream must see the request aborted, never completed.
        complete = [r for r in mine if r.complete]
        assert complete == [], f"{vector}: rejected, yet forwarded upstream"
    else:
        main = [r for r in mine if not r.target.endswith(b"/sentinel")]
        assert len(main) == 1, f"{vector}: {len(main)} upstream requests for one client request"
        _assert_clean(main[0])
    _assert_still_serving(proxy)


def _closed_quickly(sock: socket.socket, buf: bytearray) -> bool:
    """Whether the peer already closed (no waiting: a non-blocking peek)."""
    sock.setblocking(False)
    try:
        data = sock.recv(65536)
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True
    finally:
        sock.settimeout(10)
    if not data:
        return True
    buf += data
    return False


def _assert_still_serving(proxy: Any) -> None:
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        sock.sendall(b"GET /still-serving HTTP/1.1\r\nHost: proxy\r\nConnection: close\r\n\r\n")
        response = _read_response(sock, bytearray())
    assert response is not None
    assert response[0] == 200
    assert response[2] == OK_BODY


def _get(proxy: Any, upstream: FaultServer, target: bytes) -> tuple[int, bytes, list[Request]]:
    """``GET target`` on a raw socket: the status, the body, and what reached the upstream."""
    before = len(upstream.requests)
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        sock.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: proxy\r\nConnection: close\r\n\r\n")
        response = _read_response(sock, bytearray())
    assert response is not None
    status, _, body = response
    return status, body, upstream.requests[before:]


@pytest.mark.parametrize(
    "target",
    [
        b"/x?a=1%0d%0aX-Injected:%201",
        b"/x%0d%0aX-Injected:%201",
        b"/x%00y",
        b"/%2e%2e/%2e%2e/admin",
        b"/public/..%2f..%2fadmin",
        b"//evil.example/x",
        b"/@127.0.0.1:1/secret",
    ],
)
def test_encoded_controls_and_traversal_stay_encoded(
    proxy: Any, upstream: FaultServer, target: bytes
) -> None:
    """Percent-encoded CR/LF/NUL and dot-segments reach the upstream exactly as sent: never
    decoded into header injection, never resolved into another path or host."""
    status, body, seen = _get(proxy, upstream, target)
    if status in (400, 404):  # 404: Starlette's route regex does not match a decoded "\n"
        assert seen == []
        return
    assert (status, body) == (200, OK_BODY)
    assert [r.target for r in seen] == [target]
    assert not seen[0].header(b"x-injected")
    _assert_clean(seen[0])


@pytest.mark.parametrize(
    ("target", "forwarded"),
    [
        (b"http://other.example:1/x?q=1", b"/x?q=1"),
        (b"HTTPS://other.example", b"/"),
        (b"other.example:443", None),  # authority-form: CONNECT's, never proxied
        (b"*", None),  # asterisk-form: OPTIONS about the server itself
    ],
)
def test_absolute_form_forwards_its_path_never_its_authority(
    proxy: Any, upstream: FaultServer, target: bytes, forwarded: bytes | None
) -> None:
    """RFC 9112 §3.2.2: a server accepts an absolute-form target; the proxy forwards its path
    and query to the configured upstream (h11 hands the whole target to the app, httptools
    the path alone).  Other forms are refused; nothing reaches the upstream as ``/http://``."""
    status, body, seen = _get(proxy, upstream, target)
    # refused: by the proxy (400), by the server's parser (httptools: 400 for a target with
    # no path), or by FastAPI (404: a route never matches "http://...")
    if forwarded is None or status in (400, 404):
        assert status in (400, 404)
        assert seen == []
        return
    assert (status, body) == (200, OK_BODY)
    assert [r.target for r in seen] == [forwarded]
    assert seen[0].header(b"host") == [b"127.0.0.1:%d" % upstream.port]
