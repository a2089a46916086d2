"""Header policy shared by the HTTP proxy and the WebSocket tunnel (RFC 9110 §7.6).

Headers are ASGI-style lists of ``(name, value)`` byte pairs with lower-case names; order and
repetition are preserved everywhere.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeAlias

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
        out.append((b"x-forwarded-proto", b"https" if proto == "https" else b"http"))
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


#: What callers may pass as headers: a mapping or a sequence of pairs, of ``str`` or ``bytes``.
HeaderInput: TypeAlias = Mapping[str, str] | Mapping[bytes, bytes] | Sequence[tuple[Any, Any]]

#: Never taken from the client (or from caller headers): framing and the headers we compute.
_REQUEST_DROP: frozenset[bytes] = HOP_BY_HOP | FORWARDING | {b"host", b"content-length", b"expect"}
#: Framing headers a caller may not set (the engine frames the body itself).
_FRAMING: frozenset[bytes] = HOP_BY_HOP | {b"content-length"}
_DATE_SERVER: frozenset[bytes] = frozenset({b"date", b"server"})
_BAD_VALUE = frozenset(b"\r\n\x00")
_RESPONSE_DROP: frozenset[bytes] = HOP_BY_HOP | _DATE_SERVER


def _as_bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    return str(value).encode("latin-1")


def normalize_headers(headers: HeaderInput) -> Headers:
    """Caller headers as lower-case byte pairs; ``ValueError`` on CR, LF or NUL."""
    items = headers.items() if isinstance(headers, Mapping) else headers
    out: Headers = []
    for name, value in items:
        n = _as_bytes(name).strip().lower()
        v = _as_bytes(value).strip()
        if not n or _BAD_VALUE.intersection(n + v) or b":" in n or b" " in n:
            raise ValueError(f"invalid header {name!r}")
        out.append((n, v))
    return out


def request_headers(
    incoming: Sequence[tuple[bytes, bytes]],
    *,
    host: bytes,
    forwarding: Headers,
    via: bytes | None,
    additional: Headers | None = None,
) -> Headers:
    """The header list for the upstream request (``host`` first, order and repeats kept).

    Hop-by-hop and ``Connection``-named headers, ``Host``, ``Content-Length``, ``Expect`` and
    the client's forwarding headers are dropped; ``forwarding`` and ``Via`` (appended to the
    client's) are added; ``additional`` replaces same-named headers.
    """
    drop = _REQUEST_DROP
    for name, _ in incoming:
        if name == b"connection":
            drop = drop | connection_tokens(incoming)
            break
    out: Headers = [(b"host", host)]
    vias: list[bytes] = []
    for item in incoming:
        name = item[0]
        if name in drop:
            continue
        if name == b"via":
            vias.append(item[1])
            continue
        out.append(item)
    out += forwarding
    if via is not None:
        vias.append(via)
    if vias:
        out.append((b"via", b", ".join(vias)))
    if additional:
        extra = [(n, v) for n, v in additional if n not in _FRAMING]
        names = {n for n, _ in extra}
        out = [h for h in out if h[0] not in names]
        out += extra
    return out


def response_headers(
    upstream: Sequence[tuple[bytes, bytes]],
    *,
    via: bytes | None,
    keep_date_server: bool = False,
    drop_length: bool = False,
) -> Headers:
    """The header list for the client: hop-by-hop and ``Connection``-named headers removed.

    ``Date``/``Server`` are dropped unless ``keep_date_server`` (uvicorn always adds its own);
    ``Content-Length`` is dropped when ``drop_length`` (1xx/204/304 responses).
    """
    drop = HOP_BY_HOP if keep_date_server else _RESPONSE_DROP
    for name, _ in upstream:
        if name == b"connection":
            drop = drop | connection_tokens(upstream)
        elif name == b"transfer-encoding":
            drop_length = True  # the length is the chunked framing's, not a Content-Length
    if drop_length:
        drop = drop | {b"content-length"}
    out: Headers = []
    vias: list[bytes] = []
    for item in upstream:
        name = item[0]
        if name in drop:
            continue
        if name == b"via":
            vias.append(item[1])
            continue
        out.append(item)
    if via is not None:
        vias.append(via)
    if vias:
        out.append((b"via", b", ".join(vias)))
    return out


def encode_body(body: bytes | str | Mapping[str, Any] | Sequence[Any]) -> tuple[bytes, bool]:
    """``override_body`` as bytes, and whether it is JSON (``dict``/``list``)."""
    if isinstance(body, bytes | bytearray | memoryview):
        return bytes(body), False
    if isinstance(body, str):
        return body.encode("utf-8"), False
    return json.dumps(body).encode("utf-8"), True
