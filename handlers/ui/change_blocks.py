"""What changes between the running and the new version, on a deployment's message and in a dry run:
the commits between them (newest first, at most 10, with a link to the rest) and a downgrade flagged.
Commit messages, authors and the provider's URLs are outside text — untrusted: escaped (no mention, no
link markup, no @channel), one line, cut short; a URL is shown as plain text (Slack links it itself),
only when it is a plain http(s) URL."""

from __future__ import annotations

import re
from typing import Any

from bot.domain.mrkdwn import text

_SAFE_URL = re.compile(r"^https?://[^\s<>|]+$")


def link(url: str | None, label: str) -> str:
    """`label url` for a plain http(s) URL (label already escaped), else the label alone. Never `<url|…>`
    markup: what the bot links is its own; a provider's URL is shown as text."""
    return f"{label} {text(url, None)}" if url and _SAFE_URL.match(url) and len(url) <= 500 else label


def changes_lines(changes: dict[str, Any] | None) -> list[str]:
    if not changes:
        return []
    if changes.get("missing_image"):  # a dry run's: the request would be refused
        refusal = f":no_entry: Would be refused: {text(changes['missing_image'], 300)}"
        return [refusal, *changes_lines({k: v for k, v in changes.items() if k != "missing_image"})]
    if not changes.get("from"):
        return []
    head = f"*What changes* {text(changes.get('from'), 60)} → {text(changes.get('to'), 60)}"
    lines = []
    if changes.get("downgrade"):
        head += " — :warning: *downgrade*: the running version is newer"
    if changes.get("error"):
        return [head, f"_commits not shown: {text(changes['error'], 300)}_"]
    commits = changes.get("commits") or []
    total = int(changes.get("total") or len(commits))
    head += f" · {total} commit{'s' if total != 1 else ''}"
    for c in commits:
        sha = text(str(c.get("sha", ""))[:7], 12)
        who = f" — {text(c.get('author'), 60)}" if c.get("author") else ""
        lines.append(f"• `{sha}` {text(c.get('message'), 100)}{who}")
    if total > len(commits):
        lines.append(link(changes.get("url"), f"… and {total - len(commits)} more:"))
    elif changes.get("url"):
        lines.append(link(changes.get("url"), "compare:"))
    return [head, *lines]


def changes_blocks(changes: dict[str, Any] | None) -> list[dict[str, Any]]:
    lines = changes_lines(changes)
    if not lines:
        return []
    body = "\n".join(lines)
    return [{"type": "section", "text": {"type": "mrkdwn", "text": body[:3000]}}]
