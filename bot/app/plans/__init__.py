"""Strategies are plans: lists of steps, each stating where the world should be, so running one twice is
harmless. A plan is stored with its deployment (Step.to_dict) and rebuilt from the store after a restart
(step_from_dict); the engine persists the step index before and after each step. Steps speak only to
ctx.platform and ctx.metrics (bot.app.ports)."""

from __future__ import annotations

from bot.app.plans import rolling, traffic
from bot.app.plans.steps import NeedsHuman, Step, StepContext, StepFailed, duration, step_from_dict
from bot.config.model import Target

__all__ = [
    "GRADUAL_ROLLBACK_WEIGHTS",
    "NeedsHuman",
    "Step",
    "StepContext",
    "StepFailed",
    "duration",
    "plan",
    "rollback_plan",
    "step_from_dict",
]

GRADUAL_ROLLBACK_WEIGHTS = (25, 50, 75, 100)


def plan(strategy: str, target: Target, *, gradual: bool = False) -> list[Step]:
    """The steps of a deployment. `gradual` (rollbacks): traffic moves back in steps, with analysis."""
    if strategy == "rolling":
        return rolling.plan(target)
    if strategy == "blue-green" and not gradual:
        return traffic.blue_green_plan(target)
    if strategy in ("canary", "blue-green"):
        return traffic.canary_plan(target, GRADUAL_ROLLBACK_WEIGHTS if gradual else None)
    raise StepFailed(f'there is no "{strategy}" strategy; use rolling, blue-green or canary')


def rollback_plan(strategy: str, target: Target) -> list[Step]:
    """What undoes a failed deployment of that strategy."""
    if strategy == "rolling":
        return rolling.rollback_plan(target)
    return traffic.rollback_plan(target)
