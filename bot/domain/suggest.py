"""The one "did you mean" hint, for commands and config files alike."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def closest(word: str, choices: Iterable[str], cutoff: float = 0.6) -> str | None:
    """The choice nearest to `word` (case-insensitive), spelled as the choice is, or None."""
    by_lower = {c.lower(): c for c in choices}
    near = difflib.get_close_matches(word.lower(), list(by_lower), n=1, cutoff=cutoff)
    return by_lower[near[0]] if near else None


def did_you_mean(word: str, choices: Iterable[str], *, cutoff: float = 0.5, otherwise: str = "") -> str:
    """' (did you mean "x"?)' for the nearest choice, else `otherwise` (say, a list of what is known)."""
    near = closest(word, choices, cutoff)
    return f' (did you mean "{near}"?)' if near else otherwise
