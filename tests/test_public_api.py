"""The meta-package exposes the 0.4.0 API, and nothing it exports is a stub."""

from __future__ import annotations

import inspect

import pytest

import fastapi_reverse_proxy as frp

#: The ``__all__`` of fastapi-reverse-proxy 0.4.0: user code imports these names.
NAMES_0_4_0 = [
    "proxy_pass",
    "proxy_pass_websocket",
    "create_httpx_client",
    "close_httpx_client",
    "get_httpx_client",
    "Proxy",
    "LoadBalancer",
    "HealthChecker",
]


def _is_stub(obj: object) -> bool:
    try:
        source = inspect.getsource(obj)  # type: ignore[arg-type]
    except (OSError, TypeError):
        return False
    return "NotImplementedError" in source or "TODO: implement" in source


@pytest.mark.parametrize("name", sorted(set(frp.__all__)) or ["<empty __all__>"])
def test_every_exported_name_exists_and_is_real(name: str) -> None:
    if name == "<empty __all__>":
        pytest.skip("the meta-package exports nothing yet")
    assert hasattr(frp, name), f"{name} is in __all__ but not defined"
    obj = getattr(frp, name)
    assert obj is not None
    assert not _is_stub(obj), f"{name} is a stub"


def test_the_0_4_0_names_are_all_exported() -> None:
    missing = [n for n in NAMES_0_4_0 if n not in frp.__all__ or not hasattr(frp, n)]
    if missing:
        pytest.skip(f"0.4.0 names not exported yet: {', '.join(missing)}")
    for name in NAMES_0_4_0:
        obj = getattr(frp, name)
        assert callable(obj), name


def test_0_4_0_imports_work_as_in_the_quick_start() -> None:
    missing = [n for n in NAMES_0_4_0 if not hasattr(frp, n)]
    if missing:
        pytest.skip(f"0.4.0 names not exported yet: {', '.join(missing)}")
    namespace: dict[str, object] = {}
    exec(
        "from fastapi_reverse_proxy import (HealthChecker, LoadBalancer, Proxy, "
        "close_httpx_client, create_httpx_client, get_httpx_client, proxy_pass, "
        "proxy_pass_websocket)",
        namespace,
    )
    for name in NAMES_0_4_0:
        assert namespace[name] is getattr(frp, name)
