"""Close-code mapping and reason truncation (pure logic)."""

import pytest

from frp_ws._close import from_client, from_upstream, refusal_close_code, truncate_reason


def test_reason_cut_on_a_character_boundary():
    reason = "é" * 62  # 124 UTF-8 bytes
    cut = truncate_reason(reason)
    assert cut == "é" * 61
    assert len(cut.encode()) == 122


def test_reason_within_limit_is_kept():
    assert truncate_reason("x" * 123) == "x" * 123
    assert truncate_reason("€" * 41) == "€" * 41  # exactly 123 bytes


def test_reason_cut_inside_a_four_byte_character():
    cut = truncate_reason("a" * 121 + "😀")
    assert cut == "a" * 121


@pytest.mark.parametrize(
    ("received", "expected"),
    [
        (1000, 1000),
        (1001, 1001),
        (1008, 1008),
        (1011, 1011),
        (3000, 3000),
        (4999, 4999),
        (1005, 1000),  # no status code: a normal close
        (1006, 1014),  # never sent: the upstream was lost
        (1015, 1014),
        (1004, 1014),
        (None, 1014),
    ],
)
def test_upstream_codes_reach_the_client_as_sendable_codes(received, expected):
    assert from_upstream(received, "")[0] == expected


def test_library_initiated_upstream_closes():
    assert from_upstream(1009, "", sent_first=1009) == (1009, "Message too big")
    assert from_upstream(None, "", sent_first=1011) == (1014, "Bad Gateway")


@pytest.mark.parametrize(
    ("received", "expected"),
    [
        (1000, 1000),
        (1001, 1001),
        (4000, 4000),
        (1009, 1009),
        (1005, 1000),
        (1006, 1001),
        (1012, 1001),
        (None, 1000),
    ],
)
def test_client_codes_reach_the_upstream_as_sendable_codes(received, expected):
    assert from_client(received, "")[0] == expected


def test_reasons_follow_the_code_and_are_truncated():
    assert from_upstream(4000, "é" * 70) == (4000, "é" * 61)
    assert from_client(4000, "bye") == (4000, "bye")
    assert from_client(1005, "ignored") == (1000, "")


def test_refusal_close_codes():
    assert refusal_close_code(403) == 1008
    assert refusal_close_code(502) == 1011
