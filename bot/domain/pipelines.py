"""A pipeline: one version of one service taken through environments in order — a deployment in each,
the service's integration tests between them — as the store keeps it. Its stages and their legal moves
are data (a stage goes pending -> running -> succeeded | failed; the pipeline fails with its first
failed stage and succeeds with its last). Plain values, no I/O.

Stage kinds: "deploy" (a deployment through the environment's whole gate; `deployment_id` once it is
requested) and "tests" (the integration tests in the environment just deployed: a one-off task, found
again by `task_key` after a crash, and/or HTTP checks)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, ClassVar

from bot.domain.events import EVENT_TYPES, DomainEvent, Level

RUNNING, SUCCEEDED, FAILED = "running", "succeeded", "failed"
PENDING = "pending"
STAGE_MOVES: dict[str, tuple[str, ...]] = {
    PENDING: (RUNNING, FAILED),
    RUNNING: (RUNNING, SUCCEEDED, FAILED),  # running -> running: what it is at changed (a task started)
    SUCCEEDED: (),
    FAILED: (),
}
DEPLOY, TESTS = "deploy", "tests"


class IllegalStageMove(Exception):
    def __init__(self, stage: Stage, to: str):
        super().__init__(f"a {stage.state} {stage.kind} stage in {stage.env} cannot become {to}")


@dataclass(frozen=True)
class Stage:
    kind: str  # DEPLOY | TESTS
    env: str
    state: str = PENDING
    deployment_id: int | None = None
    task_key: str | None = None  # the tests' task: saved before it is started
    task: str | None = None
    exit_code: int | None = None  # the tests' task ended so (0: passed; HTTP checks, if any, come next)
    started_at: float | None = None  # clock epoch seconds: a resumed wait keeps its deadline
    detail: str = ""  # the bot's words: what it ended with, or why it failed

    @property
    def ended(self) -> bool:
        return self.state in (SUCCEEDED, FAILED)

    def move(self, state: str, **changes: Any) -> Stage:
        if state not in STAGE_MOVES[self.state]:
            raise IllegalStageMove(self, state)
        return replace(self, state=state, **changes)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Stage:
        return cls(**data)


def plan_stages(environments: Sequence[str], has_tests: Callable[[str], bool]) -> tuple[Stage, ...]:
    """A deployment in every environment, and the integration tests after each but the last where the
    service has them."""
    stages: list[Stage] = []
    for i, env in enumerate(environments):
        stages.append(Stage(DEPLOY, env))
        if i < len(environments) - 1 and has_tests(env):
            stages.append(Stage(TESTS, env))
    return tuple(stages)


@dataclass(frozen=True)
class Pipeline:
    id: int
    name: str
    service: str
    version: str
    requested_by: str
    state: str  # RUNNING | SUCCEEDED | FAILED
    stages: tuple[Stage, ...]
    roles: tuple[str, ...] = ()  # the requester's roles when asked: a later stage is requested with them
    reason: str | None = None  # why it failed (the bot's words)
    channel: str | None = None  # where its message lives (a name until posted, then the channel id)
    message_ts: str | None = None
    revision: int = 0  # every save is a compare-and-set on it
    created_at: str = ""
    updated_at: str | None = None
    finished_at: str | None = None
    request_key: str | None = None

    @property
    def ref(self) -> str:
        return f"pipeline #{self.id}"

    @property
    def ended(self) -> bool:
        return self.state != RUNNING

    @property
    def environments(self) -> tuple[str, ...]:
        return tuple(s.env for s in self.stages if s.kind == DEPLOY)

    def current(self) -> tuple[int, Stage] | None:
        """The first stage not done yet (None: all done, or the pipeline ended)."""
        if self.ended:
            return None
        return next(((i, s) for i, s in enumerate(self.stages) if s.state != SUCCEEDED), None)

    def stage_of(self, deployment_id: int) -> int | None:
        return next((i for i, s in enumerate(self.stages) if s.deployment_id == deployment_id), None)

    def source_of(self, index: int) -> Stage | None:
        """The deploy stage before stage `index` (what a later environment promotes), if any."""
        return next((s for s in reversed(self.stages[:index]) if s.kind == DEPLOY), None)

    def with_stage(self, index: int, state: str, **changes: Any) -> Pipeline:
        """Stage `index` moved to `state`; a failed stage fails the pipeline (its detail is the reason),
        and the last stage succeeding ends it succeeded."""
        stage = self.stages[index].move(state, **changes)
        stages = (*self.stages[:index], stage, *self.stages[index + 1 :])
        moved = replace(self, stages=stages)
        if state == FAILED:
            return replace(moved, state=FAILED, reason=stage.detail)
        if all(s.state == SUCCEEDED for s in stages):
            return replace(moved, state=SUCCEEDED)
        return moved

    def failed(self, reason: str) -> Pipeline:
        """Stopped before a stage of its own could fail (its first request refused)."""
        current = self.current()
        if current is None:
            return replace(self, state=FAILED, reason=reason)
        return self.with_stage(current[0], FAILED, detail=reason)

    def stages_json(self) -> str:
        return json.dumps([s.to_dict() for s in self.stages], sort_keys=True)

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Pipeline:
        values = {k: row[k] for k in row if k not in ("stages", "roles", "post_attempted")}
        return cls(
            **values,
            stages=tuple(Stage.from_dict(s) for s in json.loads(row["stages"] or "[]")),
            roles=tuple(json.loads(row["roles"] or "[]")),
        )


def task_key(pipeline_id: int, index: int) -> str:
    """The integration tests' task key (ECS startedBy: at most 36 letters, digits, - and _)."""
    return f"deploybot-p{pipeline_id}-tests-{index}"


def stage_request_key(pipeline_id: int, index: int) -> str:
    """The request key of a stage's deployment: asked again after a crash, the store hands back the
    deployment it made the first time instead of a second one."""
    return f"pipeline:{pipeline_id}:{index}"


# ------------------------------------------------------------------------------------------- events
# Typed domain events (bot.domain.events) of pipelines, registered with the others. A pipeline's events belong to no deployment (the outbox row's deployment is empty; the pipeline is
# named in the event): the deployments' own consumers pass them by, the pipeline's message reads them.


@dataclass(frozen=True)
class PipelineStarted(DomainEvent):
    """Pipeline `pipeline` took its first step (its first deployment is requested)."""

    pipeline: int
    kind: ClassVar[str] = "pipeline_started"


@dataclass(frozen=True)
class PipelineStageChanged(DomainEvent):
    """Stage `stage` (0-based) of pipeline `pipeline` is now `state` (running, succeeded, failed);
    `task`: the tests' task, once started."""

    pipeline: int
    stage: int
    state: str
    task: str = ""
    kind: ClassVar[str] = "pipeline_stage"


@dataclass(frozen=True)
class PipelineEnded(DomainEvent):
    """Pipeline `pipeline` ended: every stage succeeded, or one failed (`reason`, the bot's words)."""

    pipeline: int
    succeeded: bool
    reason: str = ""
    kind: ClassVar[str] = "pipeline_ended"

    def level(self) -> Level:
        return "info" if self.succeeded else "warning"


PIPELINE_EVENTS = (PipelineStarted, PipelineStageChanged, PipelineEnded)
EVENT_TYPES.update({cls.kind: cls for cls in PIPELINE_EVENTS})  # the store's outbox imports this module
