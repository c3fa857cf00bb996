"""From the text Slack sends to words and options: phone punctuation undone, quotes and apostrophes read
the way people mean them, and --options pulled out from anywhere, each checked against its form."""

from __future__ import annotations

import re
import shlex
from typing import TypeAlias

from bot.domain.commands.types import CommandError
from bot.domain.commands.usage import FLAGS, FORMS, line, quoted
from bot.domain.suggest import closest

Flags: TypeAlias = dict[str, str | bool]  # option name -> its value, or True for a switch

_WHITESPACE = re.compile(r"\s")
_QUOTING = re.compile(r"['\"\\]")  # what shlex treats specially once every space is a plain " "
# Phone keyboards turn "..." into curly quotes and "--" into a dash; undo both so flags and quoting work.
_CURLY_DOUBLE_QUOTES = str.maketrans({"\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"'})
_DASHES = ("\u2014", "\u2013")  # em dash, en dash


def tokenize(text: str, key: str) -> list[str]:
    """The words of `text`, quotes honoured; a CommandError pointing at an unclosed quote."""
    text = _WHITESPACE.sub(" ", text.translate(_CURLY_DOUBLE_QUOTES))
    if not _QUOTING.search(text):  # no quote and no escape: shlex would split at the spaces (most commands)
        return [word for word in text.split(" ") if word]
    text = _escape_apostrophes(text)
    try:
        return shlex.split(text)
    except ValueError:
        pass
    quote = _unclosed_quote(text)
    if quote is None:
        raise CommandError(
            "The command ends with a backslash (\\) that escapes nothing; remove it.", line(key)
        ) from None
    char, at = quote
    message = f"Unclosed quote: the {char} in {quoted(text[max(0, at - 10) : at + 20])} is never closed."
    if char == "'":
        message += ' If it is an apostrophe, put the text in double quotes, e.g. --reason "can\'t wait".'
    raise CommandError(message, line(key)) from None


def _is_apostrophe(text: str, i: int) -> bool:
    return 0 < i < len(text) - 1 and text[i - 1].isalpha() and text[i + 1].isalpha()


def _escape_apostrophes(text: str) -> str:
    """A ' between two letters outside quotes is an apostrophe (can't), not a quote: escape it for shlex."""
    out: list[str] = []
    quote, i = "", 0
    while i < len(text):
        char = text[i]
        if char == "\\" and quote != "'":  # an escape: copy it with the character it escapes
            out.append(text[i : i + 2])
            i += 2
            continue
        if not quote and char == "'" and _is_apostrophe(text, i):
            out.append("\\'")
        else:
            out.append(char)
            if not quote and char in "'\"":
                quote = char
            elif char == quote:
                quote = ""
        i += 1
    return "".join(out)


def _unclosed_quote(text: str) -> tuple[str, int] | None:
    """Where shlex's "No closing quotation" starts: the quote character and its index."""
    quote, start, i = "", 0, 0
    while i < len(text):
        char = text[i]
        if not quote:
            if char == "\\":
                i += 1
            elif char in "'\"":
                quote, start = char, i
        elif char == quote:
            quote = ""
        elif quote == '"' and char == "\\":
            i += 1
        i += 1
    return (quote, start) if quote else None


def _is_flag(token: str) -> bool:
    return (token.startswith("-") and len(token) > 1) or token.startswith(_DASHES)


def split_flags(tokens: list[str], key: str) -> tuple[list[str], Flags, list[str]]:
    """Pull options out from anywhere in the tokens: (other words, {name: value}, the option tokens)."""
    allowed = FLAGS.get(key, {})
    words: list[str] = []
    values: Flags = {}
    raw: list[str] = []
    i = 0
    while i < len(tokens):
        token = tokens[i]
        i += 1
        if not _is_flag(token):
            words.append(token)
            continue
        name, inline = _flag_name(token, allowed, key)
        if name in values:
            raise CommandError(f'The option "--{name}" is given twice.', line(key))
        value, i = _flag_value(name, allowed[name], inline, tokens, i, key)
        values[name] = value
        raw.extend([f"--{name}"] if value is True else [f"--{name}", str(value)])
    return words, values, raw


def _flag_name(token: str, allowed: dict[str, str | None], key: str) -> tuple[str, str | None]:
    """The option's name, checked against the form, and its value when written `--name=value`."""
    if token.startswith(_DASHES):
        token = "--" + token[1:]
    spelled, equals, value = token.partition("=")
    name = spelled[2:].lower() if spelled.startswith("--") else ""
    if name not in allowed:
        raise unknown_flag(spelled, allowed, key)
    return name, value if equals else None


def _flag_value(
    name: str, metavar: str | None, inline: str | None, tokens: list[str], i: int, key: str
) -> tuple[str | bool, int]:
    """The option's value (True for a switch) and the index of the token after it."""
    if metavar is None:
        if inline is not None:
            raise CommandError(f'The option "--{name}" takes no value (got {quoted(inline)}).', line(key))
        return True, i
    needs = CommandError(f'The option "--{name}" needs a value, e.g. --{name} {metavar}.', line(key))
    if inline is None:
        if i >= len(tokens) or tokens[i].startswith(("--", *_DASHES)):
            raise needs
        inline, i = tokens[i], i + 1
    if not inline.strip():
        raise needs
    return inline, i


def unknown_flag(spelled: str, allowed: dict[str, str | None], key: str) -> CommandError:
    """The error for an option the form does not take, naming the nearest one it does."""
    where = f"`{line(key).split(' [')[0]}`" if key in FORMS else "this command"
    if not allowed:
        return CommandError(f"Unknown option {quoted(spelled)}: {where} takes no options.", line(key))
    near = closest(spelled.lstrip("-"), allowed, cutoff=0.5)
    message = f"Unknown option {quoted(spelled)}."
    if near:
        message += f' Did you mean "--{near}"?'
    else:
        message += f" Options: {', '.join('--' + name for name in allowed)}."
    return CommandError(message, line(key))


def str_flag(flags: Flags, name: str) -> str | None:
    """The value of option `name` when it was given one."""
    value = flags.get(name)
    return value if isinstance(value, str) else None
