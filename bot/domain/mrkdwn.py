"""The one place where text a person typed is made safe to show: in Slack mrkdwn (`text`, `code`) and in
plain-text systems that feed Slack back (`plain`, for PagerDuty). No imports of the bot: every builder
(bot.slack_ui, bot.schedule, bot.engine, handlers) can use it.

The rule: every user-supplied string (reasons, freeze and lock reasons, versions, the command text echoed
in a warning or a usage error) passes through `text` or `code` at the point where it is put next to markup
the bot writes itself (`<@U…>` of the acting user, the on-call `<!subteam^…>`, links to its own messages).
Slack then shows it literally: `<!channel>` reads as text and notifies nobody."""

from __future__ import annotations

import re
import unicodedata

REASON_LIMIT = 500  # characters of one user-supplied string shown in a message (the audit keeps it whole)
_BIDI = dict.fromkeys(
    [*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x200E, 0x200F, 0x061C], " "
)  # direction overrides could make a reason read differently from what it says
_SPACES = re.compile(r" {2,}")
BACKTICK_LOOKALIKE = "ˋ"  # U+02CB: a backtick in a code span would end it


def _clean(s: object, limit: int | None) -> str:
    """One line: control characters (newlines too) become spaces; cut at `limit` with an ellipsis."""
    value = "" if s is None else str(s)
    value = "".join(" " if unicodedata.category(c) == "Cc" else c for c in value).translate(_BIDI)
    value = _SPACES.sub(" ", value).strip()
    if limit is not None and len(value) > limit:
        value = value[: max(0, limit - 1)].rstrip() + "…"
    return value


def text(s: object, limit: int | None = REASON_LIMIT) -> str:
    """User text for mrkdwn: `&`, `<`, `>` escaped as Slack documents, so it can carry no mention, link or
    date; one line; at most `limit` characters of the original (None: no cut)."""
    return _clean(s, limit).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def code(s: object, limit: int | None = REASON_LIMIT) -> str:
    """User text as an inline code span that it cannot end early: its backticks become a look-alike."""
    return f"`{text(s, limit).replace('`', BACKTICK_LOOKALIKE) or ' '}`"


_BOT_MARKUP = re.compile(r"<([@#!])([^<>|]*)(?:\|([^<>]*))?>|<([^<>|]+)\|([^<>]*)>|<([^<>|]+)>")


def plain(mrkdwn: str, limit: int | None = None) -> str:
    """A mrkdwn text (built with `text`) as plain text for systems that are not Slack but may post back
    into it (PagerDuty's Slack integration): the bot's own mentions become "@U…", its dates their fallback,
    its links "label (url)"; then entities are undone and any `<`/`>` left becomes ‹ › — a plain-text
    summary can never carry `<!channel>` (or any other markup) back into Slack."""

    def unwrap(m: re.Match[str]) -> str:
        if m.group(1):
            sigil, target, label = m.group(1), m.group(2), m.group(3)
            if sigil == "!" and target.startswith("date^"):
                return label or ""
            if sigil == "!" and target.startswith("subteam^"):
                return label or "@" + target.removeprefix("subteam^")
            return label if label else sigil.replace("!", "@") + target
        if m.group(4):
            return f"{m.group(5)} ({m.group(4)})"
        return m.group(6)

    out = _BOT_MARKUP.sub(unwrap, mrkdwn or "")
    out = out.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    return _clean(out.replace("<", "‹").replace(">", "›"), limit)
