"""Peak-sensitive, time-decayed EWMA of request latency (Finagle/Linkerd "peak EWMA")."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence


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


class Latencies:
    """Per-target :class:`PeakEwma` estimates of real requests, with priors for the others."""

    def __init__(self, decay: float = 10.0, default: float = 0.03) -> None:
        self.decay = decay
        self.default = default
        self._ewma: dict[str, PeakEwma] = {}

    def observe(self, target: str, sample: float, now: float) -> None:
        ewma = self._ewma.get(target)
        if ewma is None:
            ewma = self._ewma[target] = PeakEwma(self.decay)
        ewma.observe(sample, now)

    def estimate(self, target: str, now: float) -> float | None:
        """The estimate from real requests (``None`` without any)."""
        ewma = self._ewma.get(target)
        return ewma.get(now) if ewma is not None else None

    def forget(self, target: str) -> None:
        self._ewma.pop(target, None)

    def scorer(
        self,
        now: float,
        targets: Callable[[], Sequence[str]],
        probes: Callable[[], Mapping[str, float]],
    ) -> Callable[[str], float]:
        """Latency in seconds per target: the estimate, else a prior computed on first need.

        The prior is the target's probe latency (``probes()``, seconds) scaled by how real
        requests compare with probes on the targets (``targets()``) that have both (a probe
        opens a new connection and usually reads slower), else the mean estimate, else
        ``default``.
        """
        priors: dict[str, float] | None = None

        def latency(target: str) -> float:
            nonlocal priors
            value = self.estimate(target, now)
            if value is not None:
                return value
            if priors is None:
                priors = self._priors(now, targets(), probes())
            return priors.get(target, self.default)

        return latency

    def _priors(
        self, now: float, targets: Sequence[str], probe: Mapping[str, float]
    ) -> dict[str, float]:
        real = {t: v for t in targets if (v := self.estimate(t, now)) is not None}
        both = [t for t in real if probe.get(t, 0.0) > 0]
        scale = sum(real[t] for t in both) / sum(probe[t] for t in both) if both else 1.0
        mean = sum(real.values()) / len(real) if real else self.default
        return {t: probe[t] * scale if probe.get(t, 0.0) > 0 else mean for t in targets}
