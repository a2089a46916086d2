"""Upstream clients: the 0.4.0 lifecycle helpers and which sender serves a request.

``create_httpx_client(app)`` stores an ``httpx.AsyncClient`` (no cookies, no redirects) in
``app.state.http_proxy_client``, as 0.4.0 did, plus an engine configured from the same
arguments.  A request goes through the engine when the stored client is one of ours built
without engine-incompatible options; any other stored client is used as is (the httpx path).
Without a stored client, a default engine per event loop serves the requests.
"""

from __future__ import annotations

import asyncio
import http.cookiejar
import ssl
import weakref
from collections.abc import MutableMapping
from typing import Any

import httpx

from ._config import Limits
from ._fallback import HttpxSender
from ._gc import apply_gc_policy
from ._pool import Engine
from ._upstream import Sender

__all__ = [
    "Proxy",
    "aclose_default_sender",
    "close_httpx_client",
    "create_httpx_client",
    "get_httpx_client",
    "sender_for_scope",
]

#: ``create_httpx_client`` arguments the engine honours; any other one selects the httpx path.
ENGINE_OPTIONS = frozenset(
    {"timeout", "limits", "verify", "cert", "trust_env", "follow_redirects", "max_redirects"}
)

_SENDERS: weakref.WeakKeyDictionary[httpx.AsyncClient, Sender] = weakref.WeakKeyDictionary()
_DEFAULTS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Sender] = (
    weakref.WeakKeyDictionary()
)


class _NoCookies(http.cookiejar.DefaultCookiePolicy):
    """A cookie policy that neither stores nor sends any cookie."""

    def set_ok(self, cookie: http.cookiejar.Cookie, request: Any) -> bool:
        return False

    def return_ok(self, cookie: http.cookiejar.Cookie, request: Any) -> bool:
        return False


def no_cookie_jar() -> http.cookiejar.CookieJar:
    """A cookie jar that never keeps anything (so users never share cookies)."""
    return http.cookiejar.CookieJar(policy=_NoCookies())


def _ssl_context(verify: Any, cert: Any) -> ssl.SSLContext | None:
    if isinstance(verify, ssl.SSLContext):
        return verify
    if verify is True and cert is None:
        return None  # the engine's default context
    ctx = ssl.create_default_context(cafile=verify if isinstance(verify, str) else None)
    if verify is False:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if cert is not None:
        ctx.load_cert_chain(*((cert,) if isinstance(cert, str) else cert))
    return ctx


_FOREVER = 365 * 24 * 3600.0


def _limits(limits: Any) -> Limits:
    if isinstance(limits, Limits):
        return limits
    if isinstance(limits, httpx.Limits):
        # httpx spells "unlimited" as None; the engine needs numbers.
        keepalive = limits.max_keepalive_connections
        if keepalive is None:
            keepalive = limits.max_connections or Limits().max_keepalive
        expiry = limits.keepalive_expiry
        return Limits(
            max_connections=limits.max_connections,
            max_keepalive=keepalive,
            keepalive_expiry=_FOREVER if expiry is None else expiry,
        )
    return Limits()


def make_engine(*, limits: Any = None, verify: Any = True, cert: Any = None) -> Engine:
    """A new engine configured like an ``httpx.AsyncClient`` with these arguments."""
    apply_gc_policy()
    return Engine(limits=_limits(limits), ssl_context=_ssl_context(verify, cert))


#: The last ``(loop, default sender)`` pair: one identity test per request.
_last_default: tuple[asyncio.AbstractEventLoop | None, Sender | None] = (None, None)


def default_sender() -> Sender:
    """The sender of the running loop when no client is stored in the app."""
    global _last_default
    loop = asyncio.get_running_loop()
    last_loop, last_sender = _last_default
    if loop is last_loop and last_sender is not None:
        return last_sender
    sender = _DEFAULTS.get(loop)
    if sender is None:
        sender = make_engine()
        _DEFAULTS[loop] = sender
    _last_default = (loop, sender)
    return sender


async def aclose_default_sender() -> None:
    """Close the running loop's default sender (a new one is made on the next request)."""
    global _last_default
    loop = asyncio.get_running_loop()
    if _last_default[0] is loop:
        _last_default = (None, None)
    sender = _DEFAULTS.pop(loop, None)
    if sender is not None:
        await sender.aclose()


#: The last ``(client, sender)`` pair looked up: the per-request lookup is then one identity
#: test, not a weak-key dictionary lookup (which makes a weak reference per call).
_last: tuple[httpx.AsyncClient | None, Sender | None] = (None, None)


def sender_for_client(client: httpx.AsyncClient) -> Sender:
    """The engine made with ``client``, or the httpx path over ``client`` itself."""
    global _last
    last_client, last_sender = _last
    if client is last_client and last_sender is not None:
        return last_sender
    sender = _SENDERS.get(client)
    if sender is None:
        return HttpxSender(client)
    _last = (client, sender)
    return sender


def _forget(client: httpx.AsyncClient) -> Sender | None:
    """Drop the engine made with ``client`` (when the client is closed)."""
    global _last
    if _last[0] is client:
        _last = (None, None)
    return _SENDERS.pop(client, None)


def _stored_client(app: Any) -> Any:
    """``app.state.http_proxy_client``, or ``None`` (without raising on the common miss)."""
    state = getattr(app, "state", None)
    if state is None:
        return None
    attrs = getattr(state, "_state", None)  # Starlette's ``State`` keeps its attributes here
    if type(attrs) is dict:
        return attrs.get("http_proxy_client")
    return getattr(state, "http_proxy_client", None)


def sender_for_scope(scope: MutableMapping[str, Any]) -> Sender:
    """The sender for a request: the app's stored client, else the loop's default engine."""
    app = scope.get("app")
    if app is not None:
        client = _stored_client(app)
        if client is not None:
            return sender_for_client(client)
    return default_sender()


def _new_client(kwargs: dict[str, Any]) -> tuple[httpx.AsyncClient, Sender | None]:
    apply_gc_policy()
    kwargs = dict(kwargs)
    kwargs["cookies"] = no_cookie_jar()
    kwargs["follow_redirects"] = False
    client = httpx.AsyncClient(**kwargs)
    sender: Sender | None = None
    if ENGINE_OPTIONS.issuperset(kwargs.keys() - {"cookies"}):
        sender = make_engine(
            limits=kwargs.get("limits"), verify=kwargs.get("verify", True), cert=kwargs.get("cert")
        )
        _SENDERS[client] = sender
    return client, sender


async def create_httpx_client(app: Any, **kwargs: Any) -> httpx.AsyncClient:
    """Create the proxy client and store it in ``app.state.http_proxy_client``.

    ``kwargs`` go to ``httpx.AsyncClient`` (cookies are always disabled, redirects never
    followed).  With only ``timeout``, ``limits``, ``verify``, ``cert``, ``trust_env`` the
    engine serves the requests; other options (``http2``, ``proxy``, ``transport``, ``auth``,
    ``mounts``...) select the httpx path through this client.
    """
    client, _ = _new_client(kwargs)
    app.state.http_proxy_client = client
    return client


async def close_httpx_client(app: Any) -> None:
    """Close the client stored by :func:`create_httpx_client` (and its engine)."""
    client = getattr(app.state, "http_proxy_client", None)
    if client is None:
        return
    sender = _forget(client)
    try:
        if sender is not None:
            await sender.aclose()
    finally:
        await client.aclose()


async def get_httpx_client(req: Any) -> httpx.AsyncClient:
    """The client stored in the app of ``req`` (a request or WebSocket)."""
    client: httpx.AsyncClient = req.app.state.http_proxy_client
    return client


class Proxy:
    """``async with Proxy(app):`` creates the proxy client on entry, closes it on exit."""

    def __init__(self, app: Any, **kwargs: Any) -> None:
        self._app = app
        self.client, _ = _new_client(kwargs)
        app.state.http_proxy_client = self.client

    async def close(self) -> None:
        """Close the client (and its engine)."""
        if getattr(self._app.state, "http_proxy_client", None) is self.client:
            await close_httpx_client(self._app)
        else:
            sender = _forget(self.client)
            if sender is not None:
                await sender.aclose()
            await self.client.aclose()

    async def __aenter__(self) -> Proxy:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
