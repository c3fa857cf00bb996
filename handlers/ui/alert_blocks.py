"""Block Kit builders and the words of alerts: a critical alert, its escalation rounds, warnings and info,
the acknowledgement answers. Pure, no I/O; everything is clipped by blocks.fit."""

from __future__ import annotations

from typing import Any

from bot.domain.durations import duration
from bot.domain.model import Deployment
from handlers.ui.aftercare_blocks import REGRESSION_ALERT, rollback_button
from handlers.ui.blocks import (
    at_time,
    clip,
    context,
    ephemeral,
    hhmm,
    mrkdwn,
    section,
    title,
)

LEVEL_EMOJI = {"critical": ":rotating_light:", "warning": ":warning:", "info": ":information_source:"}

# ------------------------------------------------------------------------------------------------ alerts

ACK_ALERT = "alert:acknowledge"  # the Acknowledge button; value = the alert's id
ALERT_TITLES = {
    "automatic_rollback": "Automatic rollback",
    "deploy_failed": "Deploy failed",
    "rollback_failed": "Rollback failed",
    "rollback_stuck": "Rollback stuck, still trying",
    "traffic_forced": "Traffic forced to stable",
    "traffic_repaired": "Split traffic repaired",
    "unhealthy_after_switch": "Unhealthy targets after the switch",
    "freeze_override": "Freeze overridden",
    "emergency_deploy": "Emergency deploy",
    "inconclusive_analysis": "Analysis inconclusive",
    "approval_waiting": "Approval waiting",
    "slow_rollout": "Slow rollout",
    "missed_window": "Missed its window",
    "aborted": "Aborted",
    "verification_regressed": "Regression during verification",
    "verification_inconclusive": "Verification inconclusive",
}


def alert_title(event: str | None, d: Deployment | None = None, default: str = "Critical") -> str:
    """The alert's name; a rolling deploy has no traffic switch, so its targets go unhealthy "after the
    rollout"."""
    if event == "unhealthy_after_switch" and d is not None and d.strategy == "rolling":
        return "Unhealthy targets after the rollout"
    return ALERT_TITLES.get(event or "", default)


def _audit_pointer(d: Deployment) -> str:
    return f"(full record: /deploy audit {d.id})"


def alert(
    d: Deployment, level: str, text: str, link: str | None, event: str | None = None
) -> tuple[str, list[dict[str, Any]]]:
    """A warning or info alert about a deployment for the channels of its level (no acknowledgement)."""
    what = f" · {alert_title(event, d)}" if event in ALERT_TITLES else ""
    head = f"{LEVEL_EMOJI.get(level, '')} *{level.upper()}{what}* · {title(d)}"
    body = clip(text, 2500, _audit_pointer(d))
    blocks = [section(f"{head}\n{body}")]
    if link:
        blocks.append(context(f"<{link}|Open the deployment>"))
    return f"{level.upper()}: {title(d)}: {body}", blocks


def critical_alert(
    d: Deployment,
    a: Any,
    *,
    link: str | None,
    oncall: str | None,
    rounds: int,
    next_target: str | None = None,
) -> tuple[str, list[dict[str, Any]]]:
    """A critical alert (bot.alerts.Alert `a`): what happened, on-call mentioned, a link to the deployment's
    message, and — until someone acknowledges it — an Acknowledge button. Updated in place as it is
    acknowledged, escalated and resolved."""
    what = alert_title(a.event, d)
    body = clip(a.text, 2500, _audit_pointer(d))
    blocks = [section(f":rotating_light: *CRITICAL · {what}* · {title(d)}\n{body}")]
    about = [oncall or "", f"raised {at_time(a.raised_ts)}"]
    if link:
        about.append(f"<{link}|Open the deployment>")
    blocks.append(context(" · ".join(p for p in about if p)))
    if a.acked_by:
        status = f":white_check_mark: Acknowledged by <@{a.acked_by}> at {at_time(a.acked_ts)}"
        fallback = f"acknowledged by <@{a.acked_by}> at {hhmm(a.acked_ts)} UTC"
        if a.rounds_sent:
            status += f" (after {a.rounds_sent} escalation{'s' if a.rounds_sent > 1 else ''})"
        blocks.append(section(status))
    else:
        fallback = f"{oncall} please acknowledge" if oncall else "not acknowledged yet"
        waiting = "Not acknowledged yet"
        if a.rounds_sent:
            waiting += f" · escalated {a.rounds_sent}/{rounds}"
        if a.next_escalation_at is not None and next_target:
            waiting += f" · escalates to {next_target} at {at_time(a.next_escalation_at)}"
        blocks.append(context(waiting))
        blocks.append(
            {
                "type": "actions",
                "block_id": f"alert-{a.id}",
                "elements": [
                    {
                        "type": "button",
                        "action_id": ACK_ALERT,
                        "value": str(a.id),
                        "style": "primary",
                        "text": {"type": "plain_text", "text": "Acknowledge"},
                    }
                ],
            }
        )
    if a.event == REGRESSION_ALERT and not a.resolved_at:
        blocks.append(rollback_button(d.id))  # /rollback's own path: its role, guards and freezes
    if a.resolved_at:
        blocks.append(context(f":large_green_circle: Resolved at {at_time(a.resolved_ts)}: {a.resolution}"))
    text = f"CRITICAL · {what} · {title(d)}: {body} — {fallback}"
    return clip(text), blocks


def escalation(
    d: Deployment,
    a: Any,
    round_: int,
    rounds: int,
    target: str | None,
    waited_seconds: float,
    link: str | None,
) -> tuple[str, list[dict[str, Any]]]:
    """Round `round_` of an unacknowledged critical alert's escalation, posted in the alert's thread (which
    names the deployment; the notification names the service, version and environment)."""
    what = alert_title(a.event, d, "Critical alert")
    who = f"{target} please take a look" if target else "Please take a look"
    text = (
        f":rotating_light: Escalation {round_}/{rounds}: {what} — {d.service} {d.version or 'current'} → "
        f"{d.env} — not acknowledged after {duration(waited_seconds)}. {who}."
    )
    more = "Acknowledge it on the alert above"
    if link:
        more += f" · <{link}|Open the deployment>"
    blocks = [
        {"type": "section", "block_id": escalation_block_id(a.id, round_), "text": mrkdwn(text)},
        context(more),
    ]
    return clip(text), blocks


def escalation_block_id(alert_id: int, round_: int) -> str:
    """Marks an escalation message, so a restart can tell whether a round it claimed was posted."""
    return f"alert-{alert_id}-escalation-{round_}"


def already_acknowledged(a: Any, user: str) -> dict[str, Any]:
    who = "You" if a.acked_by == user else f"<@{a.acked_by}>"
    return ephemeral(f"{who} acknowledged this alert at {at_time(a.acked_ts)} already; nothing was changed.")
