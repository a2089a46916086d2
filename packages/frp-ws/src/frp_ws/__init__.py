"""frp_ws: a transparent WebSocket tunnel for ASGI, over websockets 11 to 17."""

from .__about__ import __version__ as __version__
from ._api import WebSocketProxy, proxy_pass_websocket
from ._tunnel import DEFAULT_MAX_SIZE

__all__ = ["DEFAULT_MAX_SIZE", "WebSocketProxy", "proxy_pass_websocket"]
