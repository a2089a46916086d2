"""Short responses the proxy makes itself: 400, 502, 503, 504 with a plain-text body that names
no internal address."""

from __future__ import annotations

import dataclasses
import functools

from ._errors import UpstreamError
from ._headers import Headers

__all__ = ["BAD_REQUEST", "NO_UPSTREAM", "ErrorReply", "error_reply"]


@dataclasses.dataclass(frozen=True, slots=True)
class ErrorReply:
    """A short response made by the proxy itself (no upstream body)."""

    status: int
    message: str
    headers: tuple[tuple[bytes, bytes], ...] = ()

    def closes(self) -> bool:
        """Whether the client connection is closed after this reply."""
        return (b"connection", b"close") in self.headers

    def asgi_headers(self) -> Headers:
        body = self.message.encode()
        return [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", b"%d" % len(body)),
            *self.headers,
        ]


BAD_REQUEST = ErrorReply(400, "Bad Request", ((b"connection", b"close"),))
NO_UPSTREAM = ErrorReply(503, "Service Unavailable", ((b"retry-after", b"1"),))


@functools.lru_cache(maxsize=64)
def _error_reply(status: int, message: str) -> ErrorReply:
    return ErrorReply(status, message)


def error_reply(exc: UpstreamError) -> ErrorReply:
    """The reply for a failed attempt: its status and public message, nothing internal."""
    return _error_reply(exc.status, exc.public_message)
