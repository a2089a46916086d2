"""The WebSocket tunnel: deferred negotiation, then the splice or the message relay."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, MutableMapping, Sequence
from typing import Any

from frp_core._errors import ConnectError, UpstreamError
from frp_core._headers import NO_TRUSTED_PROXIES, TrustedProxies
from frp_core._routing import Outcome, Router, Upstreams

from . import _close
from ._compat import HandshakeRefused, UpstreamConnection, connect, http_status
from ._handshake import Opened, open_upstream
from ._relay import CLIENT_GONE, Receive, Relay, Send, close_upstream
from ._request import (
    HeaderInput,
    offers_deflate,
    offers_extensions,
    resource,
    response_headers,
    upstream_headers,
    url_for,
)
from ._splice import SPLICE, Splice, close_before_splice

__all__ = ["DEFAULT_MAX_SIZE", "Tunnel", "tunnel"]

logger = logging.getLogger("frp_ws")

Scope = MutableMapping[str, Any]
Target = str | Upstreams | Router

DEFAULT_MAX_SIZE = 16 * 1024 * 1024
_MAX_ATTEMPTS = 32  # a bound on failover, whatever ``Upstreams.pick`` says
_RETRY_STATUSES = frozenset({502, 503, 504})
_COMPRESSION = ("auto", "deflate", None)


class _Single:
    """One configured base URL as an :class:`Upstreams` that picks it once."""

    __slots__ = ("url",)

    def __init__(self, url: str) -> None:
        self.url = url

    def pick(self, tried: Sequence[str]) -> str | None:
        return None if tried else self.url

    def done(self, target: str, outcome: Outcome, elapsed: float) -> None:
        pass


def _upstreams(host: Target, scope: Scope) -> Upstreams:
    if isinstance(host, str):
        return _Single(host)
    if isinstance(host, Router) and not isinstance(host, Upstreams):
        return host.route(scope)
    return host


class Tunnel:
    """Options of a tunnel; :meth:`run` serves one ASGI WebSocket connection."""

    __slots__ = (
        "additional_headers",
        "close_timeout",
        "compression",
        "forward_query",
        "max_queue",
        "max_size",
        "open_timeout",
        "override_headers",
        "path",
        "ping_interval",
        "ping_timeout",
        "ssl",
        "subprotocols",
        "trusted",
    )

    def __init__(
        self,
        *,
        path: str | None = None,
        subprotocols: Sequence[str] | None = None,
        forward_query: bool = True,
        additional_headers: HeaderInput | None = None,
        override_headers: HeaderInput | None = None,
        open_timeout: float | None = 10.0,
        max_size: int | None = DEFAULT_MAX_SIZE,
        max_queue: int = 16,
        ping_interval: float | None = 20.0,
        ping_timeout: float | None = 20.0,
        close_timeout: float | None = 5.0,
        compression: str | None = "auto",
        trusted_proxies: TrustedProxies | Iterable[str] | None = None,
        ssl: Any = None,
    ) -> None:
        if max_size is not None and max_size < 1:
            raise ValueError("max_size must be positive or None")
        if max_queue < 1:
            raise ValueError("max_queue must be at least 1")
        if compression not in _COMPRESSION:
            raise ValueError('compression must be "auto", "deflate" or None')
        self.path = path
        self.subprotocols = subprotocols
        self.forward_query = forward_query
        self.additional_headers = additional_headers
        self.override_headers = override_headers
        self.open_timeout = open_timeout
        self.max_size = max_size
        self.max_queue = max_queue
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.close_timeout = close_timeout
        self.compression = compression
        if trusted_proxies is None:
            self.trusted = NO_TRUSTED_PROXIES
        elif isinstance(trusted_proxies, TrustedProxies):
            self.trusted = trusted_proxies
        else:
            self.trusted = TrustedProxies(trusted_proxies)
        self.ssl = ssl

    async def run(self, host: Target, scope: Scope, receive: Receive, send: Send) -> None:
        """Tunnel one connection whose ``websocket.connect`` message is still unread."""
        first = await receive()
        if first["type"] != "websocket.connect":
            return
        upstreams = _upstreams(host, scope)
        target = resource(scope, self.path, self.forward_query)
        headers = upstream_headers(
            scope,
            additional=self.additional_headers,
            override=self.override_headers,
            trusted=self.trusted,
        )
        offered = list(scope.get("subprotocols") or [])
        offer = list(self.subprotocols) if self.subprotocols is not None else offered
        compression = self.compression
        if compression == "auto":  # per hop, mirroring the client's offer
            compression = "deflate" if offers_deflate(scope) else None
        # Frames can pass untouched only when no hop negotiates an extension.
        splice = (scope.get("extensions") or {}).get(SPLICE)
        if splice is not None and (
            compression is not None or offers_extensions(scope) or not splice["ready"]()
        ):
            splice = None
        loop = asyncio.get_running_loop()
        tried: list[str] = []
        failure: HandshakeRefused | UpstreamError | None = None
        for _ in range(_MAX_ATTEMPTS):
            base = upstreams.pick(tried)
            if base is None:
                break
            tried.append(base)
            started = loop.time()
            try:
                url = url_for(base, target)
            except ValueError:  # a misconfigured target: never reveal it to the client
                logger.error("frp_ws: invalid upstream base URL %r", base)
                upstreams.done(base, Outcome.CONNECT_ERROR, 0.0)
                failure = ConnectError()
                continue
            try:
                if splice is not None:
                    up: UpstreamConnection | Opened = await open_upstream(
                        base,
                        target,
                        subprotocols=offer,
                        headers=headers,
                        timeout=self.open_timeout,
                        ssl=self.ssl,
                    )
                else:
                    up = await self._connect(url, offer, headers, compression)
            except HandshakeRefused as exc:
                retry = exc.status in _RETRY_STATUSES
                outcome = Outcome.HTTP_5XX if retry else Outcome.SUCCESS
                upstreams.done(base, outcome, loop.time() - started)
                failure = exc
                if retry:
                    continue
                break
            except UpstreamError as exc:
                upstreams.done(base, exc.outcome, loop.time() - started)
                failure = exc
                continue
            except BaseException:
                upstreams.done(base, Outcome.CLIENT_ABORT, loop.time() - started)
                raise
            outcome = Outcome.CLIENT_ABORT
            try:
                if isinstance(up, Opened):
                    outcome = await self._splice(up, splice, send, offered)
                else:
                    outcome = await self._serve(up, scope, receive, send, offered)
            finally:
                upstreams.done(base, outcome, loop.time() - started)
            return
        await _refuse(scope, send, failure)

    async def _connect(
        self,
        url: str,
        offer: Sequence[str],
        headers: Sequence[tuple[str, str]],
        compression: str | None,
    ) -> UpstreamConnection:
        return await connect(
            url,
            subprotocols=offer or None,
            headers=headers,
            open_timeout=self.open_timeout,
            close_timeout=self.close_timeout,
            max_size=self.max_size,
            max_queue=self.max_queue,
            ping_interval=self.ping_interval,
            ping_timeout=self.ping_timeout,
            compression=compression,
            ssl=self.ssl,
        )

    async def _splice(self, up: Opened, splice: Any, send: Send, offered: Sequence[str]) -> Outcome:
        try:
            accepted = await _accept(send, up.subprotocol, up.response_headers, offered)
        except BaseException:
            up.abort()
            raise
        if not accepted:
            close_before_splice(up, _close.GOING_AWAY)
            return Outcome.CLIENT_ABORT
        relay = Splice(
            max_size=self.max_size,
            close_timeout=self.close_timeout,
            ping_interval=self.ping_interval,
            ping_timeout=self.ping_timeout,
        )
        client = splice["take"](relay.shutdown)
        if client is None:  # the client sent frames before our 101: not a WebSocket client
            close_before_splice(up, _close.GOING_AWAY)
            with contextlib.suppress(*CLIENT_GONE, RuntimeError):
                await send({"type": "websocket.close", "code": 1002})
            return Outcome.CLIENT_ABORT
        relay.start(client, up)
        return await relay.wait()

    async def _serve(
        self,
        up: UpstreamConnection,
        scope: Scope,
        receive: Receive,
        send: Send,
        offered: Sequence[str],
    ) -> Outcome:
        try:
            accepted = await _accept(send, up.subprotocol, up.response_headers, offered)
        except BaseException:
            await up.aborted()
            raise
        if not accepted:
            await close_upstream(up, _close.GOING_AWAY, "")
            return Outcome.CLIENT_ABORT
        try:
            return await Relay(up, receive, send, self.max_size).run()
        except BaseException:  # cancelled (or a bug): drop the upstream, leave nothing running
            await up.aborted()
            raise


async def _accept(
    send: Send, subprotocol: str | None, headers: Sequence[tuple[str, str]], offered: Sequence[str]
) -> bool:
    """Accept the client with the upstream's subprotocol; ``False`` if the client has left.

    A client that left while the upstream was being connected shows as an error of the
    server's ``send`` (older uvicorn: a RuntimeError about the unexpected accept).
    """
    accept = {
        "type": "websocket.accept",
        "subprotocol": subprotocol if subprotocol in offered else None,
        "headers": response_headers(headers),
    }
    try:
        await send(accept)
    except (*CLIENT_GONE, RuntimeError):
        return False
    return True


async def _refuse(
    scope: Scope, send: Send, failure: HandshakeRefused | UpstreamError | None
) -> None:
    """Answer a client whose upstream handshake failed: the upstream's status, 502, 503 or 504."""
    headers: list[tuple[bytes, bytes]]
    if isinstance(failure, HandshakeRefused):
        status, body = failure.status, failure.body
        headers = response_headers(failure.headers)
    else:
        status = failure.status if failure is not None else 503
        message = failure.public_message if failure is not None else "Service Unavailable"
        body = message.encode()
        headers = [(b"content-type", b"text/plain; charset=utf-8")]
    headers = [h for h in headers if h[0] != b"content-length"]
    headers.append((b"content-length", str(len(body)).encode()))
    try:
        if "websocket.http.response" in (scope.get("extensions") or {}):
            # an HTTPStatus (an int): uvicorn's websockets-sansio server hands it to
            # websockets' reject(), which reads ``.value`` on websockets 11 and 12
            start = {"status": http_status(status), "headers": headers}
            await send({"type": "websocket.http.response.start", **start})
            await send({"type": "websocket.http.response.body", "body": body})
        else:
            await send({"type": "websocket.close", "code": _close.refusal_close_code(status)})
    except CLIENT_GONE:
        pass


async def tunnel(host: Target, scope: Scope, receive: Receive, send: Send, **options: Any) -> None:
    """Functional form of :meth:`Tunnel.run`."""
    await Tunnel(**options).run(host, scope, receive, send)
