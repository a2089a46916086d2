"""The read buffers an engine's connections share.

Heads, small bodies and chunked bodies are read into one shared buffer, and the parser copies
the body out.  A long ``Content-Length`` body is read instead into a buffer that becomes the
body chunk as it is (a ``bytearray``), so its bytes are copied once, by the kernel, on their
way in.  Such a buffer is lent again only when nothing else refers to it any more (the
client's transport has written it, and nobody kept it): that is what its reference count says,
so these buffers are used on CPython only.
"""

from __future__ import annotations

import sys

__all__ = ["Chunk", "Lent", "ReadBuffers"]

#: A response body chunk: ``bytes``, or a lent buffer handed out as it is.
Chunk = bytes | bytearray

#: Spare body buffers an engine keeps for reuse (each ``read_size`` bytes).
MAX_SPARE = 4

#: A lent buffer, and a view of it to read into.
Lent = tuple[bytearray, memoryview]


class ReadBuffers:
    """The shared read buffer, and the body buffers lent one read at a time."""

    __slots__ = ("_spare", "_unused", "direct", "shared", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self.shared = memoryview(bytearray(size))
        self._spare: list[Lent] = []
        #: whether long bodies are read into buffers of their own: CPython with its GIL only,
        #: where a reference count is exact (not the free-threaded build's deferred counts)
        gil = getattr(sys, "_is_gil_enabled", lambda: True)()
        self.direct = sys.implementation.name == "cpython" and gil
        #: the reference count of a spare buffer nobody else refers to
        self._unused = _refs(_entry(1))

    def lend(self) -> Lent:
        """A buffer of ``size`` bytes that nothing else refers to, and a view of it."""
        unused = self._unused
        for entry in self._spare:
            if _refs(entry) == unused:
                return entry
        entry = _entry(self.size)
        if len(self._spare) < MAX_SPARE:
            self._spare.append(entry)
        return entry


def _entry(size: int) -> Lent:
    buf = bytearray(size)
    return buf, memoryview(buf)


def _refs(entry: Lent) -> int:
    return sys.getrefcount(entry[0])
