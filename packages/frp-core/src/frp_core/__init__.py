"""frp-core: a streaming HTTP reverse proxy for ASGI (FastAPI/Starlette)."""

from .__about__ import __version__
from ._app import ReverseProxy
from ._client import Proxy, close_httpx_client, create_httpx_client, get_httpx_client
from ._config import Limits, Timeouts
from ._errors import UpstreamError
from ._gc import tune_gc
from ._headers import TrustedProxies
from ._proxy import proxy_pass
from ._routing import Outcome, Router, Upstreams

__all__ = [
    "Limits",
    "Outcome",
    "Proxy",
    "ReverseProxy",
    "Router",
    "Timeouts",
    "TrustedProxies",
    "UpstreamError",
    "Upstreams",
    "__version__",
    "close_httpx_client",
    "create_httpx_client",
    "get_httpx_client",
    "proxy_pass",
    "tune_gc",
]
