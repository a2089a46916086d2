"""Version of fastapi-reverse-proxy."""

__version__ = "0.5.0"
