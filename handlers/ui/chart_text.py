"""The words around an analysis chart: its title, alt text and comment in the thread, and the text summary
posted instead where matplotlib is not installed."""

from __future__ import annotations

from bot.app.chart_data import ChartData


def _pct(rate: float | None) -> str:
    return "no data" if rate is None else f"{rate * 100:.1f}%"


def _ms(ms: float | None) -> str:
    return "no data" if ms is None else f"{ms:.0f} ms"


def title(data: ChartData, why: str) -> str:
    return f"{data.title}: " + ("the analysis up to the rollback" if why == "rollback" else "the analysis")


def comment(data: ChartData, why: str) -> str:
    n = len(data.points)
    what = "Rolled back" if why == "rollback" else "Analysis passed"
    return f"{what}: the chart of its {n} measurement{'s' if n != 1 else ''}."


def alt(data: ChartData) -> str:
    return (
        "Error rate and latency of the new version and the stable one at each measurement, with the "
        "thresholds, each verdict and the traffic weight on the new version."
    )


def summary(data: ChartData, why: str) -> str:
    """What the chart would show, in words (no matplotlib here)."""
    verdicts: dict[str, int] = {}
    for p in data.points:
        verdicts[p.verdict] = verdicts.get(p.verdict, 0) + 1
    counted = ", ".join(f"{n} {v}" for v, n in verdicts.items())
    weights = [p.weight for p in data.points if p.weight is not None]
    rates = [p.new_error_rate for p in data.points if p.new_error_rate is not None]
    latencies = [p.new_latency_ms for p in data.points if p.new_latency_ms is not None]
    text = f"{comment(data, why)[:-1].replace('the chart of', 'summary of')} ({counted})"
    if weights:
        text += f"; traffic to the new version {weights[0]}% → {weights[-1]}%"
    text += f"; error rate at most {_pct(max(rates) if rates else None)}"
    if data.max_error_rate is not None:
        text += f" (threshold {_pct(data.max_error_rate)})"
    text += f", latency at most {_ms(max(latencies) if latencies else None)}"
    if data.max_latency_ms is not None:
        text += f" (threshold {_ms(data.max_latency_ms)})"
    return text + ". (No chart: matplotlib is not installed — pip install 'deploybot[charts]'.)"
