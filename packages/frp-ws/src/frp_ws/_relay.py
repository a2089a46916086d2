"""The message relay: whole messages each way between an ASGI WebSocket and the upstream.

Used when frames cannot be spliced (another server, or an extension negotiated on a hop).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.websockets import WebSocketDisconnect

from frp_core._routing import Outcome

from . import _close
from ._compat import CLOSED, UpstreamConnection, closed

__all__ = ["CLIENT_GONE", "Message", "Receive", "Relay", "Send", "close_upstream"]

logger = logging.getLogger("frp_ws")

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

#: What the ASGI server raises from ``send`` once the client has gone.
CLIENT_GONE = (OSError, WebSocketDisconnect)


class _Ending:
    """Why a pump stopped: ``side`` is "client", "upstream" or "too-big"."""

    __slots__ = ("code", "reason", "sent_first", "side")

    def __init__(
        self, side: str, code: int | None = None, reason: str = "", sent_first: int | None = None
    ) -> None:
        self.side = side
        self.code = code
        self.reason = reason
        self.sent_first = sent_first


class Relay:
    """Two pumps, one message at a time each way, each send awaited (no queue of our own)."""

    __slots__ = ("max_size", "receive", "send", "up")

    def __init__(self, up: UpstreamConnection, receive: Receive, send: Send, max_size: int | None):
        self.up = up
        self.receive = receive
        self.send = send
        self.max_size = max_size

    async def to_upstream(self) -> _Ending:
        receive, send_up = self.receive, self.up.raw_send
        limit = self.max_size if self.max_size is not None else sys.maxsize
        # Only a message longer than limit // 4 characters can be over ``limit`` bytes (UTF-8
        # needs at most 4 bytes a character): the exact size is computed only for those.
        quarter = limit // 4
        while True:
            message = await receive()
            if message["type"] == "websocket.receive":
                data: str | bytes | None = message.get("text")
                if data is None:
                    data = message.get("bytes")
                    if data is None:
                        data = b""
                if len(data) > quarter and _size(data) > limit:
                    return _Ending("too-big")
                try:
                    await send_up(data)
                except CLOSED as exc:
                    ended = closed(exc)
                    return _Ending("upstream", ended.code, ended.reason, ended.sent_first)
            elif message["type"] == "websocket.disconnect":
                code = message.get("code", _close.NO_STATUS)
                return _Ending("client", code, message.get("reason") or "")

    async def to_client(self) -> _Ending:
        send, recv_up = self.send, self.up.raw_recv
        while True:
            try:
                data = await recv_up()
            except CLOSED as exc:
                ended = closed(exc)
                return _Ending("upstream", ended.code, ended.reason, ended.sent_first)
            try:
                if isinstance(data, str):
                    await send({"type": "websocket.send", "text": data})
                else:
                    await send({"type": "websocket.send", "bytes": data})
            except CLIENT_GONE:
                return _Ending("client", _close.ABNORMAL)

    async def run(self) -> Outcome:
        pumps = (
            asyncio.ensure_future(self.to_upstream()),
            asyncio.ensure_future(self.to_client()),
        )
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pump in pumps:
                pump.cancel()
            results = await asyncio.gather(*pumps, return_exceptions=True)
        endings: list[_Ending] = []
        for result in results:
            if isinstance(result, _Ending):
                endings.append(result)
            elif not isinstance(result, asyncio.CancelledError):
                # A bug in a pump: close both sides, then let it propagate.
                await self._close_client(_close.INTERNAL_ERROR, "")
                await close_upstream(self.up, _close.INTERNAL_ERROR, "")
                raise result
        # Both may have ended at once: the upstream's close frame is the better information.
        ending = min(endings, key=lambda e: e.side != "upstream")
        if ending.side == "upstream":
            code, reason = _close.from_upstream(
                ending.code, ending.reason, sent_first=ending.sent_first
            )
            return await self._upstream_ended(code, reason)
        if ending.side == "too-big":
            await self._close_client(_close.TOO_BIG, _close.TOO_BIG_REASON)
            await close_upstream(self.up, _close.TOO_BIG, _close.TOO_BIG_REASON)
            return Outcome.SUCCESS
        code, reason = _close.from_client(ending.code, ending.reason)
        await close_upstream(self.up, code, reason)
        return Outcome.SUCCESS

    async def _upstream_ended(self, code: int, reason: str) -> Outcome:
        await self._close_client(code, reason)
        await close_upstream(self.up, _close.NORMAL, "")  # already closed: waits for the socket
        return Outcome.RESET if code == _close.BAD_GATEWAY else Outcome.SUCCESS

    async def _close_client(self, code: int, reason: str) -> None:
        with contextlib.suppress(*CLIENT_GONE):
            await self.send({"type": "websocket.close", "code": code, "reason": reason})


def _size(data: str | bytes) -> int:
    return len(data.encode("utf-8")) if isinstance(data, str) else len(data)


async def close_upstream(up: UpstreamConnection, code: int, reason: str) -> None:
    try:
        await up.close(code, reason)
    except Exception:  # the socket is unusable: drop it
        logger.debug("upstream close failed; aborting", exc_info=True)
        up.abort()
