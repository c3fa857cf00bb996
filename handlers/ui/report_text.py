"""The delivery report's words (bot.app.report computes the figures): plain text for the terminal, CSV,
and the Slack answer to /deploy report."""

from __future__ import annotations

import csv
import io
from typing import Any

from bot.app.report import Report
from bot.domain.durations import duration
from handlers.ui import blocks as slack_ui

UNKNOWN_LEAD = "unknown (no deployment's commit time is known: CI evidence or metadata would give it)"


def _scope(r: Report) -> str:
    what = r.service or "every service"
    where = f" in {r.env}" if r.env else ""
    since = f" since {r.since[:10]}" if r.since else ""
    return f"{what}{where}{since}"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.1f}%"


def _secs(value: float | None) -> str:
    return "n/a" if value is None else duration(value)


def lines(r: Report) -> list[str]:
    """The report as lines of plain text."""
    if not r.deployments:
        return [f"Delivery report for {_scope(r)}: no deployment ended in this period."]
    outcomes = ", ".join(f"{n} {o.replace('_', ' ')}" for o, n in r.by_outcome.items() if n)
    out = [
        f"Delivery report for {_scope(r)} ({r.period_start} to {r.period_end})",
        f"Deployment frequency: {r.deployments} deployments ({outcomes}), {r.per_week:g} per week",
        f"Change failure rate: {_pct(r.change_failure_rate)} ({r.change_failures} of {r.deployments}: "
        "rolled back, failed or regressed in verification)",
    ]
    restore = f"Time to restore: median {_secs(r.median_time_to_restore_seconds)} over {len(r.restores)}"
    restore += f" incident{'s' if len(r.restores) != 1 else ''}"
    if r.unrestored:
        restore += "; not restored yet: " + ", ".join(
            f"{u['service']} in {u['env']} (since #{u['failed_id']})" for u in r.unrestored
        )
    out.append(restore)
    if r.median_lead_time_seconds is None:
        out.append(f"Lead time for changes: {UNKNOWN_LEAD}")
    else:
        out.append(
            f"Lead time for changes: median {_secs(r.median_lead_time_seconds)} "
            f"({r.lead_times_known} of {r.deployments} with a known commit time)"
        )
    out.append(
        "Median duration: "
        + ", ".join(
            f"{s} {_secs(v)} ({r.durations_counted[s]})" for s, v in r.median_duration_seconds.items()
        )
    )
    if r.rollback_reasons:
        out.append("Top rollback reasons: " + "; ".join(f"{why} ({n})" for why, n in r.rollback_reasons[:5]))
    return out


def text(r: Report) -> str:
    return "\n".join(lines(r)) + "\n"


def csv_text(r: Report) -> str:
    """One row per figure (figure, value): what a spreadsheet wants."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["figure", "value"])
    rows: list[tuple[str, Any]] = [
        ("service", r.service or ""),
        ("env", r.env or ""),
        ("since", r.since or ""),
        ("period_start", r.period_start or ""),
        ("period_end", r.period_end or ""),
        ("deployments", r.deployments),
        ("per_week", r.per_week),
        *((f"outcome_{o}", n) for o, n in r.by_outcome.items()),
        ("change_failures", r.change_failures),
        ("change_failure_rate", "" if r.change_failure_rate is None else r.change_failure_rate),
        ("incidents_restored", len(r.restores)),
        ("median_time_to_restore_seconds", _blank(r.median_time_to_restore_seconds)),
        ("median_lead_time_seconds", _blank(r.median_lead_time_seconds, "unknown")),
        *((f"median_duration_seconds_{s}", v) for s, v in r.median_duration_seconds.items()),
        *((f"rollback_reason: {why}", n) for why, n in r.rollback_reasons),
    ]
    writer.writerows(rows)
    return buf.getvalue()


def _blank(value: float | None, none: str = "") -> Any:
    return none if value is None else value


def slack_answer(r: Report) -> dict[str, Any]:
    """The answer to /deploy report: only the asker sees it."""
    body = lines(r)
    head, rest = body[0], body[1:]
    section = "\n".join(f"• {slack_ui.text(line, 600)}" for line in rest) or " "
    return slack_ui.ephemeral(
        "\n".join(body), [slack_ui.section(f"*{slack_ui.text(head, 300)}*"), slack_ui.section(section)]
    )
