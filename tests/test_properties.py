"""Property-based tests (hypothesis) of what reaches the upstream.

For random paths, queries and headers sent as raw bytes to the proxy: the request reaches the
configured upstream (scheme, host and port never change; a canary server named in the path
never hears anything), its target arrives byte-exact, its headers arrive in order and intact,
and nothing upstream ever carries CR, LF or NUL inside a header line.

One proxy (uvicorn) and one recording upstream serve the whole module; it exercises both public
forms: ``ReverseProxy`` mounted at ``/asgi`` and the Quick Start route
``proxy_pass(request, host, path=f"/{path}")`` at ``/quick``.
"""

from __future__ import annotations

import socket
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fault_server import OK_BODY, FaultServer, fault_server
from frp_testing import run_server
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from proxy_rig import core

SETTINGS = settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


class Rig:
    def __init__(self, proxy: Any, upstream: FaultServer, canary: FaultServer) -> None:
        self.proxy = proxy
        self.upstream = upstream
        self.canary = canary


@pytest.fixture(scope="module")
def rig() -> Iterator[Rig]:
    frp_core = core()
    with fault_server("record") as upstream, fault_server("record") as canary:
        timeouts = frp_core.Timeouts(connect=5.0, read=10.0, write=10.0, pool=10.0)
        app = FastAPI()
        asgi_proxy = frp_core.ReverseProxy(upstream.url, timeout=timeouts)

        @app.api_route("/quick/{path:path}", methods=["GET", "POST"])
        async def quick(request: Request, path: str) -> Any:
            return await frp_core.proxy_pass(
                request, upstream.url, path=f"/{path}", timeout=timeouts
            )

        @app.get("/inject")
        async def inject(request: Request) -> Any:
            value = request.query_params.get("v", "")
            return await frp_core.proxy_pass(
                request,
                upstream.url,
                path="/injected",
                timeout=timeouts,
                forward_query=False,
                additional_headers={"x-user": value},
            )

        async def dispatch(scope: Any, receive: Any, send: Any) -> None:
            # /asgi/... goes to ReverseProxy unmounted (it sees the raw path as sent: a
            # Starlette Mount would drop a decoded "\n" from the path before the proxy sees
            # it); everything else to the FastAPI app.
            if scope["type"] == "http" and scope.get("raw_path", b"").startswith(b"/asgi/"):
                await asgi_proxy(scope, receive, send)
            else:
                await app(scope, receive, send)

        with run_server(dispatch) as proxy:
            yield Rig(proxy, upstream, canary)


# -- strategies ---------------------------------------------------------------------------------

_UNRESERVED = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~"
_SUB_DELIMS = "!$&'()*+,;="
_PCHAR = _UNRESERVED + _SUB_DELIMS + ":@"


@st.composite
def pct_encoded(draw: Any) -> str:
    special = st.sampled_from([0x00, 0x0A, 0x0D, 0x2F, 0x2E, 0x3F, 0x23, 0x25, 0x40, 0x5C])
    byte = draw(st.one_of(special, st.integers(0, 255)))
    return "%" + draw(st.sampled_from(["%02X", "%02x"])) % byte


def _segments(chars: str) -> Any:
    atom = st.one_of(st.text(alphabet=chars, min_size=1, max_size=6), pct_encoded())
    return st.lists(atom, max_size=4).map("".join)


@st.composite
def paths(draw: Any, canary_port: int) -> str:
    tricky = st.sampled_from(
        [
            "..",
            ".",
            "",
            "%2e%2e",
            "..%2f..%2fadmin",
            f"@127.0.0.1:{canary_port}",
            f"127.0.0.1:{canary_port}",
            "http:",
            f"http:%2F%2F127.0.0.1:{canary_port}",
        ]
    )
    segment = st.one_of(_segments(_PCHAR), tricky)
    parts = draw(st.lists(segment, min_size=1, max_size=6))
    return "/" + "/".join(parts)


queries = st.one_of(
    st.just(""),
    st.lists(
        st.one_of(st.text(alphabet=_PCHAR + "/?", min_size=1, max_size=8), pct_encoded()),
        min_size=1,
        max_size=6,
    ).map("".join),
)

_TOKEN = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz"
_SKIP = {
    "host", "content-length", "transfer-encoding", "connection", "keep-alive", "te",
    "trailer", "upgrade", "via", "expect", "forwarded", "x-forwarded-for",
    "x-forwarded-proto", "x-forwarded-host", "proxy-authorization", "proxy-authenticate",
    "proxy-connection",
}  # fmt: skip
header_names = st.text(alphabet=_TOKEN, min_size=1, max_size=12).filter(
    lambda n: n not in _SKIP and not n.startswith("x-forwarded")
)
# visible ASCII and obs-text, with inner spaces/tabs; no leading or trailing whitespace
header_values = (
    st.binary(max_size=40)
    .map(
        lambda b: bytes(
            c if (0x21 <= c <= 0x7E or c >= 0x80 or c in (0x20, 0x09)) else 0x61 for c in b
        )
    )
    .map(lambda b: b.strip(b" \t"))
)


# -- helpers -------------------------------------------------------------------------------------


def _exchange(port: int, head: bytes) -> tuple[int, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        sock.sendall(head)
        data = bytearray()
        for _ in range(10_000):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    head_bytes, _, body = bytes(data).partition(b"\r\n\r\n")
    return int(head_bytes.split(b" ")[1]), body


def _assert_clean_head(head: bytes) -> None:
    for line in head.split(b"\r\n"):
        assert b"\r" not in line
        assert b"\n" not in line
        assert b"\x00" not in line


def _assert_one_new_request(rig: Rig, before: int, canary_before: int) -> Any:
    new = rig.upstream.requests[before:]
    assert len(new) == 1, f"{len(new)} upstream requests for one client request"
    assert len(rig.canary.requests) == canary_before, "a request reached another host"
    req = new[0]
    assert req.header(b"host") == [f"127.0.0.1:{rig.upstream.port}".encode()]
    _assert_clean_head(req.head)
    return req


# -- properties ---------------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["asgi", "quick"])
def test_path_and_query_reach_the_configured_upstream_byte_exact(rig: Rig, form: str) -> None:
    @SETTINGS
    @given(path=paths(rig.canary.port), query=queries)
    def check(path: str, query: str) -> None:
        if form == "quick":
            # Starlette's `{path:path}` regex does not match a decoded "\n": such a path never
            # reaches the route (a framework limit, not the proxy's), so leave it out here.
            assume("%0a" not in path.lower())
        target = path + ("?" + query if query else "")
        before, canary_before = len(rig.upstream.requests), len(rig.canary.requests)
        status, body = _exchange(
            rig.proxy.port,
            f"GET /{form}{target} HTTP/1.1\r\nHost: evil.example:1\r\n"
            "Connection: close\r\n\r\n".encode(),
        )
        assert (status, body) == (200, OK_BODY), target
        req = _assert_one_new_request(rig, before, canary_before)
        expected = (b"/asgi" if form == "asgi" else b"") + target.encode()
        assert req.target == expected, (req.target, expected)

    check()


def test_headers_reach_the_upstream_in_order_and_intact(rig: Rig) -> None:
    @SETTINGS
    @given(headers=st.lists(st.tuples(header_names, header_values), max_size=8))
    def check(headers: list[tuple[str, bytes]]) -> None:
        lines = b"".join(n.encode() + b": " + v + b"\r\n" for n, v in headers)
        before, canary_before = len(rig.upstream.requests), len(rig.canary.requests)
        status, body = _exchange(
            rig.proxy.port,
            b"GET /asgi/h HTTP/1.1\r\nHost: proxy\r\nConnection: close\r\n" + lines + b"\r\n",
        )
        assert (status, body) == (200, OK_BODY)
        req = _assert_one_new_request(rig, before, canary_before)
        sent = [(n.encode(), v) for n, v in headers]
        names = {n for n, _ in sent}
        forwarded = [(n, v) for n, v in req.headers if n in names]
        assert forwarded == sent

    check()


def test_no_cr_lf_nul_upstream_from_caller_supplied_header_values(rig: Rig) -> None:
    """A route that copies user input into ``additional_headers`` cannot be made to inject a
    header or split the upstream request: the value is refused or cleaned, never sent raw."""

    @SETTINGS
    @given(
        value=st.lists(
            st.one_of(
                st.sampled_from(["\r\n", "\r", "\n", "\x00", "\r\nX-Injected: 1", "\r\n\r\n"]),
                st.text(alphabet=_PCHAR + " ", max_size=6),
            ),
            min_size=1,
            max_size=5,
        ).map("".join)
    )
    def check(value: str) -> None:
        before, canary_before = len(rig.upstream.requests), len(rig.canary.requests)
        query = urllib.parse.urlencode({"v": value})
        status, _ = _exchange(
            rig.proxy.port,
            f"GET /inject?{query} HTTP/1.1\r\nHost: proxy\r\nConnection: close\r\n\r\n".encode(),
        )
        new = rig.upstream.requests[before:]
        assert len(rig.canary.requests) == canary_before
        assert len(new) <= 1
        if new:
            assert status == 200
            _assert_clean_head(new[0].head)
            assert not new[0].header(b"x-injected"), "header injection reached the upstream"
            assert new[0].target == b"/injected"
        else:
            assert status >= 400

    check()


@pytest.mark.parametrize("target", [b"/%80", b"/file-%E9t%E9.txt", b"/a/%FF%FE"])
def test_quick_start_route_keeps_non_utf8_escapes(rig: Rig, target: bytes) -> None:
    """Regression: escapes of non-UTF-8 bytes (uvicorn decodes them to U+FFFD in ``path``)
    are forwarded as sent, not re-encoded as %EF%BF%BD."""
    before, canary_before = len(rig.upstream.requests), len(rig.canary.requests)
    status, body = _exchange(
        rig.proxy.port,
        b"GET /quick" + target + b" HTTP/1.1\r\nHost: proxy\r\nConnection: close\r\n\r\n",
    )
    assert (status, body) == (200, OK_BODY)
    req = _assert_one_new_request(rig, before, canary_before)
    assert req.target == target
