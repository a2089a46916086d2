"""Aggregation (medians), the markdown tables, the targets checklist and the JSON file."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from systems import BYTE_RELAY, CEILINGS, FRAME_RELAY

CONCURRENCY = (1, 16, 64, 256)
OURS = ("quickstart", "mounted")
REFERENCES = (("direct", "(a) direct"), ("seed", "(c) 0.4.0"), ("nginx", "(d) nginx"))
# metric -> (column title, digits); lower-is-better metrics are marked with ↓ in ratio tables
STREAM_COLUMNS = {
    "download_mbps": ("download MB/s", 0),
    "download_rss_mib": ("RSS Δ dl MiB", 1),
    "upload_mbps": ("upload MB/s", 0),
    "upload_rss_mib": ("RSS Δ ul MiB", 1),
    "sse_ms": ("SSE 1st event ms", 2),
    "ws_msgs": ("WS 1 KiB msg/s", 0),
    "ws_cpu_us": ("WS CPU µs/round trip", 0),
    "ws_big_ms": ("WS 4 MiB RTT ms", 1),
}
RATIO_COLUMNS = {
    **{f"get_c{c}_rps": f"req/s c={c}" for c in CONCURRENCY},
    "get_c64_p99_ms": "p99 c=64 ↓",
    "get_c64_cpu_us": "CPU/req c=64 ↓",
    "download_mbps": "download",
    "upload_mbps": "upload",
    "sse_ms": "SSE ↓",
    "ws_msgs": "WS msg/s",
    "ws_cpu_us": "WS CPU ↓",
    "ws_big_ms": "WS 4 MiB ↓",
}


def summarize(results: dict[str, dict[str, Any]]) -> None:
    """Add ``median`` to every system: the median of its runs (the maximum for RSS growth)."""
    for res in results.values():
        res["median"] = {
            key: (max(vals) if key.endswith("_rss_mib") else statistics.median(vals))
            for key, vals in res["runs"].items()
            if vals
        }


def _fmt(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "–"
    if digits == 0 or abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"


def _ratio(value: float | None, ref: float | None) -> str:
    if value is None or not ref:
        return "–"
    r = value / ref
    return f"{r:.3g}×"


def _get(results: dict[str, dict[str, Any]], key: str, metric: str) -> float | None:
    res = results.get(key)
    if not res or res.get("status") != "ok":
        return None
    value = res.get("median", {}).get(metric)
    return float(value) if value is not None else None


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def tables(results: dict[str, dict[str, Any]]) -> str:
    """The markdown report: availability, small GET, streams, ratio tables."""
    ok = [k for k, r in results.items() if r["status"] == "ok"]
    lines = ["### Systems", ""]
    for res in results.values():
        state = "ok" if res["status"] == "ok" else f"unavailable: {res['reason']}"
        lines.append(f"- {res['label']}: {state}")
        for workload, errors in res.get("errors", {}).items():
            lines.append(f"  - {workload} failed: {errors[-1]}")
    lines += ["", "### Small GET (~100 B body)", ""]
    lines.append(
        _row(
            [
                "system",
                "conns",
                "req/s",
                "p50 ms",
                "p99 ms",
                "CPU µs/req",
                "×(a) direct",
                "×(c) 0.4.0",
                "×(d) nginx",
            ]
        )
    )
    lines.append(_row(["---"] + ["---:"] * 8))
    for key in ok:
        for c in CONCURRENCY:
            rps = _get(results, key, f"get_c{c}_rps")
            if rps is None and _get(results, key, f"get_c{c}_p99_ms") is None:
                continue  # not measured here (the relays measure WebSockets only)
            refs = [_ratio(rps, _get(results, r, f"get_c{c}_rps")) for r, _ in REFERENCES]
            lines.append(
                _row(
                    [
                        results[key]["label"],
                        str(c),
                        _fmt(rps),
                        _fmt(_get(results, key, f"get_c{c}_p50_ms"), 2),
                        _fmt(_get(results, key, f"get_c{c}_p99_ms"), 2),
                        _fmt(_get(results, key, f"get_c{c}_cpu_us"), 0),
                        *refs,
                    ]
                )
            )
    lines += ["", "### Transfers, SSE, WebSocket", ""]
    lines.append(_row(["system", *(title for title, _ in STREAM_COLUMNS.values())]))
    lines.append(_row(["---"] + ["---:"] * len(STREAM_COLUMNS)))
    for key in ok:
        cells = [_fmt(_get(results, key, m), d) for m, (_, d) in STREAM_COLUMNS.items()]
        if any(cell != "–" for cell in cells):  # context rows measure some workloads only
            lines.append(_row([results[key]["label"], *cells]))
    for ref, title in REFERENCES:
        if _get(results, ref, "get_c1_rps") is None and _get(results, ref, "ws_msgs") is None:
            continue
        lines += ["", f"### Ratios to {title} (value ÷ reference; ↓ = lower is better)", ""]
        lines.append(_row(["system", *RATIO_COLUMNS.values()]))
        lines.append(_row(["---"] + ["---:"] * len(RATIO_COLUMNS)))
        for key in ok:
            cells = [_ratio(_get(results, key, m), _get(results, ref, m)) for m in RATIO_COLUMNS]
            lines.append(_row([results[key]["label"], *cells]))
    return "\n".join(lines)


Check = tuple[str, bool | None, str]


def _why(results: dict[str, dict[str, Any]], key: str, metric: str) -> str:
    """Why ``metric`` of ``key`` has no value: unavailable, failed, or not run."""
    res = results.get(key)
    if res is None:
        return f"{key} not run"
    if res["status"] != "ok":
        return f"{key} unavailable"
    failed = [w for w in res.get("errors", {}) if metric.startswith(w + "_")]
    if failed:
        workload = max(failed, key=len)  # "ws_big" rather than "ws" for ws_big_ms
        return f"{key} {workload} failed: {res['errors'][workload][-1][:120]}"
    return f"{key} {metric} not measured"


def checklist(results: dict[str, dict[str, Any]]) -> list[Check]:
    """The issue 7 targets, evaluated on this run's medians (never asserted)."""

    def target(
        name: str, key: str, metric: str, ref: str, ref_metric: str, op: str, bound: float
    ) -> Check:
        value, base = _get(results, key, metric), _get(results, ref, ref_metric)
        if value is None:
            return name, None, _why(results, key, metric)
        if not base:
            return name, None, _why(results, ref, ref_metric)
        ratio = value / base
        met = ratio >= bound if op == ">=" else ratio <= bound
        return name, met, f"{ratio:.3g}× (target {op} {bound}×)"

    def with_ceiling(check: Check, key: str) -> Check:
        """``check`` (a c=64 req/s ratio to nginx) with what ``key``'s framework makes of it
        answering by itself: no proxy in that form can do better."""
        roof, base = _get(results, CEILINGS[key], c64), _get(results, "nginx", c64)
        if roof is None or not base:
            return check
        name, met, detail = check
        return name, met, f"{detail}; the framework alone, no proxy: {roof / base:.3g}×"

    def with_relay(check: Check) -> Check:
        """``check`` (a WebSocket msg/s ratio to nginx) with what the relays in Python below
        ASGI make of it: bytes copied, or frame headers parsed too."""
        base = _get(results, "nginx", "ws_msgs")
        name, met, detail = check
        for key, what in ((BYTE_RELAY, "a byte relay"), (FRAME_RELAY, "a frame relay")):
            roof = _get(results, key, "ws_msgs")
            if roof is not None and base:
                detail += f"; {what} in Python below ASGI: {roof / base:.3g}×"
        return name, met, detail

    qs, mo, c64 = "quickstart", "mounted", "get_c64_rps"
    checks = [
        target("Quick Start c=64 req/s ≥ 15× 0.4.0", qs, c64, "seed", c64, ">=", 15),
        with_ceiling(
            target("Quick Start c=64 req/s ≥ 0.25× nginx", qs, c64, "nginx", c64, ">=", 0.25), qs
        ),
        with_ceiling(
            target("mounted c=64 req/s ≥ 0.5× nginx", mo, c64, "nginx", c64, ">=", 0.5), mo
        ),
    ]
    for key, name in ((qs, "Quick Start"), (mo, "mounted")):
        p99, cpu1, cpu256 = "get_c64_p99_ms", "get_c1_cpu_us", "get_c256_cpu_us"
        checks += [
            target(f"{name} p99 c=64 ≤ 3× nginx", key, p99, "nginx", p99, "<=", 3),
            target(f"{name} CPU/req c=256 ≤ 1.3× c=1", key, cpu256, key, cpu1, "<=", 1.3),
            target(
                f"{name} download ≥ 1.0× nginx",
                key,
                "download_mbps",
                "nginx",
                "download_mbps",
                ">=",
                1.0,
            ),
            target(
                f"{name} upload ≥ 0.95× direct",
                key,
                "upload_mbps",
                "direct",
                "upload_mbps",
                ">=",
                0.95,
            ),
            with_relay(
                target(
                    f"{name} WS msg/s ≥ 1.0× nginx", key, "ws_msgs", "nginx", "ws_msgs", ">=", 1.0
                )
            ),
            target(f"{name} SSE first event ≤ 2× nginx", key, "sse_ms", "nginx", "sse_ms", "<=", 2),
        ]
        for what in ("download", "upload"):
            metric = f"{what}_rss_mib"
            growth = _get(results, key, metric)
            checks.append(
                (
                    f"{name} RSS growth during {what} ≤ 16 MiB",
                    None if growth is None else growth <= 16,
                    _why(results, key, metric) if growth is None else f"{growth:.1f} MiB",
                )
            )
    return checks


def checklist_markdown(checks: list[Check]) -> str:
    marks = {True: "✓", False: "✗", None: "–"}
    lines = ["### Targets (issue 7; reported, never asserted)", ""]
    lines += [f"- {marks[met]} {name}: {detail}" for name, met, detail in checks]
    return "\n".join(lines)


def write_json(
    path: Path, meta: dict[str, Any], results: dict[str, dict[str, Any]], checks: list[Check]
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "meta": meta,
        "systems": results,
        "targets": [{"target": n, "met": m, "detail": d} for n, m, d in checks],
    }
    path.write_text(json.dumps(doc, indent=2, sort_keys=False) + "\n")
