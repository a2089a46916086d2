"""``ReverseProxy``: the proxy as a pure ASGI app, mountable under a prefix."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import httpx

from ._client import (
    aclose_default_sender,
    make_engine,
    sender_for_client,
    sender_for_scope,
)
from ._config import Limits
from ._exchange import Scope, open_exchange
from ._headers import HeaderInput, TrustedProxies
from ._incoming import Receive
from ._proxy import build_options
from ._replies import ErrorReply
from ._response import Send, relay, send_error
from ._routing import Router, Upstreams
from ._upstream import Sender, parse_base

__all__ = ["ReverseProxy"]


class ReverseProxy:
    """An ASGI app forwarding every HTTP request to ``upstream``.

    ``ReverseProxy("http://backend:8080")``, or with a ``Router``/``Upstreams`` for load
    balancing.  Mounted (``app.mount("/api", ReverseProxy(...))``), the mount prefix
    (``root_path``) is stripped from the raw path byte-exact.  The upstream client is
    ``client`` if given, else the enclosing app's ``create_httpx_client`` client, else a
    default engine per event loop (closed at lifespan shutdown when this app is the top app);
    with ``limits``, an engine of its own with those pool limits.
    WebSocket connections are refused (close 1000 before accept, i.e. HTTP 403); frp-ws adds
    WebSocket proxying.
    """

    def __init__(
        self,
        upstream: str | Router | Upstreams,
        *,
        client: httpx.AsyncClient | None = None,
        limits: Limits | None = None,
        timeout: Any = 60.0,
        forward_query: bool = True,
        additional_headers: HeaderInput | None = None,
        override_host: str | None = None,
        trusted_proxies: TrustedProxies | Iterable[str] | None = None,
        forwarded: bool = False,
        via: str | None = "frp",
        preserve_host: bool = False,
        upstream_date_server: bool = False,
    ) -> None:
        if isinstance(upstream, str):
            parse_base(upstream)  # fail at construction on a bad URL
        self.upstream = upstream
        self.client = client
        self.limits = limits
        self._own: Sender | None = None  # the engine made for ``limits``
        self.options = build_options(
            timeout=timeout,
            forward_query=forward_query,
            additional_headers=additional_headers,
            override_host=override_host,
            trusted_proxies=trusted_proxies,
            forwarded=forwarded,
            via=via,
            preserve_host=preserve_host,
            upstream_date_server=upstream_date_server,
            strip_root=True,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "websocket":
            await send({"type": "websocket.close", "code": 1000})
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = self.client
        if client is not None:
            sender = sender_for_client(client)
        elif self.limits is not None:
            sender = self._own or self._make_own()
        else:
            sender = sender_for_scope(scope)
        result = await open_exchange(scope, receive, self.upstream, None, self.options, sender)
        if result is None:
            return  # the client left while its body was read
        if isinstance(result, ErrorReply):
            await send_error(result, send, receive)
            return
        await relay(result, receive, send, result.status, result.headers)

    def _make_own(self) -> Sender:
        self._own = make_engine(limits=self.limits)
        return self._own

    async def aclose(self) -> None:
        """Close the engine this app made for its ``limits`` (if any)."""
        own, self._own = self._own, None
        if own is not None:
            await own.aclose()

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        for _ in range(2):
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await aclose_default_sender()
                await send({"type": "lifespan.shutdown.complete"})
                return
