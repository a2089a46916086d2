"""The garbage collector's first threshold in a proxy process.

CPython collects its youngest generation every 700 net allocations of tracked objects (2,000
from 3.13).  A proxy under load holds the objects of every request in flight (coroutines,
frames' dicts, header lists, the framework's request objects), so each collection walks and
promotes thousands of live objects, and the promoted ones trigger full collections that walk
the whole heap: in the Quick Start gateway at 64 connections, about 15 % of the CPU and the
slowest 1 % of requests (a full collection of a FastAPI process takes ~20 ms).  A higher first
threshold makes collections rarer; garbage with reference cycles, which the proxy does not
make per request, waits a little longer.

When frp-core makes its first upstream client or engine it raises the threshold (never lowers
it, leaves a disabled collector alone); :func:`tune_gc` applies another value at once, or
opts out.
"""

from __future__ import annotations

import gc
import logging

__all__ = ["GC_THRESHOLD", "apply_gc_policy", "tune_gc"]

logger = logging.getLogger("frp_core")

#: The first-generation threshold frp-core sets by default.
GC_THRESHOLD = 10_000

_policy: int | None = GC_THRESHOLD
#: ``(threshold set by frp-core, the one it replaced)`` while in force.
_applied: tuple[int, int] | None = None


def tune_gc(threshold: int | None = GC_THRESHOLD) -> None:
    """Set the garbage collector's first-generation threshold for this proxy process.

    frp-core raises it to 10,000 by itself when it makes its first upstream client or engine;
    call this to choose another value or to apply it at once (a WebSocket-only gateway makes
    no engine).  It never lowers a higher threshold and leaves a disabled collector alone.
    ``None`` opts out: nothing is changed, and a threshold frp-core already raised goes back
    to what it was (unless something else changed it since).  See ``docs/frp-core.md``.
    """
    global _policy
    if threshold is not None and (type(threshold) is not int or threshold < 1):
        raise ValueError("threshold must be a positive int or None")
    _policy = threshold
    _restore()
    apply_gc_policy()


def apply_gc_policy() -> None:
    """Apply the chosen threshold once (called when an engine or client is made)."""
    global _applied
    if _applied is not None or _policy is None or not gc.isenabled():
        return
    first, second, third = gc.get_threshold()
    if 0 < first < _policy:
        gc.set_threshold(_policy, second, third)
        _applied = (_policy, first)
        logger.debug("garbage collector threshold %d -> %d (frp_core.tune_gc)", first, _policy)


def _restore() -> None:
    global _applied
    if _applied is None:
        return
    ours, theirs = _applied
    _applied = None
    first, second, third = gc.get_threshold()
    if first == ours:  # nobody changed it since
        gc.set_threshold(theirs, second, third)
