"""/flag's read-only views: the list of flags (`/flag list [in ENV]`) and one flag in one environment
(`/flag KEY [in ENV]`: what it answers, its rules, split and variants, who changed it last, its latest
changes, a rollout in progress). Pure Block Kit, no I/O.

Everything from the config (a description, an owner, a variant's value) or typed by a person (a rule's
values, a reason) goes through `text()` or `code()`; the bot's own markup is the actor's `<@U…>` and
the `<!date^…>` of a change."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from typing import Any

from bot.domain.flags import FlagDef, FlagState, describe
from bot.domain.model import Event
from handlers.ui.blocks import MAX_BLOCKS, clip, code, context, ephemeral, fit, section, text, when

_USER_ID = re.compile(r"[UW][A-Z0-9]{2,30}")
BOT_ACTOR = "deploybot"
SECTION_CHARS = 2800  # a section's text stays under Slack's 3000, with room for an ellipsis
MAX_CHANGES = 10

# An audited change's action, as people say it (unknown ones: the action's words).
CHANGE_WORDS = {
    "flag_on": "turned it on",
    "flag_off": "turned it off",
    "flag_percent": "set a percentage",
    "flag_target": "set a rule",
    "flag_variants": "set a split",
    "flag_killed": "killed it",
    "flag_changed": "changed it (approved)",
    "flag_rollout_step": "rollout step",
    "flag_rollout_done": "finished a rollout",
    "flag_rolled_back": "rolled it back",
}


def state_emoji(flag: FlagDef, state: FlagState) -> str:
    """Killed, off, on for everyone, or on for some (rules or a split)."""
    if state.killed:
        return ":octagonal_sign:"
    if not state.enabled:
        return ":white_circle:"
    if state.rules or state.split:
        return ":large_yellow_circle:"
    everyone = state.default_variant or flag.default_variant
    return ":white_circle:" if everyone == flag.off_variant else ":large_green_circle:"


# ------------------------------------------------------------------------------------------- list


def flag_list(env: str | None, rows: Sequence[tuple[str, FlagDef, FlagState]]) -> dict[str, Any]:
    """`/flag list [in ENV]`: every declared flag and what it answers, per environment. `rows` are
    FlagControl.rows(): (environment, flag, its state there), environments in the config's order."""
    heading = f"Flags in {text(env)}" if env else "Flags"
    if not rows:
        return ephemeral(f"*{heading}*: none are declared (add them to the config as [flags.KEY]).")
    by_env: dict[str, list[str]] = {}
    for e, flag, state in rows:
        by_env.setdefault(e, []).append(_list_line(flag, state))
    parts = [f"*{heading}*"]
    blocks = [section(f"*{heading}*")]
    for e, lines in by_env.items():
        title = f"*{text(e)}*" if env is None else ""
        parts.append("\n".join([title, *lines]).strip())
        blocks += [section(chunk) for chunk in _chunks(lines, title)]
    blocks.append(context("`/flag KEY in ENV` shows one flag: its rules, split and latest changes."))
    return ephemeral("\n".join(parts), fit(blocks, "(more: /flag list in ENV)", MAX_BLOCKS))


def _list_line(flag: FlagDef, state: FlagState) -> str:
    about = f" — {text(flag.description, 120)}" if flag.description else ""
    owner = f" ({text(flag.owner, 60)})" if flag.owner else ""
    return f"{state_emoji(flag, state)} {code(flag.key)} {text(describe(flag, state), 300)}{about}{owner}"


def _chunks(lines: Iterable[str], title: str = "") -> list[str]:
    """Lines joined into section texts of at most SECTION_CHARS each (the title heads the first)."""
    out: list[str] = []
    chunk: list[str] = [title] if title else []
    for ln in lines:
        ln = clip(ln, SECTION_CHARS)
        if chunk and sum(len(x) + 1 for x in chunk) + len(ln) > SECTION_CHARS:
            out.append("\n".join(chunk))
            chunk = []
        chunk.append(ln)
    if chunk:
        out.append("\n".join(chunk))
    return out


# ------------------------------------------------------------------------------------------- show


def flag_show(
    env: str,
    flag: FlagDef,
    state: FlagState,
    revision: int,
    updated_by: str | None,
    updated_at: str | None,
    changes: Sequence[Event],
    rollout_ref: str | None,
) -> dict[str, Any]:
    """`/flag KEY in ENV`: what the flag answers there, in words, then its rules, split and variants, the
    last change and the latest ones (newest first), and the rollout or approved change holding it."""
    head = (
        f"{state_emoji(flag, state)} *{text(flag.key)}* in *{text(env)}*: {text(describe(flag, state), 600)}"
    )
    about = text(flag.description, 300) if flag.description else ""
    facts = [f"{flag.type} flag"]
    facts += [f"owner {text(flag.owner, 80)}"] if flag.owner else []
    facts += [f"services {text(', '.join(flag.services), 200)}"] if flag.services else []
    lines = [head] + ([about] if about else [])
    blocks = [section("\n".join(lines)), context(" · ".join(facts))]

    fields = [
        f"*Variants*\n{_variants(flag)}",
        f"*Default · off · on*\n{code(state.default_variant or flag.default_variant, 60)} · "
        f"{code(flag.off_variant, 60)} · {code(flag.on_variant, 60)}",
        f"*Split*\n{_split(state)}",
        f"*Last changed*\n{_last_changed(revision, updated_by, updated_at)}",
    ]
    blocks.append({"type": "section", "fields": [{"type": "mrkdwn", "text": clip(f, 2000)} for f in fields]})
    rules = _rules(state)
    blocks.append(
        section(clip(f"*Rules*, in order (the first that matches decides)\n{rules}", SECTION_CHARS))
    )
    if rollout_ref:
        blocks.append(section(_rollout(rollout_ref, flag.key, env)))
    history = [_change_line(e) for e in changes[:MAX_CHANGES]]
    if history:
        blocks += [section(chunk) for chunk in _chunks(history, "*Latest changes*")]
    else:
        blocks.append(context("No changes here yet."))
    said = [
        *lines,
        f"Variants: {_variants(flag)}",
        f"Split: {_split(state)}",
        f"Rules: {rules}",
        f"Last changed: {_last_changed(revision, updated_by, updated_at)}",
        *([_rollout(rollout_ref, flag.key, env)] if rollout_ref else []),
        *(["Latest changes:", *history] if history else []),
    ]
    return ephemeral("\n".join(said), fit(blocks, f"(more: deploybot audit --service flag:{flag.key})"))


def _variants(flag: FlagDef) -> str:
    return ", ".join(f"{code(name, 60)} = {code(_value(value), 80)}" for name, value in flag.variants.items())


def _value(value: Any) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    except (TypeError, ValueError):
        return str(value)


def _split(state: FlagState) -> str:
    if not state.split:
        return "none"
    note = "" if state.enabled and not state.killed else " (kept; it applies when the flag is on)"
    return ", ".join(f"{code(v, 60)} {w:g}%" for v, w in state.split) + note


def _rules(state: FlagState) -> str:
    if not state.rules:
        return "none"
    note = "" if state.enabled and not state.killed else "\n_(kept; they apply when the flag is on)_"
    return "\n".join(f"{i}. {text(r.describe(), 400)}" for i, r in enumerate(state.rules, 1)) + note


def _last_changed(revision: int, updated_by: str | None, updated_at: str | None) -> str:
    if revision <= 0:
        return "never here (the declared default: off)"
    who = _actor(updated_by) if updated_by else "someone"
    at = f" {when(updated_at)}" if updated_at else ""
    return f"revision {revision}, by {who}{at}"


def _actor(actor: str) -> str:
    """A Slack user as a mention (the bot's own markup), the bot by name, anything else as text."""
    if actor == BOT_ACTOR:
        return "the bot"
    return f"<@{actor}>" if _USER_ID.fullmatch(actor) else text(actor, 60)


def _change_line(e: Event) -> str:
    details = e.details or {}
    did = CHANGE_WORDS.get(e.action) or text(e.action.removeprefix("flag_").replace("_", " "), 60)
    summary = details.get("summary")
    what = f": {text(summary, 300)}" if summary else ""
    reason = details.get("reason")
    why = f" — _{text(reason, 200)}_" if reason else ""
    of = f" (#{e.deployment_id})" if e.deployment_id else ""
    return f"• {when(e.at)} {_actor(e.actor)} {did}{what}{why}{of}"


def _rollout(ref: str, key: str, env: str) -> str:
    return (
        f":arrows_clockwise: {text(ref)} holds {text(key)} in {text(env)} (a rollout, or a change waiting for"
        " approval): follow it on its message. One change of a flag at a time; "
        f"`/flag {text(key)} kill in {text(env)}` stops it."
    )
