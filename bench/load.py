"""Load generation for the small-GET workload: wrk (``--latency``) when installed, otherwise a
built-in asyncio HTTP/1.1 keep-alive generator run in a separate process.

Both return ``{"requests", "seconds", "rps", "p50_ms", "p99_ms", "errors", "tool"}``.  The
built-in generator is one Python process: at high concurrency it, not the server, may be the
bottleneck, so install wrk (``apt-get install -y wrk``) for real figures.
Standalone: ``python load.py --port P --path /small -c 64 -d 5`` prints the JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, cast

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not match:
        raise ValueError(f"unparsable wrk latency {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_wrk(out: str) -> dict[str, Any]:
    """Requests, duration, requests/s, p50/p99 and error counts from ``wrk --latency`` output."""
    done = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", out)
    if not done:
        raise ValueError(f"unexpected wrk output: {out.strip()[-300:]}")
    pct = dict(re.findall(r"^\s+(50|99)(?:\.0+)?%\s+([\d.]+(?:us|ms|s|m))\s*$", out, re.M))
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors += int(non2xx.group(1)) if non2xx else 0
    requests = int(done.group(1))
    seconds = _ms(done.group(2) + done.group(3)) / 1e3
    return {
        "requests": requests,
        "seconds": seconds,
        "rps": requests / seconds if seconds else 0.0,
        "p50_ms": _ms(pct["50"]) if "50" in pct else None,
        "p99_ms": _ms(pct["99"]) if "99" in pct else None,
        "errors": errors,
        "tool": "wrk",
    }


def tool(choice: str = "auto") -> str:
    """``wrk`` or ``builtin``: what ``choice`` (auto, wrk, builtin) resolves to here."""
    if choice == "builtin" or (choice == "auto" and not shutil.which("wrk")):
        return "builtin"
    if not shutil.which("wrk"):
        raise RuntimeError("wrk not installed (apt-get install -y wrk)")
    return "wrk"


def run(
    port: int, path: str, connections: int, seconds: float, choice: str = "auto"
) -> dict[str, Any]:
    """One load run against 127.0.0.1:port, bounded to ``seconds`` + 30 s."""
    url = f"http://127.0.0.1:{port}{path}"
    wrk = shutil.which("wrk") if tool(choice) == "wrk" else None
    if wrk:
        threads = max(1, min(2, connections))
        argv = [
            wrk,
            "--latency",
            "-t",
            str(threads),
            "-c",
            str(connections),
            "-d",
            f"{max(1, round(seconds))}s",
            "--timeout",
            "10s",
            url,
        ]
    else:
        argv = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--port",
            str(port),
            "--path",
            path,
            "-c",
            str(connections),
            "-d",
            str(seconds),
        ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30)
    if done.returncode != 0:
        raise RuntimeError(f"load generator failed: {(done.stderr or done.stdout).strip()[-300:]}")
    if wrk:
        return parse_wrk(done.stdout)
    result: dict[str, Any] = json.loads(done.stdout)
    return result


# --- the built-in generator -------------------------------------------------------------


def _response_end(buf: bytes | bytearray) -> int:
    """Index just past the first complete response in ``buf``, or -1."""
    head_end = buf.find(b"\r\n\r\n")
    if head_end < 0:
        return -1
    head = bytes(buf[:head_end]).lower()
    pos = head_end + 4
    match = re.search(rb"\r\ncontent-length:\s*(\d+)", head)
    if match:
        end = pos + int(match.group(1))
        return end if len(buf) >= end else -1
    if b"chunked" not in head:
        return pos  # no body (e.g. 204/304)
    while True:  # chunked: walk the chunk sizes
        line_end = buf.find(b"\r\n", pos)
        if line_end < 0:
            return -1
        size = int(bytes(buf[pos:line_end]).split(b";")[0], 16)
        pos = line_end + 2 + size + 2
        if len(buf) < pos:
            return -1
        if size == 0:
            return pos


class _Client(asyncio.Protocol):
    def __init__(self, request: bytes, stats: _Stats) -> None:
        self.request, self.stats = request, stats
        self.buf = bytearray()
        self.sent = 0.0
        self.transport: asyncio.Transport | None = None
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass
        self._send()

    def _send(self) -> None:
        assert self.transport is not None
        if self.stats.stopped:
            self.transport.close()
            return
        self.sent = time.perf_counter()
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        end = _response_end(self.buf)
        if end < 0:
            return
        if not self.buf.startswith(b"HTTP/1.1 2"):
            self.stats.errors += 1
        del self.buf[:end]
        self.stats.latencies.append(time.perf_counter() - self.sent)
        self._send()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.stats.stopped:
            self.stats.errors += 1
        if not self.closed.done():
            self.closed.set_result(None)


class _Stats:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.errors = 0
        self.stopped = False


async def _generate(port: int, path: str, connections: int, seconds: float) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    stats = _Stats()
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    start = time.perf_counter()
    clients = []
    for _ in range(connections):
        _, client = await loop.create_connection(lambda: _Client(request, stats), "127.0.0.1", port)
        clients.append(client)
    await asyncio.sleep(seconds)
    stats.stopped = True
    elapsed = time.perf_counter() - start
    for client in clients:
        if client.transport is not None:
            client.transport.close()
    await asyncio.wait([c.closed for c in clients], timeout=10)
    lat = sorted(stats.latencies)

    def pct(q: float) -> float | None:
        return lat[min(len(lat) - 1, int(q * len(lat)))] * 1e3 if lat else None

    return {
        "requests": len(lat),
        "seconds": elapsed,
        "rps": len(lat) / elapsed,
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "errors": stats.errors,
        "tool": "builtin",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/small")
    parser.add_argument("-c", "--connections", type=int, default=64)
    parser.add_argument("-d", "--seconds", type=float, default=5.0)
    args = parser.parse_args()
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:
        runner = asyncio.run
    print(json.dumps(runner(_generate(args.port, args.path, args.connections, args.seconds))))


if __name__ == "__main__":
    main()
