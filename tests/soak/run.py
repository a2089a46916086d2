"""Soak: mixed traffic through the load balancer, with a backend killed and restarted midway.

    python tests/soak/run.py            # 100,000 requests
    python tests/soak/run.py --short    # ~2,000 requests (CI)

Two backends (``backend.py``, separate processes) sit behind a 0.4.0-style FastAPI gateway
(``LoadBalancer(HealthChecker([...]))`` with ``lb.proxy_pass`` and ``lb.proxy_pass_websocket``)
running under uvicorn in this process.  Clients (httpx, websockets) send small GETs, streamed
uploads and downloads, SSE streams and WebSocket sessions; some uploads, downloads and WebSocket
sessions are aborted on purpose.  A third of
the way in, at a moment the balancer has attempts in flight on it, backend 2 is killed
(SIGKILL); two thirds in, it is restarted on the same port.

Checks:

- only requests in flight at the moment backend 2 is killed may fail: those it was serving
  when it died (a response already under way, a WebSocket session, or an upload already sent,
  which nginx and Envoy do not send twice either; an idempotent request whose retry the retry
  budget refused).  Every request that starts after the kill must succeed, whatever its kind:
  before health checks notice the dead backend, a request sent to it finds it refusing
  connections (or a pooled connection to it closed), which fails over to the live backend;
- every completed upload arrived intact (sha256 at the backend), every completed download and
  SSE stream is intact;
- afterwards the process's open file descriptors, the proxy loop's asyncio tasks and the
  interpreter's allocated blocks are back within a small margin of their baseline (taken
  after a warm-up).  RSS is bounded too.  On a long run it must also stop rising: the peak
  under load in the second half may exceed the second quarter's by at most 16 MiB (see
  :func:`rss_problems`).

Exits non-zero on failure; the last line is ``soak: 1 passed, 0 failed`` or
``soak: 0 passed, 1 failed``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import dataclasses
import gc
import hashlib
import json
import os
import pathlib
import random
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "support"))
sys.path.insert(0, str(HERE))

import httpx  # noqa: E402
from backend import PATTERN  # noqa: E402
from fastapi import FastAPI, Request, WebSocket  # noqa: E402
from frp_testing import run_server  # noqa: E402

import frp_core  # noqa: E402
from frp_balance import LoadBalancer  # noqa: E402
from frp_health import HealthChecker  # noqa: E402

KINDS = {  # kind: weight
    "small": 50,
    "upload": 12,
    "download": 12,
    "sse": 8,
    "websocket": 8,
    "abort_download": 5,
    "abort_upload": 5,
    "abort_websocket": 3,
}


class Abort(Exception):
    """Raised inside an upload body generator to abort the request on purpose."""


@dataclasses.dataclass
class Result:
    kind: str
    ok: bool
    start: float
    end: float
    detail: str = ""
    corrupt: bool = False


# -- backends ---------------------------------------------------------------------------------


class Backend:
    """A backend process on a fixed loopback port; killed and restarted by PID."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(1024)
        self.port = sock.getsockname()[1]
        fd = sock.fileno()
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "backend.py"), "--fd", str(fd), "--name", self.name],
            pass_fds=[fd],
        )
        sock.close()  # the child owns the listener: once it dies, connections are refused

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(30)
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(15)
            self.proc = None


# -- the gateway under test -------------------------------------------------------------------


def make_gateway(backends: list[Backend]) -> tuple[Any, LoadBalancer]:
    checker = HealthChecker(
        [b.url for b in backends],
        interval=0.5,
        timeout=2,
        ping_path="/health",
        method="GET",
        unhealthy_threshold=1,
        healthy_threshold=1,
    )
    lb = LoadBalancer(checker)
    timeout = frp_core.Timeouts(connect=5.0, read=30.0, write=30.0, pool=30.0)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with checker:
            yield

    app = FastAPI(lifespan=lifespan)

    @app.api_route("/{path:path}", methods=["GET", "POST"])
    async def gateway(request: Request, path: str) -> Any:
        return await lb.proxy_pass(request, path=f"/{path}", timeout=timeout)

    @app.websocket("/ws")
    async def tunnel(websocket: WebSocket) -> None:
        await lb.proxy_pass_websocket(websocket, path="/ws")

    return app, lb


# -- traffic ----------------------------------------------------------------------------------


async def one(kind: str, rng: random.Random, client: httpx.AsyncClient, base: str) -> Result:
    start = time.monotonic()
    try:
        detail, corrupt = await asyncio.wait_for(_KIND_FUNCS[kind](rng, client, base), 60)
    except Exception as exc:
        return Result(kind, False, start, time.monotonic(), f"{type(exc).__name__}: {exc}"[:200])
    return Result(kind, not detail, start, time.monotonic(), detail, corrupt)


async def do_small(rng: random.Random, client: httpx.AsyncClient, base: str) -> tuple[str, bool]:
    r = await client.get(base + "/small")
    if r.status_code != 200:
        return f"status {r.status_code}", False
    return ("", False) if r.content == b"s" * 100 else ("wrong body", True)


async def do_upload(rng: random.Random, client: httpx.AsyncClient, base: str) -> tuple[str, bool]:
    n = rng.randrange(1, 512 << 10)
    data = rng.randbytes(n)
    if rng.random() < 0.5:
        content: Any = data
    else:

        async def gen() -> AsyncIterator[bytes]:
            for i in range(0, n, 65536):
                yield data[i : i + 65536]

        content = gen()
    r = await client.post(base + "/upload", content=content)
    if r.status_code != 200:
        return f"status {r.status_code}", False
    got = json.loads(r.content)
    if got["n"] != n or got["sha256"] != hashlib.sha256(data).hexdigest():
        return f"upload corrupted: sent {n}, backend got {got['n']}", True
    return "", False


async def do_download(rng: random.Random, client: httpx.AsyncClient, base: str) -> tuple[str, bool]:
    n = rng.randrange(1, 1 << 20)
    r = await client.get(base + f"/download?n={n}")
    if r.status_code != 200:
        return f"status {r.status_code}", False
    return ("", False) if r.content == PATTERN[:n] else ("download corrupted", True)


async def do_sse(rng: random.Random, client: httpx.AsyncClient, base: str) -> tuple[str, bool]:
    k = rng.randrange(1, 8)
    async with client.stream("GET", base + f"/sse?n={k}") as r:
        if r.status_code != 200:
            return f"status {r.status_code}", False
        body = b"".join([c async for c in r.aiter_bytes()])
    events = [e for e in body.split(b"\n\n") if e]
    ids = [int(e.split(b"\n")[0].split(b": ")[1]) for e in events]
    return ("", False) if ids == list(range(k)) else (f"sse events {ids}", True)


async def do_websocket(
    rng: random.Random, client: httpx.AsyncClient, base: str
) -> tuple[str, bool]:
    from websockets.asyncio.client import connect

    url = base.replace("http://", "ws://") + "/ws"
    async with connect(url, open_timeout=10, close_timeout=5) as ws:
        for i in range(rng.randrange(1, 5)):
            message = f"msg {i} " + "x" * rng.randrange(0, 2000)
            await ws.send(message)
            echo = await ws.recv()
            if echo != message:
                return "websocket echo mismatch", True
    return "", False


async def do_abort_download(
    rng: random.Random, client: httpx.AsyncClient, base: str
) -> tuple[str, bool]:
    async with client.stream("GET", base + f"/download?n={1 << 20}") as r:
        async for _ in r.aiter_raw():
            break  # leave after the first chunk: the connection is closed, not reused
    return "", False


async def do_abort_upload(
    rng: random.Random, client: httpx.AsyncClient, base: str
) -> tuple[str, bool]:
    async def gen() -> AsyncIterator[bytes]:
        yield rng.randbytes(65536)
        yield rng.randbytes(65536)
        raise Abort

    with contextlib.suppress(Abort):
        await client.post(base + "/upload", content=gen())
    return "", False


async def do_abort_websocket(
    rng: random.Random, client: httpx.AsyncClient, base: str
) -> tuple[str, bool]:
    """A WebSocket client that vanishes without a closing handshake (TCP abort)."""
    from websockets.asyncio.client import connect

    ws = await connect(base.replace("http://", "ws://") + "/ws", open_timeout=10)
    await ws.send("before the abort")
    echo = await ws.recv()
    ws.transport.abort()
    await asyncio.wait_for(ws.wait_closed(), 10)
    return ("", False) if echo == "before the abort" else ("websocket echo mismatch", True)


_KIND_FUNCS = {
    "small": do_small,
    "upload": do_upload,
    "download": do_download,
    "sse": do_sse,
    "websocket": do_websocket,
    "abort_download": do_abort_download,
    "abort_upload": do_abort_upload,
    "abort_websocket": do_abort_websocket,
}


@dataclasses.dataclass
class Tally:
    """Counts per kind, and the failed requests only: memory stays flat however long the run
    (the leak check counts Python objects, so the driver must not keep one per request)."""

    done: int = 0
    by_kind: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    ok_by_kind: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    failed: list[Result] = dataclasses.field(default_factory=list)

    def add(self, result: Result) -> None:
        self.done += 1
        self.by_kind[result.kind] += 1
        if result.ok:
            self.ok_by_kind[result.kind] += 1
        else:
            self.failed.append(result)


async def drive(
    base: str,
    total: int,
    concurrency: int,
    seed: int,
    on_progress: Any = None,
) -> Tally:
    rng = random.Random(seed)
    kind_names, weights = list(KINDS), list(KINDS.values())
    tally = Tally()
    counter = iter(range(total))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=30.0, limits=limits) as client:

        async def worker(w: int) -> None:
            wrng = random.Random(seed * 1000 + w)
            for _ in counter:
                kind = rng.choices(kind_names, weights=weights)[0]
                tally.add(await one(kind, wrng, client, base))
                if on_progress is not None:
                    await on_progress(tally.done)

        await asyncio.gather(*(worker(w) for w in range(concurrency)))
    return tally


# -- resources --------------------------------------------------------------------------------


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def rss_bytes() -> int:
    for line in pathlib.Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


#: Runs at least this long are checked for RSS still rising in their second half.
LONG_RUN = 20_000


def rss_problems(
    requests: int, before: int, after: int, samples: list[tuple[int, int]]
) -> list[str]:
    """What RSS says of a leak.

    RSS includes the allocator's high-water mark (the zlib contexts of concurrent WebSocket
    sessions and the 1 MiB transfer buffers fragment the heap). It climbs for the first tens
    of thousands of requests, by 40-60 MiB here, then stays. A leak keeps climbing. So a long
    run compares the peak under load in its second half with the one in its second quarter.
    Every run also bounds the total growth.
    """
    problems: list[str] = []
    margin = max(96 << 20, before) if requests >= LONG_RUN else max(48 << 20, before // 2)
    if after > before + margin:
        problems.append(f"RSS {before >> 20} MiB -> {after >> 20} MiB (+{margin >> 20} ok)")
    if requests >= LONG_RUN:
        quarter = [rss for done, rss in samples if requests // 4 < done <= requests // 2]
        late = [rss for done, rss in samples if done > requests // 2]
        if quarter and late and max(late) > max(quarter) + (16 << 20):
            problems.append(
                f"RSS still rising in the second half: peak {max(quarter) >> 20} MiB "
                f"-> {max(late) >> 20} MiB (+16 ok)"
            )
    return problems


def proxy_tasks(server: Any) -> int:
    async def count() -> int:
        return len(asyncio.all_tasks())

    return asyncio.run_coroutine_threadsafe(count(), server.loop).result(10)


async def settle(server: Any) -> None:
    """Wait (bounded) until the proxy has no client connection left open."""
    for _ in range(200):
        if not server.server.server_state.connections:
            break
        await asyncio.sleep(0.05)
    gc.collect()


def snapshot(server: Any) -> dict[str, int]:
    gc.collect()
    return {
        "fds": open_fds(),
        "tasks": proxy_tasks(server),
        "rss": rss_bytes(),
        "blocks": sys.getallocatedblocks(),
    }


# -- main -------------------------------------------------------------------------------------


async def soak(args: argparse.Namespace) -> bool:
    backends = [Backend("b1"), Backend("b2")]
    for b in backends:
        b.start()
    try:
        app, lb = make_gateway(backends)
        with run_server(app, http="httptools", ws="wsproto") as proxy:
            return await _soak(args, backends, proxy, lb)
    finally:
        for b in backends:
            b.stop()


async def _soak(
    args: argparse.Namespace, backends: list[Backend], proxy: Any, lb: LoadBalancer
) -> bool:
    base = proxy.url
    warm = await drive(base, args.warmup, args.concurrency, seed=args.seed + 1)
    warm_failed = warm.failed
    await settle(proxy)
    before = snapshot(proxy)
    print(f"soak: baseline {before} after {warm.done} warm-up requests", flush=True)

    victim = backends[1]
    kill_at, restart_at = args.requests // 3, 2 * args.requests // 3
    window: dict[str, float] = {}
    picks: dict[str, int] = {}  # the victim's picks by the balancer when it restarted

    step = max(1, args.requests // 10)
    rss_samples: list[tuple[int, int]] = []  # (requests done, RSS) under load

    async def on_progress(done: int) -> None:
        if done % step == 0:
            rss_samples.append((done, rss_bytes()))
            print(f"soak: {done}/{args.requests} requests, RSS {rss_bytes() >> 20} MiB", flush=True)
        # killed while it serves requests (up to 1,000 requests later): those must be the
        # only failures; the balancer's count is read from this thread, which is harmless
        serving = lb.in_flight(victim.url)
        if done >= kill_at and (serving or done >= kill_at + 1000) and "kill" not in window:
            window["killing"] = time.monotonic()
            victim.kill()  # returns once the process is reaped: its sockets are closed
            window["kill"] = time.monotonic()
            print(
                f"soak: killed {victim.name} after {done} requests, "
                f"{serving} attempts in flight on it",
                flush=True,
            )
        elif done >= restart_at and "kill" in window and "restart" not in window:
            picks["restart"] = lb.stats()["targets"][victim.url]["picks"]
            victim.start()
            window["restart"] = time.monotonic()
            print(f"soak: restarted {victim.name} after {done} requests", flush=True)

    t0 = time.monotonic()
    tally = await drive(base, args.requests, args.concurrency, args.seed, on_progress)
    elapsed = time.monotonic() - t0
    await settle(proxy)
    after = snapshot(proxy)
    for _ in range(50):  # let finishing cleanups (disconnect watchers, probes) run out
        if after["tasks"] <= before["tasks"] and after["fds"] <= before["fds"]:
            break
        await asyncio.sleep(0.1)
        after = snapshot(proxy)

    killing, kill = window.get("killing", float("inf")), window.get("kill", float("inf"))

    def excused(r: Result) -> bool:  # in flight at the moment the victim died
        return r.start <= kill and r.end >= killing

    by_kind = tally.by_kind
    failed = tally.failed
    corrupt = [r for r in failed if r.corrupt]
    unexcused = [r for r in failed if not excused(r)]
    problems: list[str] = []
    if warm_failed:
        problems.append(f"{len(warm_failed)} warm-up failures, e.g. {warm_failed[0].detail}")
    if corrupt:
        problems.append(f"{len(corrupt)} corrupted transfers, e.g. {corrupt[0].detail}")
    if "kill" not in window or "restart" not in window:
        problems.append(f"the backend was not killed and restarted ({sorted(window)})")
    if unexcused:
        kinds = collections.Counter(r.kind for r in unexcused)
        after_kill = sum(r.start > kill for r in unexcused)
        problems.append(
            f"{len(unexcused)} failures of requests not in flight at the kill {dict(kinds)} "
            f"({after_kill} started after it), e.g. {unexcused[0].kind}: {unexcused[0].detail}"
        )
        for r in unexcused[:10]:
            print(
                f"soak:   {r.kind} {r.start - kill:+.3f}s..{r.end - kill:+.3f}s from the kill: "
                f"{r.detail}"
            )
    fd_margin = 2 * args.concurrency + 10
    if after["fds"] > before["fds"] + fd_margin:
        problems.append(f"file descriptors {before['fds']} -> {after['fds']} (+{fd_margin} ok)")
    task_margin = 3
    if after["tasks"] > before["tasks"] + task_margin:
        problems.append(f"proxy tasks {before['tasks']} -> {after['tasks']} (+{task_margin} ok)")
    # Python objects that outlive their request show up here, whatever the allocator does
    block_margin = max(50_000, before["blocks"] // 20)
    if after["blocks"] > before["blocks"] + block_margin:
        problems.append(
            f"allocated blocks {before['blocks']} -> {after['blocks']} (+{block_margin} ok)"
        )
    problems += rss_problems(args.requests, before["rss"], after["rss"], rss_samples)
    stats = lb.stats()
    served_again = stats["targets"][victim.url]["picks"] - picks.get("restart", 0)
    if served_again <= 0:
        problems.append(f"{victim.name} got no traffic after its restart")
    if tally.done != args.requests:
        problems.append(f"{tally.done} results for {args.requests} requests")

    print(f"soak: {tally.done} requests in {elapsed:.1f}s, concurrency {args.concurrency}")
    print(f"soak: mix {dict(sorted(by_kind.items()))}")
    print(f"soak: {tally.ok_by_kind['upload']} uploads completed and verified intact")
    excused_n = len(failed) - len(unexcused)
    down = window.get("restart", kill) - kill
    print(
        f"soak: {excused_n} failures of requests in flight when {victim.name} was killed "
        f"(allowed); {len(unexcused)} other failures (none allowed), {down:.1f}s down"
    )
    if excused_n:
        sample = collections.Counter((r.kind, r.detail[:60]) for r in failed if excused(r))
        for (kind, detail), n in sample.most_common(5):
            print(f"soak:   {n} x {kind}: {detail}")
    print(
        f"soak: balancer: {stats['requests']} requests, {stats['failovers']} failovers after a "
        f"connect failure, {stats['retries']} retries ({stats['retries_denied']} denied); "
        f"{victim.name} picked {served_again} times after its restart"
    )
    print(f"soak: resources before {before}")
    print(f"soak: resources after  {after}")
    for problem in problems:
        print(f"soak: FAIL {problem}")
    return not problems


#: glibc malloc tuning so that RSS measures leaks, not allocator high-water marks: a fixed mmap
#: threshold returns every large buffer (uploads, downloads) to the OS when freed, and few
#: arenas keep threads from each growing their own heap.
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_ARENA_MAX": "2"}


def main() -> int:
    if any(os.environ.get(k) != v for k, v in MALLOC_ENV.items()):
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **MALLOC_ENV})
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--short", action="store_true", help="~2,000 requests (CI)")
    parser.add_argument("--requests", type=int, default=None)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args()
    if args.requests is None:
        args.requests = 2_000 if args.short else 100_000
    # WebSocket sessions with permessage-deflate raise RSS to a plateau (zlib contexts of the
    # concurrent sessions): warm up long enough to reach it before the baseline is taken
    args.warmup = min(2000, max(500, args.requests // 10))
    try:
        ok = asyncio.run(soak(args))
    except Exception as exc:  # the summary line is printed whatever happened
        print(f"soak: FAIL {type(exc).__name__}: {exc}")
        ok = False
    print(f"soak: {int(ok)} passed, {int(not ok)} failed")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
