"""Peak-sensitive, time-decayed EWMA of request latency (Finagle/Linkerd "peak EWMA")."""

from __future__ import annotations

import math


class PeakEwma:
    """A latency estimate in seconds that jumps up at once and comes down over ``tau`` seconds.

    A sample above the estimate replaces it (peak); a lower one blends in with weight
    ``1 - exp(-dt/tau)`` where ``dt`` is the time since the previous sample, so the estimate
    follows wall-clock time, not request rate.  While no sample arrives the estimate decays
    toward zero, so a target penalised long ago is tried again.
    """

    __slots__ = ("stamp", "tau", "value")

    def __init__(self, tau: float = 10.0) -> None:
        if tau <= 0:
            raise ValueError("tau must be positive")
        self.tau = tau
        self.value: float | None = None
        self.stamp = 0.0

    def observe(self, sample: float, now: float) -> None:
        """Add one latency sample (seconds) taken at ``now``."""
        sample = max(sample, 0.0)
        if self.value is None or sample >= self.value:
            self.value = sample
        else:
            w = math.exp(-max(now - self.stamp, 0.0) / self.tau)
            self.value = self.value * w + sample * (1.0 - w)
        self.stamp = now

    def get(self, now: float) -> float | None:
        """The estimate at ``now`` (``None`` before the first sample)."""
        if self.value is None:
            return None
        return self.value * math.exp(-max(now - self.stamp, 0.0) / self.tau)

    def reset(self) -> None:
        """Forget every sample (a re-admitted target starts over)."""
        self.value = None
