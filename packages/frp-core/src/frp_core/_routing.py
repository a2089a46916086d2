"""How one upstream attempt ended, and the hook a load balancer plugs into ``proxy_pass``.

``Outcome`` values are plain strings so that a health checker can accept them without importing
frp-core (``frp_health`` takes the same literal strings).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable


class Outcome(enum.StrEnum):
    """The result of one attempt against one upstream target."""

    SUCCESS = "success"  #: a response arrived and its body was relayed completely
    HTTP_5XX = "http_5xx"  #: the upstream answered 502, 503 or 504 (a gateway failure)
    CONNECT_ERROR = "connect_error"  #: refused, unreachable, DNS or TLS failure
    TIMEOUT = "timeout"  #: connect or read timeout
    RESET = "reset"  #: the connection broke or the response was malformed/truncated
    CLIENT_ABORT = "client_abort"  #: our client went away; says nothing about the upstream
    LOCAL_LIMIT = "local_limit"  #: our own pool was exhausted; says nothing about the upstream


#: Outcomes that count against a target's health.
FAILURES: frozenset[Outcome] = frozenset(
    {Outcome.HTTP_5XX, Outcome.CONNECT_ERROR, Outcome.TIMEOUT, Outcome.RESET}
)


@runtime_checkable
class Upstreams(Protocol):
    """A source of targets for one proxied request, with failover (see frp-balance).

    ``proxy_pass`` calls ``pick(tried)`` before each attempt (``tried`` lists the targets already
    attempted for this request, in order) and ``done(target, outcome, elapsed)`` exactly once per
    picked target, when that attempt ends: after the response body was fully relayed, or on
    failure, or on cancellation.  ``pick`` returning ``None`` ends the request: 503 when nothing
    was tried, otherwise the last failure's status.  Whether a retry is *safe* is decided by
    frp-core (it knows what reached the wire); ``pick`` decides whether one is *wanted*.
    """

    def pick(self, tried: Sequence[str]) -> str | None: ...

    def done(self, target: str, outcome: Outcome, elapsed: float) -> None: ...


@runtime_checkable
class Router(Protocol):
    """Something that hands out an :class:`Upstreams` per request (a load balancer).

    ``route`` sees the ASGI scope so that strategies such as consistent hashing can key on the
    client address, a header or a cookie.  ``ReverseProxy``, ``proxy_pass`` and frp-ws accept a
    ``Router`` or a ``Upstreams`` wherever they accept a base URL.
    """

    def route(self, scope: Mapping[str, Any]) -> Upstreams: ...
