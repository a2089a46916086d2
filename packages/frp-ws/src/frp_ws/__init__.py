"""frp_ws: a transparent WebSocket tunnel for ASGI, over websockets 11 to 17."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .__about__ import __version__ as __version__
from ._api import WebSocketProxy, proxy_pass_websocket
from ._tunnel import DEFAULT_MAX_SIZE

if TYPE_CHECKING:
    from ._uvicorn import SpliceProtocol

__all__ = ["DEFAULT_MAX_SIZE", "SpliceProtocol", "WebSocketProxy", "proxy_pass_websocket"]


def __getattr__(name: str) -> Any:
    # SpliceProtocol imports uvicorn: only when asked for (``ws="frp_ws:SpliceProtocol"``).
    if name == "SpliceProtocol":
        from ._uvicorn import SpliceProtocol

        return SpliceProtocol
    raise AttributeError(f"module 'frp_ws' has no attribute {name!r}")
