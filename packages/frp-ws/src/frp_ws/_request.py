"""What the upstream handshake carries: its URL and headers (pure logic).

The upstream scheme, host, port and path prefix come from configuration only; the client's path
and query are appended byte for byte, never parsed as a URL (no SSRF through the path).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from frp_core._headers import TrustedProxies, forwarding_headers, strip_hop_by_hop, via_value
from frp_core._origin import Origin
from frp_core._request import encode_path, raw_tail

RawHeaders = list[tuple[bytes, bytes]]
HeaderInput = Mapping[str, str] | Iterable[tuple[str, str]] | Iterable[tuple[bytes, bytes]]

#: Headers that belong to one handshake (client↔proxy or proxy↔upstream), never forwarded.
HANDSHAKE: frozenset[bytes] = frozenset(
    {
        b"host",
        b"content-length",
        b"sec-websocket-key",
        b"sec-websocket-version",
        b"sec-websocket-extensions",
        b"sec-websocket-protocol",
        b"sec-websocket-accept",
    }
)
_FORWARDING = frozenset(
    {b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"forwarded"}
)
#: Upstream handshake response headers not copied to the client (the server sets its own).
_RESPONSE_SKIP = HANDSHAKE | frozenset({b"date", b"server"})

# Bytes kept as they are in a path or query; anything else (controls, space, '#', non-ASCII)
# is percent-encoded so that the upstream URL cannot be re-interpreted.
_KEEP = frozenset(range(0x21, 0x7F)) - {ord("#")}


def base_url(url: str) -> tuple[str, str]:
    """``("ws://host:port", "/prefix")`` for a configured base URL (http(s) or ws(s))."""
    origin = Origin.parse(url)  # cached; raises ValueError for anything but a plain base URL
    scheme = "wss" if origin.scheme == "https" else "ws"
    return f"{scheme}://{origin.host_header.decode('ascii')}", origin.prefix.decode("ascii")


def _escape(data: bytes) -> str:
    if all(b in _KEEP for b in data):
        return data.decode("ascii")
    return "".join(chr(b) if b in _KEEP else f"%{b:02X}" for b in data)


def resource(scope: Mapping[str, Any], path: str | None, forward_query: bool) -> str:
    """Path and query for the upstream: the client's raw bytes unless ``path`` overrides."""
    raw = bytes(scope.get("raw_path") or str(scope.get("path", "/")).encode("utf-8"))
    if path is None:
        target = _escape(raw)
    else:
        # as frp-core does for HTTP: a caller path that is the decoded tail of the raw path
        # (the Quick Start's ``path=f"/ws/{path}"``) forwards the client's bytes; any other is
        # percent-encoded (never the decoded ``%2F``, ``..``, ``?`` of the client)
        tail = raw_tail(raw, path) if path.startswith("/") else None
        target = _escape(tail if tail is not None else encode_path(path))
    if not target.startswith("/"):
        target = "/" + target
    query = bytes(scope.get("query_string") or b"") if forward_query else b""
    if query:
        target += ("&" if "?" in target else "?") + _escape(query)
    return target


def url_for(base: str, target: str) -> str:
    """The upstream URL: configured base, then the target appended (never re-parsed)."""
    origin, prefix = base_url(base)
    return origin + prefix + target


def _raw(headers: HeaderInput) -> RawHeaders:
    items = headers.items() if isinstance(headers, Mapping) else headers
    out: RawHeaders = []
    for name, value in items:
        n = name if isinstance(name, bytes) else name.encode("latin-1")
        v = value if isinstance(value, bytes) else value.encode("utf-8")
        out.append((n.lower(), v))
    return out


def _text(value: bytes) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.decode("latin-1")


def upstream_headers(
    scope: Mapping[str, Any],
    *,
    additional: HeaderInput | None,
    override: HeaderInput | None,
    trusted: TrustedProxies,
) -> list[tuple[str, str]]:
    """End-to-end request headers for the upstream handshake, plus forwarding and ``Via``.

    ``override`` replaces the client's headers; ``additional`` replaces same-named headers
    (0.4.0's ``dict.update``).  Hop-by-hop and handshake headers never pass.
    """
    incoming: RawHeaders = list(scope.get("headers") or [])
    headers = _raw(override) if override is not None else incoming
    if additional is not None:
        extra = _raw(additional)
        names = {n for n, _ in extra}
        headers = [h for h in headers if h[0] not in names] + extra
    headers = strip_hop_by_hop(headers, also=HANDSHAKE | _FORWARDING)
    headers += forwarding_headers(scope, incoming, trusted=trusted)
    headers.append((b"via", via_value(str(scope.get("http_version", "1.1")))))
    return [(_text(n), _text(v)) for n, v in headers]


def offers_deflate(scope: Mapping[str, Any]) -> bool:
    """Whether the client's handshake offered permessage-deflate (``Sec-WebSocket-Extensions``)."""
    for name, value in scope.get("headers") or ():
        if name.lower() != b"sec-websocket-extensions":
            continue
        for offer in bytes(value).split(b","):
            if offer.split(b";", 1)[0].strip().lower() == b"permessage-deflate":
                return True
    return False


def offers_extensions(scope: Mapping[str, Any]) -> bool:
    """Whether the client's handshake offered any extension at all."""
    headers = scope.get("headers") or ()
    return any(name.lower() == b"sec-websocket-extensions" for name, _ in headers)


def response_headers(headers: Sequence[tuple[str, str]]) -> RawHeaders:
    """Upstream handshake response headers worth passing to the client (e.g. Set-Cookie)."""
    out: RawHeaders = []
    for name, value in headers:
        try:
            out.append((name.lower().encode("ascii"), value.encode("ascii", "surrogateescape")))
        except UnicodeEncodeError:
            continue
    return [h for h in strip_hop_by_hop(out) if h[0] not in _RESPONSE_SKIP]
