"""Pure Block Kit builders and the user-facing strings of Slack messages. No I/O.

Buttons on a deployment's message are derived from bot.machine.user_actions(state), so a message can
only offer moves that are legal now. Every text is clipped to Slack's limits here, in one place."""

from __future__ import annotations

from typing import Any

from bot.machine import State, user_actions
from bot.store import Deployment, LockInfo

ACTION_PREFIX = "deployment:"  # action_id = ACTION_PREFIX + machine action; value = deployment id
MAX_TEXT = 3000
MAX_BLOCKS = 50

STATE_EMOJI = {
    State.REQUESTED: ":hourglass_flowing_sand:",
    State.AWAITING_APPROVAL: ":raised_hand:",
    State.SCHEDULED: ":calendar:",
    State.RUNNING: ":rocket:",
    State.PAUSED: ":double_vertical_bar:",
    State.ROLLING_BACK: ":rewind:",
    State.SUCCEEDED: ":white_check_mark:",
    State.ROLLED_BACK: ":leftwards_arrow_with_hook:",
    State.FAILED: ":x:",
    State.CANCELLED: ":no_entry_sign:",
}


def clip(text: str, limit: int = MAX_TEXT, pointer: str = "") -> str:
    """Text within a Slack limit; a cut text ends with an ellipsis and, if given, where to read the rest."""
    if len(text) <= limit:
        return text
    tail = f"… {pointer}" if pointer else "…"
    return text[: max(0, limit - len(tail))] + tail


def mrkdwn(text: str) -> dict[str, Any]:
    return {"type": "mrkdwn", "text": clip(text)}


def section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": mrkdwn(text)}


def context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [mrkdwn(text)]}


def progress_bar(done: int, total: int, width: int = 10) -> str:
    filled = 0 if total <= 0 else round(width * min(done, total) / total)
    return "▰" * filled + "▱" * (width - filled)


def title(d: Deployment) -> str:
    what = {"rollback": "Rollback", "promote": "Promotion"}.get(d.kind, "Deployment")
    return f"{what} {d.ref} · {d.service} {d.version or '(current version)'} → {d.env}"


def deployment_text(d: Deployment) -> str:
    """The notification fallback text: id, service, version, environment and the state word."""
    return f"{title(d)}: {d.state.word}" + (f" — {d.outcome}" if d.outcome and d.state.terminal else "")


def deployment_blocks(d: Deployment, live: str | None = None) -> list[dict[str, Any]]:
    """The deployment's one top-level message."""
    total = len(d.plan)
    done = total if d.state == State.SUCCEEDED else min(d.step_index, total)
    fields = [
        f"*Service*\n{d.service}",
        f"*Version*\n{d.version or 'current'}"
        + (f" (was {d.previous_version})" if d.previous_version else ""),
        f"*Environment*\n{d.env}",
        f"*Strategy*\n{d.strategy}",
        f"*Requested by*\n<@{d.requested_by}>",
        f"*State*\n{STATE_EMOJI.get(d.state, '')} {d.state.word}",
    ]
    blocks: list[dict[str, Any]] = [
        section(f"{STATE_EMOJI.get(d.state, '')} *{title(d)}* — *{d.state.word}*"),
        {"type": "section", "fields": [mrkdwn(f) for f in fields]},
        context(
            f"{progress_bar(done, total)} step {done}/{total}"
            + (f" · {live}" if live and not d.state.terminal else "")
        ),
    ]
    if d.reason:
        blocks.append(context(f"Reason: {clip(d.reason, 500)}"))
    if d.outcome and (d.state.terminal or d.state == State.ROLLING_BACK):
        blocks.append(section(f"*{'Why' if d.state != State.SUCCEEDED else 'Result'}:* {d.outcome}"))
    buttons = [
        {
            "type": "button",
            "action_id": ACTION_PREFIX + t.action,
            "value": str(d.id),
            "text": {"type": "plain_text", "text": t.label},
            **({"style": t.style} if t.style else {}),
        }
        for t in user_actions(d.state)
        if not (t.action == "promote" and d.strategy == "rolling")  # a rolling deploy has no steps to skip
    ]
    if buttons:
        blocks.append({"type": "actions", "block_id": f"deployment-{d.id}", "elements": buttons})
    return blocks


def detail_text(d: Deployment, text: str) -> str:
    return clip(text, MAX_TEXT, f"(full record: /deploy audit {d.id})")


# ----------------------------------------------------------------------------- command answers


def ephemeral(text: str, blocks: list[dict] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"response_type": "ephemeral", "text": clip(text)}
    if blocks:
        body["blocks"] = blocks[:MAX_BLOCKS]
    return body


def usage_error(message: str, usage: str) -> dict[str, Any]:
    return ephemeral(
        f"{message}\nUsage: {usage}", [section(f":warning: {message}"), context(f"Usage: {usage}")]
    )


def requested(d: Deployment, channel_id: str | None) -> dict[str, Any]:
    where = f" Follow it in <#{channel_id}>." if channel_id else ""
    return ephemeral(f"{title(d)} requested ({d.strategy}).{where}")


def locked(lock: LockInfo, holder: Deployment | None) -> dict[str, Any]:
    if holder is not None:
        text = (
            f":lock: {lock.service} in {lock.env} is locked by deployment {holder.ref} "
            f"({holder.service} {holder.version or 'current'}, {holder.state.word}), "
            f"started by <@{holder.requested_by}> at {holder.created_at[:19].replace('T', ' ')} UTC. "
            f"Try again when it has finished."
        )
    else:
        text = (
            f":lock: {lock.service} in {lock.env} is locked by <@{lock.holder}>: {lock.reason or 'no reason'} "
            f"(since {lock.acquired_at[:19].replace('T', ' ')} UTC). /deploy unlock {lock.service} {lock.env} "
            f"when it is safe."
        )
    return ephemeral(text)


def refused(message: str) -> dict[str, Any]:
    return ephemeral(f":no_entry: {message}")


def dry_run(
    service: str, env: str, version: str | None, strategy: str, steps: list[str], eta: str
) -> dict[str, Any]:
    lines = "\n".join(f"{i}. {s}" for i, s in enumerate(steps, 1))
    head = f"*Dry run* — {service} {version or '(current version)'} → {env} with *{strategy}*. Nothing was touched."
    return ephemeral(
        f"{head}\n{lines}\nAt least {eta}.",
        [section(head), section(lines), context(f"Takes at least {eta} (bakes and pauses).")],
    )


def deployment_list(
    heading: str, deployments: list[Deployment], locks: list[LockInfo] | None = None
) -> dict[str, Any]:
    if not deployments and not locks:
        return ephemeral(f"{heading}: nothing to show.")
    lines = [
        f"{STATE_EMOJI.get(d.state, '')} {d.ref} {d.service} {d.version or 'current'} → {d.env}: "
        f"*{d.state.word}* (<@{d.requested_by}>, {d.created_at[:16].replace('T', ' ')})"
        + (f" — {clip(d.outcome, 200)}" if d.outcome else "")
        for d in deployments
    ]
    for lock in locks or []:
        if lock.deployment_id is None:
            lines.append(f":lock: {lock.service} in {lock.env} locked by <@{lock.holder}>: {lock.reason}")
    text = f"*{heading}*\n" + "\n".join(lines)
    return ephemeral(text, [section(clip(text, MAX_TEXT, "(more: deploybot audit)"))])


def stale_click(d: Deployment) -> str:
    return f"This deployment is already {d.state.word}; nothing was changed."


LEVEL_EMOJI = {"critical": ":rotating_light:", "warning": ":warning:", "info": ":information_source:"}


def alert(d: Deployment, level: str, text: str, link: str | None) -> tuple[str, list[dict[str, Any]]]:
    """An alert about a deployment for the channels of its level."""
    head = f"{LEVEL_EMOJI.get(level, '')} *{level.upper()}* · {title(d)}"
    body = clip(text, 2500, f"(full record: /deploy audit {d.id})")
    blocks = [section(f"{head}\n{body}")]
    if link:
        blocks.append(context(f"<{link}|Open the deployment>"))
    return f"{level.upper()}: {title(d)}: {body}", blocks
