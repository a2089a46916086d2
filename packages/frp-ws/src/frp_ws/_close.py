"""Close codes and reasons across the two hops of a tunnel (pure logic, RFC 6455 §7.4).

Codes 1004, 1005, 1006 and 1015 are reserved: they may be *reported* to an endpoint but never
*sent* in a close frame.  What one hop reports is mapped to something the other hop may send.
"""

from __future__ import annotations

MAX_REASON_BYTES = 123

NORMAL = 1000
GOING_AWAY = 1001
NO_STATUS = 1005
ABNORMAL = 1006
TOO_BIG = 1009
INTERNAL_ERROR = 1011
SERVICE_RESTART = 1012
BAD_GATEWAY = 1014

#: Reason sent to the client when the upstream was lost without a usable close frame.
BAD_GATEWAY_REASON = "Bad Gateway"
#: Reason sent to both sides when a message is over ``max_size``.
TOO_BIG_REASON = "Message too big"

_SENDABLE_LOW = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014})


def sendable(code: int) -> bool:
    """Whether ``code`` may appear in a close frame (1000–1003, 1007–1014, 3000–4999)."""
    return code in _SENDABLE_LOW or 3000 <= code <= 4999


def truncate_reason(reason: str) -> str:
    """``reason`` cut to at most 123 UTF-8 bytes, never in the middle of a character."""
    data = reason.encode("utf-8", "replace")
    if len(data) <= MAX_REASON_BYTES:
        return data.decode()
    # A cut inside a multi-byte sequence leaves an incomplete tail: drop it.
    return data[:MAX_REASON_BYTES].decode("utf-8", "ignore")


def from_upstream(
    received: int | None, reason: str, *, sent_first: int | None = None
) -> tuple[int, str]:
    """The close the client gets when the upstream hop ended.

    ``received`` is the code of the upstream's close frame (``None`` when none arrived);
    ``sent_first`` is the code our upstream client sent *before* any frame arrived (the
    library closed the hop itself, e.g. 1009 for a message over ``max_size`` or 1011 for a
    keepalive timeout).
    """
    if sent_first is not None:
        if sent_first == TOO_BIG:
            return TOO_BIG, TOO_BIG_REASON
        return BAD_GATEWAY, BAD_GATEWAY_REASON
    if received is None or received in (ABNORMAL, 1015):
        return BAD_GATEWAY, BAD_GATEWAY_REASON
    if received == NO_STATUS:
        return NORMAL, ""
    if not sendable(received):
        return BAD_GATEWAY, BAD_GATEWAY_REASON
    return received, truncate_reason(reason)


def from_client(code: int | None, reason: str) -> tuple[int, str]:
    """The close the upstream gets when the client hop ended (an ASGI disconnect).

    1005 (no code, also what uvicorn reports for a lost client) becomes 1000; 1006 (client
    lost before a close frame) and 1012 (uvicorn reports its own shutdown as 1012) become
    1001 "going away", the code a client uses when it leaves.
    """
    if code is None or code == NO_STATUS:
        return NORMAL, ""
    if code in (ABNORMAL, SERVICE_RESTART) or not sendable(code):
        return GOING_AWAY, ""
    return code, truncate_reason(reason)


def refusal_close_code(status: int) -> int:
    """Close code used instead of an HTTP refusal when the server has no http.response."""
    return 1008 if 400 <= status < 500 else INTERNAL_ERROR
