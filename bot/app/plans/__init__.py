"""Strategies are plans: lists of steps, each stating where the world should be, so running one twice is
harmless. A plan is stored with its deployment (Step.to_dict) and rebuilt from the store after a restart
(step_from_dict); the engine persists the step index before and after each step. Steps speak only to
ctx.platform and ctx.metrics (bot.app.ports)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from bot.app.plans import flags, rolling, traffic
from bot.app.plans.steps import NeedsHuman, Step, StepContext, StepFailed, duration, step_from_dict
from bot.app.plans.truth import VerifyLive, VerifyRolledBack
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
    "verify_live",
    "verify_rolled_back",
]

GRADUAL_ROLLBACK_WEIGHTS = (25, 50, 75, 100)


def plan(strategy: str, target: Target, *, gradual: bool = False, migrate: bool = True) -> list[Step]:
    """The steps of a deployment. `gradual` (rollbacks): traffic moves back in steps, with analysis.
    `migrate`: the service's migrations run first (a rollback to an older version runs none: the schema
    a newer version expanded stays, and the older one runs on it — expand/contract)."""
    if not migrate:  # a rollback: no migrations, and no verification after it (its plan scales down)
        target = replace(target, migrations=None, env=replace(target.env, rollback_during_verify=False))
    if strategy == "flag":
        return flags.rollout_plan(target)
    if strategy == "rolling":
        return rolling.plan(target)
    if strategy == "blue-green" and not gradual:
        return traffic.blue_green_plan(target)
    if strategy in ("canary", "blue-green"):
        return traffic.canary_plan(target, GRADUAL_ROLLBACK_WEIGHTS if gradual else None)
    raise StepFailed(f'there is no "{strategy}" strategy; use rolling, blue-green or canary')


def rollback_plan(strategy: str, target: Target, stored_plan: Sequence[dict[str, Any]] = ()) -> list[Step]:
    """What undoes a failed deployment of that strategy (a flag's: of that plan)."""
    if strategy == "flag":
        return flags.rollback_plan(target, stored_plan)
    if strategy == "rolling":
        return rolling.rollback_plan(target)
    return traffic.rollback_plan(target)


def verify_live(strategy: str, target: Target, stored_plan: Sequence[dict[str, Any]] = ()) -> Step:
    """What the world must show before a deployment is written succeeded (run after every plan)."""
    return flags.verify_live(target, stored_plan) if strategy == "flag" else VerifyLive()


def verify_rolled_back(strategy: str, target: Target, stored_plan: Sequence[dict[str, Any]] = ()) -> Step:
    """... and before it is written rolled back."""
    return flags.verify_rolled_back(target, stored_plan) if strategy == "flag" else VerifyRolledBack()
