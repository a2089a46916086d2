"""0.4.0's ``fastapi_reverse_proxy.proxy_httpx`` module, kept for code that imports from it.

Its public names, now defined in frp-core; new code imports them from
``fastapi_reverse_proxy``.
"""

from frp_core import Proxy, close_httpx_client, create_httpx_client, get_httpx_client

__all__ = ["Proxy", "close_httpx_client", "create_httpx_client", "get_httpx_client"]
