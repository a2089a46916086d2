"""Version of frp-balance."""

__version__ = "0.1.0"
