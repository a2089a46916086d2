"""``Origin.parse``: where requests go comes from configuration only."""

from __future__ import annotations

import pytest

from frp_core._origin import Origin


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://backend", ("http", "backend", 80, b"", b"backend")),
        ("http://backend:8080", ("http", "backend", 8080, b"", b"backend:8080")),
        ("https://api.example/v1/", ("https", "api.example", 443, b"/v1", b"api.example")),
        ("https://api:443/v1", ("https", "api", 443, b"/v1", b"api")),
        ("https://api:80", ("https", "api", 80, b"", b"api:80")),
        ("ws://chat:9000/ws", ("http", "chat", 9000, b"/ws", b"chat:9000")),
        ("wss://chat", ("https", "chat", 443, b"", b"chat")),
        ("HTTP://Backend.Example:81/", ("http", "backend.example", 81, b"", b"backend.example:81")),
        ("http://[::1]:8000/a/b/", ("http", "::1", 8000, b"/a/b", b"[::1]:8000")),
        ("http://[::1]", ("http", "::1", 80, b"", b"[::1]")),
        ("http://h/a%2Fb/\u00e9", ("http", "h", 80, b"/a%2Fb/%C3%A9", b"h")),
    ],
)  # fmt: skip
def test_parse(url: str, expected: tuple[str, str, int, bytes, bytes]) -> None:
    o = Origin.parse(url)
    assert (o.scheme, o.host, o.port, o.prefix, o.host_header) == expected
    assert o.key == (o.scheme, o.host, o.port)


def test_parse_is_cached() -> None:
    assert Origin.parse("http://cached:1/x") is Origin.parse("http://cached:1/x")


def test_same_origin_different_prefix_share_a_pool_key() -> None:
    assert Origin.parse("http://h:1/a").key == Origin.parse("http://h:1/b").key
    assert Origin.parse("http://h:1").key != Origin.parse("https://h:1").key


@pytest.mark.parametrize(
    "url",
    [
        "backend:8080",
        "//backend",
        "ftp://backend",
        "http://",
        "http:///path",
        "http://user:pw@backend",
        "http://backend@evil",
        "http://backend/?q=1",
        "http://backend/?",
        "http://backend/#frag",
        "http://backend:99999",
        "http://backend:0",
        "http://backend:port",
        "http://back end",
        "http://backend/\r\nx",
    ],
)
def test_parse_rejects(url: str) -> None:
    with pytest.raises(ValueError):
        Origin.parse(url)
