"""One active probe over httpx: no redirects followed, a bounded body read, a hard deadline."""

from __future__ import annotations

import asyncio
import http.cookiejar
import time
from collections.abc import Mapping
from dataclasses import dataclass

import httpx

#: At most this many body bytes are read from a probe response before it is closed.
MAX_BODY = 4096
#: Statuses after which a HEAD probe is retried (and from then on sent) as GET.
HEAD_REFUSED = frozenset({405, 501})


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """What one probe found."""

    ok: bool
    latency: float | None  #: seconds until the response head arrived
    status: int | None
    error: str | None
    method: str  #: the method that produced this result


def make_client() -> httpx.AsyncClient:
    """The checker's own client: keeps no cookies, follows no redirects."""
    jar = http.cookiejar.CookieJar(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
    return httpx.AsyncClient(cookies=jar, follow_redirects=False)


async def warm_up() -> None:
    """Load what httpx loads at its first request (anyio's event-loop backend: ~80 ms of
    imports here), so that it is not timed as the latency of the first target probed."""
    try:
        import anyio.lowlevel
    except ImportError:  # pragma: no cover - httpx without anyio: nothing loaded lazily
        return
    await anyio.lowlevel.checkpoint()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, httpx.TimeoutException | TimeoutError):
        kind = "timeout"
    elif isinstance(exc, httpx.ConnectError):
        kind = "connect_error"
    elif isinstance(exc, httpx.TransportError):
        kind = "reset"
    else:
        kind = "error"
    detail = str(exc)
    return f"{kind}: {type(exc).__name__}" + (f": {detail}" if detail else "")


async def _once(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    headers: Mapping[str, str],
    timeout: float,
    expected: frozenset[int],
) -> ProbeResult:
    start = time.perf_counter()
    try:
        async with asyncio.timeout(timeout):
            request = client.build_request(method, url, headers=headers, timeout=timeout)
            response = await client.send(request, stream=True, follow_redirects=False)
            try:
                latency = time.perf_counter() - start
                read = 0
                async for chunk in response.aiter_raw():
                    read += len(chunk)
                    if read >= MAX_BODY:
                        break
            finally:
                await response.aclose()
    except (httpx.HTTPError, OSError, TimeoutError) as exc:
        return ProbeResult(False, None, None, _describe(exc), method)
    status = response.status_code
    if status in expected:
        return ProbeResult(True, latency, status, None, method)
    return ProbeResult(False, latency, status, f"HTTP {status}", method)


async def probe(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    headers: Mapping[str, str],
    timeout: float,
    expected: frozenset[int],
) -> ProbeResult:
    """Probe ``url``; a HEAD refused with 405/501 is retried at once as GET."""
    result = await _once(client, method, url, headers, timeout, expected)
    if method == "HEAD" and result.status in HEAD_REFUSED:
        result = await _once(client, "GET", url, headers, timeout, expected)
    return result
