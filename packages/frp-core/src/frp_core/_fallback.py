"""The httpx path: a user-built ``httpx.AsyncClient`` behind the engine's interface.

Used when the stored client does something the engine does not (HTTP/2, an outbound proxy, a
custom transport, auth, mounts).  Requests are built directly (never ``client.build_request``)
so no client cookies, default headers (``User-Agent``, ``Accept-Encoding``) or URL
normalisation get in; the exact request-target travels in httpcore's ``target`` extension, so
``..`` and ``%2F`` survive.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any

import httpx

from . import _errors as err
from ._config import Timeouts
from ._headers import Headers
from ._upstream import Base

__all__ = ["HttpxSender", "HttpxUpstreamResponse"]

_NO_BODY_STATUS = frozenset({204, 304})


@functools.lru_cache(maxsize=256)
def _url(base: Base) -> httpx.URL:
    return httpx.URL(scheme=base.scheme, host=base.host, port=base.port, path="/")


def _map(exc: Exception, *, sent: bool) -> err.UpstreamError:
    """An httpx exception as the matching engine error (messages carry no addresses)."""
    if isinstance(exc, httpx.ConnectTimeout):
        return err.ConnectTimeout(request_sent=False)
    if isinstance(exc, httpx.PoolTimeout):
        return err.PoolTimeout(request_sent=False)
    if isinstance(exc, httpx.ReadTimeout):
        return err.ReadTimeout(request_sent=True)
    if isinstance(exc, httpx.WriteTimeout):
        return err.WriteTimeout(request_sent=True)
    if isinstance(exc, httpx.ConnectError | httpx.ProxyError | httpx.UnsupportedProtocol):
        return err.ConnectError(request_sent=False)
    return err.RemoteProtocolError(request_sent=sent)


class HttpxUpstreamResponse:
    """An ``httpx.Response`` (opened with ``stream=True``) seen as an engine response."""

    __slots__ = (
        "_iter",
        "_response",
        "content_length",
        "has_body",
        "headers",
        "http_version",
        "reason",
        "status",
    )

    def __init__(self, response: httpx.Response, method: bytes) -> None:
        self._response = response
        self.status = response.status_code
        self.reason = response.reason_phrase.encode("latin-1", "replace")
        self.http_version = response.http_version.removeprefix("HTTP/")
        self.headers: Headers = [(n.lower(), v) for n, v in response.headers.raw]
        self.has_body = not (
            method == b"HEAD" or self.status < 200 or self.status in _NO_BODY_STATUS
        )
        length = response.headers.get("content-length")
        self.content_length = int(length) if length and length.isdigit() else None
        self._iter: AsyncIterator[bytes] = response.aiter_raw()

    async def receive(self) -> bytes:
        """The next body chunk, ``b""`` at the clean end."""
        if not self.has_body:
            return b""
        try:
            return await anext(self._iter)
        except StopAsyncIteration:
            return b""
        except httpx.HTTPError as exc:
            raise _map(exc, sent=True) from None

    def body_ready(self) -> bool:
        """Not known through httpx: as if the body had to be awaited."""
        return not self.has_body

    async def aclose(self) -> None:
        """Release the response (closes its connection unless the body was completed)."""
        await self._response.aclose()


class HttpxSender:
    """Sends proxy requests through a user's ``httpx.AsyncClient``."""

    __slots__ = ("client",)

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def request(
        self,
        base: Base,
        method: bytes,
        target: bytes,
        headers: Headers,
        body: bytes | AsyncIterable[bytes],
        content_length: int | None,
        timeouts: Timeouts,
    ) -> HttpxUpstreamResponse:
        """Send one request; the response headers have arrived when this returns."""
        if content_length is not None:
            headers = [*headers, (b"content-length", b"%d" % content_length)]
        content: Any = body if (body or not isinstance(body, bytes)) else None
        extensions = {
            "timeout": {
                "connect": timeouts.connect,
                "read": timeouts.read,
                "write": timeouts.write,
                "pool": timeouts.pool,
            },
            "target": target,
        }
        request = httpx.Request(
            method.decode("ascii"),
            _url(base),
            headers=headers,
            content=content,
            extensions=extensions,
        )
        try:
            response = await self.client.send(request, stream=True, follow_redirects=False)
        except httpx.HTTPError as exc:
            raise _map(exc, sent=True) from None
        except RuntimeError as exc:  # the client was closed
            raise err.ConnectError(request_sent=False) from exc
        if not 200 <= response.status_code <= 599:  # no status class: refused like the engine
            await response.aclose()
            raise err.RemoteProtocolError("invalid response status", request_sent=True)
        return HttpxUpstreamResponse(response, method)

    async def aclose(self) -> None:
        """Close the client."""
        await self.client.aclose()
