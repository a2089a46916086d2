"""Side-by-side benchmark of fastapi-reverse-proxy (issue 7): ``nox -s bench [-- --quick]``.

Starts one upstream and the systems under test on 127.0.0.1 (each its own process, pinned to
a core apart from the upstream's when there are two), runs every workload on every system,
interleaved, ``--runs`` times, and prints medians as markdown tables with ratios to the direct
upstream, to 0.4.0 and to nginx, plus the issue 7 targets as a checklist (never asserted).
Four (e) systems are context rows, no proxy of ours: FastAPI answering small GETs by itself
from a route shaped like the Quick Start's and from a mount (the ceiling of each proxy form),
and two relays in Python below ASGI measured on the WebSocket workloads: one copies bytes, as
nginx does after the upgrade; the other also parses each frame header, the least a tunnel
keeping frp-ws's behaviour would parse.
Raw results go to ``--json``.  Exit status is non-zero only if the harness itself broke.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata as md
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import load
import procs
import report
import systems
import workloads

ALL_SYSTEMS = [
    "direct",
    "quickstart",
    "mounted",
    "asgi",
    "seed",
    "nginx",
    "route-ceiling",
    "mount-ceiling",
    "byte-relay",
    "frame-relay",
]
GiB = 1 << 30


def _log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 1 repetition, 1 s load runs, 64 MiB transfers",
    )
    p.add_argument("--runs", type=int, help="repetitions (default 3, --quick 1)")
    p.add_argument("--duration", type=float, help="seconds per small-GET run (default 5)")
    p.add_argument("--size", type=int, help="transfer size in bytes (default 1 GiB)")
    p.add_argument(
        "--transfers",
        type=int,
        help="downloads and uploads per system and run (default 3, --quick 1)",
    )
    p.add_argument(
        "--systems",
        default=",".join(ALL_SYSTEMS),
        help=f"comma-separated subset of {','.join(ALL_SYSTEMS)}",
    )
    p.add_argument(
        "--only",
        help="comma-separated workloads (get, get_c64, download, upload, sse, ws, ws_big)",
    )
    p.add_argument(
        "--load",
        choices=["auto", "wrk", "builtin"],
        default="auto",
        help="small-GET load generator (auto: wrk when installed)",
    )
    p.add_argument("--json", type=Path, default=systems.ROOT / "build" / "bench-results.json")
    p.add_argument("--max-seconds", type=int, help="overall time bound (default 3600, quick 900)")
    p.add_argument(
        "--profile-dir",
        type=Path,
        help="run the Python proxies under cProfile, write <system>.prof here "
        "(the figures then include the profiler's overhead)",
    )
    p.add_argument("--keep-logs", action="store_true", help="keep the servers' log directory")
    args = p.parse_args(argv)
    args.runs = args.runs or (1 if args.quick else 3)
    args.duration = args.duration or (1.0 if args.quick else 5.0)
    args.size = args.size or ((64 << 20) if args.quick else GiB)
    args.transfers = args.transfers or (1 if args.quick else 3)
    args.max_seconds = args.max_seconds or (900 if args.quick else 3600)
    args.systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = set(args.systems) - set(ALL_SYSTEMS)
    if unknown:
        p.error(f"unknown systems: {', '.join(sorted(unknown))}")
    return args


def _version(cmd: list[str]) -> str:
    if not shutil.which(cmd[0]):
        return "not installed"
    with contextlib.suppress(Exception):
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        return (done.stdout + done.stderr).strip().splitlines()[0]
    return "unknown"


def _meta(args: argparse.Namespace, pinning: str) -> dict[str, Any]:
    dists = [
        "frp-core",
        "frp-ws",
        "frp-health",
        "frp-balance",
        "fastapi-reverse-proxy",
        "uvicorn",
        "fastapi",
        "starlette",
        "websockets",
        "uvloop",
        "httptools",
        "httpx",
    ]
    versions: dict[str, str | None] = {}
    for dist in dists:
        try:
            versions[dist] = md.version(dist)
        except md.PackageNotFoundError:
            versions[dist] = None
    return {
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "argv": sys.argv[1:],
        "quick": args.quick,
        "runs": args.runs,
        "get_seconds": args.duration,
        "transfer_bytes": args.size,
        "cpus": os.cpu_count(),
        "pinning": pinning,
        "loadavg_start": os.getloadavg(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "git": _version(["git", "-C", str(systems.ROOT), "describe", "--always", "--dirty"]),
        "load_generator": load.tool(args.load),
        "wrk": _version(["wrk", "-v"]),
        "nginx": _version(["nginx", "-v"]),
        "versions": versions,
    }


class _Deadline(Exception):
    pass


def _on_alarm(signum: int, frame: object) -> None:
    raise _Deadline("overall time bound reached")


def _on_term(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through `finally`: our servers are stopped


def _get(system: systems.System, c: int, args: argparse.Namespace) -> dict[str, float]:
    return workloads.small_get(system, c, args.duration, args.load)


def _ws(res: dict[str, float]) -> dict[str, float]:
    return {"msgs": res["msgs_per_s"], "cpu_us": res["cpu_us"]}


def _plan(
    args: argparse.Namespace,
) -> list[tuple[str, Callable[[systems.System], dict[str, float]]]]:
    """(workload name, measure) pairs; a measure returns metrics without the name prefix."""
    plan: list[tuple[str, Callable[[systems.System], dict[str, float]]]] = []
    for c in report.CONCURRENCY:
        plan.append((f"get_c{c}", partial(_get, c=c, args=args)))
    transfer_timeout = max(120.0, args.size / 20e6)  # >= 20 MB/s or it is cut
    # A 1 GiB transfer takes about half a second here: one per run left the median at the
    # mercy of where the scheduler put the client, so each run makes ``--transfers`` of each,
    # every system in turn, and the median is over them all.
    download = ("download", lambda s: workloads.download(s, args.size, transfer_timeout))
    upload = ("upload", lambda s: workloads.upload(s, args.size, transfer_timeout))
    plan += [download] * args.transfers + [upload] * args.transfers
    plan += [
        (
            "sse",
            lambda s: {
                "ms": workloads.sse_first_event(s, 5 if args.quick else 20)["first_event_ms"]
            },
        ),
        (
            "ws",
            lambda s: _ws(workloads.ws_pingpong(s, min(3.0, args.duration * 2))),
        ),
        ("ws_big", lambda s: {"ms": workloads.ws_big(s)["rtt_ms"]}),
    ]
    return plan


def _measure(
    args: argparse.Namespace, running: list[systems.System], results: dict[str, dict[str, Any]]
) -> None:
    for system in running:  # warm-up: connections, pools, JIT-less caches
        with contextlib.suppress(Exception):
            workloads.small_get(system, 16, 1.0, args.load)
    plan = _plan(args)
    if args.only:
        wanted = {w.strip() for w in args.only.split(",")}
        plan = [(n, m) for n, m in plan if n in wanted or n.split("_c")[0] in wanted]
    for rep in range(args.runs):
        for name, measure in plan:
            for system in running:
                if not system.measures(name):
                    continue
                res = results[system.key]
                try:
                    metrics = measure(system)
                except Exception as exc:
                    msg = f"{type(exc).__name__}: {exc}".strip()[:300]
                    res["errors"].setdefault(name, []).append(msg)
                    _log(f"run {rep + 1} {name:9} {system.key:10} FAILED {msg}")
                    continue
                for metric, value in metrics.items():
                    res["runs"].setdefault(f"{name}_{metric}", []).append(value)
                shown = ", ".join(f"{k}={v:.4g}" for k, v in metrics.items())
                _log(f"run {rep + 1} {name:9} {system.key:10} {shown}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--anatomy"]:  # the in-process, layer-by-layer breakdown (anatomy.py)
        import anatomy

        return anatomy.main(argv[1:])
    args = _args(argv)
    signal.signal(signal.SIGALRM, _on_alarm)
    signal.signal(signal.SIGTERM, _on_term)
    signal.alarm(args.max_seconds)
    cpus = procs.cores()
    up_cpu, proxy_cpu = (cpus[0], cpus[1]) if len(cpus) >= 2 else (None, None)
    pinning = (
        f"upstream on cpu {up_cpu}, proxy on cpu {proxy_cpu}"
        if up_cpu is not None
        else "not pinned (1 core)"
    )
    meta = _meta(args, pinning)
    if args.profile_dir:
        args.profile_dir.mkdir(parents=True, exist_ok=True)
        systems.PROFILE_DIR = args.profile_dir.resolve()
        meta["profiled"] = True
    workdir = Path(tempfile.mkdtemp(prefix="frp-bench-"))
    results: dict[str, dict[str, Any]] = {}
    broken = False
    running: list[systems.System] = []
    try:
        _log(f"{pinning}; logs in {workdir}; load: {load.tool(args.load)} ({meta['wrk']})")
        upstream = systems.start_upstream(workdir, up_cpu)
        for key in args.systems:
            system = systems.make(key)
            _log(f"starting {system.label}")
            systems.start(system, upstream, workdir, proxy_cpu)
            if system.key == "nginx" and system.reason == systems.NGINX_MISSING:
                print(systems.NGINX_MISSING, flush=True)
            results[key] = {
                "label": system.label,
                "status": "ok" if system.available else "unavailable",
                "reason": system.reason,
                "port": system.port,
                "runs": {},
                "errors": {},
            }
            if system.available:
                running.append(system)
            else:
                _log(f"{key}: unavailable: {system.reason}")
        _measure(args, running, results)
    except _Deadline as exc:
        broken = True
        _log(f"stopped: {exc}")
    except Exception:
        broken = True
        traceback.print_exc()
    finally:
        signal.alarm(0)
        if systems.PROFILE_DIR is not None:  # SIGINT: cProfile writes its stats on the way out
            for system in running:
                if system.proc is not None and system.key != "nginx":
                    procs.stop(system.proc, first=signal.SIGINT)
        procs.stop_all()
        # 0.4.0's known failures (its 1 MiB WebSocket limit) do not keep the logs
        failed = any(res["errors"] for key, res in results.items() if key != "seed")
        if args.keep_logs or broken or failed:
            _log(f"server logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    meta["loadavg_end"] = os.getloadavg()
    if systems.PROFILE_DIR is not None:
        _log(f"profiles: {systems.PROFILE_DIR}/<system>.prof (python -m pstats FILE)")
    report.summarize(results)
    checks = report.checklist(results)
    mode = ("quick, " if args.quick else "") + (
        f"median of {args.runs} runs" if args.runs > 1 else "1 run"
    )
    print(
        f"\n## Benchmark {meta['date_utc']} — {mode}, {args.size >> 20} MiB transfers, "
        f"{os.cpu_count()} CPUs, {pinning}, load avg {meta['loadavg_start'][0]:.2f}\n"
    )
    print(report.tables(results))
    print()
    print(report.checklist_markdown(checks))
    report.write_json(args.json, meta, results, checks)
    print(f"\nraw results: {args.json}")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
