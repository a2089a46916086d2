"""WebSocket frames on the wire, for the splice (pure logic, RFC 6455 §5; no I/O).

:class:`FrameScanner` reads one direction of a connection whose hops negotiated no extension.
It hands back the bytes of data frames untouched, to be written to the other hop as they come
(client frames stay masked, upstream frames unmasked: what each receiver expects), and stops
at control frames, an oversized message and protocol errors, which the splice handles itself.
"""

from __future__ import annotations

import os
import struct

__all__ = [
    "CLOSE",
    "PING",
    "PONG",
    "Control",
    "FrameScanner",
    "ProtocolViolation",
    "TooBig",
    "close_frame",
    "control_frame",
    "parse_close",
]

CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_DATA = frozenset({CONT, TEXT, BINARY})
_CONTROL = frozenset({CLOSE, PING, PONG})
_BIG_HEADER = struct.Struct("!BBQ")
_MID_HEADER = struct.Struct("!BBH")
#: Data frames up to this size (header included) are passed on whole, never in parts, so that a
#: hop that goes away mid-frame leaves the other hop on a frame boundary, where it can still get
#: a proper close frame.  Longer frames are passed on as they come.
WHOLE_FRAME = 256 * 1024


class Control:
    """A whole control frame (close, ping or pong), its payload unmasked."""

    __slots__ = ("opcode", "payload")

    def __init__(self, opcode: int, payload: bytes) -> None:
        self.opcode = opcode
        self.payload = payload


class TooBig:
    """A data message went over ``max_size``; nothing of the offending frame was passed on."""

    __slots__ = ()


class ProtocolViolation:
    """The peer broke RFC 6455 (reserved bits, masking, opcode or fragmentation)."""

    __slots__ = ("why",)

    def __init__(self, why: str) -> None:
        self.why = why


Event = bytes | Control | TooBig | ProtocolViolation


def _unmask(payload: bytes, key: bytes) -> bytes:
    if not payload:
        return payload
    n = len(payload)
    mask = int.from_bytes((key * (n // 4 + 1))[:n], "big")
    return (int.from_bytes(payload, "big") ^ mask).to_bytes(n, "big")


class FrameScanner:
    """One direction's frames: ``feed(data)`` returns what to pass on and what to act on.

    ``masked`` is whether the sender must mask (a client); ``limit`` is ``max_size`` (``None``
    for none).  Data frame bytes come back as ``bytes`` spans, possibly ending inside a frame;
    :attr:`at_boundary` says whether what was passed on so far ends on a frame boundary (where a
    control frame of our own may be written to the same receiver).  After a
    :class:`TooBig` or :class:`ProtocolViolation` the scanner ignores everything.
    """

    __slots__ = (
        "_in_message",
        "_left",
        "_limit",
        "_masked",
        "_need",
        "_pending",
        "_size",
        "dead",
    )

    def __init__(self, *, masked: bool, limit: int | None) -> None:
        self._masked = masked
        self._limit = limit
        self._pending = bytearray()  # an incomplete header, control frame or short frame
        self._need = 0  # how long _pending must grow before it is worth scanning again
        self._left = 0  # payload bytes of the current data frame still to pass on
        self._in_message = False  # a fragmented data message is in progress
        self._size = 0  # bytes of the current data message so far
        self.dead = False

    @property
    def at_boundary(self) -> bool:
        """Whether the bytes passed on so far end on a frame boundary."""
        return self._left == 0

    def feed(self, data: bytes) -> list[Event]:
        """Scan ``data``; the events in stream order."""
        if self.dead:
            return []
        if self._pending:
            self._pending += data
            if len(self._pending) < self._need:
                return []
            data = bytes(self._pending)
            self._pending.clear()
        n = len(data)
        left = self._left
        if left >= n:  # all of it is payload of the frame being passed on
            self._left = left - n
            return [data]
        out: list[Event] = []
        pos = left
        start = 0
        need = 0
        self._left = 0
        while pos < n:
            if n - pos < 2:
                break
            b0 = data[pos]
            b1 = data[pos + 1]
            length = b1 & 0x7F
            if length < 126:
                head = 2
            elif length == 126:
                if n - pos < 4:
                    break
                length = _MID_HEADER.unpack_from(data, pos)[2]
                head = 4
            else:
                if n - pos < 10:
                    break
                length = _BIG_HEADER.unpack_from(data, pos)[2]
                head = 10
            if b1 & 0x80:
                head += 4
            opcode = b0 & 0x0F
            why = self._check(b0, b1, opcode, length)
            if why:
                return self._fail(out, data, start, pos, ProtocolViolation(why))
            end = pos + head + length
            if opcode >= CLOSE:
                if end > n:
                    need = end - pos
                    break
                if pos > start:
                    out.append(data[start:pos])
                payload = data[pos + head : end]
                if self._masked:
                    payload = _unmask(payload, data[pos + head - 4 : pos + head])
                out.append(Control(opcode, payload))
                pos = start = end
                continue
            if end > n and end - pos <= WHOLE_FRAME:  # a short frame: wait for all of it
                need = end - pos
                break
            if opcode != CONT:
                self._size = 0
            self._size += length
            if self._limit is not None and self._size > self._limit:
                return self._fail(out, data, start, pos, TooBig())
            self._in_message = not b0 & 0x80
            if end > n:
                self._left = end - n
                pos = n
                break
            pos = end
        if pos > start:
            out.append(data if start == 0 and pos == n else data[start:pos])
        if pos < n:
            self._pending += data[pos:]
            self._need = need
        return out

    def _check(self, b0: int, b1: int, opcode: int, length: int) -> str:
        if b0 & 0x70:
            return "reserved bits set"
        if bool(b1 & 0x80) != self._masked:
            return "wrong masking"
        if length >> 63:
            return "invalid frame length"  # RFC 6455 §5.2: the most significant bit is 0
        if opcode in _CONTROL:
            if not b0 & 0x80 or length > 125:
                return "invalid control frame"
        elif opcode not in _DATA:
            return "unknown opcode"
        elif (opcode == CONT) != self._in_message:
            return "invalid fragmentation"
        return ""

    def _fail(
        self, out: list[Event], data: bytes, start: int, pos: int, event: Event
    ) -> list[Event]:
        if pos > start:
            out.append(data[start:pos])
        out.append(event)
        self.dead = True
        self._left = 0
        self._pending.clear()
        return out


def control_frame(opcode: int, payload: bytes, *, mask: bool) -> bytes:
    """A control frame (payload at most 125 bytes), masked with a fresh key when ``mask``."""
    if not mask:
        return bytes((0x80 | opcode, len(payload))) + payload
    key = os.urandom(4)
    return bytes((0x80 | opcode, 0x80 | len(payload))) + key + _unmask(payload, key)


def close_frame(code: int | None, reason: str, *, mask: bool) -> bytes:
    """A close frame; ``code`` ``None`` gives an empty one (the peer sees 1005)."""
    payload = b"" if code is None else struct.pack("!H", code) + reason.encode("utf-8")
    return control_frame(CLOSE, payload, mask=mask)


def parse_close(payload: bytes) -> tuple[int | None, str] | None:
    """``(code, reason)`` of a close frame (``(None, "")`` when empty); ``None`` if invalid."""
    if not payload:
        return None, ""
    if len(payload) < 2:
        return None
    code = struct.unpack_from("!H", payload)[0]
    try:
        reason = payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        return None
    if not (1000 <= code <= 4999) or code in (1004, 1005, 1006, 1015) or 1016 <= code < 3000:
        return None
    return code, reason
