"""Hash keys for consistent hashing, taken from the ASGI scope."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

#: What ``hash_key=`` accepts: ``"client"``, ``"header:<name>"``, ``"cookie:<name>"`` or a
#: callable returning the key (or ``None``) for a scope.
HashKey = str | Callable[[Mapping[str, Any]], str | None]
KeyFunc = Callable[[Mapping[str, Any]], str | None]


def _client(scope: Mapping[str, Any]) -> str | None:
    client = scope.get("client")
    return str(client[0]) if client else None


def _header(name: bytes) -> KeyFunc:
    def key(scope: Mapping[str, Any]) -> str | None:
        for k, v in scope.get("headers") or ():
            if k.lower() == name:
                return bytes(v).decode("latin-1")
        return None

    return key


def _cookie(name: str) -> KeyFunc:
    def key(scope: Mapping[str, Any]) -> str | None:
        for k, v in scope.get("headers") or ():
            if k.lower() != b"cookie":
                continue
            for part in bytes(v).decode("latin-1").split(";"):
                n, sep, value = part.strip().partition("=")
                if sep and n == name:
                    return value
        return None

    return key


def key_func(spec: HashKey) -> KeyFunc:
    """Turn a ``hash_key=`` value into a function of the scope."""
    if callable(spec):
        return spec
    kind, _, name = spec.partition(":")
    if kind == "client" and not name:
        return _client
    if kind == "header" and name:
        return _header(name.strip().lower().encode("latin-1"))
    if kind == "cookie" and name:
        return _cookie(name.strip())
    raise ValueError(
        f"hash_key must be 'client', 'header:<name>', 'cookie:<name>' or a callable, not {spec!r}"
    )
