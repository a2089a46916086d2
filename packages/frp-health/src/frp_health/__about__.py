"""Version of frp-health."""

__version__ = "0.1.0"
