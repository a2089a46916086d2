"""frp_ws."""

from .__about__ import __version__

__all__: list[str] = []
