"""The garbage collector's first threshold in a proxy process (``frp_core.tune_gc``).

Each case runs in a fresh interpreter: the threshold is process-wide state.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest


def run(code: str) -> str:
    """Run ``code`` in a fresh interpreter and return what it printed."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


# A proxy process: the Quick Start's lifespan makes the upstream client.
MAKE_CLIENT = """
import asyncio, gc, types
import frp_core
app = types.SimpleNamespace(state=types.SimpleNamespace())
async def main():
    await frp_core.create_httpx_client(app)
    await frp_core.close_httpx_client(app)
"""


def test_the_first_client_raises_the_threshold_and_keeps_the_others() -> None:
    out = run(
        MAKE_CLIENT
        + """
gc.set_threshold(700, 11, 12)
asyncio.run(main())
print(gc.get_threshold())
"""
    )
    assert out == "(10000, 11, 12)"


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        ("gc.set_threshold(50000)", "(50000, 10, 10) True"),  # never lowered
        ("frp_core.tune_gc(None)", "(700, 10, 10) True"),  # opted out
        ("gc.disable()", "(700, 10, 10) False"),  # a disabled collector is left alone
        ("frp_core.tune_gc(3000)", "(3000, 10, 10) True"),  # another value
    ],
    ids=["higher", "opt-out", "disabled", "chosen"],
)
def test_the_users_choice_is_kept(setup: str, expected: str) -> None:
    out = run(
        MAKE_CLIENT
        + f"""
gc.set_threshold(700, 10, 10)
{setup}
asyncio.run(main())
print(gc.get_threshold(), gc.isenabled())
"""
    )
    assert out == expected


def test_opting_out_later_restores_the_replaced_threshold() -> None:
    out = run(
        MAKE_CLIENT
        + """
gc.set_threshold(700, 10, 10)
asyncio.run(main())
before = gc.get_threshold()
frp_core.tune_gc(None)
print(before, gc.get_threshold())
"""
    )
    assert out == "(10000, 10, 10) (700, 10, 10)"


def test_an_explicit_call_applies_at_once_without_an_engine() -> None:
    # a WebSocket-only gateway makes no engine: it calls tune_gc() in its startup
    out = run(
        """
import gc
import frp_core
gc.set_threshold(700, 10, 10)
frp_core.tune_gc()
print(gc.get_threshold())
"""
    )
    assert out == "(10000, 10, 10)"


def test_a_bad_threshold_is_refused() -> None:
    import frp_core

    for bad in (0, -1, 1.5, "10"):
        with pytest.raises(ValueError, match="positive int"):
            frp_core.tune_gc(bad)  # type: ignore[arg-type]
