"""The comparison's page: a forest plot of the paired differences, the per-side results and the
verdict, as one self-contained HTML file (the plot inlined) next to its PNG."""

from __future__ import annotations

import base64
import html
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from tune_lsd.compare.settings import METRICS as LABELS
from tune_lsd.compare.settings import CompareSettings
from tune_lsd.compare.stats import Difference


def forest_plot(differences: list[Difference], title: str, path: Path) -> None:
    """One row per metric and level: the mean difference, its bootstrap interval (thick) and
    Student-t interval (thin), the zero line to read them against."""
    rows = [d for d in differences if d.values]
    figure, axis = plt.subplots(figsize=(8, 0.9 + 0.55 * len(rows)))
    for index, d in enumerate(rows):
        y = len(rows) - 1 - index
        if d.student_t is not None and d.bootstrap is not None:
            axis.plot(
                d.student_t, [y, y], color="tab:gray", linewidth=1.5, label="Student-t 95 %" if index == 0 else None
            )
            axis.plot(
                d.bootstrap,
                [y, y],
                color="tab:blue",
                linewidth=5,
                alpha=0.7,
                label="bootstrap 95 %" if index == 0 else None,
            )
        axis.plot(
            d.values,
            [y] * len(d.values),
            "o",
            color="tab:orange",
            markersize=3,
            alpha=0.6,
            label="pairs" if index == 0 else None,
        )
        axis.plot([d.mean], [y], "D", color="black", label="mean" if index == 0 else None)
    axis.axvline(0.0, color="tab:red", linewidth=1, linestyle="--")
    axis.set_yticks(
        range(len(rows)), [f"{LABELS.get(d.metric, d.metric)}, over {len(d.values)} {d.level}" for d in reversed(rows)]
    )
    axis.set_xlabel("difference A - B on the test classes")
    axis.set_title(title)
    axis.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the rows, never over them
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_page(settings: CompareSettings, state: dict, differences: list[Difference], verdict: str, out: Path) -> Path:
    """Write ``out/compare.html`` (and ``forest.png``); returns the page's path."""
    out.mkdir(parents=True, exist_ok=True)
    a, b = settings.spaces
    plot = out / "forest.png"
    forest_plot(differences, f"{a} - {b}: {settings.search_seeds} search seeds x {settings.seeds} retrains", plot)
    rows = "".join(
        f"<tr><td>{html.escape(r['space'])}</td><td>{r['search_seed']}</td><td>{r['seed']}</td>"
        f"<td>{html.escape(r['search'])}</td><td>{html.escape(r['trial'])}</td>"
        + "".join(f"<td>{r['metrics'][m]:.4f}</td>" for m in LABELS)
        + "</tr>"
        for r in sorted(state["retrains"], key=lambda r: (r["search_seed"], r["seed"], r["space"]))
    )
    floors = "".join(
        f"<tr><td>{html.escape(name)}</td>" + "".join(f"<td>{values[m]:.4f}</td>" for m in LABELS) + "</tr>"
        for name, values in (state["floors"] or {}).items()
    )
    intervals = "".join(
        f"<tr><td>{LABELS[d.metric]}</td><td>{html.escape(d.level)} ({len(d.values)})</td><td>{d.mean:+.4f}</td>"
        + (
            "<td colspan=2>one pair</td>"
            if d.bootstrap is None or d.student_t is None
            else f"<td>[{d.bootstrap[0]:+.4f}, {d.bootstrap[1]:+.4f}]</td>"
            f"<td>[{d.student_t[0]:+.4f}, {d.student_t[1]:+.4f}]</td>"
        )
        + "</tr>"
        for d in differences
    )
    image = base64.b64encode(plot.read_bytes()).decode()
    page = out / "compare.html"
    page.write_text(f"""<!doctype html>
<html><head><meta charset="utf-8"><title>tune-lsd compare: {html.escape(settings.name)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:70em}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:.25em .6em;text-align:right}}td:first-child{{text-align:left}}</style></head>
<body><h1>Comparison {html.escape(settings.name)}: {html.escape(a)} vs {html.escape(b)}</h1>
<p class="verdict"><b>{html.escape(verdict)}</b></p>
<p>{settings.search_seeds} searches per space of {settings.num_samples} trials each (searcher seeds
0-{settings.search_seeds - 1}); each search's best config retrained on all training classes with seeds
0-{settings.seeds - 1} (the same on both sides) and tested once. Overrides:
<code>{html.escape(" ".join(settings.overrides) or "none")}</code>.</p>
<h2>Paired differences {html.escape(a)} - {html.escape(b)}</h2>
<img src="data:image/png;base64,{image}" alt="forest plot of the paired differences">
<table><tr><th>metric</th><th>over</th><th>mean</th><th>bootstrap 95 %</th><th>Student-t 95 %</th></tr>
{intervals}</table>
<h2>Retrains (test classes)</h2>
<table><tr><th>space</th><th>search seed</th><th>seed</th><th>search</th><th>its best trial</th>
<th>Recall@1</th><th>MAP@R</th></tr>{rows}</table>
<h2>Floors</h2><table><tr><th></th><th>Recall@1</th><th>MAP@R</th></tr>{floors}</table>
</body></html>
""")
    return page
