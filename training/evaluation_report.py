"""The report of ``nexttrack evaluate``: metrics per model with 95% intervals, the paired
comparisons of every encoder model with every baseline, the protocol, data and timings; its
plain-text table, JSON file and bar chart.

Intervals (``hr@K_ci``, ``mrr@K_ci`` per model, ``[lo, hi]``) and comparisons come from
:func:`training.metrics.session_bootstrap` (percentile bootstrap over test sessions).
``comparisons[model][baseline]`` holds ``hr@K`` and ``mrr@K`` of ``model`` minus
``baseline`` and their paired intervals ``hr@K_ci``/``mrr@K_ci``: an interval above 0 is a win.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

log = logging.getLogger(__name__)


def _cell(value: float, interval: Any = None) -> str:
    """``0.4560`` or ``0.4560 [0.4410, 0.4700]``."""
    text = f"{value:.4f}"
    if isinstance(interval, list | tuple) and len(interval) == 2:
        text += f" [{interval[0]:.4f}, {interval[1]:.4f}]"
    return text


@dataclass
class EvaluationReport:
    """Metrics per model, the protocol, the data and the timings (all JSON-serialisable)."""

    models: dict[str, dict[str, Any]]
    protocol: dict[str, Any]
    data: dict[str, Any]
    seconds: dict[str, float]
    comparisons: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "models": self.models,
            "comparisons": self.comparisons,
            "protocol": self.protocol,
            "data": self.data,
            "seconds": self.seconds,
        }

    def write_json(self, path: str | os.PathLike[str]) -> Path:
        """Write the report as indented JSON; returns the path."""
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(orjson.dumps(self.to_dict(), option=orjson.OPT_INDENT_2))
        return out

    def table(self, ks: Sequence[int] | None = None) -> str:
        """A plain-text table: HR/MRR/NDCG per k (with the 95% interval where the report has
        one), then coverage and mean popularity at max k; then the paired comparisons."""
        ks = list(ks or self.protocol.get("ks", (20,)))
        top = max(ks)
        cols = [f"{m}@{k}" for k in ks for m in ("hr", "mrr", "ndcg")]
        cols += [f"coverage@{top}", f"popularity@{top}"]
        rows = []
        for metrics in self.models.values():
            cells = []
            for c in cols:
                value = metrics.get(c, float("nan"))
                if c.startswith("popularity"):
                    cells.append(f"{value:.1f}")
                else:
                    cells.append(_cell(value, metrics.get(f"{c}_ci")))
            rows.append(cells)
        widths = [max([len(c), 8, *(len(r[j]) for r in rows)]) for j, c in enumerate(cols)]
        width = max([len("model"), *(len(n) for n in self.models)])

        def line(first: str, cells: list[str]) -> str:
            padded = (f"{c:>{w}}" for c, w in zip(cells, widths, strict=True))
            return f"{first:<{width}}  " + "  ".join(padded)

        lines = [line("model", cols)]
        lines += [line(name, cells) for name, cells in zip(self.models, rows, strict=True)]
        return "\n".join(lines + self._comparison_lines())

    def _comparison_lines(self) -> list[str]:
        """Paired differences (model - baseline) with their intervals; ``win``/``loss`` where
        the interval excludes 0 (both metrics), else ``-``."""
        if not self.comparisons:
            return []
        k = (self.protocol.get("intervals") or {}).get("k", max(self.protocol.get("ks", [20])))
        lines = ["", f"paired differences at {k} (model - baseline, 95% bootstrap intervals):"]
        for model, against in self.comparisons.items():
            for baseline, diff in against.items():
                verdicts = []
                for metric in ("hr", "mrr"):
                    lo, hi = diff[f"{metric}@{k}_ci"]
                    verdicts.append("win" if lo > 0 else "loss" if hi < 0 else "-")
                lines.append(
                    f"  {model} - {baseline}: hr@{k} "
                    + _cell(diff[f"hr@{k}"], diff[f"hr@{k}_ci"])
                    + f" {verdicts[0]}, mrr@{k} "
                    + _cell(diff[f"mrr@{k}"], diff[f"mrr@{k}_ci"])
                    + f" {verdicts[1]}"
                )
        return lines


def write_chart(
    report: EvaluationReport, path: str | os.PathLike[str], k: int | None = None
) -> Path:
    """A grouped bar chart (PNG, Agg backend) of HR@k, MRR@k and NDCG@k per model, with the
    95% intervals as error bars where the report has them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = k or max(report.protocol.get("ks", [20]))
    names = list(report.models)
    metrics = [f"hr@{k}", f"mrr@{k}", f"ndcg@{k}"]
    x = np.arange(len(names))
    width = 0.8 / len(metrics)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(names) + 2), 4.5))
    for j, metric in enumerate(metrics):
        values = [report.models[n].get(metric, 0.0) for n in names]
        cis = [report.models[n].get(f"{metric}_ci") for n in names]
        yerr = None
        if all(isinstance(ci, list | tuple) for ci in cis):
            yerr = np.abs(np.asarray(cis, dtype=np.float64).T - np.asarray(values)[None, :])
        bars = ax.bar(
            x + (j - 1) * width, values, width, label=metric.upper(), yerr=yerr, capsize=2
        )
        ax.bar_label(bars, fmt="%.3f", fontsize=7, padding=1)
    ax.set_xticks(x, names, rotation=20, ha="right")
    ax.set_ylabel("score")
    n_prefixes = report.data.get("n_prefixes", "?")
    ax.set_title(f"Next-track prediction, {n_prefixes} test prefixes (@{k})")
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
