"""The client's request body as the proxy reads it from ASGI ``receive()``.

:class:`BodyReader` streams it upstream, keeping a short one for a replay on another target;
:func:`stream_framing` tells whether an HTTP/2 or /3 request without ``Content-Length`` has a
body at all (those protocols end a body with the stream, not with a header).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

__all__ = [
    "LINGER",
    "NO_FRAMING",
    "REPLAY_LIMIT",
    "STREAMS",
    "BodyReader",
    "ClientDisconnect",
    "Message",
    "Receive",
    "linger",
    "stream_framing",
]

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]

#: Request bodies up to this size are kept so that a failed attempt can be replayed.
REPLAY_LIMIT = 64 * 1024
#: ``check_framing`` of a request with neither ``Content-Length`` nor ``Transfer-Encoding``.
NO_FRAMING: tuple[int | None, bool] = (None, False)
#: ``http_version`` values whose requests may carry a body without either header.
STREAMS = frozenset({"2", "3"})
#: Seconds an answer that did not wait for the whole upload keeps reading (and dropping) it
#: before the connection is closed, as nginx's ``lingering_close`` and Envoy's
#: ``delayed_close_timeout`` do: closing with unread bytes resets the connection, and a reset
#: can reach the client before it has read the answer.
LINGER = 1.0
#: Empty ``http.request`` messages skipped before such a body's framing is chosen anyway.
_EMPTY_LIMIT = 64


class ClientDisconnect(Exception):
    """The client went away while its request body was being read."""


class BodyReader:
    """The request body from ``receive()``, optionally kept (up to a limit) for a replay."""

    __slots__ = (
        "chunks",
        "complete",
        "disconnected",
        "dropped",
        "keep",
        "on_complete",
        "receive",
        "size",
    )

    def __init__(
        self, receive: Receive, keep: bool, on_complete: Callable[[], object] | None = None
    ) -> None:
        self.receive = receive
        self.keep = keep
        self.on_complete = on_complete  #: called once the whole body has been received
        self.chunks: list[bytes] = []
        self.size = 0
        self.complete = False
        self.disconnected = False
        self.dropped = False  #: bytes were consumed that can no longer be replayed

    async def stream(self) -> AsyncIterator[bytes]:
        """Yield what was kept, then the rest of the body as it arrives."""
        for chunk in self.chunks:
            yield chunk
        while not self.complete:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                self.disconnected = True
                raise ClientDisconnect
            chunk = message.get("body", b"")
            if not message.get("more_body", False):
                self.complete = True
                if self.on_complete is not None:
                    self.on_complete()
            if chunk:
                if self.keep:
                    self.size += len(chunk)
                    if self.size <= REPLAY_LIMIT:
                        self.chunks.append(chunk)
                    else:
                        self.keep, self.dropped = False, True
                        self.chunks.clear()
                else:
                    self.dropped = True
                yield chunk

    def replayable(self) -> bool:
        return not self.dropped


async def stream_framing(receive: Receive) -> tuple[tuple[int | None, bool], Receive] | None:
    """The framing of a request body that no header announces, and the ``receive`` to read it
    from; ``None`` when the client left.

    The first message with bytes in it, or the body's end, tells (empty messages that promise
    more tell nothing): more to come is streamed chunked, a whole body goes with its length.
    """
    first = await receive()
    for _ in range(_EMPTY_LIMIT):
        if first.get("body") or not first.get("more_body", False):
            break
        first = await receive()
    if first["type"] == "http.disconnect":
        return None
    if first.get("more_body", False):
        return (None, True), _replay(first, receive)
    if first.get("body"):
        return (len(first["body"]), False), _replay(first, receive)
    return NO_FRAMING, receive


def _replay(first: Message, receive: Receive) -> Receive:
    """``receive``, giving ``first`` (already received) once more before the next messages."""
    pending = [first]

    async def replay() -> Message:
        return pending.pop() if pending else await receive()

    return replay


async def linger(receive: Receive, seconds: float = LINGER) -> None:
    """Read and drop what is left of a request body, for at most ``seconds`` (see
    :data:`LINGER`); returns at its end, or when the client leaves."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            for _ in range(1 << 24):  # bounded by the timeout long before this
                message = await receive()
                if message["type"] != "http.request" or not message.get("more_body", False):
                    return
