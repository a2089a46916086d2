"""frp_ws: a transparent WebSocket tunnel for ASGI, over websockets 11 to 17.

``frp_ws.uvicorn.SpliceProtocol`` (a separate module: it imports uvicorn) lets the tunnel
take an accepted connection over under uvicorn: ``uvicorn.run(app,
ws="frp_ws.uvicorn:SpliceProtocol")``.
"""

from .__about__ import __version__ as __version__
from ._api import WebSocketProxy, proxy_pass_websocket
from ._tunnel import DEFAULT_MAX_SIZE

__all__ = ["DEFAULT_MAX_SIZE", "WebSocketProxy", "proxy_pass_websocket"]
