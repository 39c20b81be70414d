"""The report's page: matplotlib plots (PNG) and the figures table, in one static HTML file
with the figures as JSON beside it."""

from __future__ import annotations

import html
import json
import time
from pathlib import Path

import numpy as np

from benchmarks.lib.figures import Figures

__all__ = ["write_report"]


def _plots(out: Path, series: dict) -> list[tuple[str, str, str]]:
    """(file, title, caption) of each plot made."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made: list[tuple[str, str, str]] = []

    def save(fig, name: str, title: str, caption: str) -> None:
        fig.tight_layout()
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        made.append((name, title, caption))

    if "ns/check" in series:
        fig, ax = plt.subplots(figsize=(8, 5))
        for name, points in series["ns/check"].items():
            xs, ys = zip(*points, strict=True)
            ax.plot(xs, ys, marker="o", label=name, linewidth=2.5 if name == "anning" else 1.2)
        ax.set(xscale="log", yscale="log", xlabel="entries in the list",
               ylabel="ns per check", title="ns per check against the list's size")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        save(fig, "ns_per_check.png", "ns per check",
             "anning: the full check (sender, entity, global, category) in batches; the peers "
             "answer only whether the number is listed. Lower is better.")
    if "bytes/entry" in series:
        fig, ax = plt.subplots(figsize=(8, 4.5))
        names = list(series["bytes/entry"])
        values = [series["bytes/entry"][n] for n in names]
        bars = ax.barh(names, values, color=["C0" if n.startswith("anning") else "C7"
                                             for n in names])
        ax.bar_label(bars, fmt="%.1f")
        ax.set(xlabel="bytes per entry", title="memory per entry, largest size")
        ax.invert_yaxis()
        save(fig, "bytes_per_entry.png", "bytes per entry",
             "anning's nbytes and its resident memory after a load in a fresh process with "
             "every page touched; the peers' own memory.")
    if "load rows/s" in series:
        fig, ax = plt.subplots(figsize=(8, 2.8))
        names = list(series["load rows/s"])
        bars = ax.barh(names, [series["load rows/s"][n] for n in names], color=["C0", "C7"])
        ax.bar_label(bars, fmt="{:,.0f}")
        ax.set(xlabel="rows per second", title="snapshot load")
        ax.invert_yaxis()
        save(fig, "load.png", "load rows/s",
             "`anning load` as cron runs it (the whole process), against csv.reader splitting "
             "the same file and taking int() of the number. Higher is better.")
    if "latency" in series:
        order = ["h2load sequential", "python sequential", "h2load paced", "python paced"]
        present = {key.split(" · ")[1] for key in series["latency"]}
        groups = [g for g in order if g in present]
        fig, axes = plt.subplots(2, 2, figsize=(11, 8.5), squeeze=False)
        for ax in axes.flat[len(groups):]:
            ax.set_visible(False)
        for ax, group in zip(axes.flat, groups, strict=False):
            for key, lat in series["latency"].items():
                server, how = key.split(" · ")
                if how != group or not len(lat):
                    continue
                xs = np.sort(lat)
                ys = np.arange(1, len(xs) + 1) / len(xs)
                ax.plot(xs, ys, label=server, linewidth=2 if server.startswith("anning") else 1)
            ax.set(xscale="log", xlabel="microseconds", ylabel="share of calls answered",
                   title=group)
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(loc="lower right")
        save(fig, "latency_cdf.png", "unary Check latency (CDF)",
             "One worker each; h2load (a native client on one connection) and the Python "
             "client, sequential and paced; the constant servicer answers without looking.")
    if "client checks/s" in series:
        fig, ax = plt.subplots(figsize=(8, 3.5))
        names = list(series["client checks/s"])
        bars = ax.barh(names, [series["client checks/s"][n] for n in names])
        ax.bar_label(bars, fmt="{:,.0f}")
        ax.set(xscale="log", xlabel="checks per second (log)", title="client modes")
        ax.invert_yaxis()
        save(fig, "clients.png", "checks/s by client mode",
             "One connection to one anning worker, every answer checked.")
    return made


def write_report(out: Path, figures: Figures, series: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    plots = _plots(out, series)
    latency = {k: {"p50": float(np.percentile(v, 50)), "p99": float(np.percentile(v, 99)),
                   "p99.9": float(np.percentile(v, 99.9)), "calls": len(v)}
               for k, v in series.get("latency", {}).items() if len(v)}
    plain = {k: v for k, v in series.items() if k != "latency"}
    figures.write_json(out / "figures.json", series=plain, latency_us=latency)
    context = ", ".join(f"{k}={v}" for k, v in figures.context.items())
    parts = [
        "<!doctype html><meta charset='utf-8'><title>anning benchmark report</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
        "pre{background:#f6f6f6;padding:1em;overflow-x:auto;font-size:12px}"
        "figure{margin:2em 0}figcaption{color:#555}.fail{color:#b00}</style>",
        "<h1>anning benchmark report</h1>",
        f"<p>{html.escape(time.strftime('%Y-%m-%d %H:%M %Z'))}; {html.escape(context)}</p>",
    ]
    if figures.failures:
        parts.append("<p class='fail'>Wrong answers: "
                     + "; ".join(html.escape(f) for f in figures.failures) + "</p>")
    for name, title, caption in plots:
        parts.append(f"<figure><h2>{html.escape(title)}</h2><img src='{name}' "
                     f"alt='{html.escape(title)}' style='max-width:100%'>"
                     f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    parts.append("<h2>Figures (each beside its peer from the same run)</h2>")
    parts.append("<pre>" + html.escape("\n".join(figures.lines())) + "</pre>")
    parts.append("<p>The same as JSON: <a href='figures.json'>figures.json</a>.</p>")
    (out / "index.html").write_text("\n".join(parts), encoding="utf-8")
    json.dumps(latency)  # fail here, not in a browser, on anything not JSON
