"""frp_balance: load balancing with failover for frp-core."""

from .__about__ import __version__ as __version__
from ._attempts import Attempts
from ._balancer import LoadBalancer
from ._ewma import PeakEwma
from ._keys import HashKey
from ._source import HealthSource, PassiveHealth
from ._strategies import STRATEGIES, HashRing, Strategy

__all__ = [
    "STRATEGIES",
    "Attempts",
    "HashKey",
    "HashRing",
    "HealthSource",
    "LoadBalancer",
    "PassiveHealth",
    "PeakEwma",
    "Strategy",
]
