"""Reading a slip for what was meant: a connector one edit away ("ot" for "to"), and a connector run into
or split from an environment ("tostaging", "tos taging"). The parsers turn a hit into "did you mean"."""

from __future__ import annotations

from bot.domain.commands.types import Vocabulary
from bot.domain.commands.words import lookup
from bot.domain.suggest import closest


def edits(a: str, b: str) -> int:
    """Edit distance counting a swap of neighbours as one edit (so "ot" is one edit from "to")."""
    if abs(len(a) - len(b)) > 1:
        return 2  # callers only care whether it is <= 1
    before: list[int] = []
    previous = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        current = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] != b[j - 1]))
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                current[j] = min(current[j], before[j - 2] + 1)
        before, previous = previous, current
    return previous[-1]


def fix_connector(word: str, connectors: tuple[str, ...]) -> str | None:
    """The connector at most one edit from `word`; of equals, the first in `connectors`."""
    low = word.lower()
    scored = [(edits(low, connector), connector) for connector in connectors]
    best = min(scored, key=lambda pair: pair[0])  # min keeps the first of equals: connector order decides
    return best[1] if best[0] <= 1 else None


def phrase_hint(words: list[str], vocab: Vocabulary, connectors: tuple[str, ...]) -> str | None:
    """If `words` look like a misspelt "CONNECTOR ENV" ("tos taging", "tostaging"), the fixed phrase."""
    if len(words) == 2:
        return _split_phrase(words[0], words[1], vocab, connectors)
    if len(words) == 1:
        return _joined_phrase(words[0], vocab, connectors)
    return None


def _split_phrase(first: str, second: str, vocab: Vocabulary, connectors: tuple[str, ...]) -> str | None:
    connector = fix_connector(first, connectors)
    env = lookup(second, vocab.environments) or closest(second, vocab.environments)
    return f"{connector} {env}" if connector and env else None


def _joined_phrase(word: str, vocab: Vocabulary, connectors: tuple[str, ...]) -> str | None:
    low = word.lower()
    for connector in connectors:
        if low.startswith(connector) and len(low) > len(connector):
            tail = low[len(connector) :]
            env = lookup(tail, vocab.environments) or closest(tail, vocab.environments, cutoff=0.75)
            if env:
                return f"{connector} {env}"
    return None
