"""0.4.0's ``fastapi_reverse_proxy.health_check`` module, kept for code that imports from it.

Its public names, now defined in frp-health; new code imports them from
``fastapi_reverse_proxy``.
"""

from frp_health import HealthChecker

__all__ = ["HealthChecker"]
