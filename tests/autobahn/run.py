"""Autobahn WebSocket conformance through the tunnel, compared with the upstream alone.

    python tests/autobahn/run.py                 # cases 1-7, 9, 12, 13 (516 cases)
    python tests/autobahn/run.py --quick         # a representative subset (CI)
    python tests/autobahn/run.py --cases 1.*,5.* # any subset
    python tests/autobahn/run.py --report-only   # compare the reports of the last run again

The upstream is an echo ASGI app under uvicorn; the proxy is ``frp_ws.WebSocketProxy`` under
uvicorn with the same WebSocket implementation (``--ws``, wsproto by default), so the side the
Autobahn client talks to is the same code both ways and the only difference is the tunnel.
``wstest -m fuzzingclient`` (the Autobahn test suite, Python 2.7 only) runs every case twice:
against the upstream directly (agent ``direct``) and through the proxy (agent ``proxy``).

The comparison is strict, case by case:

- the verdict class must be identical both ways: a case passes when Autobahn's ``behavior`` and
  ``behaviorClose`` are both OK, NON-STRICT or INFORMATIONAL, and fails otherwise; a case that
  ran only one way is a failure;
- the exact verdicts (``behavior``/``behaviorClose``) must be identical too, except for the
  cases listed in :data:`EXPLAINED`, where the proxy's verdict may be one of the listed ones for
  the reason printed next to it.

The reports land in ``build/autobahn/``; the full run takes tens of minutes on 2 cores.

wstest is installed into an isolated Python 2.7 virtualenv under ``build/autobahn/venv`` (made
once, reused).  Without Python 2.7, or if the install fails, the run is skipped with a message
saying why and exits 0.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
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
#: ``--quick``: every case of 1-7 (framing, pings, reserved bits and opcodes, fragmentation,
#: UTF-8, closing, including every case with an explained difference) and a few of the slow
#: groups (9: large messages, 12-13: permessage-deflate): 265 cases, about 30 s of wstest on
#: 2 cores, under a minute with the wstest install.
QUICK_CASES = [
    "1.*", "2.*", "3.*", "4.*", "5.*", "6.*", "7.*",
    "9.1.1", "9.1.2", "9.2.1", "9.2.2", "9.7.1", "9.8.1",
    "12.1.1", "12.1.2", "12.2.1", "12.3.1", "12.4.1", "12.5.1",
    "13.1.1", "13.2.1", "13.3.1", "13.4.1", "13.5.1", "13.6.1", "13.7.1",
]  # fmt: skip
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


async def echo(scope: Any, receive: Any, send: Any) -> None:
    """The upstream: a WebSocket echo ASGI app."""
    from frp_testing import websocket_echo

    if scope["type"] == "websocket":
        await websocket_echo(receive, send)


#: Autobahn verdicts that pass: NON-STRICT (failed fast, but not at the exact frame) and
#: INFORMATIONAL (no requirement) are passes, as in Autobahn's own summary.
PASSING = {"OK", "NON-STRICT", "INFORMATIONAL"}

_VIOLATION_AFTER_VALID = (
    "the client sends a valid message, then a frame that violates the protocol (reserved bits, "
    "a reserved opcode, a continuation with nothing to continue).  Directly, the upstream may "
    "echo the message before it reads the violation (OK) or not (NON-STRICT), depending on how "
    "the octets arrive.  Through the proxy the message has to reach the upstream and its echo "
    "come back, while the proxy's own WebSocket server (uvicorn) reads the violation and fails "
    "the client connection at once, so the echo is more often lost (NON-STRICT).  uvicorn fails "
    "the connection below the ASGI boundary (the app only sees websocket.disconnect): no ASGI "
    "app can hold the close back until the upstream has answered; a byte-relaying proxy "
    "(nginx) would forward the violation to the upstream instead"
)

#: Cases whose exact verdict may differ between the two runs (the verdict class never may):
#: case -> (the verdicts allowed on either side, why).  A race, seen in both directions.
EXPLAINED: dict[str, tuple[frozenset[tuple[str, str]], str]] = {
    case: (frozenset({("OK", "OK"), ("NON-STRICT", "OK")}), _VIOLATION_AFTER_VALID)
    for case in ("3.2", "3.3", "3.4", "4.1.3", "4.1.4", "4.1.5", "4.2.3", "4.2.4", "4.2.5", "5.15")
}


#: Cases where the proxy may pass although the upstream alone fails: the proxy's side of the
#: connection is then not the upstream's server code (``--ws splice``).
FIXED_BY_PROXY: dict[str, str] = {
    "7.1.5": "a close frame in the middle of a fragmented message: uvicorn's websockets-sansio "
    "server answers 1002 (incomplete fragmented message) where Autobahn expects 1000; through "
    "the splice, frp-ws answers the close itself, with the client's code (control frames may "
    "come between fragments, RFC 6455 §5.4)",
}


def verdict(result: dict[str, Any]) -> tuple[str, str]:
    return result["behavior"], result["behaviorClose"]


def passes(result: dict[str, Any]) -> bool:
    return result["behavior"] in PASSING and result["behaviorClose"] in PASSING


@dataclasses.dataclass
class Comparison:
    failures: list[str] = dataclasses.field(default_factory=list)
    explained: list[str] = dataclasses.field(default_factory=list)
    direct: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    proxy: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    classes: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)


def compare(index: dict[str, Any]) -> Comparison:
    """Case by case: identical verdict classes, and identical exact verdicts unless the case
    is in :data:`EXPLAINED` and the proxy's verdict is one it allows."""
    direct, proxied = index.get("direct", {}), index.get("proxy", {})
    out = Comparison()
    for case in sorted(set(direct) | set(proxied), key=_case_key):
        d, p = direct.get(case), proxied.get(case)
        if d is None or p is None:
            out.failures.append(
                f"{case}: ran only {'direct' if p is None else 'through the proxy'}"
            )
            continue
        out.direct[d["behavior"]] += 1
        out.proxy[p["behavior"]] += 1
        out.classes["pass" if passes(d) else "fail"] += 1
        line = f"{case}: direct {'/'.join(verdict(d))}, proxy {'/'.join(verdict(p))}"
        if passes(p) and not passes(d) and case in FIXED_BY_PROXY:
            out.explained.append(f"{line}: {FIXED_BY_PROXY[case]}")
        elif passes(d) != passes(p):
            out.failures.append(f"{line}: the verdict class differs")
        elif verdict(d) != verdict(p):
            allowed, why = EXPLAINED.get(case, (frozenset(), ""))
            if verdict(d) in allowed and verdict(p) in allowed:
                out.explained.append(f"{line}: {why}")
            else:
                out.failures.append(f"{line}: the exact verdict differs, with no known reason")
    return out


def _case_key(case: str) -> tuple[int, ...]:
    return tuple(int(x) for x in case.split(".") if x.isdigit())


def run_suite(wstest: str, cases: list[str], timeout: float, ws: str) -> int:
    from frp_testing import run_server

    from frp_ws import WebSocketProxy

    reports = BUILD / "reports"
    shutil.rmtree(reports, ignore_errors=True)
    limit = 64 << 20  # uvicorn's default (16 MiB) is below the largest Autobahn message
    upstream_ws: Any = ws
    proxy_ws: Any = ws
    if ws == "splice":  # the proxy splices frames; the same server code, sans-I/O, both ways
        from frp_ws.uvicorn import SpliceProtocol

        upstream_ws, proxy_ws = "websockets-sansio", SpliceProtocol
    with (
        run_server(echo, ws=upstream_ws, ws_max_size=limit) as upstream,
        run_server(
            WebSocketProxy(upstream.url, max_size=None), ws=proxy_ws, ws_max_size=limit
        ) as proxy,
    ):
        spec = {
            "outdir": str(reports),
            "servers": [
                {"agent": "direct", "url": upstream.ws_url + "/"},
                {"agent": "proxy", "url": proxy.ws_url + "/"},
            ],
            "cases": cases,
            "exclude-cases": [],
            "exclude-agent-cases": {},
        }
        spec_path = BUILD / "fuzzingclient.json"
        spec_path.write_text(json.dumps(spec, indent=2))
        print(f"autobahn: {len(cases)} case patterns, uvicorn ws={ws}")
        print(f"autobahn: direct {upstream.ws_url}, proxy {proxy.ws_url}")
        log_path = BUILD / "wstest.log"
        print(f"autobahn: running wstest (progress in {log_path})", flush=True)
        with log_path.open("wb") as log:
            command = [wstest, "-m", "fuzzingclient", "-s", str(spec_path)]
            process = subprocess.Popen(command, cwd=BUILD, stdout=log, stderr=subprocess.STDOUT)
            try:
                returncode = process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                print(f"autobahn: FAIL wstest did not finish within {timeout:.0f}s")
                return 1
        if returncode != 0:
            print(log_path.read_text(errors="replace")[-2000:])
            print(f"autobahn: FAIL wstest exited with {returncode}")
            return 1
    return report(reports)


def report(reports: pathlib.Path) -> int:
    index_path = reports / "index.json"
    if not index_path.exists():
        print(f"autobahn: FAIL no reports in {reports}")
        return 1
    result = compare(json.loads(index_path.read_text()))
    total = sum(result.classes.values())
    print(f"autobahn: {total} cases both ways, verdict classes {dict(result.classes)}")
    print(f"autobahn: direct {dict(result.direct)}")
    print(f"autobahn: proxy  {dict(result.proxy)}")
    for line in result.explained:
        print(f"autobahn: explained {line}")
    for line in result.failures:
        print(f"autobahn: FAIL {line}")
    print(f"autobahn: reports in {reports}/index.html")
    ok = not result.failures and total > 0
    print(f"autobahn: {int(ok)} passed, {int(not ok)} failed")
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default=None, help="comma-separated case patterns")
    parser.add_argument("--quick", action="store_true", help="a representative subset (CI)")
    parser.add_argument("--python2", default=None, help="a Python 2.7 interpreter")
    parser.add_argument(
        "--ws",
        default="wsproto",
        choices=["wsproto", "websockets", "websockets-sansio", "splice"],
        help="uvicorn's WebSocket implementation, for the upstream and the proxy alike "
        "(splice: websockets-sansio, and frp_ws.uvicorn.SpliceProtocol for the proxy)",
    )
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
    patterns = args.cases or ",".join(QUICK_CASES if args.quick else DEFAULT_CASES)
    cases = [c.strip() for c in patterns.split(",") if c.strip()]
    return run_suite(wstest, cases, args.timeout, args.ws)


if __name__ == "__main__":
    sys.exit(main())
