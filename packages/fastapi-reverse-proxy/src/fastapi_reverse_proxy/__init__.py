"""fastapi-reverse-proxy: the 0.4.0 API and everything new, re-exported from the components.

Every public name of ``frp_core``, ``frp_ws``, ``frp_health`` and ``frp_balance`` is available
here; nothing is defined in this package, so nothing here can be a stub.
"""

from frp_balance import *  # noqa: F403
from frp_balance import __all__ as _balance_all
from frp_core import *  # noqa: F403
from frp_core import __all__ as _core_all
from frp_health import *  # noqa: F403
from frp_health import __all__ as _health_all
from frp_ws import *  # noqa: F403
from frp_ws import __all__ as _ws_all

from .__about__ import __version__ as __version__

__all__: list[str] = ["__version__"]
for _names in (_core_all, _ws_all, _health_all, _balance_all):
    __all__ += [name for name in _names if name != "__version__"]
del _names
