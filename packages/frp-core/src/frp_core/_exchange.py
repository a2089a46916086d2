"""One proxied exchange: validate, pick a target, send upstream, with safe failover.

Shared by :func:`proxy_pass` and :class:`ReverseProxy`.  When :func:`open_exchange` returns, the
upstream response headers have arrived (or the request failed and an error reply is ready); the
body relay is :func:`frp_core._relay.relay`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
from collections.abc import Callable, MutableMapping
from typing import Any, cast

from ._config import Timeouts
from ._errors import RemoteProtocolError, UpstreamError
from ._headers import (
    NO_TRUSTED_PROXIES,
    Headers,
    TrustedProxies,
    forwarding_headers,
    request_headers,
    response_headers,
    via_value,
)
from ._incoming import (
    NO_FRAMING,
    STREAMS,
    BodyReader,
    ClientDisconnect,
    Receive,
    stream_framing,
)
from ._replies import BAD_REQUEST, NO_UPSTREAM, ErrorReply, error_reply
from ._request import BadRequest, build_target, check_framing
from ._routing import Outcome, Router, Upstreams
from ._upstream import Sender, UpstreamResponse, parse_base
from ._watch import Watcher

__all__ = ["ErrorReply", "Exchange", "Options", "Watcher", "open_exchange"]

Scope = MutableMapping[str, Any]

IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE"})
#: Upper bound on attempts for one request, whatever ``Upstreams.pick`` says.
MAX_ATTEMPTS = 32
#: An upstream response head larger than this is refused (502), like nginx's buffer limits.
MAX_RESPONSE_HEAD = 64 * 1024
_5XX = frozenset({502, 503, 504})


_DEFAULT_TIMEOUTS = Timeouts()


@dataclasses.dataclass(frozen=True, slots=True)
class Options:
    """Per-call (``proxy_pass``) or per-app (``ReverseProxy``) proxy settings."""

    timeouts: Timeouts = _DEFAULT_TIMEOUTS
    forward_query: bool = True
    additional: Headers | None = None
    override_headers: Headers | None = None
    body: bytes | None = None
    json_body: bool = False
    method: bytes | None = None
    override_host: bytes | None = None
    preserve_host: bool = False
    trusted: TrustedProxies = NO_TRUSTED_PROXIES
    forwarded: bool = False
    via: str | None = "frp"
    keep_date_server: bool = False
    strip_root: bool = False


@functools.lru_cache(maxsize=16)
def _via(http_version: str, pseudonym: str) -> bytes:
    return via_value(http_version, pseudonym)


#: Seconds to wait for a response head before watching for a client disconnect (long polls).
WATCH_DELAY = 1.0


class Exchange:
    """An upstream response to relay, and the balancer bookkeeping of its attempt."""

    __slots__ = ("body", "headers", "response", "started", "status", "target", "upstreams")

    def __init__(
        self,
        response: UpstreamResponse,
        headers: Headers,
        body: BodyReader | None,
        upstreams: Upstreams | None = None,
        target: str = "",
        started: float = 0.0,
    ) -> None:
        self.response = response
        self.status = response.status
        self.headers = headers
        self.body = body
        self.upstreams = upstreams
        self.target = target
        self.started = started

    def finish(self, outcome: Outcome) -> None:
        """Report the attempt's outcome to the balancer (once)."""
        ups, self.upstreams = self.upstreams, None
        if ups is not None:
            if outcome is Outcome.SUCCESS and self.status in _5XX:
                outcome = Outcome.HTTP_5XX
            ups.done(self.target, outcome, asyncio.get_running_loop().time() - self.started)


def _client_host(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    for name, value in headers:
        if name == b"host":
            return value
    return None


def _retry_safe(exc: UpstreamError, method: bytes, body: BodyReader | None) -> bool:
    if body is not None and not body.replayable():
        return False
    return not exc.request_sent or method in IDEMPOTENT


async def open_exchange(
    scope: Scope,
    receive: Receive,
    upstream: str | Upstreams | Router,
    path: str | None,
    opts: Options,
    sender: Sender,
) -> Exchange | ErrorReply | None:
    """Send the request upstream; ``None`` when the client left before an answer.

    Without a request body to stream, a client disconnect during a long wait for the response
    head (a long poll) cancels the attempt after :data:`WATCH_DELAY` seconds.
    """
    try:
        framing = check_framing(scope["headers"])
    except BadRequest:
        return BAD_REQUEST
    if framing == NO_FRAMING and opts.body is None and scope.get("http_version") in STREAMS:
        found = await stream_framing(receive)
        if found is None:
            return None
        framing, receive = found
    # Nothing reads ``receive()`` while the response head is awaited once the request body (if
    # any) is complete: then a watcher notices a client that leaves (long polls).
    streamed = opts.body is None and (framing[0] is not None or framing[1])
    watcher = Watcher(receive, WATCH_DELAY, armed=not streamed)
    try:
        result = await _open(
            scope, receive, upstream, path, opts, sender, framing,
            watcher.arm if streamed else None,
        )  # fmt: skip
    except asyncio.CancelledError:
        if not watcher.fired:
            raise
        _uncancel()
        return None
    finally:
        watcher.stop()
    if watcher.fired:  # the client left just as the answer came: a cancellation is pending
        if isinstance(result, Exchange):
            await _release(result)
        try:
            await asyncio.sleep(0)
        except asyncio.CancelledError:
            _uncancel()
        return None
    return result


def _uncancel() -> None:
    task = asyncio.current_task()
    if task is not None:
        task.uncancel()


async def _release(ex: Exchange) -> None:
    try:
        await ex.response.aclose()
    finally:
        ex.finish(Outcome.CLIENT_ABORT)


class _Outgoing:
    """What every attempt of one request sends: all but the target's own URL."""

    __slots__ = (
        "body",
        "client_host",
        "forwarding",
        "length",
        "method",
        "opts",
        "path",
        "reader",
        "scope",
        "sender",
        "source",
        "via",
    )

    def __init__(
        self,
        scope: Scope,
        receive: Receive,
        path: str | None,
        opts: Options,
        sender: Sender,
        framing: tuple[int | None, bool],
        keep_body: bool,
        body_complete: Callable[[], object] | None = None,
    ) -> None:
        incoming: list[tuple[bytes, bytes]] = scope["headers"]
        self.scope = scope
        self.path = path
        self.opts = opts
        self.sender = sender
        self.length, chunked = framing
        self.method = opts.method or scope["method"].encode("ascii")
        self.body = b""
        self.reader: BodyReader | None = None
        if opts.body is not None:
            self.body, self.length = opts.body, len(opts.body)
        elif chunked or self.length:
            self.reader = BodyReader(receive, keep=keep_body, on_complete=body_complete)
        self.forwarding = forwarding_headers(
            scope, incoming, trusted=opts.trusted, forwarded=opts.forwarded
        )
        self.via = _via(scope.get("http_version", "1.1"), opts.via) if opts.via else None
        self.source = incoming if opts.override_headers is None else opts.override_headers
        self.client_host = _client_host(incoming) if opts.preserve_host else None

    async def send(self, url: str) -> UpstreamResponse:
        """One attempt on the target ``url``: the response once its head has arrived."""
        opts = self.opts
        base = parse_base(url)
        target = build_target(
            self.scope, base.prefix, self.path, opts.forward_query, strip_root=opts.strip_root
        )
        host = opts.override_host or self.client_host or base.host_header
        headers = request_headers(
            self.source, host=host, forwarding=self.forwarding, via=self.via,
            additional=opts.additional,
        )  # fmt: skip
        if opts.json_body:
            headers = _json_content_type(headers, opts)
        reader = self.reader
        content = reader.stream() if reader is not None else self.body
        response = await self.sender.request(
            base, self.method, target, headers, content, self.length, opts.timeouts
        )
        if sum(len(v) for _, v in response.headers) > MAX_RESPONSE_HEAD:
            await response.aclose()
            raise RemoteProtocolError("response head too large", request_sent=True)
        return response


async def _open(
    scope: Scope,
    receive: Receive,
    upstream: str | Upstreams | Router,
    path: str | None,
    opts: Options,
    sender: Sender,
    framing: tuple[int | None, bool],
    body_complete: Callable[[], object] | None,
) -> Exchange | ErrorReply | None:
    failover = not isinstance(upstream, str)
    out = _Outgoing(scope, receive, path, opts, sender, framing, failover, body_complete)
    reader = out.reader
    attempt = out.send

    if not failover:
        assert isinstance(upstream, str)
        try:
            response = await attempt(upstream)
        except BadRequest:
            return BAD_REQUEST
        except ClientDisconnect:
            return None
        except UpstreamError as exc:
            if reader is not None and reader.disconnected:
                return None
            return _unread(error_reply(exc), reader)
        return Exchange(response, _response_headers(response, opts), reader)

    # ``hasattr``, not ``isinstance(upstream, Router)``: a runtime-checkable Protocol check
    # walks the protocol's members on every call.
    route = getattr(upstream, "route", None)
    ups: Upstreams = route(scope) if route is not None else cast(Upstreams, upstream)
    loop = asyncio.get_running_loop()
    tried: list[str] = []
    last: UpstreamError | None = None
    while len(tried) < MAX_ATTEMPTS:
        url = ups.pick(tried)
        if url is None:
            break
        tried.append(url)
        started = loop.time()
        try:
            response = await attempt(url)
        except BadRequest:
            ups.done(url, Outcome.CLIENT_ABORT, loop.time() - started)
            return BAD_REQUEST
        except ClientDisconnect:
            ups.done(url, Outcome.CLIENT_ABORT, loop.time() - started)
            return None
        except UpstreamError as exc:
            gone = reader is not None and reader.disconnected
            ups.done(url, Outcome.CLIENT_ABORT if gone else exc.outcome, loop.time() - started)
            if gone:
                return None
            last = exc
            if not _retry_safe(exc, out.method, reader):
                break
            continue
        except ValueError:  # a malformed target URL from the balancer
            ups.done(url, Outcome.CONNECT_ERROR, loop.time() - started)
            continue
        except BaseException:
            ups.done(url, Outcome.CLIENT_ABORT, loop.time() - started)
            raise
        return Exchange(response, _response_headers(response, opts), reader, ups, url, started)
    return _unread(NO_UPSTREAM if last is None else error_reply(last), reader)


def _json_content_type(headers: Headers, opts: Options) -> Headers:
    """The ``Content-Type`` of a JSON ``override_body``: the caller's (``override_headers``,
    ``additional_headers``) or the client's if it is a JSON type (``application/json``,
    ``…+json``, as 0.4.0 kept it), else ``application/json`` (the client's type described the
    body that was replaced)."""
    for chosen in (opts.override_headers, opts.additional):
        if chosen and any(n == b"content-type" for n, _ in chosen):
            return headers
    types = [v for n, v in headers if n == b"content-type"]
    if len(types) == 1 and _is_json_type(types[0]):
        return headers
    return [h for h in headers if h[0] != b"content-type"] + [
        (b"content-type", b"application/json")
    ]


def _is_json_type(value: bytes) -> bool:
    media = value.split(b";", 1)[0].strip().lower()
    return media == b"application/json" or media.endswith(b"+json")


def _unread(reply: ErrorReply, reader: BodyReader | None) -> ErrorReply:
    """``reply``, closing the client connection when the request body was not all read (it
    will not be: keeping the connection would leave the rest of the upload to the server)."""
    if reader is None or reader.complete:
        return reply
    return dataclasses.replace(reply, headers=(*reply.headers, (b"connection", b"close")))


def _response_headers(response: UpstreamResponse, opts: Options) -> Headers:
    status = response.status
    return response_headers(
        response.headers,
        via=_via(response.http_version, opts.via) if opts.via else None,
        keep_date_server=opts.keep_date_server,
        drop_length=status < 200 or status in (204, 304),
    )
