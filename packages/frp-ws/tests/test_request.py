"""Upstream URL and headers: config decides where, the client's bytes decide what."""

import pytest

from frp_core._headers import TrustedProxies
from frp_ws._request import (
    base_url,
    offers_deflate,
    resource,
    response_headers,
    upstream_headers,
    url_for,
)


def scope(raw_path=b"/", query=b"", headers=(), client=("10.0.0.9", 5000)):
    return {
        "type": "websocket",
        "raw_path": raw_path,
        "path": raw_path.decode("latin-1"),
        "query_string": query,
        "headers": list(headers),
        "client": client,
        "scheme": "ws",
        "http_version": "1.1",
    }


@pytest.mark.parametrize(
    ("base", "expected"),
    [
        ("http://up:8000", ("ws://up:8000", "")),
        ("https://up", ("wss://up", "")),
        ("https://up:443", ("wss://up", "")),
        ("ws://up/api/", ("ws://up", "/api")),
        ("wss://[::1]:9/x", ("wss://[::1]:9", "/x")),
    ],
)
def test_base_url(base, expected):
    assert base_url(base) == expected


@pytest.mark.parametrize("bad", ["ftp://up", "up:80", "http://u:p@up", "http://up/?q=1"])
def test_bad_base_url(bad):
    with pytest.raises(ValueError):
        base_url(bad)


@pytest.mark.parametrize(
    "raw",
    [b"/a%2Fb/..%2fc", b"/@127.0.0.1:9102/secret", b"//evil.example/x", b"/a;b=c/d", b"/%00"],
)
def test_path_is_appended_byte_exact_and_never_changes_the_host(raw):
    url = url_for("http://up:8000/api", resource(scope(raw), None, True))
    assert url == "ws://up:8000/api" + raw.decode()


def test_query_is_byte_exact():
    s = scope(b"/p", b"flag&sig=a%2Bb%3D&x=&y")
    assert resource(s, None, True) == "/p?flag&sig=a%2Bb%3D&x=&y"
    assert resource(s, None, False) == "/p"


def test_unsafe_bytes_are_escaped():
    assert resource(scope(b"/a#b c\xff"), None, True) == "/a%23b%20c%FF"


@pytest.mark.parametrize(
    ("raw", "decoded", "forwarded"),
    [
        (b"/ws/a/x%3Fadmin=1", "/ws/a/x?admin=1", "/ws/a/x%3Fadmin=1"),
        (b"/ws/a%2Fb/..%2f..%2fadmin", "/ws/a/b/../../admin", "/ws/a%2Fb/..%2f..%2fadmin"),
        (b"/ws/%2541", "/ws/%41", "/ws/%2541"),
    ],
)
def test_path_argument_equal_to_the_decoded_path_forwards_the_raw_bytes(raw, decoded, forwarded):
    """The Quick Start passes ``path=`` the route's decoded path: the client's ``%3F``,
    ``%2F`` and ``%25`` must not become a query, a traversal or a second decoding."""
    s = dict(scope(raw, query=b"real=1"), path=decoded)
    assert resource(s, decoded, True) == forwarded + "?real=1"


def test_path_argument_overrides_and_joins_the_query():
    s = scope(b"/ignored", b"q=1")
    assert resource(s, "/chat/room 1", True) == "/chat/room%201?q=1"
    assert resource(s, "/chat?x=2", True) == "/chat?x=2&q=1"
    assert resource(s, "no-slash", False) == "/no-slash"


def test_headers_end_to_end_only():
    s = scope(
        headers=[
            (b"host", b"proxy.example"),
            (b"cookie", b"a=1"),
            (b"x-dup", b"1"),
            (b"x-dup", b"2"),
            (b"connection", b"Upgrade, X-Hop"),
            (b"x-hop", b"secret"),
            (b"upgrade", b"websocket"),
            (b"sec-websocket-key", b"k"),
            (b"sec-websocket-version", b"13"),
            (b"sec-websocket-extensions", b"permessage-deflate"),
            (b"sec-websocket-protocol", b"chat"),
            (b"x-forwarded-for", b"6.6.6.6"),
            (b"user-agent", b"browser/1"),
        ]
    )
    out = upstream_headers(s, additional=None, override=None, trusted=TrustedProxies())
    names = [n for n, _ in out]
    assert ("cookie", "a=1") in out
    assert [v for n, v in out if n == "x-dup"] == ["1", "2"]
    assert ("user-agent", "browser/1") in out
    for name in (
        "host",
        "connection",
        "x-hop",
        "upgrade",
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-extensions",
        "sec-websocket-protocol",
    ):
        assert name not in names
    assert [v for n, v in out if n == "x-forwarded-for"] == ["10.0.0.9"]
    assert ("x-forwarded-host", "proxy.example") in out
    assert ("via", "1.1 frp") in out


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([], False),
        ([b"permessage-deflate"], True),
        ([b"x-webkit-deflate-frame, Permessage-Deflate; client_max_window_bits"], True),
        ([b"x-foo", b"permessage-deflate; server_no_context_takeover"], True),
        ([b"x-permessage-deflate-ish"], False),
        ([b"foo; permessage-deflate"], False),  # a parameter, not an extension
    ],
)
def test_offers_deflate_reads_the_clients_extension_offer(values, expected):
    s = scope(headers=[(b"sec-websocket-extensions", v) for v in values])
    assert offers_deflate(s) is expected


def test_additional_and_override_headers():
    s = scope(headers=[(b"cookie", b"a=1"), (b"x-a", b"old")])
    out = upstream_headers(s, additional={"X-A": "new"}, override=None, trusted=TrustedProxies())
    assert [v for n, v in out if n == "x-a"] == ["new"]
    out = upstream_headers(
        s, additional=None, override={"X-Only": "1", "Host": "h"}, trusted=TrustedProxies()
    )
    assert ("x-only", "1") in out
    assert "cookie" not in [n for n, _ in out]
    assert "host" not in [n for n, _ in out]


def test_response_headers_keep_cookies_drop_handshake():
    out = response_headers(
        [
            ("Set-Cookie", "a=1"),
            ("Set-Cookie", "b=2"),
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Accept", "x"),
            ("Date", "d"),
            ("Server", "s"),
        ]
    )
    assert out == [(b"set-cookie", b"a=1"), (b"set-cookie", b"b=2")]
