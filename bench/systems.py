"""The systems under test: how each is started, where it listens, which PID to measure."""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import procs

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
SEED_VERSION = "0.4.0"
SEED_VENV = ROOT / "build" / "bench-venvs" / f"fastapi-reverse-proxy-{SEED_VERSION}"
PROFILE_DIR: Path | None = None  # when set, Python proxies run under cProfile, stats go here
NGINX_MISSING = "nginx not installed (apt-get install nginx-light or nginx): skipping"


@dataclass
class System:
    """One system under test; ``port``/``pid`` are set once it runs."""

    key: str
    label: str
    ws_path: str = "/ws"
    port: int = 0
    pid: int = 0
    reason: str = ""
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def measures(self, workload: str) -> bool:
        """Whether ``workload`` (``get_c64``, ``ws``, ...) is measured on this system."""
        prefix = CEILING_WORKLOADS.get(self.key)
        return prefix is None or workload.startswith(prefix)

    @property
    def available(self) -> bool:
        return self.pid != 0 and not self.reason


LABELS = {
    "direct": "(a) direct (no proxy)",
    "quickstart": "(b) Quick Start, meta-package",
    "mounted": "(b) mounted ReverseProxy",
    "asgi": "(b) bare ASGI ReverseProxy",
    "seed": f"(c) Quick Start, {SEED_VERSION}",
    "nginx": "(d) nginx",
    "route-ceiling": "(e) FastAPI route answering itself, no proxy",
    "mount-ceiling": "(e) FastAPI mount answering itself, no proxy",
    "byte-relay": "(e) byte relay in Python (uvloop), no WebSocket framing",
    "frame-relay": "(e) frame relay in Python (uvloop), frame headers parsed",
}
#: The most a proxy in the Quick Start's form (a FastAPI route) or the mounted form could serve.
CEILINGS = {"quickstart": "route-ceiling", "mounted": "mount-ceiling"}
#: The most a WebSocket proxy in Python could relay: bytes copied, nothing parsed.
BYTE_RELAY = "byte-relay"
#: A WebSocket relay in Python below ASGI that parses frame headers (``relay.py --frames``).
FRAME_RELAY = "frame-relay"
#: The context rows and the workloads (name prefixes) each is measured on.
CEILING_WORKLOADS = {
    **dict.fromkeys(CEILINGS.values(), "get_"),
    **dict.fromkeys((BYTE_RELAY, FRAME_RELAY), "ws"),
}
# The Quick Start tunnels /ws/{path}; the mounted form has frp_ws's app mounted at /ws.
WS_PATHS = {"quickstart": "/ws/ws", "seed": "/ws/ws", "mounted": "/ws/echo"}


def make(key: str) -> System:
    return System(key, LABELS[key], WS_PATHS.get(key, "/ws"))


def _launch(
    argv: list[str], log: Path, cpu: int | None, ready_s: float
) -> tuple[subprocess.Popen[bytes], int]:
    """Start ``argv`` on an ephemeral listening socket (its fd appended as ``--fd N``);
    returns (process, port) once ``GET /small`` answers through it."""
    sock = procs.listening_socket()
    port: int = sock.getsockname()[1]
    argv = [*argv, "--fd", str(sock.fileno())]
    proc = procs.start(argv, cpu=cpu, log=log, pass_fds=[sock.fileno()], cwd=BENCH)
    sock.close()
    try:
        procs.wait_ready(proc, port, log, ready_s)
    except Exception:
        procs.stop(proc)
        raise
    return proc, port


def start_upstream(workdir: Path, cpu: int | None) -> tuple[subprocess.Popen[bytes], int]:
    """The upstream app on an ephemeral port; returns (process, port) once it answers."""
    return _launch([sys.executable, str(BENCH / "upstream.py")], workdir / "upstream.log", cpu, 30)


def _python_proxy(
    system: System, python: str, form: str, upstream_port: int, workdir: Path, cpu: int | None
) -> None:
    profile = (
        []
        if PROFILE_DIR is None
        else ["-m", "cProfile", "-o", str(PROFILE_DIR / f"{system.key}.prof")]
    )
    argv = [python, *profile, str(BENCH / "proxies.py"), "--form", form]
    argv += ["--upstream", f"http://127.0.0.1:{upstream_port}"]
    system.proc, system.port = _launch(argv, workdir / f"{system.key}.log", cpu, 60)
    system.pid = system.proc.pid


def _relay(system: System, upstream_port: int, workdir: Path, cpu: int | None) -> None:
    argv = [sys.executable, str(BENCH / "relay.py"), "--upstream-port", str(upstream_port)]
    argv += ["--frames"] if system.key == FRAME_RELAY else []
    system.proc, system.port = _launch(argv, workdir / f"{system.key}.log", cpu, 20)
    system.pid = system.proc.pid


def ensure_seed_venv(timeout: float = 600) -> str:
    """A virtualenv with fastapi-reverse-proxy==0.4.0 and uvicorn[standard]; its python."""
    python = SEED_VENV / "bin" / "python"
    probe = [
        str(python),
        "-c",
        "import fastapi_reverse_proxy, uvicorn, uvloop, httptools, importlib.metadata as m;"
        f"assert m.version('fastapi-reverse-proxy') == '{SEED_VERSION}'",
    ]
    if python.exists() and subprocess.run(probe, capture_output=True, timeout=60).returncode == 0:
        return str(python)
    SEED_VENV.parent.mkdir(parents=True, exist_ok=True)
    reqs = [f"fastapi-reverse-proxy=={SEED_VERSION}", "uvicorn[standard]"]
    uv = shutil.which("uv")
    if uv:
        steps = [
            [uv, "venv", "-q", "--python", sys.executable, str(SEED_VENV)],
            [uv, "pip", "install", "-q", "--python", str(python), *reqs],
        ]
    else:
        steps = [
            [sys.executable, "-m", "venv", "--clear", str(SEED_VENV)],
            [str(python), "-m", "pip", "install", "-q", *reqs],
        ]
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(step[:3])} failed: {done.stderr.strip()[-300:]}")
    if subprocess.run(probe, capture_output=True, timeout=60).returncode != 0:
        raise RuntimeError(f"the {SEED_VENV} virtualenv does not import 0.4.0")
    return str(python)


NGINX_CONF = """\
worker_processes 1;
daemon off;
master_process on;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 8192; multi_accept on; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    keepalive_requests 1000000;
    client_max_body_size 0;
    upstream up {{
        server 127.0.0.1:{up};
        keepalive 256;
        keepalive_requests 1000000;
    }}
    map $http_upgrade $connection_upgrade {{ default upgrade; '' ''; }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://up;
            proxy_http_version 1.1;
            proxy_set_header Host $host;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_buffer_size 64k;
            proxy_buffers 8 64k;
            proxy_busy_buffers_size 128k;
            proxy_request_buffering off;
            proxy_max_temp_file_size 0;
            proxy_read_timeout 120s;
            proxy_send_timeout 120s;
        }}
    }}
}}
"""


def _nginx(system: System, upstream_port: int, workdir: Path, cpu: int | None) -> None:
    binary = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if Path(p).exists()), None
    )
    if binary is None:
        raise RuntimeError(NGINX_MISSING)
    prefix = workdir / "nginx"
    for sub in ("body", "proxy", "logs"):
        (prefix / sub).mkdir(parents=True, exist_ok=True)
    system.port = procs.free_port()
    conf = prefix / "nginx.conf"
    conf.write_text(NGINX_CONF.format(d=prefix, up=upstream_port, port=system.port))
    log = workdir / "nginx.log"
    system.proc = procs.start([binary, "-p", str(prefix), "-c", str(conf)], cpu=cpu, log=log)
    procs.wait_ready(system.proc, system.port, log, 20)
    procs.adopt_children(system.proc.pid)
    system.pid = system.proc.pid


def start(
    system: System, upstream: tuple[subprocess.Popen[bytes], int], workdir: Path, cpu: int | None
) -> None:
    """Start ``system`` in front of the upstream; on failure set ``system.reason``."""
    up_proc, up_port = upstream
    try:
        if system.key == "direct":
            system.port, system.pid = up_port, up_proc.pid
        elif system.key in ("quickstart", "mounted", "asgi", *CEILINGS.values()):
            _python_proxy(system, sys.executable, system.key, up_port, workdir, cpu)
        elif system.key == "seed":
            _python_proxy(system, ensure_seed_venv(), "quickstart", up_port, workdir, cpu)
        elif system.key == "nginx":
            _nginx(system, up_port, workdir, cpu)
        elif system.key in (BYTE_RELAY, FRAME_RELAY):
            _relay(system, up_port, workdir, cpu)
        else:
            raise RuntimeError(f"unknown system {system.key}")
    except Exception as exc:  # reported as unavailable, the other systems still run
        reason = str(exc).strip() or type(exc).__name__
        if "unavailable: " in reason:
            reason = reason[reason.index("unavailable: ") + 13 :]
        system.reason = reason
        if system.proc is not None:
            procs.stop(system.proc)
            system.proc = None
