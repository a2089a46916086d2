"""Unit checks of request framing validation and request-target building (no I/O)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from frp_core._request import BadRequest, build_target, check_framing, encode_path
from frp_core._upstream import parse_base


def _scope(raw: bytes, query: bytes = b"", root: str = "") -> dict[str, object]:
    return {"raw_path": raw, "path": raw.decode(), "query_string": query, "root_path": root}


@pytest.mark.parametrize(
    "headers",
    [
        [(b"content-length", b"5"), (b"transfer-encoding", b"chunked")],
        [(b"transfer-encoding", b"chunked"), (b"content-length", b"5")],
        [(b"transfer-encoding", b",chunked")],
        [(b"transfer-encoding", b"chunked, identity")],
        [(b"transfer-encoding", b"gzip")],
        [(b"transfer-encoding", b"chunked"), (b"transfer-encoding", b"chunked")],
        [(b"content-length", b"5"), (b"content-length", b"5")],
        [(b"content-length", b"+5")],
        [(b"content-length", b"5, 5")],
        [(b"content-length", b"")],
    ],
)
def test_ambiguous_framing_is_refused(headers: list[tuple[bytes, bytes]]) -> None:
    with pytest.raises(BadRequest):
        check_framing(headers)


def test_clear_framing_is_accepted() -> None:
    assert check_framing([(b"content-length", b"12")]) == (12, False)
    assert check_framing([(b"transfer-encoding", b"Chunked")]) == (None, True)
    assert check_framing([]) == (None, False)


def test_caller_path_equal_to_decoded_tail_keeps_raw_bytes() -> None:
    scope = _scope(b"/api/a%2Fb%20c")
    assert build_target(scope, b"", "/a/b c", True) == b"/a%2Fb%20c"
    assert build_target(scope, b"/base", "/other path", True) == b"/base/other%20path"


def test_caller_path_encoding() -> None:
    assert encode_path("x y/é") == b"/x%20y/%C3%A9"
    assert encode_path("/a%2Fb/%zz") == b"/a%2Fb/%25zz"
    assert encode_path("/a#b") == b"/a%23b"
    assert encode_path("/s?x=1 2") == b"/s?x=1%202"


def test_query_appended_to_caller_query_with_ampersand() -> None:
    scope = _scope(b"/x", b"b=2")
    assert build_target(scope, b"", "/s?a=1", True) == b"/s?a=1&b=2"
    assert build_target(scope, b"", "/s", False) == b"/s"


def test_root_path_stripped_even_when_encoded() -> None:
    assert build_target(_scope(b"/%61pi/x", root="/api"), b"", None, True, strip_root=True) == (
        b"/x"
    )


def test_unsafe_raw_bytes_are_refused() -> None:
    with pytest.raises(BadRequest):
        build_target(_scope(b"/a\x00b"), b"", None, True)
    with pytest.raises(BadRequest):
        build_target(_scope(b"/a"), b"", None, True) if False else build_target(
            {"raw_path": b"/a", "query_string": b"x=\r\n"}, b"", None, True
        )


@given(st.text())
def test_any_caller_path_gives_a_safe_origin_form_target(path: str) -> None:
    target = build_target(_scope(b"/in"), b"/base", path, False)
    assert target.startswith(b"/base/")
    assert all(0x21 <= c <= 0x7E for c in target)
    assert b"#" not in target


@pytest.mark.parametrize(
    "url",
    ["ftp://h", "http://", "http://u:p@h", "http://h/?q", "http://h/#f", "h:80", "http://a b"],
)
def test_bad_base_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError):
        parse_base(url)


def test_base_url_parts() -> None:
    base = parse_base("https://Example.com:8443/api/")
    assert (base.scheme, base.host, base.port, base.prefix) == (
        "https",
        "example.com",
        8443,
        b"/api",
    )
    assert base.host_header == b"example.com:8443"
    assert parse_base("http://[::1]/").host_header == b"[::1]"


def test_caller_headers_cannot_inject_lines() -> None:
    from frp_core._headers import normalize_headers

    assert normalize_headers({"X-A": "1"}) == [(b"x-a", b"1")]
    assert normalize_headers([(b"X-B", b"2"), ("x-b", "3")]) == [(b"x-b", b"2"), (b"x-b", b"3")]
    for bad in [{"x": "1\r\nevil: 1"}, {"x\ny": "1"}, {"a b": "1"}, {"": "1"}]:
        with pytest.raises(ValueError):
            normalize_headers(bad)


def test_timeout_forms() -> None:
    import httpx

    from frp_core import Timeouts
    from frp_core._proxy import timeouts_of

    assert timeouts_of(5) == Timeouts(5.0, 5.0, 5.0, 5.0)
    assert timeouts_of(None) == Timeouts(None, None, None, None)
    assert timeouts_of(httpx.Timeout(1.0, read=None)) == Timeouts(1.0, None, 1.0, 1.0)
    custom = Timeouts(connect=1.0, read=None)
    assert timeouts_of(custom) is custom


def test_non_utf8_escapes_in_raw_tail_are_kept() -> None:
    from urllib.parse import unquote

    for raw in [b"/x/%80", b"/x/file-%E9t%E9.txt", b"/x/a/%FF%FE", b"/x/%C3%A9%2F%zz"]:
        decoded_tail = unquote(raw.decode("ascii"))[2:]  # what "/x/{path:path}" captures
        assert build_target(_scope(raw), b"", decoded_tail, False) == raw[2:]


def test_absolute_form_target_forwards_its_path_only() -> None:
    """uvicorn's h11 server passes an absolute-form target whole: only its path goes on."""
    assert build_target(_scope(b"http://other.example:1/x/%2F"), b"/p", None, True) == (b"/p/x/%2F")
    assert build_target(_scope(b"https://other.example"), b"", None, True) == b"/"
    for target in (b"other.example:443", b"*", b"x/y"):
        with pytest.raises(BadRequest):
            build_target(_scope(target), b"", None, True)
