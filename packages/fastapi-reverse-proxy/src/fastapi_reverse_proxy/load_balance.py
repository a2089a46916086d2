"""0.4.0's ``fastapi_reverse_proxy.load_balance`` module, kept for code that imports from it.

Its public names, now defined in frp-balance; new code imports them from
``fastapi_reverse_proxy``.
"""

from frp_balance import LoadBalancer

__all__ = ["LoadBalancer"]
