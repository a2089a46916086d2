"""frp_health."""

from .__about__ import __version__

__all__: list[str] = []
