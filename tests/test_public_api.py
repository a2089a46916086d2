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

#: 0.4.0's modules and the public names each defined: code may import from them directly.
SUBMODULES_0_4_0 = {
    "proxy_pass": ["proxy_pass", "proxy_pass_websocket"],
    "proxy_httpx": ["Proxy", "create_httpx_client", "close_httpx_client", "get_httpx_client"],
    "load_balance": ["LoadBalancer"],
    "health_check": ["HealthChecker"],
}

#: The leading positional-or-keyword parameters of 0.4.0's callables, in order: calls written
#: for 0.4.0 pass them by position or by name.
SIGNATURES_0_4_0: dict[str, str] = {
    "proxy_pass": (
        "request host path timeout forward_query additional_headers override_headers "
        "override_body method override_host"
    ),
    "proxy_pass_websocket": (
        "websocket host path subprotocols forward_query additional_headers override_headers timeout"
    ),
    "create_httpx_client": "app",
    "close_httpx_client": "app",
    "get_httpx_client": "req",
    "Proxy": "app",
    "LoadBalancer": "servers",
    "LoadBalancer.proxy_pass": (
        "req path timeout forward_query additional_headers override_headers override_body method"
    ),
    "LoadBalancer.proxy_pass_websocket": (
        "websocket path subprotocols forward_query additional_headers override_headers"
    ),
    "LoadBalancer.set_index": "index",
    "HealthChecker": "targets interval timeout httpx_client",
    "HealthChecker.is_healthy": "target",
}


def _is_stub(obj: object) -> bool:
    try:
        source = inspect.getsource(obj)  # type: ignore[arg-type]
    except (OSError, TypeError):
        return False
    return "NotImplementedError" in source or "TODO: implement" in source


def test_the_meta_package_exports_every_component_name() -> None:
    assert len(frp.__all__) == len(set(frp.__all__))
    assert set(NAMES_0_4_0) <= set(frp.__all__)
    public = {name for name in vars(frp) if not name.startswith("_")}
    assert public - set(frp.__all__) <= set(SUBMODULES_0_4_0), "a name leaks outside __all__"


@pytest.mark.parametrize("name", sorted(set(frp.__all__)))
def test_every_exported_name_exists_and_is_real(name: str) -> None:
    assert hasattr(frp, name), f"{name} is in __all__ but not defined"
    obj = getattr(frp, name)
    assert obj is not None
    assert not _is_stub(obj), f"{name} is a stub"


def test_the_0_4_0_names_are_all_exported() -> None:
    missing = [n for n in NAMES_0_4_0 if n not in frp.__all__ or not hasattr(frp, n)]
    assert not missing, f"0.4.0 names not exported: {', '.join(missing)}"
    for name in NAMES_0_4_0:
        obj = getattr(frp, name)
        assert callable(obj), name


def test_0_4_0_imports_work_as_in_the_quick_start() -> None:
    namespace: dict[str, object] = {}
    exec(
        "from fastapi_reverse_proxy import (HealthChecker, LoadBalancer, Proxy, "
        "close_httpx_client, create_httpx_client, get_httpx_client, proxy_pass, "
        "proxy_pass_websocket)",
        namespace,
    )
    for name in NAMES_0_4_0:
        assert namespace[name] is getattr(frp, name)


@pytest.mark.parametrize("qualname", sorted(SIGNATURES_0_4_0))
def test_0_4_0_parameters_keep_their_names_and_order(qualname: str) -> None:
    obj: object = frp
    for part in qualname.split("."):
        obj = getattr(obj, part)
    params = [
        p.name
        for p in inspect.signature(obj).parameters.values()  # type: ignore[arg-type]
        if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD and p.name != "self"
    ]
    expected = SIGNATURES_0_4_0[qualname].split()
    assert params[: len(expected)] == expected


@pytest.mark.parametrize("module", sorted(SUBMODULES_0_4_0))
def test_0_4_0_modules_still_import(module: str) -> None:
    namespace: dict[str, object] = {}
    names = ", ".join(SUBMODULES_0_4_0[module])
    exec(f"from fastapi_reverse_proxy.{module} import {names}", namespace)
    for name in SUBMODULES_0_4_0[module]:
        assert namespace[name] is getattr(frp, name)
    exec(f"import fastapi_reverse_proxy.{module}", namespace)
    # importing 0.4.0's module never replaces the package's function of the same name
    assert callable(frp.proxy_pass)
    assert frp.proxy_pass.__module__.startswith("frp_core")
