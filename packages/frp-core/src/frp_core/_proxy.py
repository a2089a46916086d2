"""``proxy_pass``: forward the request of a FastAPI/Starlette route to an upstream."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from starlette.responses import Response

from ._client import sender_for_scope
from ._config import Timeouts
from ._exchange import Options, open_exchange
from ._headers import NO_TRUSTED_PROXIES, HeaderInput, TrustedProxies, encode_body
from ._headers import normalize_headers as _norm
from ._replies import ErrorReply
from ._response import ProxyResponse, error_response
from ._routing import Router, Upstreams

__all__ = ["build_options", "proxy_pass"]


@functools.lru_cache(maxsize=64)
def _timeouts(timeout: float | None) -> Timeouts:
    return Timeouts.of(timeout)


def timeouts_of(timeout: Any) -> Timeouts:
    """``timeout`` (number, ``None``, ``Timeouts`` or ``httpx.Timeout``) as per-phase limits."""
    if timeout is None or isinstance(timeout, int | float):
        return _timeouts(timeout)
    return Timeouts.of(timeout)


def trusted_of(trusted: TrustedProxies | Iterable[str] | None) -> TrustedProxies:
    """A :class:`TrustedProxies` from a set, a list of addresses/networks, or ``None``."""
    if trusted is None:
        return NO_TRUSTED_PROXIES
    return trusted if isinstance(trusted, TrustedProxies) else TrustedProxies(trusted)


def build_options(
    *,
    timeout: Any = 60.0,
    forward_query: bool = True,
    additional_headers: HeaderInput | None = None,
    override_headers: HeaderInput | None = None,
    override_body: bytes | str | Mapping[str, Any] | Sequence[Any] | None = None,
    method: str | None = None,
    override_host: str | None = None,
    trusted_proxies: TrustedProxies | Iterable[str] | None = None,
    forwarded: bool = False,
    via: str | None = "frp",
    preserve_host: bool = False,
    upstream_date_server: bool = False,
    strip_root: bool = False,
) -> Options:
    """Validate and normalise the proxy options once."""
    body, is_json = (None, False) if override_body is None else encode_body(override_body)
    return Options(
        timeouts=timeouts_of(timeout),
        forward_query=forward_query,
        additional=_norm(additional_headers) if additional_headers else None,
        override_headers=None if override_headers is None else _norm(override_headers),
        body=body,
        json_body=is_json,
        method=method.upper().encode("ascii") if method else None,
        override_host=override_host.encode("latin-1") if override_host else None,
        preserve_host=preserve_host,
        trusted=trusted_of(trusted_proxies),
        forwarded=forwarded,
        via=via,
        keep_date_server=upstream_date_server,
        strip_root=strip_root,
    )


_DEFAULT_OPTIONS = build_options()


async def proxy_pass(
    request: Any,
    host: str | Upstreams | Router,
    path: str | None = None,
    timeout: Any = 60.0,
    forward_query: bool = True,
    additional_headers: HeaderInput | None = None,
    override_headers: HeaderInput | None = None,
    override_body: bytes | str | Mapping[str, Any] | Sequence[Any] | None = None,
    method: str | None = None,
    override_host: str | None = None,
    *,
    trusted_proxies: TrustedProxies | Iterable[str] | None = None,
    forwarded: bool = False,
    via: str | None = "frp",
    preserve_host: bool = False,
    upstream_date_server: bool = False,
) -> Response:
    """Forward ``request`` to ``host`` and return the streamed upstream response.

    ``host`` is a base URL (``"http://backend:8080/prefix"``), or an ``Upstreams``/``Router``
    for failover.  ``path=None`` forwards the incoming raw path; the query is forwarded
    byte-exact when ``forward_query``.  ``timeout`` is per phase (connect, read, write, pool).
    The upstream request is made before this returns: failures come back as 400/502/503/504
    responses; the body streams when the response is sent.  See ``docs/frp-core.md``.
    """
    if override_body is None:
        # A body the route already read (``await request.body()``, cached by Starlette) is no
        # longer in ``receive()``: forward that copy
        override_body = getattr(request, "_body", None)
    if (
        timeout == 60.0
        and forward_query
        and additional_headers is None
        and override_headers is None
        and override_body is None
        and method is None
        and override_host is None
        and trusted_proxies is None
        and not forwarded
        and via == "frp"
        and not preserve_host
        and not upstream_date_server
    ):
        opts = _DEFAULT_OPTIONS
    else:
        opts = build_options(
            timeout=timeout,
            forward_query=forward_query,
            additional_headers=additional_headers,
            override_headers=override_headers,
            override_body=override_body,
            method=method,
            override_host=override_host,
            trusted_proxies=trusted_proxies,
            forwarded=forwarded,
            via=via,
            preserve_host=preserve_host,
            upstream_date_server=upstream_date_server,
        )
    scope = request.scope
    result = await open_exchange(scope, request.receive, host, path, opts, sender_for_scope(scope))
    if result is None:  # the client left while its body was read
        return error_response(ErrorReply(400, "Client Closed Request"))
    if isinstance(result, ErrorReply):
        return error_response(result)
    return ProxyResponse(result, opts.timeouts.read)
