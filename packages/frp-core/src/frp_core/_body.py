"""The response the engine hands to the proxy: its head, and its body as a stream of chunks."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._errors import RemoteProtocolError
from ._headers import Headers

if TYPE_CHECKING:
    from ._buffers import Chunk
    from ._connection import Connection

__all__ = ["UpstreamResponse"]


class UpstreamResponse:
    """The head of an upstream response, and its body as a stream of chunks.

    ``headers`` are raw: names lower-cased, order and repetition preserved, hop-by-hop headers
    included.  ``content_length`` is the declared ``Content-Length`` (also for HEAD and 304
    answers, whose ``has_body`` is ``False``); ``None`` for chunked and close-delimited bodies.
    Always call :meth:`aclose` (in ``finally``).
    """

    __slots__ = (
        "_conn",
        "_ended",
        "content_length",
        "has_body",
        "headers",
        "http_version",
        "reason",
        "status",
    )

    status: int
    reason: bytes
    http_version: str
    headers: Headers
    content_length: int | None
    has_body: bool

    def __init__(
        self,
        conn: Connection | None,
        status: int,
        reason: bytes,
        http_version: str,
        headers: Headers,
        content_length: int | None,
        has_body: bool,
    ) -> None:
        self._conn = conn
        self._ended = False
        self.status = status
        self.reason = reason
        self.http_version = http_version
        self.headers = headers
        self.content_length = content_length
        self.has_body = has_body

    def __repr__(self) -> str:
        return f"<UpstreamResponse {self.status} {self.reason.decode('latin-1')}>"

    async def receive(self) -> Chunk:
        """The next body chunk (up to ``read_size`` bytes); ``b""`` once the body is complete.

        A long ``Content-Length`` body comes mostly as ``bytearray`` chunks: the buffers it was
        read into (see :class:`~frp_core._buffers.ReadBuffers`).

        Raises ``ReadTimeout`` when nothing arrives for ``timeouts.read`` seconds, and
        ``RemoteProtocolError`` when the body is truncated or malformed: an incomplete body
        never ends with ``b""``.
        """
        c = self._conn
        while c is not None:
            if c._buf:
                return c._take()
            if c._error is not None:
                raise c._error
            if c._complete:
                self._ended = True
                if c._writer is None or c._writer.done():
                    self._conn = None
                    c._finish()
                else:  # the body was still being sent: the connection cannot be reused
                    c.discard()
                    await c.stop_writer()
                    self._conn = None
                return b""
            await c._wait_body()
        if self._ended:
            return b""
        raise RemoteProtocolError("the response was closed before its end", request_sent=True)

    def body_ready(self) -> bool:
        """Whether :meth:`receive` would return without waiting for the upstream."""
        c = self._conn
        return c is None or bool(c._buf) or c._complete or c._error is not None

    async def aclose(self) -> None:
        """Release the connection: to the pool if the response is complete, else close it."""
        c = self._conn
        if c is None:
            return
        self._conn = None
        if c._complete and c._error is None and (c._writer is None or c._writer.done()):
            self._ended = True
            c._finish()
        else:
            c.discard()
            await c.stop_writer()
