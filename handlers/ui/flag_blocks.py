"""A flag rollout's (or approved change's) words on its deployment message: the title and the fields."""

from __future__ import annotations

from bot.domain.flags import flag_key
from bot.domain.model import Deployment
from bot.domain.mrkdwn import text


def title(d: Deployment) -> str:
    what = "Flag change" if d.kind == "flag_change" else "Flag rollout"
    return f"{what} {d.ref} · {text(flag_key(d.service) or d.service)} → {text(d.version)} in {d.env}"


def fields(d: Deployment, key: str, emoji: str) -> list[str]:
    """The flag, what it turns on, where, the steps, who asked, the state."""
    steps = d.context.get("steps")
    how = (
        " → ".join(f"{s:g}%" if isinstance(s, int | float) else text(s) for s in steps)
        if isinstance(steps, list) and steps
        else "one change, once approved"
    )
    return [
        f"*Flag*\n{text(key)}",
        f"*Turns on*\n{text(d.version)}",
        f"*Environment*\n{d.env}",
        f"*Steps*\n{how}",
        f"*Requested by*\n<@{d.requested_by}>",
        f"*State*\n{emoji} {d.state.word}",
    ]
