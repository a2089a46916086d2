"""frp_health: active probes with hysteresis and passive outlier detection of upstream targets."""

from .__about__ import __version__ as __version__
from ._checker import HealthChecker
from ._events import ChangeStream, StateChange, TargetSnapshot, TargetState

__all__ = [
    "ChangeStream",
    "HealthChecker",
    "StateChange",
    "TargetSnapshot",
    "TargetState",
]
