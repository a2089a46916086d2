"""The splice: frames passed between the client's socket and the upstream's, below ASGI.

Used when the server hands over the client's connection after the accept (the
:data:`SPLICE` ASGI extension, offered by :class:`frp_ws.SpliceProtocol` under uvicorn) and
neither hop negotiated an extension.  Data frames go through as they arrive, never
reassembled; control frames stay on their hop (each hop answers its own pings and runs its
own keepalive); close frames are mapped as the message relay maps them (:mod:`._close`);
``max_size`` is checked from the frame headers.  Each hop's reading pauses while the other
hop's write buffer is full.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

from frp_core._routing import Outcome

from . import _close
from ._frames import (
    CLOSE,
    PING,
    PONG,
    Control,
    FrameScanner,
    ProtocolViolation,
    TooBig,
    close_frame,
    control_frame,
    parse_close,
)
from ._handshake import Opened

__all__ = ["SPLICE", "ClientSide", "Splice"]

#: The ASGI extension (in ``scope["extensions"]``) through which a server offers the splice:
#: ``{"ready": () -> bool, "take": (shutdown) -> ClientSide | None}``.
SPLICE = "frp.websocket.splice"

PROTOCOL_ERROR = 1002
_KEEPALIVE_REASON = "keepalive ping timeout"


class ClientSide:
    """What the server hands over: the client's socket and its hop's settings."""

    __slots__ = ("lost", "max_size", "ping_interval", "ping_timeout", "transport")

    def __init__(
        self,
        transport: asyncio.Transport,
        *,
        ping_interval: float | None,
        ping_timeout: float | None,
        max_size: int | None,
        lost: Callable[[Exception | None], None],
    ) -> None:
        self.transport = transport
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.max_size = max_size
        self.lost = lost


class _Hop(asyncio.Protocol):
    """One hop's socket: scans what it reads, writes what the other hop passes on."""

    def __init__(
        self,
        splice: Splice,
        *,
        upstream: bool,
        limit: int | None,
        ping_interval: float | None,
        ping_timeout: float | None,
    ) -> None:
        self.splice = splice
        self.upstream = upstream
        self.mask = upstream  # we are the upstream's client: our frames to it are masked
        self.scanner = FrameScanner(masked=not upstream, limit=limit)
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.other: _Hop = self
        self.pending: list[bytes] = []  # our control frames, waiting for a frame boundary
        self.in_feed = False
        self.close_sent = False  # a close frame of ours is written or queued
        self.close_received = False
        self.failing = False  # close the socket once our close frame is out (RFC 6455 §7.1.7)
        self.gone = False
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.ping_payload = b""
        self.timer: asyncio.TimerHandle | None = None  # keepalive, then close timeout
        self.write_paused = False  # our peer is not reading what we write
        self.pong_owed: bytes | None = None  # the last ping's payload, answered on resume

    # asyncio.Protocol
    def data_received(self, data: bytes) -> None:
        other = self.other
        self.in_feed = True
        try:
            for event in self.scanner.feed(data):
                if isinstance(event, bytes):
                    # After our close to the other hop, only the rest of a frame in flight.
                    if not other.gone and (not other.close_sent or other.pending):
                        other.transport.write(event)
                else:
                    self.splice.event(self, event)
                    if self.close_received:
                        break  # nothing may follow a close frame
        finally:
            self.in_feed = False
        if other.pending and self.scanner.at_boundary:
            other.flush()

    def eof_received(self) -> bool | None:
        return None  # close the transport: connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.gone = True
        self.pending.clear()
        self.cancel_timer()
        self.splice.lost(self)

    def pause_writing(self) -> None:
        self.write_paused = True
        if not self.other.gone:
            self.other.transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if not self.other.gone:
            self.other.transport.resume_reading()
        owed, self.pong_owed = self.pong_owed, None
        if owed is not None and not self.close_sent:
            self.send_control(control_frame(PONG, owed, mask=self.mask))

    # writing our own frames
    def send_control(self, frame: bytes) -> None:
        """Write ``frame`` now if the other hop's frames to us are at a boundary, else later."""
        if self.gone:
            return
        if self.other.in_feed or self.other.scanner.at_boundary:
            self.transport.write(frame)
        else:
            self.pending.append(frame)

    def flush(self) -> None:
        if not self.gone:
            self.transport.write(b"".join(self.pending))
            if self.close_sent and (self.close_received or self.failing):
                self.transport.close()
        self.pending.clear()

    def fail(self, code: int, reason: str) -> None:
        """Fail the connection: our close frame, then the socket closed without waiting."""
        self.failing = True
        self.send_close(code, reason)

    def send_close(self, code: int, reason: str) -> None:
        """Start (or answer) the closing handshake on this hop; bounded by close_timeout."""
        if self.close_sent or self.gone:
            return
        self.close_sent = True
        self.send_control(close_frame(code, reason, mask=self.mask))
        self.cancel_timer()
        if (self.close_received or self.failing) and not self.pending:
            self.transport.close()  # answered, or failed: no closing handshake to wait for
        elif self.splice.close_timeout is not None:
            loop = asyncio.get_running_loop()
            self.timer = loop.call_later(self.splice.close_timeout, self.transport.abort)

    # keepalive
    def start_keepalive(self) -> None:
        if self.ping_interval is not None and self.ping_interval > 0:
            loop = asyncio.get_running_loop()
            self.timer = loop.call_later(self.ping_interval, self.ping)

    def ping(self) -> None:
        self.timer = None
        if self.close_sent or self.gone:
            return
        self.ping_payload = os.urandom(4)
        self.send_control(control_frame(PING, self.ping_payload, mask=self.mask))
        if self.ping_timeout is not None:
            loop = asyncio.get_running_loop()
            self.timer = loop.call_later(self.ping_timeout, self.keepalive_failed)
        else:
            self.start_keepalive()

    def pong(self, payload: bytes) -> None:
        if self.ping_payload and payload == self.ping_payload and not self.close_sent:
            self.ping_payload = b""
            self.cancel_timer()
            self.start_keepalive()

    def keepalive_failed(self) -> None:
        self.timer = None
        self.splice.keepalive_failed(self)

    def cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


class Splice:
    """Both hops of one tunnel; :attr:`done` gets the :class:`Outcome` once both are closed."""

    def __init__(
        self,
        *,
        max_size: int | None,
        close_timeout: float | None,
        ping_interval: float | None,
        ping_timeout: float | None,
    ) -> None:
        self.max_size = max_size
        self.close_timeout = close_timeout
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.done: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self.bad_gateway = False
        self.client: _Hop | None = None
        self.upstream: _Hop | None = None
        self.client_lost: Callable[[Exception | None], None] | None = None

    def start(self, side: ClientSide, opened: Opened) -> None:
        """Take over both sockets; frames the upstream sent after its 101 go out first."""
        limit = self.max_size
        if side.max_size is not None:
            limit = side.max_size if limit is None else min(limit, side.max_size)
        client = _Hop(
            self,
            upstream=False,
            limit=limit,
            ping_interval=side.ping_interval,
            ping_timeout=side.ping_timeout,
        )
        upstream = _Hop(
            self,
            upstream=True,
            limit=self.max_size,
            ping_interval=self.ping_interval,
            ping_timeout=self.ping_timeout,
        )
        client.other, upstream.other = upstream, client
        client.transport, upstream.transport = side.transport, opened.transport
        self.client, self.upstream, self.client_lost = client, upstream, side.lost
        side.transport.set_protocol(client)
        opened.transport.set_protocol(upstream)
        client.start_keepalive()
        upstream.start_keepalive()
        handshake = opened.handshake
        for data in handshake.after:
            upstream.data_received(data)
        handshake.after.clear()
        if handshake.lost:
            upstream.connection_lost(None)
        elif not upstream.gone and not client.write_paused:  # else resumed by the client hop
            opened.transport.resume_reading()

    # what the hops report
    def event(self, hop: _Hop, event: Control | TooBig | ProtocolViolation) -> None:
        other = hop.other
        if type(event) is Control:
            if event.opcode == PING:
                if hop.write_paused:
                    # a peer that pings but does not read: answer only its last ping, once it
                    # reads again (RFC 6455 §5.5.3), so that pongs cannot pile up in memory
                    hop.pong_owed = event.payload
                elif not hop.close_sent:
                    hop.send_control(control_frame(PONG, event.payload, mask=hop.mask))
            elif event.opcode == PONG:
                hop.pong(event.payload)
            elif event.opcode == CLOSE:
                self._close_received(hop, parse_close(event.payload))
        elif type(event) is TooBig:  # the scanner reads no more: fail the hop
            hop.fail(_close.TOO_BIG, _close.TOO_BIG_REASON)
            other.send_close(_close.TOO_BIG, _close.TOO_BIG_REASON)
        else:
            self._violation(hop)

    def _close_received(self, hop: _Hop, close: tuple[int | None, str] | None) -> None:
        if close is None:
            self._violation(hop)
            return
        hop.close_received = True
        hop.scanner.dead = True
        code, reason = close
        if hop.close_sent:  # the answer to our close: the hop is done
            hop.cancel_timer()
            hop.transport.close()
            return
        hop.send_close(code if code is not None else _close.NORMAL, reason)
        if hop.upstream:
            received = code if code is not None else _close.NO_STATUS
            self.client_close(*_close.from_upstream(received, reason))
        else:
            self.upstream_close(*_close.from_client(code, reason))

    def _violation(self, hop: _Hop) -> None:
        hop.scanner.dead = True
        hop.fail(PROTOCOL_ERROR, "")
        if hop.upstream:
            self.client_close(_close.BAD_GATEWAY, _close.BAD_GATEWAY_REASON)
        else:
            self.upstream_close(PROTOCOL_ERROR, "")

    def keepalive_failed(self, hop: _Hop) -> None:
        hop.send_close(_close.INTERNAL_ERROR, _KEEPALIVE_REASON)
        hop.transport.abort()
        if hop.upstream:
            self.client_close(_close.BAD_GATEWAY, _close.BAD_GATEWAY_REASON)
        else:
            self.upstream_close(_close.INTERNAL_ERROR, "")

    def lost(self, hop: _Hop) -> None:
        other = hop.other
        if not other.gone:  # it may have been paused for us: its close must be read
            other.transport.resume_reading()
        if not hop.close_sent and not hop.close_received:  # lost without a closing handshake
            if hop.upstream:
                self.client_close(_close.BAD_GATEWAY, _close.BAD_GATEWAY_REASON)
            else:
                self.upstream_close(*_close.from_client(_close.ABNORMAL, ""))
        if not other.gone and other.pending:
            # lost in the middle of a frame it was passing on: the other hop can never get a
            # well-formed close frame, so its connection is dropped without one, as nginx does
            other.pending.clear()
            other.transport.abort()
        if not hop.upstream and self.client_lost is not None:
            lost, self.client_lost = self.client_lost, None
            lost(None)
        both_gone = all(h is not None and h.gone for h in (self.client, self.upstream))
        if both_gone and not self.done.done():
            self.done.set_result(Outcome.RESET if self.bad_gateway else Outcome.SUCCESS)

    def client_close(self, code: int, reason: str) -> None:
        if code == _close.BAD_GATEWAY:
            self.bad_gateway = True
        if self.client is not None:
            self.client.send_close(code, reason)

    def upstream_close(self, code: int, reason: str) -> None:
        if self.upstream is not None:
            self.upstream.send_close(code, reason)

    # what the server and the tunnel ask for
    def shutdown(self) -> None:
        """The server is stopping: 1012 to the client (as uvicorn says it), 1001 upstream."""
        self.client_close(_close.SERVICE_RESTART, "")
        self.upstream_close(_close.GOING_AWAY, "")

    def abort(self) -> None:
        """The tunnel was cancelled: 1011 to the client, the upstream connection dropped."""
        self.client_close(_close.INTERNAL_ERROR, "")
        if self.client is not None and not self.client.gone:
            self.client.transport.close()
        if self.upstream is not None and not self.upstream.gone:
            self.upstream.transport.abort()

    async def wait(self) -> Outcome:
        """Until both hops are closed; on cancellation, :meth:`abort` first."""
        try:
            return await asyncio.shield(self.done)
        except BaseException:
            self.abort()
            raise


def close_before_splice(opened: Opened, code: int) -> None:
    """Close an upstream that will not be spliced (the client left before the accept)."""
    opened.transport.write(close_frame(code, "", mask=True))
    opened.transport.close()
