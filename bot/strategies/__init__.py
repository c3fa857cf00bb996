"""Strategies are plans: lists of steps, each stating where the world should be, so running one twice is
harmless. A plan is stored with its deployment (Step.to_dict) and rebuilt from the store after a restart
(step_from_dict); the engine persists the step index before and after each step."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from bot.clock import Clock
from bot.cloud import Cloud
from bot.settings import Target


class StepFailed(Exception):
    """The world did not reach the step's desired state; the message says why, for people."""


@dataclass
class StepContext:
    """What a running step may use. `data` is the deployment's persisted context (ARNs, slots, versions)."""

    deployment_id: int
    version: str | None
    target: Target
    cloud: Cloud
    clock: Clock
    data: dict[str, Any]
    report: Callable[[str], Awaitable[None]]  # a detail line for the deployment's thread
    progress: Callable[[str], Awaitable[None]]  # the live "what is happening now" line on its message
    checkpoint: Callable[[], Awaitable[None]]  # waits while paused; call between polls
    save: Callable[[], Awaitable[None]] = field(default=lambda: _noop())  # persist `data` now

    async def poll(self, seconds: float | None = None) -> None:
        await self.checkpoint()
        await self.clock.sleep(self.target.poll_seconds if seconds is None else seconds)
        await self.checkpoint()


async def _noop() -> None:
    return None


_REGISTRY: dict[str, type[Step]] = {}


@dataclass
class Step:
    kind: ClassVar[str] = ""
    # False where re-running after a crash would be unsafe: the engine rolls back instead of resuming.
    resumable: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.kind:
            _REGISTRY[cls.kind] = cls

    def describe(self) -> str:
        raise NotImplementedError

    def min_seconds(self) -> float:
        """Time this step takes at least (for ETAs in dry runs)."""
        return 0.0

    async def run(self, ctx: StepContext) -> None:
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **dataclasses.asdict(self)}


def step_from_dict(data: dict[str, Any]) -> Step:
    values = dict(data)
    cls = _REGISTRY[values.pop("kind")]
    return cls(**values)


def plan(strategy: str, target: Target) -> list[Step]:
    if strategy == "rolling":
        return rolling.plan(target)
    raise StepFailed(f'the "{strategy}" strategy is not available yet; use --strategy rolling')


def rollback_plan(strategy: str, target: Target) -> list[Step]:
    return rolling.rollback_plan(target)


# Importing the strategy modules registers their step kinds, so step_from_dict works in a fresh process
# (resuming after a restart) before any plan has been built.
from bot.strategies import rolling  # noqa: E402, F401
