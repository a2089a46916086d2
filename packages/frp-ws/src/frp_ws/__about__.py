"""Version of frp-ws."""

__version__ = "0.1.0"
