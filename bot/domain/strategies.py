"""The names of the rollout strategies, in one place: the command grammar and the config loader both
accept exactly these."""

from __future__ import annotations

from typing import Literal

Strategy = Literal["rolling", "blue-green", "canary"]
STRATEGIES: tuple[Strategy, ...] = ("rolling", "blue-green", "canary")


def strategy_named(name: str) -> Strategy | None:
    """`name` as a Strategy when it is one (exact spelling), else None."""
    return next((s for s in STRATEGIES if s == name), None)
