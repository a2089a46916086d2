"""The seed's ``LoadBalancer.proxy_pass``/``proxy_pass_websocket``, on frp-core and frp-ws."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from frp_core import proxy_pass as _core_proxy_pass

if TYPE_CHECKING:
    from starlette.responses import Response

from ._attempts import Attempts

WS_MISSING = (
    "LoadBalancer.proxy_pass_websocket needs the frp-ws package, which is not installed: "
    "pip install 'frp-balance[ws]' (or pip install frp-ws)"
)


class Proxying:
    """``proxy_pass`` and ``proxy_pass_websocket`` for anything with ``route(scope)``."""

    def route(self, scope: Mapping[str, Any]) -> Attempts:
        raise NotImplementedError

    async def proxy_pass(
        self,
        req: Any,
        path: str | None = None,
        timeout: Any = 60.0,
        forward_query: bool = True,
        additional_headers: Mapping[str, str] | None = None,
        override_headers: Mapping[str, str] | None = None,
        override_body: bytes | None = None,
        method: str | None = None,
        override_host: str | None = None,
        **options: Any,
    ) -> Response:
        """Proxy ``req`` to a target chosen per attempt, with failover (``frp_core.proxy_pass``).

        The parameters are those of ``frp_core.proxy_pass``; no healthy target gives 503 with
        ``Retry-After``.
        """
        return await _core_proxy_pass(
            req,
            self.route(req.scope),
            path,
            timeout=timeout,
            forward_query=forward_query,
            additional_headers=additional_headers,
            override_headers=override_headers,
            override_body=override_body,
            method=method,
            override_host=override_host,
            **options,
        )

    async def proxy_pass_websocket(
        self,
        websocket: Any,
        path: str | None = None,
        subprotocols: list[str] | None = None,
        forward_query: bool = True,
        additional_headers: Mapping[str, str] | None = None,
        override_headers: Mapping[str, str] | None = None,
        timeout: float = 10.0,
        **options: Any,
    ) -> None:
        """Tunnel ``websocket`` to a chosen target through ``frp_ws.proxy_pass_websocket``.

        Raises ``ImportError`` naming frp-ws when it is not installed.
        """
        try:
            frp_ws = importlib.import_module("frp_ws")
            tunnel = frp_ws.proxy_pass_websocket
        except (ImportError, AttributeError) as exc:
            raise ImportError(WS_MISSING) from exc
        await tunnel(
            websocket,
            self.route(websocket.scope),
            path,
            subprotocols=subprotocols,
            forward_query=forward_query,
            additional_headers=additional_headers,
            override_headers=override_headers,
            timeout=timeout,
            **options,
        )
