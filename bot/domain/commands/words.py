"""The words a command is made of, checked one at a time: a service or environment from the vocabulary,
a strategy, a version, a deployment ID. A word that is not one says so and names the nearest that is."""

from __future__ import annotations

import re
from typing import TypeVar

from bot.domain.commands.messages import listing
from bot.domain.commands.types import SUBCOMMANDS, CommandError, Vocabulary
from bot.domain.commands.usage import line, quoted
from bot.domain.strategies import STRATEGIES, Strategy
from bot.domain.suggest import closest

VERSION = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
ID_LIKE = re.compile(r"#?[0-9]+")
_MAX_ID_DIGITS = 18  # sqlite INTEGER is 64-bit

W = TypeVar("W", bound=str)


def lookup(word: str, choices: tuple[W, ...]) -> W | None:
    """The choice that is `word` but for case, spelled as the choice is."""
    low = word.lower()
    return next((choice for choice in choices if choice.lower() == low), None)


def pick(word: str, choices: tuple[W, ...], kind: str, label: str, key: str, extra: str = "") -> W:
    """The vocabulary's spelling of `word`, or a CommandError naming the nearest valid word."""
    found = lookup(word, choices)
    if found:
        return found
    message = f"Unknown {kind} {quoted(word)}."
    near = closest(word, choices)
    if near:
        message += f' Did you mean "{near}"?'
    elif key == "deploy" and kind == "service" and (command := closest(word, SUBCOMMANDS)):
        message += f" Did you mean `/deploy {command}`?"
    raise CommandError(f"{message} {listing(label, choices)}{extra}", line(key))


def service(word: str, vocab: Vocabulary, key: str, ids: bool = False) -> str:
    extra = " (Or give a deployment ID, like 42.)" if ids else ""
    return pick(word, vocab.services, "service", "Services", key, extra)


def env(word: str, vocab: Vocabulary, key: str) -> str:
    return pick(word, vocab.environments, "environment", "Environments", key)


def strategy(word: str, key: str) -> Strategy:
    return pick(word, STRATEGIES, "strategy", "Strategies", key)


def version(word: str, key: str) -> str:
    if VERSION.fullmatch(word):
        return word
    raise CommandError(
        f"Bad version {quoted(word)}: a version is an image tag of letters, digits, _ . and -,"
        " up to 128 characters, not starting with . or -.",
        line(key),
    )


def deployment_id(word: str, key: str) -> int:
    digits = word.removeprefix("#")
    if digits.isascii() and digits.isdigit() and len(digits) <= _MAX_ID_DIGITS:
        return int(digits)
    raise CommandError(f"{quoted(word)} is not a deployment ID; IDs are numbers, like 42 or #42.", line(key))
