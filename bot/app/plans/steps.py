"""A step of a plan and what it may use while it runs (StepContext: the platform, the metrics, the clock,
the deployment's persisted data). Steps register their kinds here, so a stored plan is rebuilt in a fresh
process (step_from_dict)."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from bot.app.ports import Backups, Http, Metrics, Platform
from bot.clock import Clock
from bot.config.model import Target
from bot.domain.analysis import Analysis
from bot.domain.durations import duration as duration  # the plans' one formatter is the domain's
from bot.domain.events import DomainEvent


class StepFailed(Exception):
    """The world did not reach the step's desired state; the message says why, for people.
    `unhealthy`: the load balancer reports the new revision's targets unhealthy (a fact the alert
    policy keys on: an automatic rollback for unhealthy targets after a switch is its own alert)."""

    def __init__(self, message: str, *, unhealthy: bool = False):
        super().__init__(message)
        self.unhealthy = unhealthy


class NeedsHuman(Exception):
    """The step cannot decide (inconclusive analysis, a planned pause): the deployment pauses and asks."""


@dataclass
class StepContext:
    """What a running step may use. `data` is the deployment's persisted context (ARNs, slots, versions)."""

    deployment_id: int
    version: str | None
    target: Target
    platform: Platform
    metrics: Metrics
    clock: Clock
    data: dict[str, Any]
    report: Callable[[str], Awaitable[None]]  # a detail line for the deployment's thread
    progress: Callable[[str], Awaitable[None]]  # the live "what is happening now" line on its message
    checkpoint: Callable[[], Awaitable[None]]  # waits while paused; call between polls
    save: Callable[[], Awaitable[None]] = field(default=lambda: _noop())  # persist `data` now
    record: Callable[[str, dict[str, Any]], Awaitable[None]] = field(
        default=lambda action, details: _noop()
    )  # audit
    index: int = 0  # the running step's place in the plan
    http: Http | None = None  # smoke checks' HTTP client
    say: Callable[[DomainEvent], Awaitable[None]] = field(default=lambda event: _noop())  # an event
    known_good: Callable[[], Awaitable[tuple[str, ...]]] = field(default=lambda: _none())
    # ^ the versions known good in the environment, newest first (read from the store when asked)
    resumed: bool = False  # this run carries on after a restart: a write may have landed unrecorded
    flags: Any = None  # a flag rollout's FlagSwitch (bot.app.plans.flags), None for deployments
    backups: Backups | None = None  # database snapshots before a migration

    async def poll(self, seconds: float | None = None) -> None:
        await self.checkpoint()
        await self.clock.sleep(self.target.poll_seconds if seconds is None else seconds)
        await self.checkpoint()


async def _noop() -> None:
    return None


async def _none() -> tuple[str, ...]:
    return ()


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


def judged(analysis: Analysis, subject: str, at: str, undo: str) -> str:
    """A finished bake's verdict: StepFailed ("{subject} failed at {at}: the last measurement's reasons"),
    NeedsHuman when inconclusive (`undo`: the button that backs out, "Abort to roll back"), otherwise the
    reason it passed."""
    status = analysis.finish()
    if status == "failed":
        last = next((m for m in reversed(analysis.measurements) if m.reasons), None)
        raise StepFailed(f"{subject} failed at {at}: {'; '.join(last.reasons) if last else analysis.reason}")
    if status == "inconclusive":
        last = analysis.measurements[-1] if analysis.measurements else None
        why = "; ".join(last.reasons) if last and last.reasons else analysis.reason
        raise NeedsHuman(
            f"{subject} inconclusive at {at}: {why}. Promote to carry on, Resume to measure again, or {undo}."
        )
    return analysis.reason
