"""/deploy audit ID: a deployment's whole record as Slack text, within Slack's limits. Pure, no I/O."""

from __future__ import annotations

from typing import Any

from bot.domain.model import Deployment
from handlers.ui.blocks import (
    MAX_BLOCKS,
    MAX_TEXT,
    at_time,
    clip,
    context,
    ephemeral,
    outcome_text,
    section,
    text,
    title,
)


def audit(d: Deployment, events: list[Any]) -> dict[str, Any]:
    """/deploy audit ID: the whole record, one line per event, within Slack's limits."""
    head = (
        f"*Audit of {title(d)}* — {d.state.word}\nRequested by <@{d.requested_by}> at "
        f"{d.created_at[:19].replace('T', ' ')} UTC ({d.kind}, {d.strategy})"
        + (f"\nReason: {text(d.reason, None)}" if d.reason else "")
        + (f"\nOutcome: {outcome_text(d)}" if d.outcome else "")
    )
    lines = []
    for e in events:
        move = f" {e.from_state or '∅'} → {e.to_state}" if e.from_state != e.to_state else ""
        flag = " :rotating_light: EMERGENCY" if e.action == "emergency" else ""
        actor = "the bot" if e.actor == BOT_ACTOR else f"<@{e.actor}>"
        lines.append(f"`{e.at[11:19]}` {actor} *{e.action}*{move}{flag}")
        lines += [f"      {k}: {v}" for k, v in audit_details(e.details)]
    blocks = [section(clip(head, MAX_TEXT))]
    chunk: list[str] = []
    for line in lines:
        if sum(len(x) + 1 for x in chunk) + len(line) > 2800:
            blocks.append(section("\n".join(chunk)))
            chunk = []
        chunk.append(line)
    if chunk:
        blocks.append(section("\n".join(chunk)))
    if len(blocks) > MAX_BLOCKS - 1:
        blocks = blocks[: MAX_BLOCKS - 1] + [context("More in `deploybot audit --format json`.")]
    return ephemeral(head + "\n" + "\n".join(lines), blocks)


BOT_ACTOR = "deploybot"  # bot.engine.BOT: events the bot itself recorded


def audit_details(details: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """An event's details as readable (key, value) pairs: nested tables flattened to `a.b`, lists joined,
    times shown as times, every value escaped user text and kept to one line of at most 300 characters."""
    pairs: list[tuple[str, str]] = []
    for key, value in details.items():
        if key == "description" or value in (None, "", [], {}):
            continue
        name = f"{prefix}{key}".replace("_", " ")
        if isinstance(value, dict):
            pairs += audit_details(value, f"{prefix}{key}.")
        elif isinstance(value, bool):
            pairs.append((name, "yes" if value else "no"))
        elif key in ("run_at", "at") and isinstance(value, int | float):
            pairs.append((name, at_time(value)))
        elif isinstance(value, list):
            pairs.append((name, text(", ".join(str(v) for v in value), 300)))
        else:
            pairs.append((name, text(value, 300)))
    return pairs
