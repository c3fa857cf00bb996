"""Slack messages as a terminal shows them, the way the Slack client shows them: mrkdwn with names for
mentions, dates in the reader's time zone, emoji as characters (or short words), bold; Block Kit sections,
fields, context, dividers, buttons and checkboxes, each clickable item numbered "MESSAGE.ITEM".
Pure functions: a message and a Directory in, lines and clickable items out."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

BOLD, RESET = "\033[1m", "\033[0m"

# The emoji deploybot uses (and a few common ones): a character, and a short word for terminals without it.
EMOJI: dict[str, tuple[str, str]] = {
    "calendar": ("📅", "[scheduled]"),
    "double_vertical_bar": ("⏸", "[paused]"),
    "fast_forward": ("⏩", "[skipped]"),
    "hourglass": ("⌛", "[waiting]"),
    "hourglass_flowing_sand": ("⏳", "[waiting]"),
    "information_source": ("ℹ", "[info]"),
    "large_green_circle": ("🟢", "[ok]"),
    "leftwards_arrow_with_hook": ("↩", "[rolled back]"),
    "lock": ("🔒", "[locked]"),
    "unlock": ("🔓", "[unlocked]"),
    "memory": ("📝", "[note]"),
    "no_entry": ("⛔", "[refused]"),
    "no_entry_sign": ("🚫", "[cancelled]"),
    "pencil2": ("✏", "[edit]"),
    "raised_hand": ("✋", "[approval]"),
    "rewind": ("⏪", "[rolling back]"),
    "rocket": ("🚀", "[running]"),
    "rotating_light": ("🚨", "[ALERT]"),
    "snowflake": ("❄", "[frozen]"),
    "sunny": ("☀", "[unfrozen]"),
    "warning": ("⚠", "[warning]"),
    "white_check_mark": ("✅", "[done]"),
    "heavy_check_mark": ("✔", "[done]"),
    "white_large_square": ("⬜", "[ ]"),
    "x": ("❌", "[failed]"),
    "tada": ("🎉", "[yay]"),
    "eyes": ("👀", "[looking]"),
    "thumbsup": ("👍", "[+1]"),
    "+1": ("👍", "[+1]"),
}


@dataclass(frozen=True)
class Directory:
    """What the reader's Slack knows: names for ids, and the reader's time zone for dates."""

    users: dict[str, str] = field(default_factory=dict)  # U0ALICE -> alice
    channels: dict[str, str] = field(default_factory=dict)  # C0DEPLOYS -> deploys
    groups: dict[str, str] = field(default_factory=dict)  # S0ONCALL -> oncall
    tz: str = "UTC"
    now: float | None = None  # for {date_pretty} and {ago}; None: no relative words
    tty: bool = False  # bold as ANSI
    emoji_chars: bool = True  # False: short words


@dataclass(frozen=True)
class Clickable:
    """One thing a user can click on a message: a button, or one option of a checkboxes element."""

    label: str
    action_id: str
    kind: str  # "button" | "checkbox"
    checked: bool = False


_TOKEN = re.compile(r"<([^<>\n]+)>")
_EMOJI = re.compile(r":([a-z0-9_+\-]+):")
_BOLD = re.compile(r"(?<![\w*])\*(?=\S)([^*\n]+?)(?<=\S)\*(?![\w*])")
_ENTITIES = (("&lt;", "<"), ("&gt;", ">"), ("&amp;", "&"))


def _unescape(text: str) -> str:
    for entity, char in _ENTITIES:
        text = text.replace(entity, char)
    return text


def _ordinal(day: int) -> str:
    suffix = "th" if 11 <= day % 100 <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")
    return f"{day}{suffix}"


def _ago(seconds: float) -> str:
    future, seconds = seconds < 0, abs(seconds)
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            n = int(seconds // size)
            words = f"{n} {unit}{'s' if n != 1 else ''}"
            return f"in {words}" if future else f"{words} ago"
    return "just now"


def format_date(epoch: int, fmt: str, d: Directory) -> str:
    """Slack's <!date^EPOCH^FORMAT|fallback> tokens, in the reader's time zone."""
    at = datetime.fromtimestamp(epoch, UTC).astimezone(ZoneInfo(d.tz))

    def pretty(long: bool) -> str:
        if d.now is not None:
            today = datetime.fromtimestamp(d.now, UTC).astimezone(ZoneInfo(d.tz)).date()
            word = {0: "today", -1: "yesterday", 1: "tomorrow"}.get((at.date() - today).days)
            if word:
                return word
        return f"{at:%A, %B} {_ordinal(at.day)}, {at.year}" if long else f"{at:%B} {_ordinal(at.day)}"

    tokens = {
        "date_num": f"{at:%Y-%m-%d}",
        "date": f"{at:%B} {_ordinal(at.day)}, {at.year}",
        "date_short": f"{at:%b} {at.day}, {at.year}",
        "date_long": f"{at:%A, %B} {_ordinal(at.day)}, {at.year}",
        "date_pretty": pretty(False),
        "date_short_pretty": pretty(False),
        "date_long_pretty": pretty(True),
        "time": f"{at:%H:%M}",
        "time_secs": f"{at:%H:%M:%S}",
        "ago": _ago(d.now - epoch) if d.now is not None else f"{at:%Y-%m-%d %H:%M}",
    }
    return re.sub(r"\{(\w+)\}", lambda m: tokens.get(m.group(1), m.group(0)), fmt)


def _token(inner: str, d: Directory) -> str:
    head, _, label = inner.partition("|")
    if head.startswith("@"):
        uid = head[1:]
        return "@" + (d.users.get(uid) or label.lstrip("@") or uid)
    if head.startswith("#"):
        cid = head[1:]
        return "#" + (d.channels.get(cid) or label.lstrip("#") or cid)
    if head.startswith("!subteam^"):
        gid = head.removeprefix("!subteam^")
        return "@" + (d.groups.get(gid) or label.lstrip("@") or gid)
    if head in ("!channel", "!here", "!everyone"):
        return "@" + head[1:]
    if head.startswith("!date^"):
        parts = head.split("^")
        try:
            return format_date(int(parts[1]), parts[2] if len(parts) > 2 else "{date_num} {time}", d)
        except (ValueError, IndexError, OverflowError):
            return label or inner
    if head.startswith("!"):
        return label or head[1:]
    if label:
        return f"{label} ({head.removeprefix('mailto:')})"
    return head.removeprefix("mailto:")


def emoji(text: str, d: Directory) -> str:
    def one(m: re.Match) -> str:
        known = EMOJI.get(m.group(1))
        return m.group(0) if known is None else known[0 if d.emoji_chars else 1]

    return _EMOJI.sub(one, text)


def mrkdwn(text: str, d: Directory) -> str:
    """Slack mrkdwn as the client shows it; unknown :emoji: and plain text are left as they are."""
    out = _TOKEN.sub(lambda m: _token(m.group(1), d), text or "")
    out = emoji(out, d)
    out = _BOLD.sub(lambda m: f"{BOLD}{m.group(1)}{RESET}" if d.tty else m.group(1), out)
    return _unescape(out)


def _text(obj: Any, d: Directory) -> str:
    if not isinstance(obj, dict):
        return str(obj or "")
    if obj.get("type") == "plain_text":
        return _unescape(emoji(obj.get("text", ""), d))
    return mrkdwn(obj.get("text", ""), d)


def _element(element: Any, d: Directory, items: list[Clickable], number: int) -> list[str]:
    """Lines for an interactive element; its clickables are appended to `items`, numbered after them."""
    if not isinstance(element, dict):
        return []
    if element.get("type") == "button":
        label = _text(element.get("text"), d)
        items.append(Clickable(label, element.get("action_id", ""), "button"))
        return [f"[{number}.{len(items)}] {label}"]
    if element.get("type") == "checkboxes":
        ticked = {o.get("value") for o in element.get("initial_options") or []}
        lines = []
        for option in element.get("options") or []:
            label = _text(option.get("text"), d)
            checked = option.get("value") in ticked
            items.append(Clickable(label, element.get("action_id", ""), "checkbox", checked))
            lines.append(f"[{number}.{len(items)}] [{'x' if checked else ' '}] {label}")
        return lines
    return []


def render_message(message: dict[str, Any], d: Directory, number: int) -> tuple[list[str], list[Clickable]]:
    """A message's lines as the Slack client lays them out, and its clickable items in order: item i is
    shown as [number.i]."""
    lines: list[str] = []
    items: list[Clickable] = []
    for block in message.get("blocks") or []:
        kind = block.get("type")
        if kind in ("section", "header"):
            lines += _section(block, d, items, number)
        elif kind == "context":
            parts = [_text(e, d) for e in block.get("elements") or [] if e.get("type") != "image"]
            lines.append("  " + " ".join(p for p in parts if p))
        elif kind == "actions":
            lines += _actions(block, d, items, number)
        elif kind == "divider":
            lines.append("  " + "─" * 24)
    if not lines:
        lines = mrkdwn(message.get("text", ""), d).split("\n")
    for f in message.get("files") or []:  # a shared file: its name and where to fetch it
        lines.append(
            f"  [file {f.get('name')} ({f.get('mimetype')}, {f.get('size')} bytes): {f.get('permalink')}]"
        )
    return lines, items


def _section(block: dict[str, Any], d: Directory, items: list[Clickable], number: int) -> list[str]:
    lines: list[str] = []
    if block.get("text"):
        text = _text(block["text"], d)
        if block.get("type") == "header" and d.tty:
            text = f"{BOLD}{text}{RESET}"
        lines += text.split("\n")
    for f in block.get("fields") or []:
        name, _, value = _text(f, d).partition("\n")
        lines.append(f"  {name}: {value.replace(chr(10), ' ')}" if value else f"  {name}")
    for line in _element(block.get("accessory"), d, items, number):
        lines.append("  " + line)
    return lines


def _actions(block: dict[str, Any], d: Directory, items: list[Clickable], number: int) -> list[str]:
    """An actions block: its buttons on one line, other elements (checkboxes, menus) a line each."""
    lines: list[str] = []
    buttons: list[str] = []
    for element in block.get("elements") or []:
        shown = _element(element, d, items, number)
        if isinstance(element, dict) and element.get("type") == "button":
            buttons += shown
        else:
            lines += ["  " + s for s in shown]
    if buttons:
        lines.append("  " + "   ".join(buttons))
    return lines


def summary(message: dict[str, Any], d: Directory) -> str:
    """One line for a message: its notification text (Slack's fallback), else its first line."""
    text = mrkdwn(message.get("text") or "", d).strip()
    if not text:
        lines, _ = render_message(message, d, 0)
        text = next((line.strip() for line in lines if line.strip()), "")
    return " ".join(text.split())


def change_line(number: int, before: list[str], after: dict[str, Any], d: Directory, width: int = 160) -> str:
    """An edit in one line: `~ #3 <the message's text> — <what changed>`: the last line that changed, not
    counting the title (the text says it) and the clickable items."""
    head = summary(after, d)
    lines, _ = render_message(after, d, number)
    if after.get("blocks") and (after.get("text") or "").strip():
        lines = lines[1:]
    old = {" ".join(line.split()) for line in before}
    changed = [
        flat
        for flat in (" ".join(line.split()) for line in lines)
        if flat and flat not in old and flat not in head and not re.match(rf"\[{number}\.\d+\]", flat)
    ]
    text = f"~ #{number} {head}" + (f" — {changed[-1]}" if changed else "")
    return text if len(text) <= width else text[: width - 1] + "…"
