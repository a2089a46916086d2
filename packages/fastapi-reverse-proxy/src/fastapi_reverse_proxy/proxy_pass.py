"""0.4.0's ``fastapi_reverse_proxy.proxy_pass`` module, kept for code that imports from it.

Its public names, now defined in frp-core and frp-ws; new code imports them from
``fastapi_reverse_proxy``.
"""

from frp_core import proxy_pass
from frp_ws import proxy_pass_websocket

__all__ = ["proxy_pass", "proxy_pass_websocket"]
