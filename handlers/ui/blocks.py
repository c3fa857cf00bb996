"""Pure Block Kit builders and the user-facing strings of Slack messages. No I/O.

Buttons on a deployment's message are derived from bot.machine.user_actions(state), so a message can
only offer moves that are legal now. Every text is clipped to Slack's limits here, in one place.

User text never becomes Slack markup: every string a person typed (a reason, a lock or freeze reason, a
version, the command echoed in a warning or a usage error) goes through `text()` or `code()` (bot.domain.mrkdwn,
re-exported here) where it is put next to the markup the bot writes itself — the acting user's `<@U…>`,
the on-call `<!subteam^…>`, links to its own messages, `<!date^…>`. Outcomes and notice texts the engine
writes are mrkdwn already escaped that way; builders show them as they are."""

from __future__ import annotations

import copy
import re
from datetime import UTC, datetime
from typing import Any

from bot.domain.flags import flag_key
from bot.domain.machine import BEFORE_START, State, user_actions
from bot.domain.model import Deployment, LockInfo
from bot.domain.mrkdwn import code, plain, text  # noqa: F401 - code and plain re-exported for the builders
from handlers.ui import flag_blocks
from handlers.ui.change_blocks import changes_blocks

ACTION_PREFIX = "deployment:"  # action_id = ACTION_PREFIX + machine action; value = deployment id
APPROVE, REJECT, TICK, RECHECK = "approval:approve", "approval:reject", "checklist:tick", "checklist:recheck"
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
    if flag_key(d.service) is not None:
        return flag_blocks.title(d)
    what = {"rollback": "Rollback", "promote": "Promotion"}.get(d.kind, "Deployment")
    return f"{what} {d.ref} · {d.service} {text(d.version) or '(current version)'} → {d.env}"


def outcome_text(d: Deployment, said: str | None = None) -> str:
    """An outcome (the deployment's own, or `said`, one of its events' reasons) for people: the bot's
    words, with the person who stopped it (a fact in its context: aborted, rejected) named. What follows
    a person's act may hold their words (a rejection's reason), so it is escaped."""
    words = d.outcome if said is None else said
    if not words:
        return ""
    who = d.context.get("stopped_by")
    if isinstance(who, dict) and isinstance(who.get("how"), str) and words.startswith(who["how"]):
        user = str(who.get("by", ""))
        named = f"<@{user}>" if re.fullmatch(r"[UW][A-Z0-9]{2,30}", user) else text(user)
        return f"{who['how']} by {named}{text(words[len(who['how']) :], None)}"
    return words


def deployment_text(d: Deployment) -> str:
    """The notification fallback text: id, service, version, environment and the state word."""
    return f"{title(d)}: {d.state.word}" + (f" — {outcome_text(d)}" if d.outcome and d.state.terminal else "")


def deployment_blocks(d: Deployment, live: str | None = None) -> list[dict[str, Any]]:
    """The deployment's one top-level message."""
    total = len(d.plan)
    done = total if d.state == State.SUCCEEDED else min(d.step_index, total)
    key = flag_key(d.service)
    emoji = STATE_EMOJI.get(d.state, "")
    fields = flag_blocks.fields(d, key, emoji) if key is not None else [
        f"*Service*\n{d.service}",
        f"*Version*\n{text(d.version) or 'current'}"
        + (f" (was {text(d.previous_version)})" if d.previous_version else ""),
        f"*Environment*\n{d.env}",
        f"*Strategy*\n{d.strategy}",
        f"*Requested by*\n<@{d.requested_by}>",
        f"*State*\n{STATE_EMOJI.get(d.state, '')} {d.state.word}",
    ]  # fmt: skip
    blocks: list[dict[str, Any]] = [
        section(f"{STATE_EMOJI.get(d.state, '')} *{title(d)}* — *{d.state.word}*"),
        {"type": "section", "fields": [mrkdwn(f) for f in fields]},
        context(
            f"{progress_bar(done, total)} step {done}/{total}"
            + (f" · {live}" if live and not d.state.terminal else "")
        ),
    ]
    if d.reason:
        blocks.append(context(f"Reason: {text(d.reason)}"))
    if d.state == State.SCHEDULED and d.context.get("run_at"):
        blocks.append(
            section(
                f":calendar: *Scheduled for {_when(d.context['run_at'])}* — it starts then if its "
                "checklist and approvals are complete; Cancel to drop it."
            )
        )
    if d.outcome and (d.state.terminal or d.state == State.ROLLING_BACK):
        blocks.append(section(f"*{'Why' if d.state != State.SUCCEEDED else 'Result'}:* {outcome_text(d)}"))
    gate = d.context.get("gate")
    waiting = d.state in (State.REQUESTED, State.AWAITING_APPROVAL, State.SCHEDULED)
    blocks += changes_blocks(d.context.get("changes"))
    if gate:
        blocks += gate_blocks(d, gate, waiting)
    buttons = [
        _button_of(d, t.action, t.label, t.style)
        for t in user_actions(d.state)
        if not (t.action == "promote" and d.strategy == "rolling")  # a rolling deploy has no steps to skip
    ]
    if gate and waiting:
        buttons = gate_buttons(d, gate) + buttons
    if d.state == State.ROLLING_BACK and d.context.get("stuck"):
        buttons += stuck_buttons(d)
    if key is not None and not d.state.terminal and d.state != State.ROLLING_BACK:
        buttons.append(_button_of(d, "kill", "Kill", "danger"))
    if buttons:
        blocks.append({"type": "actions", "block_id": f"deployment-{d.id}", "elements": buttons})
    return blocks


def _button_of(d: Deployment, action: str, label: str, style: str | None) -> dict[str, Any]:
    """A button on deployment `d`'s message (its value names the deployment)."""
    button = {
        "type": "button",
        "action_id": ACTION_PREFIX + action,
        "value": str(d.id),
        "text": {"type": "plain_text", "text": label},
    }
    return {**button, "style": style} if style else button


def stuck_buttons(d: Deployment) -> list[dict[str, Any]]:
    """A rollback that keeps failing: try again now, or (two slots) all traffic to stable in one change."""
    offered = [("retry_rollback", "Retry now", "primary")]
    if d.strategy != "rolling" and d.context.get("stable_slot"):
        offered.append(("all_to_stable", "All traffic to stable", "danger"))
    return [_button_of(d, action, label, style) for action, label, style in offered]


def _when(at: str | float | None) -> str:
    """A moment with its date, in each reader's own time zone ("Dec 1 02:00", "tomorrow 02:00"); the
    fallback reads "Tue 1 Dec 01:00 UTC"."""
    if at is None:
        return ""
    try:
        moment = (
            datetime.fromtimestamp(at, UTC)
            if isinstance(at, int | float)
            else datetime.fromisoformat(at).astimezone(UTC)
        )
    except (ValueError, OverflowError, OSError):
        return text(at)
    fallback = f"{moment:%a} {moment.day} {moment:%b %H:%M} UTC"
    return f"<!date^{int(moment.timestamp())}^{{date_short_pretty}} {{time}}|{fallback}>"


when = _when  # for other surfaces (the Home tab)


def gate_blocks(d: Deployment, gate: dict[str, Any], waiting: bool) -> list[dict[str, Any]]:
    """The checklist and approvals: every item with who/when or its evidence; checkboxes while waiting."""
    if not gate["items"] and not gate["required"] and not gate.get("emergency"):
        return []  # an environment with no checklist and no approvals: nothing to show
    lines = []
    for item in gate["items"]:
        if item.get("skipped"):
            why = "emergency" if gate.get("emergency") else "rollback to a known-good version"
            mark, note = ":fast_forward:", f"skipped ({why})"
        elif item["done"]:
            mark = ":white_check_mark:"
            note = (
                text(item.get("evidence") or "", 300)
                if item["kind"] == "automatic"
                else f"<@{item['by']}> {_when(item.get('at'))}"
            )
        else:
            mark = ":x:" if item["kind"] == "automatic" and item.get("evidence") else ":white_large_square:"
            note = text(item.get("evidence") or "", 300) or (
                "waiting for a person" if item["kind"] == "manual" else "not checked yet"
            )
        lines.append(f"{mark} *{item['label']}* — {clip(note, 300)}")
    approvals = ", ".join(f"<@{a['user']}> {_when(a['at'])}" for a in gate["approvals"]) or "none yet"
    blocks = (
        [section(clip("*Checklist*\n" + "\n".join(lines), MAX_TEXT, f"(full record: /deploy audit {d.id})"))]
        if lines
        else []
    )
    if gate.get("emergency"):
        blocks.append(
            section(
                f":rotating_light: *Emergency:* {text(gate['emergency'])} — manual items and "
                "approvals skipped"
            )
        )
    elif gate.get("known_good"):
        blocks.append(
            section(
                f":leftwards_arrow_with_hook: *Rollback to a known-good version:* {clip(gate['known_good'], 300)}"
                " — manual items and approvals skipped"
            )
        )
    elif gate["required"]:
        roles = " or ".join(gate.get("approver_roles") or ["any"])
        blocks.append(
            section(
                f"*Approvals* {len(gate['approvals'])}/{gate['required']} ({roles}, not the "
                f"requester): {approvals}"
            )
        )
    if waiting and gate.get("waiting_for"):
        blocks.append(context(f":hourglass: Waiting for {clip(gate['waiting_for'], 500)}"))
    manual = [i for i in gate["items"] if i["kind"] == "manual" and not i.get("skipped")]
    if waiting and manual:
        options = [
            {"text": {"type": "plain_text", "text": clip(i["label"], 75)}, "value": i["id"]} for i in manual
        ]
        ticked = [o for o, i in zip(options, manual, strict=True) if i["done"]]
        element: dict[str, Any] = {"type": "checkboxes", "action_id": TICK, "options": options[:10]}
        if ticked:
            element["initial_options"] = ticked[:10]
        blocks.append(
            {
                "type": "section",
                "block_id": f"checklist-{d.id}",
                "text": mrkdwn("Tick what is done:"),
                "accessory": element,
            }
        )
    return blocks


def gate_buttons(d: Deployment, gate: dict[str, Any]) -> list[dict[str, Any]]:
    buttons: list[dict[str, Any]] = []
    if gate["required"] and not gate.get("emergency"):
        buttons.append(
            _button(
                APPROVE,
                "Approve",
                d.id,
                "primary",
                confirm=(
                    f"Approve {title(d)}?",
                    f"You vouch for {d.service} {d.version or 'current'} going to {d.env}.",
                ),
            )
        )
        buttons.append(
            _button(
                REJECT,
                "Reject",
                d.id,
                "danger",
                confirm=(
                    f"Reject {title(d)}?",
                    "It will be cancelled. You will be asked for the reason, kept in its audit.",
                ),
            )
        )
    if any(i["kind"] == "automatic" for i in gate["items"]):
        buttons.append(_button(RECHECK, "Re-check", d.id))
    return buttons


def _button(
    action_id: str,
    label: str,
    deployment_id: int,
    style: str | None = None,
    confirm: tuple[str, str] | None = None,
) -> dict[str, Any]:
    b: dict[str, Any] = {
        "type": "button",
        "action_id": action_id,
        "value": str(deployment_id),
        "text": {"type": "plain_text", "text": label},
    }
    if style:
        b["style"] = style
    if confirm:
        b["confirm"] = {
            "title": {"type": "plain_text", "text": clip(confirm[0], 100)},
            "text": {"type": "plain_text", "text": clip(confirm[1], 300)},
            "confirm": {"type": "plain_text", "text": label},
            "deny": {"type": "plain_text", "text": "Not yet"},
        }
    return b


def detail_text(d: Deployment, line: str) -> str:
    return clip(line, MAX_TEXT, f"(full record: /deploy audit {d.id})")


# ----------------------------------------------------------------------------- command answers


def ephemeral(text: str, blocks: list[dict] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"response_type": "ephemeral", "text": clip(text)}
    if blocks:
        body["blocks"] = blocks[:MAX_BLOCKS]
    return body


def usage_error(message: str, usage: str) -> dict[str, Any]:
    """A malformed command's answer. The message quotes what was typed: it is escaped as a whole (the
    parser writes no Slack markup of its own, only code spans)."""
    message = text(message, None)
    return ephemeral(
        f"{message}\nUsage: {usage}", [section(f":warning: {message}"), context(f"Usage: {usage}")]
    )


def requested(d: Deployment, channel_id: str | None) -> dict[str, Any]:
    where = f" Follow it in <#{channel_id}>." if channel_id else ""
    when = f" Scheduled for {_when(d.context['run_at'])}." if d.context.get("run_at") else ""
    return ephemeral(f"{title(d)} requested ({d.strategy}).{when}{where}")


def locked(lock: LockInfo, holder: Deployment | None) -> dict[str, Any]:
    if holder is not None:
        answer = (
            f":lock: {lock.service} in {lock.env} is locked by deployment {holder.ref} "
            f"({holder.service} {text(holder.version) or 'current'}, {holder.state.word}), "
            f"started by <@{holder.requested_by}> at {holder.created_at[:19].replace('T', ' ')} UTC. "
            f"Try again when it has finished."
        )
    else:
        answer = (
            f":lock: {lock.service} in {lock.env} is locked by <@{lock.holder}>: "
            f"{text(lock.reason) or 'no reason'} (since {lock.acquired_at[:19].replace('T', ' ')} UTC). "
            f"/deploy unlock {lock.service} {lock.env} when it is safe."
        )
    return ephemeral(answer)


def amended(d: Deployment, was: str | None = None) -> dict[str, Any]:
    before = f" (it was {was})" if was else ""
    return ephemeral(
        f":pencil2: Your request {d.ref} now deploys {d.service} {d.version or '(current version)'} to "
        f"{d.env} with {d.strategy}{before}; approvals given before no longer count."
    )


def already_requested(d: Deployment) -> dict[str, Any]:
    """The requester asked again for exactly what their pending request already deploys."""
    return ephemeral(
        f"Your request {d.ref} already deploys {d.service} {d.version or '(current version)'} to {d.env} "
        f"with {d.strategy} ({d.state.word}); nothing was changed."
    )


def own_lock(d: Deployment, asked: str | None) -> dict[str, Any]:
    """The requester's own deployment holds the lock and can no longer change (it started, or is another
    kind of request): say so, never "locked by" themselves."""
    what = f"; {asked} was not applied" if asked and asked != d.version else "; nothing was changed"
    version = f"{d.service} {d.version or '(current version)'}"
    if d.state in BEFORE_START:
        return ephemeral(
            f"Your {d.kind} {d.ref} of {version} in {d.env} is {d.state.word}{what}. "
            "Cancel it on its message first to ask for something else."
        )
    return ephemeral(
        f"Your deployment {d.ref} already started with {version} in {d.env} ({d.state.word}){what}. "
        f"Wait for it to finish, or /rollback {d.service} in {d.env}."
    )


def in_channel(text: str) -> dict[str, Any]:
    return {"response_type": "in_channel", "text": clip(text)}


def schedule_list(deployments: list[Deployment]) -> dict[str, Any]:
    if not deployments:
        return ephemeral("Nothing is scheduled.")
    lines = [
        f":calendar: {d.ref} {d.service} {d.version or 'current'} → {d.env} at {_when(d.context.get('run_at'))}"
        f" (<@{d.requested_by}>)"
        for d in deployments
    ]
    return ephemeral("*Scheduled*\n" + "\n".join(lines), [section("*Scheduled*\n" + "\n".join(lines))])


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
    heading: str,
    deployments: list[Deployment],
    locks: list[LockInfo] | None = None,
    suffixes: dict[int, str] | None = None,  # per deployment: more after its line (its aftercare)
) -> dict[str, Any]:
    if not deployments and not locks:
        return ephemeral(f"{heading}: nothing to show.")
    lines = [
        f"{STATE_EMOJI.get(d.state, '')} {d.ref} {d.service} {d.version or 'current'} → {d.env}: "
        f"*{d.state.word}* (<@{d.requested_by}>, {d.created_at[:16].replace('T', ' ')})"
        + (f" — {clip(outcome_text(d), 200)}" if d.outcome else "")
        + (suffixes or {}).get(d.id, "")
        for d in deployments
    ]
    for lock in locks or []:
        if lock.deployment_id is None:
            lines.append(
                f":lock: {lock.service} in {lock.env} locked by <@{lock.holder}>: {text(lock.reason)}"
            )
    body = f"*{heading}*\n" + "\n".join(lines)
    return ephemeral(body, [section(clip(body, MAX_TEXT, "(more: deploybot audit)"))])


def stale_click(d: Deployment) -> str:
    return f"This deployment is already {d.state.word}; nothing was changed."


def at_time(ts: float) -> str:
    """A moment as Slack shows it, in each reader's own time zone; the fallback reads HH:MM UTC."""
    return f"<!date^{int(ts)}^{{time}}|{hhmm(ts)} UTC>"


def hhmm(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%H:%M")


MAX_FIELD = 2000
MAX_CONTEXT_ELEMENTS = 10


def fit(
    blocks: list[dict[str, Any]], pointer: str = "", max_blocks: int = MAX_BLOCKS
) -> list[dict[str, Any]]:
    """Blocks within Slack's limits whatever built them: texts clipped (3000 characters; 2000 per field;
    150 per header), at most 10 fields or context elements, 25 buttons, `max_blocks` blocks — whatever is
    cut says where the rest is (`pointer`)."""
    out = []
    for raw in blocks:
        b = copy.deepcopy(raw)
        kind = b.get("type")
        if kind in ("section", "header") and isinstance(b.get("text"), dict):
            limit = 150 if kind == "header" else MAX_TEXT
            b["text"]["text"] = clip(
                str(b["text"].get("text", "")), limit, pointer if kind == "section" else ""
            )
        if kind == "section" and b.get("fields"):
            b["fields"] = [
                {**f, "text": clip(str(f.get("text", "")), MAX_FIELD, pointer)} for f in b["fields"][:10]
            ]
        if kind == "context":
            b["elements"] = [
                {**e, "text": clip(str(e["text"]), MAX_TEXT, pointer)} if "text" in e else e
                for e in b.get("elements", [])[:MAX_CONTEXT_ELEMENTS]
            ]
        if kind == "actions":
            b["elements"] = b.get("elements", [])[:25]
        out.append(b)
    if len(out) > max_blocks:
        hidden = len(out) - (max_blocks - 1)
        out = out[: max_blocks - 1] + [context(clip(f"{hidden} more blocks not shown {pointer}".strip()))]
    return out
