"""Autobahn WebSocket conformance through the tunnel, compared with the upstream alone.

    python tests/autobahn/run.py                 # cases 1-7, 9, 12, 13
    python tests/autobahn/run.py --cases 1.*,5.* # a subset

A websockets echo server is the upstream.  ``wstest -m fuzzingclient`` (the Autobahn test suite,
Python 2.7 only) runs every case twice: against the upstream directly (agent ``direct``) and
through ``frp_ws.WebSocketProxy`` under uvicorn (agent ``proxy``).  Every case must end with the
same verdict both ways: a case the upstream passes directly must pass through the proxy
(Autobahn's OK, NON-STRICT and INFORMATIONAL are passes).  Any other difference is printed as a
note: a proxy cannot echo the valid frames that precede a protocol violation once the client
side has failed the connection (NON-STRICT instead of OK), and it reassembles fragmented
messages (so cases that time out against a slow upstream may pass through it).  The reports
land in ``build/autobahn/``; the full run takes tens of minutes.

wstest is installed into an isolated Python 2.7 virtualenv under ``build/autobahn/venv`` (made
once, reused).  Without Python 2.7, or if the install fails, the run is skipped with a message
saying why and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import logging
import os
import pathlib
import shutil
import subprocess
import sys
from typing import Any

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent.parent
BUILD = ROOT / "build" / "autobahn"
VENV = BUILD / "venv"
sys.path.insert(0, str(ROOT / "tests" / "support"))

DEFAULT_CASES = ["1.*", "2.*", "3.*", "4.*", "5.*", "6.*", "7.*", "9.*", "12.*", "13.*"]
PYTHON2_CANDIDATES = [
    os.environ.get("AUTOBAHN_PYTHON2", ""),
    "/root/.pyenv/versions/2.7.18/bin/python2.7",
    shutil.which("python2.7") or "",
    shutil.which("python2") or "",
]


def skip(reason: str) -> int:
    print(f"autobahn: SKIPPED: {reason}")
    return 0


def find_python2(explicit: str | None) -> str | None:
    for candidate in [explicit or "", *PYTHON2_CANDIDATES]:
        if not candidate or not pathlib.Path(candidate).exists():
            continue
        out = subprocess.run(
            [candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            check=False,
        )
        if out.returncode == 0 and out.stdout.strip() == "2.7":
            return candidate
    return None


def ensure_wstest(python2: str) -> tuple[str | None, str]:
    """The path of ``wstest`` in the isolated venv (created on first use), or a reason."""
    wstest = VENV / "bin" / "wstest"
    if wstest.exists():
        return str(wstest), ""
    BUILD.mkdir(parents=True, exist_ok=True)
    tool = BUILD / "venvtool"

    def run(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        print("autobahn: $", " ".join(cmd))
        return subprocess.run(cmd, capture_output=True, text=True, check=False, **kwargs)

    steps = [
        # virtualenv 20.22+ cannot create Python 2 environments: use an older one, kept apart
        [python2, "-m", "pip", "install", "-q", "--target", str(tool), "virtualenv<20.22"],
        [python2, "-m", "virtualenv", "-q", str(VENV)],
        [str(VENV / "bin" / "pip"), "install", "-q", "autobahntestsuite"],
    ]
    env = dict(os.environ, PYTHONPATH=str(tool), PIP_DISABLE_PIP_VERSION_CHECK="1")
    for cmd in steps:
        result = run(cmd, env=env if cmd[0] == python2 else None)
        if result.returncode != 0:
            shutil.rmtree(VENV, ignore_errors=True)
            tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
            return None, f"installing wstest failed at {' '.join(cmd[:4])}: {' | '.join(tail)}"
    if not wstest.exists():
        return None, "autobahntestsuite installed no wstest script"
    return str(wstest), ""


async def echo_upstream() -> Any:
    from websockets.asyncio.server import serve

    # protocol violations are the point of the suite: keep the upstream's handler quiet
    logging.getLogger("websockets").setLevel(logging.CRITICAL)

    async def echo(ws: Any) -> None:
        async for message in ws:
            await ws.send(message)

    return await serve(echo, "127.0.0.1", 0, max_size=None, max_queue=None)


#: Autobahn verdicts that pass: NON-STRICT (failed fast, but not at the exact frame) and
#: INFORMATIONAL (no requirement) are passes, as in Autobahn's own summary.
PASSING = {"OK", "NON-STRICT", "INFORMATIONAL"}


def _passes(result: dict[str, Any]) -> bool:
    return result["behavior"] in PASSING and result["behaviorClose"] in PASSING


def compare(index: dict[str, Any]) -> tuple[list[str], list[str], collections.Counter[str]]:
    """``(regressions, notes, tally)``: a regression is a case the upstream passes directly
    and fails through the proxy (or one that ran only one way); a note is any other
    difference in verdict."""
    direct, proxied = index.get("direct", {}), index.get("proxy", {})
    regressions, notes = [], []
    tally: collections.Counter[str] = collections.Counter()
    for case in sorted(set(direct) | set(proxied), key=_case_key):
        d, p = direct.get(case), proxied.get(case)
        if d is None or p is None:
            regressions.append(f"{case}: ran only {'direct' if p is None else 'through the proxy'}")
            continue
        tally[p["behavior"]] += 1
        if (d["behavior"], d["behaviorClose"]) == (p["behavior"], p["behaviorClose"]):
            continue
        line = (
            f"{case}: direct {d['behavior']}/{d['behaviorClose']}, "
            f"proxy {p['behavior']}/{p['behaviorClose']}"
        )
        (regressions if _passes(d) and not _passes(p) else notes).append(line)
    return regressions, notes, tally


def _case_key(case: str) -> tuple[int, ...]:
    return tuple(int(x) for x in case.split(".") if x.isdigit())


async def run_suite(wstest: str, cases: list[str], timeout: float) -> int:
    from frp_testing import run_server

    from frp_ws import WebSocketProxy

    upstream = await echo_upstream()
    port = upstream.sockets[0].getsockname()[1]
    upstream_url = f"ws://127.0.0.1:{port}"
    app = WebSocketProxy(f"http://127.0.0.1:{port}", max_size=None)
    reports = BUILD / "reports"
    shutil.rmtree(reports, ignore_errors=True)
    try:
        with run_server(app, ws="wsproto", ws_max_size=64 << 20) as proxy:
            spec = {
                "outdir": str(reports),
                "servers": [
                    {"agent": "direct", "url": upstream_url},
                    {"agent": "proxy", "url": proxy.ws_url + "/"},
                ],
                "cases": cases,
                "exclude-cases": [],
                "exclude-agent-cases": {},
            }
            spec_path = BUILD / "fuzzingclient.json"
            spec_path.write_text(json.dumps(spec, indent=2))
            print(f"autobahn: cases {','.join(cases)}: direct {upstream_url}, proxy {proxy.ws_url}")
            log_path = BUILD / "wstest.log"
            print(f"autobahn: running wstest (progress in {log_path})")
            with log_path.open("wb") as log:
                process = await asyncio.create_subprocess_exec(
                    wstest,
                    "-m",
                    "fuzzingclient",
                    "-s",
                    str(spec_path),
                    cwd=str(BUILD),
                    stdout=log,
                    stderr=asyncio.subprocess.STDOUT,
                )
                try:
                    await asyncio.wait_for(process.wait(), timeout)
                except TimeoutError:
                    process.kill()
                    await process.wait()
                    print(f"autobahn: FAIL wstest did not finish within {timeout:.0f}s")
                    return 1
            if process.returncode != 0:
                print(log_path.read_text(errors="replace")[-2000:])
                print(f"autobahn: FAIL wstest exited with {process.returncode}")
                return 1
    finally:
        upstream.close()
        await upstream.wait_closed()

    return report(reports)


def report(reports: pathlib.Path) -> int:
    index = json.loads((reports / "index.json").read_text())
    regressions, notes, tally = compare(index)
    print(f"autobahn: {sum(tally.values())} cases through the proxy: {dict(tally)}")
    for line in notes:
        print(f"autobahn: note {line}")
    for line in regressions:
        print(f"autobahn: FAIL {line}")
    print(f"autobahn: reports in {reports}/index.html")
    ok = not regressions and sum(tally.values()) > 0
    print(f"autobahn: {int(ok)} passed, {int(not ok)} failed")
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default=",".join(DEFAULT_CASES))
    parser.add_argument("--python2", default=None, help="a Python 2.7 interpreter")
    parser.add_argument("--timeout", type=float, default=3600.0, help="for the whole wstest run")
    parser.add_argument(
        "--report-only", action="store_true", help="compare the reports of the last run again"
    )
    args = parser.parse_args()
    if args.report_only:
        return report(BUILD / "reports")
    python2 = find_python2(args.python2)
    if python2 is None:
        return skip("Python 2.7 not found (set AUTOBAHN_PYTHON2 or pass --python2)")
    wstest, reason = ensure_wstest(python2)
    if wstest is None:
        return skip(reason)
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    return asyncio.run(run_suite(wstest, cases, args.timeout))


if __name__ == "__main__":
    sys.exit(main())
