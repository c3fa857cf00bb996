"""An in-memory Platform (bot.app.ports.Platform) for unit tests: services with slots, revisions, rollouts
that complete after a few polls, target health and weights, all in dicts; no network, no moto.

It keeps the path of the world (`history`: every weight change, every slot update) for tests to assert
on, and takes injected faults: a write refused or a transient error (`fail`), unhealthy targets
(`set_health`), a rollout that fails (`fail_rollouts`), a write that lands but whose answer is lost
(`lose`: the crash between a call and saving what it returned)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from bot.app.ports import MetricScope, PlatformError, Rollout, SlotState, TargetHealth, TaskRun
from bot.config.model import Target


@dataclass
class FakeSlot:
    revision: str = ""
    desired: int = 0
    running: int = 0
    state: str = "COMPLETED"  # of the newest rollout
    reason: str = ""
    polls_left: int = 0  # rollout() calls until an IN_PROGRESS rollout completes
    forced: tuple[str, str | None] | None = None  # injected: every target in this (state, reason)
    failed_tasks: bool = False  # the newest rollout failed: its tasks fail their health checks

    def health(self, slot: str) -> list[TargetHealth]:
        if self.failed_tasks:
            reason = "Target.FailedHealthChecks"
            return [TargetHealth(f"{slot}-{i}", "unhealthy", reason) for i in range(max(1, self.desired))]
        if self.forced is not None:
            return [
                TargetHealth(f"{slot}-{i}", *self.forced) for i in range(max(1, self.desired, self.running))
            ]
        return [TargetHealth(f"{slot}-{i}", "healthy") for i in range(self.running)]


@dataclass
class FakeService:
    slots: dict[str, FakeSlot]
    weights: dict[str, int]
    drain_seconds: float = 0.0


@dataclass
class FakeTask:
    """A one-off task: what it runs, and how it will end (`exit_code`, `logs`) after `polls_left` reads."""

    id: str
    key: str
    revision: str
    image: str
    command: tuple[str, ...]
    environment: dict[str, str]
    exit_code: int | None
    logs: list[str] = field(default_factory=list)
    polls_left: int = 1
    status: str = "PENDING"
    reason: str = ""


@dataclass(frozen=True)
class TaskScript:
    """How tasks whose command contains `word` end: exit code, log lines, reads before they stop."""

    exit_code: int | None = 0
    logs: tuple[str, ...] = ()
    polls: int = 1
    reason: str = ""


@dataclass(frozen=True)
class Change:
    """One write to the world, in order: ("weights", {...}) or ("slot", {"slot", "revision", "count"})."""

    kind: str
    what: dict[str, object]


class MemoryPlatform:
    def __init__(self, *, rollout_polls: int = 1):
        self.services: dict[tuple[str, str], FakeService] = {}
        self.revisions: dict[str, dict[str, str]] = {}  # revision id -> {container name: image}
        self.revision_keys: dict[str, tuple[str, str]] = {}  # revision id -> (key, base) it was made for
        self.rollout_polls = rollout_polls  # an update completes at the rollout() call after this many
        self.history: list[Change] = []
        self.weight_history: list[dict[str, int]] = []  # the weights after every set_weights, in order
        self.calls: list[str] = []
        self._faults: dict[str, list[PlatformError]] = {}
        self._lost: dict[str, list[Exception]] = {}
        self._failing_rollouts: dict[tuple[str, str, str], str] = {}
        self.tasks: list[FakeTask] = []  # every one-off task started, in order
        self._task_scripts: list[tuple[str, str | None, TaskScript]] = []

    # ---------------------------------------------------------------------------------------- setup

    def add_service(
        self,
        target: Target,
        image: str,
        *,
        live: str | None = None,
        count: int = 2,
        idle_image: str | None = None,
        drain_seconds: float = 0.0,
    ) -> None:
        """The service in the target's environment, `image` running with `count` healthy instances in the
        live slot (the first slot unless named); the other slot runs `idle_image` (default: the same
        revision) with no instances."""
        live = live or target.slots[0]
        base = self._revision(target, {target.service.container: image})
        slots = {}
        for s in target.slots:
            if s == live:
                slots[s] = FakeSlot(base, count, count)
            else:
                rev = (
                    base
                    if idle_image is None
                    else self._revision(target, {target.service.container: idle_image})
                )
                slots[s] = FakeSlot(rev)
        weights = {s: 100 if s == live else 0 for s in target.slots}
        self.services[_key(target)] = FakeService(slots, weights, drain_seconds)

    def _revision(self, target: Target, containers: dict[str, str]) -> str:
        family = target.task_family
        number = 1 + sum(1 for r in self.revisions if r.startswith(f"{family}:"))
        revision = f"{family}:{number}"
        self.revisions[revision] = dict(containers)
        return revision

    def fail(self, operation: str, *errors: PlatformError) -> None:
        """The next calls of `operation` (a method name, e.g. "set_weights") raise these, one each."""
        self._faults.setdefault(operation, []).extend(errors)

    def lose(self, operation: str, *errors: Exception) -> None:
        """The next calls of `operation` take effect, then raise these (one each) instead of answering:
        the write happened, the caller never hears of it."""
        self._lost.setdefault(operation, []).extend(errors)

    def fail_rollouts(self, target: Target, image: str, reason: str) -> None:
        """Every rollout of a revision running `image` fails with `reason`."""
        self._failing_rollouts[(target.service.name, target.env.name, image)] = reason

    def script_tasks(self, word: str, script: TaskScript, image: str | None = None) -> None:
        """Tasks whose command has `word` (and, if given, running `image`) end as `script` says (the latest
        matching script wins; unscripted tasks exit 0 after one read)."""
        self._task_scripts.append((word, image, script))

    def _script(self, command: tuple[str, ...], image: str) -> TaskScript:
        for word, wanted, script in reversed(self._task_scripts):
            if word in command and (wanted is None or wanted == image):
                return script
        return TaskScript()

    def set_health(self, target: Target, slot: str, state: str | None, reason: str | None = None) -> None:
        """Every target of the slot in `state` from now on (None: back to healthy when running)."""
        self.slot(target, slot).forced = None if state is None else (state, reason)

    def service(self, target: Target) -> FakeService:
        return self.services[_key(target)]

    def slot(self, target: Target, slot: str) -> FakeSlot:
        return self.service(target).slots[slot]

    def image_of(self, target: Target, slot: str) -> str | None:
        return self.revisions.get(self.slot(target, slot).revision, {}).get(target.service.container)

    def _enter(self, operation: str) -> None:
        self.calls.append(operation)
        pending = self._faults.get(operation)
        if pending:
            raise pending.pop(0)

    def _leave(self, operation: str) -> None:
        lost = self._lost.get(operation)
        if lost:
            raise lost.pop(0)

    # ------------------------------------------------------------------------------------- Platform

    async def weights(self, target: Target) -> dict[str, int]:
        self._enter("weights")
        return dict(self.service(target).weights)

    async def live_slot(self, target: Target) -> str:
        self._enter("live_slot")
        weights = self.service(target).weights
        return max(target.slots, key=lambda s: (weights.get(s, 0), s == target.slots[0]))

    async def running(self, target: Target, slot: str | None = None) -> SlotState:
        slot = slot if slot is not None else await self.live_slot(target)
        self._enter("running")
        fs = self.slot(target, slot)
        image = self.revisions.get(fs.revision, {}).get(target.service.container) if fs.revision else None
        return SlotState(slot, fs.revision, image, fs.desired, fs.running)

    async def register_revision(self, target: Target, base: str, image: str, *, key: str) -> str:
        self._enter("register_revision")
        containers = self.revisions.get(base)
        if containers is None or target.service.container not in containers:
            raise PlatformError(
                "RegisterRevision", f"revision {base} has no container {target.service.container!r}"
            )
        revision = self._revision(target, {**containers, target.service.container: image})
        self.revision_keys[revision] = (key, base)
        self._leave("register_revision")
        return revision

    async def find_revision(self, target: Target, base: str, image: str, key: str) -> str | None:
        self._enter("find_revision")
        for revision in reversed(self.revisions):  # newest first
            if (
                self.revision_keys.get(revision) == (key, base)
                and self.revisions[revision].get(target.service.container) == image
            ):
                return revision
        return None

    async def update_slot(
        self, target: Target, slot: str, *, revision: str | None = None, count: int | None = None
    ) -> None:
        self._enter("update_slot")
        fs = self.slot(target, slot)
        if revision is not None and revision not in self.revisions:
            raise PlatformError("UpdateSlot", f"no revision {revision}")
        fs.revision = revision if revision is not None else fs.revision
        fs.desired = count if count is not None else fs.desired
        fs.state, fs.reason, fs.polls_left = "IN_PROGRESS", "", self.rollout_polls
        self.history.append(Change("slot", {"slot": slot, "revision": revision, "count": count}))

    async def rollout(self, target: Target, slot: str) -> Rollout:
        self._enter("rollout")
        fs = self.slot(target, slot)
        if fs.state == "IN_PROGRESS":
            if fs.polls_left > 0:
                fs.polls_left -= 1
            else:
                self._finish_rollout(target, fs)
        return Rollout(fs.revision, fs.state, fs.reason, fs.desired, fs.running, 0)

    def _finish_rollout(self, target: Target, fs: FakeSlot) -> None:
        image = self.revisions.get(fs.revision, {}).get(target.service.container, "")
        failing = self._failing_rollouts.get((target.service.name, target.env.name, image))
        if failing is not None and fs.desired > 0:
            fs.state, fs.reason, fs.running, fs.failed_tasks = "FAILED", failing, 0, True
            return
        fs.state, fs.running, fs.failed_tasks = "COMPLETED", fs.desired, False

    async def target_health(self, target: Target, slot: str) -> list[TargetHealth]:
        self._enter("target_health")
        return self.slot(target, slot).health(slot)

    async def set_weights(self, target: Target, weights: Mapping[str, int]) -> None:
        self._enter("set_weights")
        unknown = set(weights) - set(target.slots)
        if unknown:
            raise PlatformError("SetWeights", f"no slot {', '.join(sorted(unknown))}")
        self.service(target).weights.update({s: int(w) for s, w in weights.items()})
        self.weight_history.append(dict(self.service(target).weights))
        self.history.append(Change("weights", dict(self.service(target).weights)))

    async def drain_seconds(self, target: Target, slot: str) -> float:
        self._enter("drain_seconds")
        return self.service(target).drain_seconds

    async def metric_scope(self, target: Target, slot: str) -> MetricScope:
        self._enter("metric_scope")
        return MetricScope((("service", target.service.name), ("env", target.env.name), ("slot", slot)))

    async def run_task(
        self,
        target: Target,
        revision: str,
        command: Sequence[str],
        *,
        key: str,
        environment: Mapping[str, str] | None = None,
    ) -> str:
        self._enter("run_task")
        containers = self.revisions.get(revision)
        if containers is None or target.service.container not in containers:
            raise PlatformError(
                "RunTask", f"revision {revision} has no container {target.service.container!r}"
            )
        image = containers[target.service.container]
        script = self._script(tuple(command), image)
        task = FakeTask(
            id=f"task/{target.env.name}/{len(self.tasks) + 1}",
            key=key,
            revision=revision,
            image=image,
            command=tuple(command),
            environment=dict(environment or {}),
            exit_code=script.exit_code,
            logs=list(script.logs),
            polls_left=script.polls,
            reason=script.reason,
        )
        self.tasks.append(task)
        self.history.append(Change("task", {"task": task.id, "command": task.command, "image": image}))
        self._leave("run_task")
        return task.id

    async def find_task(self, target: Target, key: str) -> str | None:
        self._enter("find_task")
        return next((t.id for t in reversed(self.tasks) if t.key == key), None)

    async def task(self, target: Target, task: str) -> TaskRun:
        self._enter("task")
        t = next((t for t in self.tasks if t.id == task), None)
        if t is None:
            raise PlatformError("DescribeTasks", f"no task {task}")
        if t.status != "STOPPED":
            t.polls_left -= 1
            t.status = "STOPPED" if t.polls_left <= 0 else "RUNNING"
        stopped = t.status == "STOPPED"
        return TaskRun(t.id, t.status, t.exit_code if stopped else None, t.reason if stopped else "")

    async def task_logs(self, target: Target, task: str, limit: int = 20) -> list[str]:
        self._enter("task_logs")
        t = next((t for t in self.tasks if t.id == task), None)
        return list(t.logs[-limit:]) if t is not None else []


def _key(target: Target) -> tuple[str, str]:
    return (target.service.name, target.env.name)
