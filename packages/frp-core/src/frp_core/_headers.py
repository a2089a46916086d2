# ENGINEERS WORKING IN PARALLEL: read /tmp/common.md NOW (files you may edit, venv, commit rules, deadline 07:35 UTC). Remove nothing of this line; the lead removes it.
"""Header policy shared by the HTTP proxy and the WebSocket tunnel (RFC 9110 §7.6).

Headers are ASGI-style lists of ``(name, value)`` byte pairs with lower-case names; order and
repetition are preserved everywhere.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

Headers = list[tuple[bytes, bytes]]

#: Hop-by-hop headers (RFC 9110 §7.6.1), plus the legacy ``proxy-connection``.
HOP_BY_HOP: frozenset[bytes] = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authorization",
        b"proxy-authenticate",
        b"trailer",
    }
)

#: Forwarding headers the proxy computes itself.
FORWARDING: frozenset[bytes] = frozenset(
    {b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"forwarded"}
)


def connection_tokens(headers: Iterable[tuple[bytes, bytes]]) -> set[bytes]:
    """Header names listed in every ``Connection`` header (lower-cased)."""
    names: set[bytes] = set()
    for name, value in headers:
        if name == b"connection":
            names.update(t.strip().lower() for t in value.split(b",") if t.strip())
    return names


def strip_hop_by_hop(
    headers: Iterable[tuple[bytes, bytes]], *, also: frozenset[bytes] = frozenset()
) -> Headers:
    """Drop hop-by-hop headers, every header named in ``Connection``, and ``also``."""
    items = list(headers)
    drop = HOP_BY_HOP | connection_tokens(items) | also
    return [(n, v) for n, v in items if n not in drop]


class TrustedProxies:
    """The set of peers whose forwarding headers are believed (uvicorn's model).

    ``TrustedProxies(["127.0.0.1", "10.0.0.0/8"])``; ``"*"`` trusts everyone.  From an untrusted
    peer, incoming ``X-Forwarded-*``/``Forwarded`` headers are replaced; from a trusted one, the
    peer is appended to them.
    """

    __slots__ = ("_all", "_networks")

    def __init__(self, peers: Iterable[str] = ()) -> None:
        self._all = False
        nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for peer in peers:
            if peer == "*":
                self._all = True
            else:
                nets.append(ipaddress.ip_network(peer, strict=False))
        self._networks = tuple(nets)

    def __contains__(self, host: object) -> bool:
        if self._all:
            return True
        if not isinstance(host, str) or not self._networks:
            return False
        try:
            addr = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(addr in net for net in self._networks)


NO_TRUSTED_PROXIES = TrustedProxies()


def _forwarded_for_node(host: str) -> str:
    if ":" in host:  # IPv6 must be quoted and bracketed (RFC 7239 §6)
        return f'"[{host}]"'
    return host


def forwarding_headers(
    scope: Mapping[str, Any],
    incoming: Sequence[tuple[bytes, bytes]],
    *,
    trusted: TrustedProxies = NO_TRUSTED_PROXIES,
    forwarded: bool = False,
) -> Headers:
    """``X-Forwarded-For/-Proto/-Host`` (and ``Forwarded`` if asked) for the upstream request.

    Appends to the incoming values when the direct peer is trusted, replaces them otherwise.
    """
    client = scope.get("client")
    peer = str(client[0]) if client else "unknown"
    scheme = str(scope.get("scheme", "http"))
    proto = "https" if scheme in ("https", "wss") else "http"
    host = b""
    prior_for: list[bytes] = []
    prior_fwd: list[bytes] = []
    prior_proto = prior_host = b""
    for name, value in incoming:
        if name == b"host":
            host = value
        elif name == b"x-forwarded-for":
            prior_for.append(value)
        elif name == b"forwarded":
            prior_fwd.append(value)
        elif name == b"x-forwarded-proto" and not prior_proto:
            prior_proto = value
        elif name == b"x-forwarded-host" and not prior_host:
            prior_host = value
    out: Headers = []
    if peer in trusted:
        xff = b", ".join([*prior_for, peer.encode("latin-1")])
        out.append((b"x-forwarded-for", xff))
        out.append((b"x-forwarded-proto", prior_proto or proto.encode()))
        if prior_host or host:
            out.append((b"x-forwarded-host", prior_host or host))
    else:
        out.append((b"x-forwarded-for", peer.encode("latin-1")))
        out.append((b"x-forwarded-proto", proto.encode()))
        if host:
            out.append((b"x-forwarded-host", host))
    if forwarded:
        element = f"for={_forwarded_for_node(peer)};proto={proto}".encode("latin-1")
        if host and all(32 < c < 127 and c != 34 for c in host):
            element += b';host="' + host + b'"'
        chain = [*prior_fwd, element] if peer in trusted else [element]
        out.append((b"forwarded", b", ".join(chain)))
    return out


def via_value(http_version: str, pseudonym: str = "frp") -> bytes:
    """The ``Via`` element this proxy adds (RFC 9110 §7.6.3), e.g. ``b"1.1 frp"``."""
    return f"{http_version} {pseudonym}".encode("ascii")
