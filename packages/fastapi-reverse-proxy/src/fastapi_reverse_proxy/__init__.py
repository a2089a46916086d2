"""fastapi-reverse-proxy: the 0.4.0 API and everything new, re-exported from the components.

Every public name of ``frp_core``, ``frp_ws``, ``frp_health`` and ``frp_balance`` is available
here; nothing is defined in this package, so nothing here can be a stub.  0.4.0's modules
(``proxy_pass``, ``proxy_httpx``, ``load_balance``, ``health_check``) still import.
"""

import importlib as _importlib

import frp_balance as _balance
import frp_core as _core
import frp_health as _health
import frp_ws as _ws
from frp_balance import *  # noqa: F403
from frp_core import *  # noqa: F403
from frp_health import *  # noqa: F403
from frp_ws import *  # noqa: F403

from .__about__ import __version__ as __version__

__all__: list[str] = ["__version__"]
for _component in (_core, _ws, _health, _balance):
    __all__ += [name for name in _component.__all__ if name != "__version__"]

# Loading 0.4.0's modules now, once, binds each module's name on this package; ``proxy_pass``
# is then bound to the function again, so a later ``import fastapi_reverse_proxy.proxy_pass``
# (already loaded) cannot replace it.
for _module in ("health_check", "load_balance", "proxy_httpx", "proxy_pass"):
    _importlib.import_module(f".{_module}", __name__)
proxy_pass = _core.proxy_pass

del _importlib, _balance, _core, _health, _ws, _component, _module
