"""Every way to test, build and run the project.  `nox -l` lists the sessions.

Tags: `ci` is what `.ci/run` runs (lint, typecheck, a slice of the test matrix covering the
oldest and newest websockets, wheels); `tests` is the whole test matrix.
"""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import subprocess
import sys

import nox

ROOT = pathlib.Path(__file__).parent
PACKAGES = ["frp-core", "frp-ws", "frp-health", "frp-balance", "fastapi-reverse-proxy"]
IMPORTS = {
    "frp-core": "frp_core",
    "frp-ws": "frp_ws",
    "frp-health": "frp_health",
    "frp-balance": "frp_balance",
    "fastapi-reverse-proxy": "fastapi_reverse_proxy",
}
SIBLINGS = {
    "frp-core": [],
    "frp-ws": ["frp-core"],
    "frp-health": [],
    "frp-balance": ["frp-core", "frp-health"],
    "fastapi-reverse-proxy": ["frp-core", "frp-ws", "frp-health", "frp-balance"],
}
PYTHONS = ["3.11", "3.12", "3.13"]
WEBSOCKETS = ["11.0.3", "12.0", "13.1", "14.2", "15.0.1", "16.1.1", "17.4"]
OLDEST_WS, NEWEST_WS = WEBSOCKETS[0], WEBSOCKETS[-1]
TEST_DEPS = [
    "pytest>=8",
    "pytest-asyncio>=0.24",
    "pytest-timeout>=2.3",
    "coverage[toml]>=7.6",
    "hypothesis>=6.100",
    "uvicorn[standard]>=0.35",
    "wsproto>=1.2",
    "fastapi>=0.115.2",
    "httpx>=0.27",
]
DIST = ROOT / "dist"

nox.options.default_venv_backend = "uv|virtualenv"
nox.options.error_on_missing_interpreters = bool(os.environ.get("CI"))
nox.options.sessions = ["lint", "typecheck", "tests"]


def _local_packages() -> list[str]:
    return [str(ROOT / "packages" / name) for name in PACKAGES]


def _matrix() -> list[nox.Param]:
    """Pruned: each Python runs the oldest and newest websockets, each major runs once."""
    cells: list[tuple[str, str]] = []
    for py in PYTHONS:
        cells += [(py, OLDEST_WS), (py, NEWEST_WS)]
    middle = WEBSOCKETS[1:-1]
    for i, ws in enumerate(middle):
        cells.append((PYTHONS[i % len(PYTHONS)], ws))
    params = []
    for py, ws in cells:
        tags = ["tests"]
        if (py, ws) in {("3.11", OLDEST_WS), ("3.13", NEWEST_WS)}:
            tags.append("ci")
        params.append(nox.param(py, ws, id=f"{py}-ws{ws}", tags=tags))
    return params


@nox.session(name="tests")
@nox.parametrize(("python", "websockets"), _matrix())
def tests(session: nox.Session, websockets: str) -> None:
    """The test suite of every package and the cross-package tests, on one websockets."""
    session.install(*_local_packages(), *TEST_DEPS, f"websockets=={websockets}")
    session.run("coverage", "run", "-m", "pytest", *session.posargs)
    session.run("coverage", "report", "--fail-under=0")


@nox.session(python=PYTHONS[-1], tags=["ci"])
def lint(session: nox.Session) -> None:
    """ruff format --check and ruff check over the whole tree."""
    session.install("ruff>=0.8", "check-jsonschema>=0.29")
    session.run("ruff", "format", "--check", ".")
    session.run("ruff", "check", ".")
    workflows = sorted(str(p) for p in (ROOT / ".github" / "workflows").glob("*.yml"))
    session.run("check-jsonschema", "--builtin-schema", "vendor.github-workflows", *workflows)
    _check_workflow_sessions(session)


def _check_workflow_sessions(session: nox.Session) -> None:
    """Every session the CI workflow's matrix names exists here (a renamed session must not
    leave GitHub running one that nox cannot find)."""
    text = (ROOT / ".github" / "workflows" / "ci.yml").read_text()
    block = text[text.index("        session:\n") : text.index("    steps:")]
    entries = re.findall(r'^\s+- "?([^"\n]+?)"?\s*$', block, re.MULTILINE)
    names = [name for entry in entries for name in entry.split()]
    if not names:
        session.error("no sessions found in the CI workflow's matrix")
    noxfile = str(ROOT / "noxfile.py")
    listed = subprocess.run(
        [sys.executable, "-m", "nox", "--noxfile", noxfile, "-l", "-s", *names],
        capture_output=True,
        text=True,
    )
    if listed.returncode != 0:  # nox names the sessions it cannot find
        session.error(f"the CI workflow's matrix: {listed.stderr.strip().splitlines()[-1]}")
    session.log(f"CI workflow: all {len(names)} sessions of its matrix exist")


@nox.session(python=PYTHONS[-1], tags=["ci"])
@nox.parametrize("websockets", [OLDEST_WS, NEWEST_WS], ids=["legacy-ws", "newest-ws"])
def typecheck(session: nox.Session, websockets: str) -> None:
    """mypy --strict over every package, against the oldest and the newest websockets."""
    session.install(*_local_packages(), "mypy>=1.13", f"websockets=={websockets}", "uvicorn")
    srcs = [str(ROOT / "packages" / name / "src") for name in PACKAGES]
    session.run("mypy", "--strict", *srcs)
    # user code against the installed packages (their py.typed), as a strict user checks it
    session.run("mypy", "--strict", str(ROOT / "tests" / "typing" / "quickstart_strict.py"))


@nox.session(python=PYTHONS[-1])
def build(session: nox.Session) -> None:
    """Every package as sdist and wheel into dist/, metadata checked with twine."""
    session.install("build>=1.2", "twine>=5", "hatchling>=1.24")
    shutil.rmtree(DIST, ignore_errors=True)
    for name in PACKAGES:
        session.run(
            "python",
            "-m",
            "build",
            "--installer",
            "uv",
            "--outdir",
            str(DIST),
            str(ROOT / "packages" / name),
        )
    artefacts = sorted(str(p) for p in DIST.iterdir())
    session.log(f"{len(artefacts)} artefacts")
    if len(artefacts) != 2 * len(PACKAGES):
        session.error(f"expected {2 * len(PACKAGES)} artefacts, got {artefacts}")
    session.run("twine", "check", "--strict", *artefacts)


@nox.session(python=PYTHONS[-1], tags=["ci"], requires=["build"])
def wheels(session: nox.Session) -> None:
    """Fresh venvs install the built wheels: each component alone imports, and alone
    frp-core does not pull websockets."""
    check = ROOT / "tests" / "support" / "check_wheel.py"
    for name in PACKAGES:
        venv = pathlib.Path(session.create_tmp()) / f"venv-{name}"
        shutil.rmtree(venv, ignore_errors=True)
        python = pathlib.Path(session.bin) / "python"  # the interpreter nox found, not a version
        session.run("uv", "venv", "-q", "--python", str(python), str(venv), external=True)
        py = str(venv / "bin" / "python")
        # The wheel itself plus the sibling wheels it needs, as files: never a same-named
        # project from an index.
        wanted = [name, *SIBLINGS[name]]
        files = [str(w) for n in wanted for w in DIST.glob(f"{IMPORTS[n]}-*.whl")]
        if len(files) != len(wanted):
            session.error(f"missing wheels for {wanted} in {DIST}")
        session.run("uv", "pip", "install", "-q", "--python", py, *files, external=True)
        session.run(py, str(check), name, IMPORTS[name], external=True)


@nox.session(python=PYTHONS[-1])
def docs(session: nox.Session) -> None:
    """Build the docs site strictly (broken links and missing pages fail)."""
    session.install("mkdocs-material>=9.5")
    session.run(
        "mkdocs",
        "build",
        "--strict",
        "--site-dir",
        str(ROOT / "build" / "site"),
        env={"NO_MKDOCS_2_WARNING": "1"},
    )


@nox.session(python=f"{sys.version_info[0]}.{sys.version_info[1]}")  # whichever runs nox
def demo(session: nox.Session) -> None:
    """A gateway on 127.0.0.1 in front of two embedded demo backends, until Ctrl-C."""
    session.install(*_local_packages(), "uvicorn[standard]>=0.35")
    session.run("python", str(ROOT / "demo" / "gateway.py"), *session.posargs)


@nox.session(python=PYTHONS[-1])
def dev(session: nox.Session) -> None:
    """Create .venv for development (the uv workspace): `uv sync --all-packages` does the same."""
    session.run("uv", "sync", "--all-packages", "--all-groups", external=True)


@nox.session(python=PYTHONS[0])
def bench(session: nox.Session) -> None:
    """Side-by-side benchmark (upstream direct, our proxy forms, 0.4.0, nginx, FastAPI alone).

    Context rows beside them: FastAPI answering by itself, and two WebSocket relays in Python
    below ASGI.  `nox -s bench -- --quick` is a one-repetition smoke run.  Never part of the
    test suite.
    """
    session.install(
        *_local_packages(),
        "uvicorn[standard]>=0.35",
        "fastapi>=0.115.2",
        "httpx>=0.27",
        "websockets>=13",
        "uvloop>=0.19",
        "httptools>=0.6",
    )
    session.run("python", str(ROOT / "bench" / "run.py"), *session.posargs)


def _soak(session: nox.Session, default: list[str]) -> None:
    session.install(*_local_packages(), *TEST_DEPS, "websockets>=13")
    args = session.posargs or default
    session.run("python", str(ROOT / "tests" / "soak" / "run.py"), *args)


@nox.session(python=PYTHONS[0])
def soak(session: nox.Session) -> None:
    """Mixed traffic (100,000 requests) through the load balancer with a backend killed and
    restarted midway; checks that file descriptors, tasks and memory return to baseline."""
    _soak(session, [])


@nox.session(name="soak-short", python=PYTHONS[0], tags=["ci"])
def soak_short(session: nox.Session) -> None:
    """The soak's short variant (``--short``, about 2,000 requests), for ``nox -t ci``."""
    _soak(session, ["--short"])


def _autobahn(session: nox.Session, default: list[str]) -> None:
    session.install(*_local_packages(), *TEST_DEPS)
    args = session.posargs or default
    session.run("python", str(ROOT / "tests" / "autobahn" / "run.py"), *args)


@nox.session(python=PYTHONS[0])
def autobahn(session: nox.Session) -> None:
    """Autobahn fuzzingclient (all 516 cases) through the tunnel and directly, compared case by
    case; skips with a message without Python 2.7."""
    _autobahn(session, [])


@nox.session(name="autobahn-quick", python=PYTHONS[0], tags=["ci"])
def autobahn_quick(session: nox.Session) -> None:
    """Autobahn's quick variant (``--quick``: every case of 1-7, a sample of 9, 12, 13), for
    ``nox -t ci``, through the message relay (wsproto) and through the splice; skips with a
    message without Python 2.7."""
    _autobahn(session, ["--quick"])
    if not session.posargs:
        _autobahn(session, ["--quick", "--ws", "splice"])
