"""How long a stored plan takes at least (its bakes and waits), for telling a slow rollout."""

from __future__ import annotations

from typing import Any

from bot.app.plans import step_from_dict


def plan_minimum_seconds(plan: list[dict[str, Any]]) -> float:
    """The least time a plan can take (its bakes and waits), for telling a slow rollout."""
    total = 0.0
    for raw in plan:
        try:
            total += step_from_dict(raw).min_seconds()
        except Exception:  # a step this version does not know: count it as instant
            continue
    return total
