"""frp_core."""

from .__about__ import __version__

__all__: list[str] = []
