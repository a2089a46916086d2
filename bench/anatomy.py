"""Where a proxied small GET spends its CPU: the proxy forms taken apart, layer by layer.

    python bench/anatomy.py                # or: nox -s bench -- --anatomy
    python bench/anatomy.py --requests 40000 --runs 5

The upstream (``upstream.py``, uvicorn, one worker) runs in its own process on the first core.
This process, pinned to the second core, builds each application below and drives it
**in-process**: 64 concurrent loops call the ASGI app directly with a ``GET /small`` scope, so
no HTTP server parses or writes the client side.  CPU per request (``time.process_time``,
median of ``--runs``) then shows what each layer costs on its own, every form with the
garbage collector set as frp-core sets it in a gateway (``frp_core.tune_gc``):

- ``asgi-floor``: a bare ASGI app answering 100 bytes (the driver's own cost);
- ``fastapi-mount-floor``/``fastapi-route-floor``: the same answer from a FastAPI mount or a
  FastAPI route with the Quick Start's signature (the framework's cost, no proxy);
- ``bare``: ``frp_core.ReverseProxy`` as the whole app (the proxy alone, upstream included);
- ``proxy-pass-raw``: ``frp_core.proxy_pass`` on a Starlette ``Request``, its response sent by
  a three-line ASGI app (what ``proxy_pass`` costs without a framework around it);
- ``mounted``/``mounted-lean``: it mounted in ``FastAPI()``, and in a FastAPI app without the
  docs routes and with FastAPI's native telemetry off;
- ``route-core``: a FastAPI route calling ``frp_core.proxy_pass(request, url)``;
- ``quickstart``: the seed Quick Start's route, ``lb.proxy_pass`` over a ``HealthChecker``;
- ``quickstart-lean``: the same in a FastAPI app without the docs routes and with FastAPI's
  native telemetry off (what a gateway that serves no API can turn off).

The uvicorn server's own share (parsing the client's request, writing the response) comes on top
of every figure; ``run.py`` measures whole processes.  Nothing here is asserted.  No
``from __future__ import annotations``: FastAPI must see the real ``Request`` annotation.
"""

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, MutableMapping
from pathlib import Path
from typing import Any, ClassVar

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import procs  # noqa: E402
import systems  # noqa: E402

Scope = MutableMapping[str, Any]
BODY_SIZE = 100  # the upstream's /small, and the floors' answer


def asgi_floor(upstream: str) -> Any:
    import proxies

    return proxies.answer


def fastapi_mount_floor(upstream: str) -> Any:
    import proxies

    return proxies.mount_ceiling(upstream)


def fastapi_route_floor(upstream: str) -> Any:
    import proxies

    return proxies.route_ceiling(upstream)


def bare(upstream: str) -> Any:
    from frp_core import ReverseProxy

    return ReverseProxy(upstream)


def raw_pp(upstream: str) -> Any:
    import proxies
    from starlette.requests import Request

    from frp_core import proxy_pass

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await proxies.answer(scope, receive, send)
            return
        response = await proxy_pass(Request(scope, receive, send), upstream)
        await response(scope, receive, send)

    return app


def mounted(upstream: str) -> Any:
    from fastapi import FastAPI

    from frp_core import ReverseProxy

    app = FastAPI()
    app.mount("/", ReverseProxy(upstream))
    return app


def mounted_lean(upstream: str) -> Any:
    import proxies
    from fastapi import FastAPI

    from frp_core import ReverseProxy

    app = FastAPI(**proxies.lean_fastapi_options())
    app.mount("/", ReverseProxy(upstream))
    return app


def route_core(upstream: str) -> Any:
    from fastapi import FastAPI, Request

    from frp_core import proxy_pass

    app = FastAPI()

    async def gateway(request: Request, path: str) -> Any:
        return await proxy_pass(request, upstream, path=f"/{path}")

    app.add_api_route("/{path:path}", gateway, methods=["GET", "POST", "PUT", "DELETE"])
    return app


def quickstart(upstream: str) -> Any:
    import proxies

    return proxies.quickstart(upstream)


def quickstart_lean(upstream: str) -> Any:
    import proxies

    return proxies.quickstart(upstream, **proxies.lean_fastapi_options())


FORMS: dict[str, Callable[[str], Any]] = {
    "asgi-floor": asgi_floor,
    "fastapi-mount-floor": fastapi_mount_floor,
    "fastapi-route-floor": fastapi_route_floor,
    "bare": bare,
    "proxy-pass-raw": raw_pp,
    "mounted": mounted,
    "mounted-lean": mounted_lean,
    "route-core": route_core,
    "quickstart": quickstart,
    "quickstart-lean": quickstart_lean,
}


class _Lifespan:
    def __init__(self, app: Any) -> None:
        self.app = app
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None

    async def _receive(self) -> dict[str, Any]:
        return await self.inbox.get()

    async def _send(self, message: dict[str, Any]) -> None:
        await self.outbox.put(message)

    async def __aenter__(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
        self.task = asyncio.ensure_future(self.app(scope, self._receive, self._send))
        await self.inbox.put({"type": "lifespan.startup"})
        message = await asyncio.wait_for(self.outbox.get(), 30)
        if message["type"] != "lifespan.startup.complete":
            raise RuntimeError(f"lifespan startup failed: {message}")

    async def __aexit__(self, *exc: object) -> None:
        await self.inbox.put({"type": "lifespan.shutdown"})
        assert self.task is not None
        await asyncio.wait_for(self.task, 30)


def _scope() -> Scope:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 50000),
        "scheme": "http",
        "method": "GET",
        "root_path": "",
        "path": "/small",
        "raw_path": b"/small",
        "query_string": b"",
        "headers": [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"wrk"), (b"accept", b"*/*")],
        "state": {},
    }


class _Call:
    """One request's ``receive`` and ``send``, and what came back."""

    __slots__ = ("answered", "asked", "size", "status")

    REQUEST: ClassVar[dict[str, Any]] = {"type": "http.request", "body": b"", "more_body": False}

    def __init__(self) -> None:
        self.answered = asyncio.Event()
        self.asked = False
        self.status = 0
        self.size = 0

    async def receive(self) -> dict[str, Any]:
        if self.asked:  # the body was read: the next message is the end of the connection
            await self.answered.wait()
            return {"type": "http.disconnect"}
        self.asked = True
        return self.REQUEST

    async def send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        else:
            self.size += len(message.get("body", b""))


async def _drive(app: Any, requests: int, concurrency: int) -> int:
    """``requests`` GETs from ``concurrency`` loops; returns how many got 200 and 100 bytes."""

    async def loop(n: int) -> int:
        ok = 0
        for _ in range(n):
            call = _Call()
            await app(_scope(), call.receive, call.send)
            call.answered.set()
            ok += call.status == 200 and call.size == BODY_SIZE
        return ok

    results = await asyncio.gather(*(loop(requests // concurrency) for _ in range(concurrency)))
    return sum(results)


async def _measure(form: str, upstream: str, requests: int, runs: int) -> list[float]:
    app = FORMS[form](upstream)
    figures = []
    async with _Lifespan(app):
        await _drive(app, 64 * 50, 64)  # warm the pool and the caches
        for _ in range(runs):
            t0 = time.process_time()
            ok = await _drive(app, requests, 64)
            cpu = time.process_time() - t0
            done = requests // 64 * 64
            if ok != done:
                raise RuntimeError(f"{form}: {done - ok} of {done} requests failed")
            figures.append(cpu / done * 1e6)
    return figures


def _run_form(form: str, upstream: str, requests: int, runs: int) -> list[float]:
    # Every form, floors included, runs with the collector a gateway gets from frp-core (its
    # first engine raises the first threshold, see frp_core.tune_gc): like for like.
    try:
        from frp_core._gc import apply_gc_policy
    except ImportError:  # an frp-core without it: every form keeps CPython's default
        pass
    else:
        apply_gc_policy()
    try:
        import uvloop

        return uvloop.run(_measure(form, upstream, requests, runs))
    except ImportError:
        return asyncio.run(_measure(form, upstream, requests, runs))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=20000, help="per run and form")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--forms", default=",".join(FORMS))
    p.add_argument("--form", help=argparse.SUPPRESS)  # one form in a child process
    p.add_argument("--upstream", help=argparse.SUPPRESS)
    p.add_argument("--cpu", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.form:  # child: one form, one fresh interpreter, figures on stdout
        if args.cpu is not None:
            os.sched_setaffinity(0, {args.cpu})
        figures = _run_form(args.form, args.upstream, args.requests, args.runs)
        print(" ".join(f"{f:.2f}" for f in figures))
        return 0
    forms = [f.strip() for f in args.forms.split(",") if f.strip()]
    cpus = procs.cores()
    up_cpu, me_cpu = (cpus[0], cpus[1]) if len(cpus) >= 2 else (None, None)
    workdir = Path(tempfile.mkdtemp(prefix="frp-anatomy-"))
    try:
        _, port = systems.start_upstream(workdir, up_cpu)
        upstream = f"http://127.0.0.1:{port}"
        print(f"anatomy: {args.requests} requests x {args.runs} runs per form, 64 concurrent,")
        print(f"anatomy: upstream on cpu {up_cpu}, apps in-process on cpu {me_cpu}\n")
        print("| form | CPU µs/req (median) | runs |")
        print("| --- | ---: | --- |")
        for form in forms:
            argv_ = [sys.executable, __file__, "--form", form, "--upstream", upstream]
            argv_ += ["--requests", str(args.requests), "--runs", str(args.runs)]
            if me_cpu is not None:
                argv_ += ["--cpu", str(me_cpu)]
            out = subprocess.run(argv_, capture_output=True, text=True, timeout=600)
            if out.returncode != 0:
                print(f"| {form} | failed: {out.stderr.strip().splitlines()[-1:]} | |")
                continue
            figures = [float(x) for x in out.stdout.split()]
            runs = ", ".join(f"{f:.1f}" for f in figures)
            print(f"| {form} | {statistics.median(figures):.1f} | {runs} |", flush=True)
    finally:
        procs.stop_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
