"""The benchmark's figures: the terminal table and the JSON file (``nexttrack bench``)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson

from streams.tools.worker_timings import describe

#: The stages of a run, in the order they run and are printed (``faust_upstream``: the
#: Faust passthrough with Faust's own fetch loop, ``faust``: with ours).
STAGES = ("passthrough", "faust_upstream", "faust", "worker")


def ratio(a: float | None, b: float | None) -> float | None:
    """``b / a`` rounded to 3 places (``None`` when either is missing or ``a`` is 0)."""
    return round(b / a, 3) if a and b is not None else None


def _num(value: Any, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, fmt)


def format_results(results: dict[str, Any]) -> str:
    """A small table for the terminal: the throughput run, then each rate run."""
    rows = [("run", "stage", "events/s", "p50 ms", "p95 ms", "p99 ms", "answered")]

    def add(run: str, name: str, r: dict[str, Any]) -> None:
        rows.append(
            (
                run,
                name,
                _num(r.get("events_per_second"), ".0f"),
                _num(r.get("p50_ms"), ".1f"),
                _num(r.get("p95_ms"), ".1f"),
                _num(r.get("p99_ms"), ".1f"),
                f"{r.get('answered')}/{r.get('sent')}",
            )
        )

    stages = [name for name in STAGES if name in results]
    for name in stages:
        add("max", name, results[name])
    for entry in results.get("rates", []):
        for name in stages:
            if name in entry:
                add(f"{entry['rate']:g}/s", name, entry[name])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(
            cell.ljust(w) if i < 2 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]
    mem = ", ".join(f"{name} {_num(results[name].get('peak_rss_mb'), '.0f')} MB" for name in stages)
    lines.append(f"peak resident memory (VmHWM): {mem}")
    per_process = results.get("worker", {}).get("peak_rss_mb_per_process")
    labels = results.get("worker", {}).get("process_labels")
    if per_process and labels and len(labels) == len(per_process):
        peaks = ", ".join(
            f"{label} {_num(p, '.0f')}" for label, p in zip(labels, per_process, strict=True)
        )
        lines.append(f"worker processes: {len(per_process)} (peak RSS MB each: {peaks})")
    elif per_process:
        peaks = ", ".join(_num(p, ".0f") for p in per_process)
        lines.append(f"worker processes: {len(per_process)} (peak MB each: {peaks})")
    lines += memory_lines(results.get("worker", {}))
    lines.append(f"worker/passthrough throughput ratio: {results['worker_to_passthrough_ratio']}")
    if "faust" in results:
        lines.append(
            f"faust/passthrough throughput ratio: {results['faust_to_passthrough_ratio']}; "
            f"worker/faust: {results['worker_to_faust_ratio']}"
        )
    if "faust_upstream" in results:
        lines.append(
            "faust_upstream/passthrough throughput ratio: "
            f"{results['faust_upstream_to_passthrough_ratio']}; "
            f"our fetch loop's gain (faust/faust_upstream): {results['fetch_loop_gain']}"
        )
    worker_runs = [("max", results.get("worker", {}))] + [
        (f"{entry['rate']:g}/s", entry.get("worker", {})) for entry in results.get("rates", [])
    ]
    for run, figures in worker_runs:
        if figures.get("batch_timings"):
            lines.append(f"worker batches, {run}: {describe(figures['batch_timings'])}")
    settings = results.get("worker_settings") or {}
    if settings:
        lines.append(
            "worker: "
            + ", ".join(
                f"{k}={settings[k]}"
                for k in (
                    "encoder",
                    "top_k",
                    "batch_size",
                    "batch_timeout_ms",
                    "fusion_method",
                    "fetch_loop",
                )
                if k in settings
            )
            + f"; catalog {results.get('catalog_size')} tracks"
        )
    return "\n".join(lines)


def memory_lines(worker: Mapping[str, Any]) -> list[str]:
    """The printed lines of the worker stage's PSS figures (none without them)."""
    peak = worker.get("pss_peak_mb")
    if peak is None:
        return []
    at_peak = worker.get("pss_at_peak_mb") or {}
    each = ", ".join(f"{label} {mb:.0f}" for label, mb in at_peak.items())
    processes = worker.get("worker_processes", 1)
    within = worker.get("pss_within_target")
    verdict = "meets" if within else "misses"
    lines = [
        f"worker memory, sum of PSS at its peak: {peak:.0f} MB ({each}); issue #27's target "
        f"for {processes} worker{'s' if processes != 1 else ''} (lstm, 100k tracks): "
        f"<= {worker.get('pss_target_mb'):.0f} MB, {verdict} it"
    ]
    maxima = worker.get("pss_max_mb_per_process") or {}
    if len(maxima) > 1:
        lines.append(
            "worker PSS, each process's own peak: "
            + ", ".join(f"{label} {mb:.0f} MB" for label, mb in maxima.items())
        )
    return lines


def write_results(results: dict[str, Any], path: Path) -> Path:
    """Write ``results`` to ``path`` as indented JSON; returns the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2) + b"\n")
    return path
