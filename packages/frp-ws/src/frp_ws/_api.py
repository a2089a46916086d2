"""Public entry points: ``proxy_pass_websocket`` (0.4.0 signature) and an ASGI app form."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from frp_core._headers import TrustedProxies

from ._relay import Receive, Send
from ._request import HeaderInput
from ._tunnel import DEFAULT_MAX_SIZE, Scope, Target, Tunnel

__all__ = ["WebSocketProxy", "proxy_pass_websocket"]


async def proxy_pass_websocket(
    websocket: Any,
    host: Target,
    path: str | None = None,
    subprotocols: Sequence[str] | None = None,
    forward_query: bool = True,
    additional_headers: HeaderInput | None = None,
    override_headers: HeaderInput | None = None,
    timeout: float | None = 10.0,
    *,
    max_size: int | None = DEFAULT_MAX_SIZE,
    max_queue: int = 16,
    ping_interval: float | None = 20.0,
    ping_timeout: float | None = 20.0,
    close_timeout: float | None = 5.0,
    compression: str | None = "auto",
    trusted_proxies: TrustedProxies | Iterable[str] | None = None,
    ssl: Any = None,
) -> None:
    """Tunnel a not yet accepted WebSocket to ``host`` until either side closes.

    ``websocket`` is a Starlette/FastAPI ``WebSocket`` (only ``scope``, ``receive`` and ``send``
    are used); ``host`` a base URL (``http(s)://`` or ``ws(s)://``, optional path prefix) or an
    ``frp_core`` ``Upstreams``/``Router``.  The upstream is connected first, offering the
    client's subprotocols; the client is then accepted with the upstream's choice.  A refused
    handshake reaches the client as the upstream's HTTP status and body (502 unreachable, 504
    ``timeout``).  See ``docs/frp-ws.md`` for every option and the close-code mapping.
    """
    await Tunnel(
        path=path,
        subprotocols=subprotocols,
        forward_query=forward_query,
        additional_headers=additional_headers,
        override_headers=override_headers,
        open_timeout=timeout,
        max_size=max_size,
        max_queue=max_queue,
        ping_interval=ping_interval,
        ping_timeout=ping_timeout,
        close_timeout=close_timeout,
        compression=compression,
        trusted_proxies=trusted_proxies,
        ssl=ssl,
    ).run(host, websocket.scope, websocket.receive, websocket.send)


class WebSocketProxy:
    """A pure ASGI app tunnelling every WebSocket connection to ``upstream``.

    ``WebSocketProxy("http://backend:8000", max_size=None)``; keyword options as for
    :func:`proxy_pass_websocket` (``timeout``, also accepted as ``open_timeout``).  Mount it
    with ``app.mount("/ws", WebSocketProxy(...))``: the upstream sees the full ``raw_path``.
    Non-WebSocket requests are answered 404.
    """

    def __init__(self, upstream: Target, **options: Any) -> None:
        if "timeout" in options:
            if "open_timeout" in options:
                raise TypeError("give timeout or open_timeout, not both")
            options["open_timeout"] = options.pop("timeout")
        self.upstream = upstream
        self.tunnel = Tunnel(**options)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await self.tunnel.run(self.upstream, scope, receive, send)
        elif scope["type"] == "http":
            body = b"Not Found"
            headers = [(b"content-type", b"text/plain"), (b"content-length", b"9")]
            await send({"type": "http.response.start", "status": 404, "headers": headers})
            await send({"type": "http.response.body", "body": body})
