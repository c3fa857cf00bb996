"""The App Home tab, as a pure view builder: current deployments with their state, locks, scheduled
deploys and unacknowledged alerts (each with its Acknowledge button). No I/O; handlers/events.py
publishes it (views.publish) when a person opens the tab and whenever something it shows changes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bot.domain.machine import State
from bot.domain.model import Alert, Deployment, LockInfo
from handlers.ui import alert_blocks
from handlers.ui import blocks as slack_ui

MAX_VIEW_BLOCKS = 100  # a Home view holds at most 100 blocks
MAX_ROWS = 15  # per section; the rest is counted, with where to see it


def home_view(
    active: list[Deployment],
    locks: list[LockInfo],
    alerts: list[tuple[Alert, Deployment]],
    now: float,
    recent: list[Deployment] | None = None,
    live: Mapping[int, str] | None = None,
    charts: list[tuple[Deployment, str]] | None = None,
) -> dict[str, Any]:
    """The Home tab. `active`: deployments not finished; `alerts`: unacknowledged critical alerts with
    their deployment; `recent`: the latest finished ones; `live`: the live progress line per deployment;
    `charts`: the latest analysis charts (deployment, permalink), newest first."""
    live = live or {}
    running = [d for d in active if d.state != State.SCHEDULED]
    scheduled = [d for d in active if d.state == State.SCHEDULED]
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": "Deployments"}},
        slack_ui.context(
            f"Updated {slack_ui.at_time(now)} · {len(running)} in progress · {len(scheduled)} scheduled · "
            f"{len(alerts)} unacknowledged alert{'s' if len(alerts) != 1 else ''}"
        ),
    ]

    blocks += _heading(":rotating_light: Unacknowledged alerts")
    if not alerts:
        blocks.append(slack_ui.context("None — all quiet."))
    for a, d in alerts[:MAX_ROWS]:
        what = alert_blocks.alert_title(a.event, d)
        text = (
            f"*{what}* · {slack_ui.title(d)}\n{slack_ui.clip(a.text, 300)}\n"
            f"Raised {slack_ui.at_time(a.raised_ts)}"
            + (f" · escalated {a.rounds_sent}×" if a.rounds_sent else "")
            + (" · resolved" if a.resolved_at else "")
        )
        blocks.append(
            {
                "type": "section",
                "text": slack_ui.mrkdwn(text),
                "accessory": {
                    "type": "button",
                    "action_id": alert_blocks.ACK_ALERT,
                    "value": str(a.id),
                    "style": "primary",
                    "text": {"type": "plain_text", "text": "Acknowledge"},
                },
            }
        )
    blocks += _more(len(alerts))

    blocks += _heading(":rocket: In progress")
    if not running:
        blocks.append(slack_ui.context("Nothing is deploying right now."))
    for d in running[:MAX_ROWS]:
        blocks.append(slack_ui.section(_line(d, live.get(d.id))))
    blocks += _more(len(running))

    blocks += _heading(":calendar: Scheduled")
    if not scheduled:
        blocks.append(slack_ui.context("No scheduled deploys."))
    for d in scheduled[:MAX_ROWS]:
        when = _scheduled_for(d)
        blocks.append(slack_ui.section(_line(d) + (f"\nRuns {when}" if when else "")))
    blocks += _more(len(scheduled))

    blocks += _heading(":lock: Locks")
    if not locks:
        blocks.append(slack_ui.context("No service is locked."))
    for lock in locks[:MAX_ROWS]:
        since = lock.acquired_at[:16].replace("T", " ")
        holder = (
            f"deployment #{lock.deployment_id}"
            if lock.deployment_id is not None
            else f"<@{lock.holder}>: {slack_ui.text(lock.reason, 300) or 'no reason'}"
        )
        blocks.append(
            slack_ui.section(f"*{lock.service}* in *{lock.env}* — locked by {holder} (since {since} UTC)")
        )
    blocks += _more(len(locks))

    if recent:
        blocks += _heading(":white_check_mark: Recently finished")
        lines = [
            f"{slack_ui.STATE_EMOJI.get(d.state, '')} {d.ref} {d.service} {d.version or 'current'} → {d.env}: "
            f"*{d.state.word}*" + (f" — {slack_ui.clip(slack_ui.outcome_text(d), 150)}" if d.outcome else "")
            for d in recent[:MAX_ROWS]
        ]
        blocks.append(slack_ui.section("\n".join(lines)))
    if charts:
        blocks += _heading(":chart_with_upwards_trend: Latest analysis charts")
        links = [
            f"<{link}|{d.ref} {d.service} {slack_ui.text(d.version or 'current', 60)} → {d.env}> · {d.state.word}"
            for d, link in charts[:MAX_ROWS]
        ]
        blocks.append(slack_ui.section("\n".join(links)))
    return {"type": "home", "blocks": slack_ui.fit(blocks, "(more: /deploy status)", MAX_VIEW_BLOCKS)}


def _heading(text: str) -> list[dict[str, Any]]:
    return [{"type": "divider"}, slack_ui.section(f"*{text}*")]


def _more(count: int) -> list[dict[str, Any]]:
    if count <= MAX_ROWS:
        return []
    return [slack_ui.context(f"…and {count - MAX_ROWS} more: /deploy status")]


def _line(d: Deployment, live: str | None = None) -> str:
    total = len(d.plan)
    done = min(d.step_index, total)
    text = (
        f"{slack_ui.STATE_EMOJI.get(d.state, '')} *{slack_ui.title(d)}* — *{d.state.word}*\n"
        f"{slack_ui.progress_bar(done, total)} step {done}/{total} · {d.strategy} · by <@{d.requested_by}>"
    )
    if live:
        text += f" · {slack_ui.clip(live, 200)}"
    return text


def _scheduled_for(d: Deployment) -> str | None:
    for key in ("run_at", "scheduled_for", "at", "not_before"):
        value = d.context.get(key)
        if isinstance(value, int | float) or (isinstance(value, str) and value):
            return slack_ui.when(value)
    return None
