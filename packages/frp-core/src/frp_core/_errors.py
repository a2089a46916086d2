"""Errors of the upstream engine, each knowing the status a client should see.

``request_sent`` says whether any byte of the request reached the socket: failover logic uses it
to decide whether a retry on another target is safe.  Messages never carry internal addresses;
they are safe to show to a client.
"""

from __future__ import annotations

from ._routing import Outcome


class UpstreamError(Exception):
    """An upstream attempt failed."""

    status: int = 502
    outcome: Outcome = Outcome.RESET
    public_message: str = "Bad Gateway"

    def __init__(self, detail: str = "", *, request_sent: bool = False) -> None:
        super().__init__(detail or self.public_message)
        self.request_sent = request_sent


class ConnectError(UpstreamError):
    """Connection refused, unreachable host, DNS or TLS failure: 502."""

    outcome = Outcome.CONNECT_ERROR


class ConnectTimeout(UpstreamError):
    """The connection was not established in time: 504."""

    status = 504
    outcome = Outcome.TIMEOUT
    public_message = "Gateway Timeout"


class ReadTimeout(UpstreamError):
    """The upstream sent nothing for longer than the read timeout: 504."""

    status = 504
    outcome = Outcome.TIMEOUT
    public_message = "Gateway Timeout"


class WriteTimeout(UpstreamError):
    """The upstream did not accept request bytes in time: 504."""

    status = 504
    outcome = Outcome.TIMEOUT
    public_message = "Gateway Timeout"


class PoolTimeout(UpstreamError):
    """No pooled connection became free in time: 503 (a local limit, not an upstream fault)."""

    status = 503
    outcome = Outcome.LOCAL_LIMIT
    public_message = "Service Unavailable"


class RemoteProtocolError(UpstreamError):
    """The upstream closed, reset, or sent something that is not valid HTTP/1.1: 502."""

    outcome = Outcome.RESET


class LocalProtocolError(UpstreamError):
    """The request body did not match its declared length (a client or caller fault): 400.

    Raised by the engine when an iterable body yields more or fewer bytes than the
    ``content_length`` it was sent with; the connection is discarded.
    """

    status = 400
    outcome = Outcome.CLIENT_ABORT
    public_message = "Bad Request"
