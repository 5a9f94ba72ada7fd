"""``peapod report``: several results.json side by side (Markdown tables) and a grouped bar chart (PNG)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..io import atomic_path, atomic_write_text
from .results import EXP_COLUMNS, SEQ_COLUMNS, TOPN_COLUMNS, load_results, markdown_tables, run_label, table_rows


def report_labels(runs: list[dict[str, Any]]) -> list[str]:
    """One label per run (variant / protocol / scheme); colliding labels get the dataset name, then ``#i``."""
    from collections import Counter

    labels = [run_label(r) for r in runs]
    for extra in (lambda i, r: r["dataset"].get("name"), lambda i, r: f"#{i + 1}"):
        counts = Counter(labels)
        labels = [f"{lab} / {extra(i, r)}" if counts[lab] > 1 else lab for i, (lab, r) in enumerate(zip(labels, runs))]
    return labels


def build_report(paths: list[str | Path]) -> tuple[str, list[dict[str, Any]], list[str]]:
    """Load the results files and lay them out; returns (markdown, runs, labels)."""
    runs = [load_results(p) for p in paths]
    labels = report_labels(runs)
    lines = ["# PeaPOD evaluation report", ""]
    for i, (path, lab) in enumerate(zip(paths, labels), 1):
        ev = runs[i - 1]["evaluation"]
        lines.append(f"{i}. `{lab}` — {path} (split {ev.get('split')}, {runs[i - 1].get('date')})")
    lines += ["", markdown_tables(runs, labels)]
    return "\n".join(lines), runs, labels


def plot_report(runs: list[dict[str, Any]], labels: list[str], png_path: str | Path) -> Path:
    """Grouped bar chart (one panel per task, one bar per run row, groups = metrics), PNG, atomic."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    panels = []
    for task, title, columns in (("seq", "Sequential", SEQ_COLUMNS), ("topn", "Top-n (1+99)", TOPN_COLUMNS),
                                 ("exp", "Explanation", EXP_COLUMNS)):
        series = []
        for lab, res in zip(labels, runs):
            for suffix, metrics in table_rows(res, task):
                if task == "exp" and suffix != "sacrebleu/rouge-score":
                    continue
                name = f"{lab} / {suffix}" if (suffix and task == "topn") else lab
                series.append((name, [float(metrics.get(k) or 0.0) for k, _ in columns]))
        if series:
            panels.append((title, [h for _, h in columns], series))
    if not panels:
        raise ValueError("no metrics to plot")
    rows = max(len(series) for _, _, series in panels)
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.0 + 0.22 * rows), squeeze=False)
    for ax, (title, headers, series) in zip(axes[0], panels):
        x = np.arange(len(headers))
        width = 0.8 / len(series)
        for j, (name, values) in enumerate(series):
            ax.bar(x + (j - (len(series) - 1) / 2) * width, values, width, label=name)
        ax.set_xticks(x, headers)
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.08), frameon=False)
    fig.tight_layout()
    png_path = Path(png_path)
    with atomic_path(png_path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return png_path


def write_report(paths: list[str | Path], out: str | Path | None = None,
                 png: str | Path | None = None) -> str:
    """Build the report; write the Markdown to ``out`` and the chart to ``png`` when given."""
    markdown, runs, labels = build_report(paths)
    if out is not None:
        atomic_write_text(out, markdown)
    if png is not None:
        plot_report(runs, labels, png)
    return markdown
