"""Processes the benchmark owns: start (pinned to a core), wait until ready, stop by PID.

Every PID started here is recorded; :func:`stop_all` (also registered with ``atexit``) stops
exactly those, SIGTERM then SIGKILL, and never anything else.  /proc readers give CPU time and
resident memory of a process and its children.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
_OWNED: dict[int, subprocess.Popen[bytes]] = {}
_EXTRA: set[int] = set()  # children of owned processes (nginx workers), stopped by PID too


def cores() -> list[int]:
    """The CPUs this process may run on."""
    return sorted(os.sched_getaffinity(0))


def listening_socket() -> socket.socket:
    """A socket bound to an ephemeral port on 127.0.0.1, listening, inheritable."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(4096)
    sock.set_inheritable(True)
    return sock


def free_port() -> int:
    """A currently unused port on 127.0.0.1 (for servers that bind themselves, like nginx)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def start(
    argv: Sequence[str],
    *,
    cpu: int | None,
    log: Path,
    pass_fds: Sequence[int] = (),
    cwd: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in its own session, pinned to ``cpu``, stdout+stderr into ``log``."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            pass_fds=tuple(pass_fds),
            cwd=cwd,
            start_new_session=True,
        )
    _OWNED[proc.pid] = proc
    if cpu is not None:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(proc.pid, {cpu})
    return proc


def adopt_children(pid: int) -> list[int]:
    """Record (and pin like their parent) the current children of an owned process."""
    kids = children(pid)
    with contextlib.suppress(OSError):
        mask = os.sched_getaffinity(pid)
        for kid in kids:
            os.sched_setaffinity(kid, mask)
    _EXTRA.update(kids)
    return kids


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (from /proc/<pid>/task/*/children)."""
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            out += [int(x) for x in (task / "children").read_text().split()]
    return out


def stop(proc: subprocess.Popen[bytes], grace: float = 10.0, first: int = signal.SIGTERM) -> None:
    """Stop one owned process by PID: ``first`` (SIGTERM), wait, then SIGKILL."""
    if proc.pid not in _OWNED:
        return
    kids = [k for k in children(proc.pid) if k in _EXTRA]
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, first)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(grace)
    for kid in kids:  # orphaned workers of a killed master
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(kid, signal.SIGKILL)
        _EXTRA.discard(kid)
    del _OWNED[proc.pid]


def stop_all() -> None:
    """Stop every process this module started and that still runs."""
    for proc in list(_OWNED.values()):
        with contextlib.suppress(Exception):
            stop(proc)


atexit.register(stop_all)


def tail(log: Path, lines: int = 3) -> str:
    """The last lines of a log file, on one line."""
    try:
        text = log.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])


def http_ok(port: int, path: str = "/small", timeout: float = 2.0) -> bool:
    """One GET on 127.0.0.1:port answered with a 2xx status."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
            )
            head = s.recv(64)
    except OSError:
        return False
    return head.startswith((b"HTTP/1.1 2", b"HTTP/1.0 2"))


def wait_ready(proc: subprocess.Popen[bytes], port: int, log: Path, deadline_s: float) -> None:
    """Wait (bounded) until ``GET /small`` through ``port`` succeeds; raise with the log tail."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(tail(log) or f"exited with status {proc.returncode}")
        if http_ok(port):
            return
        time.sleep(0.05)
    raise RuntimeError(f"not ready after {deadline_s:.0f} s: {tail(log)}")


def tree(pid: int) -> list[int]:
    """``pid`` and its children (one level is enough for uvicorn and nginx)."""
    return [pid, *children(pid)]


def cpu_seconds(pid: int) -> float:
    """User+system CPU seconds of ``pid`` and its children, from /proc/<pid>/stat."""
    total = 0
    for p in tree(pid):
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total / CLK_TCK


def memory_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) in KiB, summed over ``pid`` and its children."""
    rss = hwm = 0
    for p in tree(pid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss += int(line.split()[1])
                elif line.startswith("VmHWM:"):
                    hwm += int(line.split()[1])
    return rss, hwm


class RssSampler:
    """Samples the resident memory of a process tree in a thread; reports peak growth."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.pid = pid
        self.interval = interval
        self.base_rss, self.base_hwm = memory_kib(pid)
        self.peak = self.base_rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, memory_kib(self.pid)[0])

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        rss, hwm = memory_kib(self.pid)
        self.peak = max(self.peak, rss)
        if hwm > self.base_hwm:  # a new lifetime peak was reached during the transfer
            self.peak = max(self.peak, hwm)

    @property
    def growth_mib(self) -> float:
        return (self.peak - self.base_rss) / 1024
