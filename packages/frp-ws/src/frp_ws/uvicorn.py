"""``SpliceProtocol``: uvicorn's websockets-sansio protocol, plus the splice extension.

``uvicorn.run(app, ws="frp_ws.uvicorn:SpliceProtocol")`` (uvicorn 0.35 or later).  Every WebSocket
app runs as under ``ws="websockets-sansio"``; a tunnel may in addition take the client's socket
over once it has accepted (the :data:`~frp_ws._splice.SPLICE` extension), and then relays
frames without the server parsing them into ASGI messages.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

try:
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
except ImportError as exc:  # no uvicorn, or one older than 0.35
    raise ImportError(
        "frp_ws.uvicorn needs uvicorn 0.35 or later: pip install 'frp-ws[uvicorn]'"
    ) from exc

from ._compat import http_status
from ._splice import SPLICE, ClientSide

__all__ = ["SpliceProtocol"]


class SpliceProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O WebSocket protocol that can hand an accepted connection over."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._late = False  # bytes arrived after the handshake request
        self._shutdown: Callable[[], None] | None = None
        self._reject = self.conn.reject
        self.conn.reject = self._refusal  # type: ignore[method-assign]

    def _refusal(self, status: Any, text: str) -> Any:
        """``ServerProtocol.reject`` as some uvicorn versions (0.50) use it for the ASGI
        ``websocket.http.response``: they pass an int, which websockets 11-12 cannot take, and
        then add the app's headers, so the response's own length and type would repeat."""
        response = self._reject(http_status(int(status)), text)
        given = self.initial_response[1] if self.initial_response is not None else []
        names = {name.lower() for name, _ in given}
        for name in ("Content-Length", "Content-Type"):
            if name.lower() in names:
                del response.headers[name]
        return response

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        if self.response.status_code == 101:
            self.scope["extensions"][SPLICE] = {"ready": self._ready, "take": self._take}

    def data_received(self, data: bytes) -> None:
        if self.handshake_initiated:
            self._late = True
        super().data_received(data)

    def shutdown(self) -> None:
        if self._shutdown is not None:
            self._shutdown()
        else:
            super().shutdown()

    def _ready(self) -> bool:
        """Whether nothing but the handshake was read: a takeover would lose no byte."""
        # Attributes that not every uvicorn version has are read with a default.
        reader = getattr(self.conn, "reader", None)
        return (
            not self._late
            and not getattr(self, "disconnected", False)
            and not self.close_sent
            and self.queue.empty()
            and not getattr(self, "frames", ())
            and not getattr(reader, "buffer", b"")
            and not self.transport.is_closing()
        )

    def _take(self, shutdown: Callable[[], None]) -> ClientSide | None:
        """After the accept: the connection, which this protocol no longer reads."""
        if not self.handshake_complete or not self._ready():
            return None
        stop_keepalive = getattr(self, "stop_keepalive", None)  # uvicorn 0.36+ pings
        if stop_keepalive is not None:
            stop_keepalive()
        self._shutdown = shutdown
        return ClientSide(
            self.transport,
            ping_interval=getattr(self, "ping_interval", None),
            ping_timeout=getattr(self, "ping_timeout", None),
            max_size=self.config.ws_max_size,
            lost=self.connection_lost,
        )
