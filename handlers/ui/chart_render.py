"""The bot's pictures, drawn with matplotlib's Agg canvas (no pyplot: no global state, safe on a worker
thread), imported only when a chart is drawn; without matplotlib (the optional `charts` extra) drawing
raises ChartsUnavailable and callers post words instead.

- analysis_chart: a canary's or blue-green's bake — error rate and latency of the new version against
  the stable one over time, each measurement's verdict marked, the thresholds drawn, the new version's
  traffic weight as a step line, the rollback marked. Exactly the points of bot.app.chart_data, which
  the PNG also carries as JSON in its `deploybot:points` text chunk (so a reader can check what it drew).
- report_chart: the delivery report's deployments per week stacked by outcome, with the change failure
  rate as a line."""

from __future__ import annotations

import io
import json
import math
from typing import Any

from bot.app.chart_data import ChartData
from bot.app.report import OUTCOMES, Report

POINTS_KEY = "deploybot:points"  # the PNG text chunk holding the drawn points
VERDICT_STYLE = {  # marker, colour
    "pass": ("o", "#2e7d32"),
    "fail": ("X", "#c62828"),
    "inconclusive": ("D", "#ef6c00"),
    "error": ("s", "#616161"),
}
OUTCOME_COLOURS = {
    "succeeded": "#2e7d32",
    "rolled_back": "#ef6c00",
    "failed": "#c62828",
    "regressed": "#6a1b9a",
}
NEW, STABLE = "#1565c0", "#9e9e9e"
SIZE = (9.0, 7.0)  # inches, at DPI: 900 x 700 pixels
DPI = 100


class ChartsUnavailable(Exception):
    """matplotlib is not installed (pip install 'deploybot[charts]')."""


def _figure(height: float = SIZE[1]) -> Any:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ChartsUnavailable(f"{exc} (pip install 'deploybot[charts]')") from None
    fig = Figure(figsize=(SIZE[0], height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Any, metadata: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata=metadata or {})
    return buf.getvalue()


def _minutes(data: ChartData, at: float) -> float:
    return (at - data.points[0].at) / 60.0


def _series(ax: Any, xs: list[float], ys: list[float | None], colour: str, label: str) -> None:
    pairs = [(x, y) for x, y in zip(xs, ys, strict=True) if y is not None]
    if pairs:
        ax.plot([p[0] for p in pairs], [p[1] for p in pairs], color=colour, label=label, linewidth=1.6)


def _verdicts(ax: Any, data: ChartData, xs: list[float], ys: list[float | None]) -> None:
    for verdict, (marker, colour) in VERDICT_STYLE.items():
        pairs = [
            (x, y)
            for x, y, p in zip(xs, ys, data.points, strict=True)
            if y is not None and p.verdict == verdict
        ]
        if pairs:
            ax.scatter(
                [p[0] for p in pairs], [p[1] for p in pairs], marker=marker, color=colour, zorder=3, s=36,
                label=verdict,
            )  # fmt: skip


def analysis_chart(data: ChartData) -> bytes:
    """The PNG of one deployment's analysis (at least one point)."""
    if not data.points:
        raise ValueError("no measurement to draw")
    fig = _figure()
    error_ax, latency_ax, weight_ax = fig.subplots(3, 1, sharex=True, height_ratios=(3, 3, 2))
    xs = [_minutes(data, p.at) for p in data.points]
    new_errors = [None if p.new_error_rate is None else p.new_error_rate * 100 for p in data.points]
    stable_errors = [None if p.stable_error_rate is None else p.stable_error_rate * 100 for p in data.points]
    _series(error_ax, xs, new_errors, NEW, "new version")
    _series(error_ax, xs, stable_errors, STABLE, "stable")
    _verdicts(error_ax, data, xs, new_errors)
    if data.max_error_rate is not None:
        error_ax.axhline(
            data.max_error_rate * 100, color="#c62828", linestyle="--", linewidth=1, label="threshold"
        )
    error_ax.set_ylabel("error rate (%)")
    error_ax.legend(loc="upper left", fontsize=7, ncol=4)
    new_latency = [p.new_latency_ms for p in data.points]
    _series(latency_ax, xs, new_latency, NEW, "new version")
    _series(latency_ax, xs, [p.stable_latency_ms for p in data.points], STABLE, "stable")
    _verdicts(latency_ax, data, xs, new_latency)
    if data.max_latency_ms is not None:
        latency_ax.axhline(
            data.max_latency_ms, color="#c62828", linestyle="--", linewidth=1, label="threshold"
        )
    latency_ax.set_ylabel("latency (ms)")
    weights = [p.weight if p.weight is not None else 0 for p in data.points]
    weight_ax.step(xs, weights, where="post", color=NEW, linewidth=1.6, label="traffic to the new version")
    weight_ax.set_ylim(-5, 105)
    weight_ax.set_ylabel("traffic (%)")
    weight_ax.set_xlabel("minutes since the first measurement")
    if data.rolled_back_at is not None:
        for ax in (error_ax, latency_ax, weight_ax):
            ax.axvline(_minutes(data, data.rolled_back_at), color="#c62828", linewidth=1.2)
        weight_ax.annotate(
            "rolled back ", (_minutes(data, data.rolled_back_at), 88), fontsize=8, color="#c62828", ha="right"
        )
    for ax in (error_ax, latency_ax, weight_ax):
        ax.grid(True, alpha=0.3)
    fig.suptitle(data.title, fontsize=11)
    fig.subplots_adjust(left=0.09, right=0.98, top=0.93, bottom=0.08, hspace=0.12)  # tight_layout costs
    points = json.dumps([p for p in data.to_dict()["points"]], sort_keys=True)
    return _png(fig, {POINTS_KEY: points})


def report_chart(r: Report) -> bytes:
    """The PNG of the report's weeks (an empty report draws empty axes saying so)."""
    fig = _figure(4.5)
    ax = fig.subplots()
    labels = [w.start for w in r.weeks]
    bottom = [0] * len(labels)
    for outcome in OUTCOMES:
        counts = [w.counts.get(outcome, 0) for w in r.weeks]
        if any(counts):
            ax.bar(
                labels, counts, bottom=bottom, color=OUTCOME_COLOURS[outcome], label=outcome.replace("_", " ")
            )
            bottom = [b + c for b, c in zip(bottom, counts, strict=True)]
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.set_ylabel("deployments per week")
    ax.set_xlabel("week starting")
    rate = ax.twinx()
    rate.plot(
        labels, [math.nan if w.change_failure_rate is None else 100 * w.change_failure_rate for w in r.weeks],
        color="#212121", marker="o",
        label="change failure rate",
    )  # fmt: skip
    rate.set_ylim(0, 105)
    rate.set_ylabel("change failure rate (%)")
    if not labels:
        ax.text(0.5, 0.5, "no deployment ended in this period", ha="center", transform=ax.transAxes)
    ax.legend(loc="upper left", fontsize=8)
    rate.legend(loc="upper right", fontsize=8)
    scope = (r.service or "every service") + (f" in {r.env}" if r.env else "")
    fig.suptitle(f"Deliveries of {scope}", fontsize=11)
    fig.subplots_adjust(left=0.08, right=0.92, top=0.9, bottom=0.13)
    data = json.dumps([{"start": w.start, **w.counts} for w in r.weeks], sort_keys=True)
    return _png(fig, {POINTS_KEY: data})
