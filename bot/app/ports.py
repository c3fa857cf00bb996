"""The protocols the plans and use cases speak to, and the records that cross them.

A platform runs a service in one or two *slots* (blue/green, or one "main" slot); each slot runs one
*revision* (an immutable description of what to run, made from the running one with a new image) with
some number of instances; *weights* split the traffic between the slots. Metrics are read per slot over a
window. Adapters implement these protocols (bot/adapters/platforms/, bot/adapters/metrics/): ECS + ALB
and CloudWatch for real, in-memory fakes for unit tests. Nothing here knows AWS; nothing crossing these
protocols is a raw API answer. Every failure of a platform or metrics call is a PlatformError."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

from bot.config.flags import FlagMetrics
from bot.config.model import Target
from bot.domain.analysis import GroupMetrics

__all__ = [
    "Alarm",
    "Backups",
    "Snapshot",
    "TaskRun",
    "GroupMetrics",
    "Http",
    "HttpError",
    "MetricScope",
    "Metrics",
    "Platform",
    "PlatformError",
    "Rollout",
    "SlotState",
    "TargetHealth",
    "Timer",
]


class PlatformError(Exception):
    """A platform or metrics call that failed (after the adapter's retries); the message is safe to show
    to people. `operation` names the call as the platform knows it, `code` is its error code if any."""

    def __init__(self, operation: str, message: str, code: str | None = None):
        self.operation, self.code = operation, code
        super().__init__(f"{operation} failed: {message}")


HealthState = Literal["healthy", "unhealthy", "initial", "draining", "unused", "unavailable"]
RolloutState = Literal["IN_PROGRESS", "COMPLETED", "FAILED"]


@dataclass(frozen=True)
class TargetHealth:
    """One instance behind a slot's traffic, as the load balancer sees it."""

    id: str
    state: str  # a HealthState; platforms may report others, which count as not healthy
    reason: str | None = None


@dataclass(frozen=True)
class Rollout:
    """The state of a slot's newest rollout."""

    revision: str
    state: str  # a RolloutState
    reason: str
    desired: int
    running: int
    active_deployments: int  # older rollouts still draining


@dataclass(frozen=True)
class SlotState:
    """What a slot runs now: its revision, the service container's image in it, and instance counts.
    `revision` is "" when the slot runs nothing; `image` is None when the revision has no container of
    the service's name."""

    slot: str
    revision: str
    image: str | None
    desired: int
    running: int


@dataclass(frozen=True)
class MetricScope:
    """The labels that pick one slot's series in the metrics backend, in the backend's canonical order
    (for an ALB target group: TargetGroup, then LoadBalancer). Opaque to the plans."""

    labels: tuple[tuple[str, str], ...]

    def get(self, name: str) -> str | None:
        return next((v for k, v in self.labels if k == name), None)


@dataclass(frozen=True)
class Alarm:
    """A named alarm and its state (OK | ALARM | INSUFFICIENT_DATA)."""

    name: str
    state: str
    reason: str = ""


@dataclass(frozen=True)
class TaskRun:
    """A one-off task (a migration, integration tests): where it is (PENDING, RUNNING, STOPPED) and, once
    stopped, how it ended. `exit_code` None while running, or when it never ran (then `reason` says why:
    the image could not be pulled, no capacity). `started_at`/`stopped_at`: epoch seconds."""

    task: str
    status: str
    exit_code: int | None = None
    reason: str = ""
    started_at: float | None = None
    stopped_at: float | None = None

    @property
    def stopped(self) -> bool:
        return self.status == "STOPPED"


class Platform(Protocol):
    """Where a service runs: slots, revisions, rollouts, target health and traffic weights.

    `target` is the service in one environment (bot.settings.Target): its slots, names and settings."""

    async def weights(self, target: Target) -> dict[str, int]:
        """Every slot's share of the traffic now (slot -> weight), read fresh."""
        ...

    async def live_slot(self, target: Target) -> str:
        """The slot taking (most of) the traffic; the only slot of a single-slot service."""
        ...

    async def running(self, target: Target, slot: str | None = None) -> SlotState:
        """What `slot` (None: the live slot) runs now: revision, image, instance counts."""
        ...

    async def register_revision(self, target: Target, base: str, image: str, *, key: str) -> str:
        """A new revision like `base` (everything of it: settings, containers, tags) with the service
        container's image replaced, marked with `key` (the deployment it is for); returns its id. It
        always registers a new one: a caller that may have registered already (a crash between the call
        and saving its answer) asks find_revision first."""
        ...

    async def find_revision(self, target: Target, base: str, image: str, key: str) -> str | None:
        """The revision register_revision made from `base` with `image` for `key`, if there is one (among
        the service's newest revisions); None otherwise. Costs a few reads: only a resume asks."""
        ...

    async def update_slot(
        self, target: Target, slot: str, *, revision: str | None = None, count: int | None = None
    ) -> None:
        """The slot should run `revision` (if given) with `count` instances (if given): starts a rollout."""
        ...

    async def rollout(self, target: Target, slot: str) -> Rollout:
        """The slot's newest rollout."""
        ...

    async def target_health(self, target: Target, slot: str) -> list[TargetHealth]:
        """The slot's instances as its traffic's load balancer sees them."""
        ...

    async def set_weights(self, target: Target, weights: Mapping[str, int]) -> None:
        """Move traffic between the slots in one change (all or nothing)."""
        ...

    async def drain_seconds(self, target: Target, slot: str) -> float:
        """How long the load balancer keeps sending in-flight requests to a slot taken out of traffic
        (an ALB target group's deregistration delay)."""
        ...

    async def metric_scope(self, target: Target, slot: str) -> MetricScope:
        """The labels of the slot's traffic metrics, for Metrics."""
        ...

    async def run_task(
        self,
        target: Target,
        revision: str,
        command: Sequence[str],
        *,
        key: str,
        environment: Mapping[str, str] | None = None,
    ) -> str:
        """Run `revision` once, its service container's command replaced by `command` (and `environment`
        added), the way the service runs (its network, its role); marked with `key` (at most 36 letters,
        digits, - and _) so find_task finds it. Returns the task's id. It always starts a new one: a
        caller that may have started it already asks find_task first."""
        ...

    async def find_task(self, target: Target, key: str) -> str | None:
        """The task run_task started with `key` (running or recently stopped), None if there is none."""
        ...

    async def task(self, target: Target, task: str) -> TaskRun:
        """Where the task is now."""
        ...

    async def task_logs(self, target: Target, task: str, limit: int = 20) -> list[str]:
        """The last `limit` lines the task's service container logged, oldest first (none if it has no
        log configuration or logged nothing)."""
        ...


@dataclass(frozen=True)
class Snapshot:
    """A database backup: its id, the instance it is of, its status (creating, available, failed)."""

    id: str
    instance: str
    status: str
    created_at: datetime | None = None

    @property
    def available(self) -> bool:
        return self.status == "available"


class Backups(Protocol):
    """Database backups before a migration, and the way back from one (RDS snapshots). `account` as for
    Metrics: the environment's role, None for the bot's own."""

    async def create_snapshot(self, account: str | None, instance: str, snapshot_id: str) -> Snapshot:
        """Start a snapshot of `instance` named `snapshot_id`; one of that name already there is
        returned as it is (a retry after a lost answer makes no second one)."""
        ...

    async def snapshot(self, account: str | None, snapshot_id: str) -> Snapshot | None:
        """The snapshot now, None if there is none of that name."""
        ...

    async def restore(self, account: str | None, snapshot_id: str, instance: str) -> str:
        """Restore the snapshot to a NEW instance named `instance` (the old one is left as it is);
        returns the new instance's endpoint address, or its name while it has none yet."""
        ...


class Metrics(Protocol):
    """Traffic metrics and alarms. `account` is the environment's account (its role), None for the bot's
    own; every method is ONE backend request (its pages followed)."""

    async def slot_metrics(
        self,
        account: str | None,
        scopes: Mapping[str, MetricScope],
        start: datetime,
        end: datetime,
        latency_statistic: str = "Average",
    ) -> dict[str, GroupMetrics]:
        """Requests, 5XX errors and latency (`latency_statistic`) of every scope over the window, keyed
        like `scopes`; None values where the backend has no data."""
        ...

    async def slot_minutes(
        self,
        account: str | None,
        scopes: Mapping[str, MetricScope],
        start: datetime,
        end: datetime,
        latency_statistic: str = "Average",
    ) -> dict[str, dict[datetime, GroupMetrics]]:
        """Like slot_metrics, per minute from `start` to `end` (whole minutes): scope -> minute start ->
        numbers; a minute without any datapoint is absent. The sequential judge reads its looks this way."""
        ...

    async def flag_metrics(
        self,
        account: str | None,
        metrics: FlagMetrics,
        flag: str,
        env: str,
        variants: Sequence[str],
        start: datetime,
        end: datetime,
        latency_statistic: str = "Average",
    ) -> dict[str, GroupMetrics]:
        """Requests, errors and latency (ms) per variant of a flag, as applications publish them
        (`metrics` names the namespace, dimensions and metric names), keyed by variant."""
        ...

    async def alarms(self, account: str | None, names: Sequence[str]) -> list[Alarm]:
        """The named alarms that exist, in any state (a name matching none is simply absent)."""
        ...

    async def requests_per_hour(
        self, account: str | None, scopes: Sequence[MetricScope], start: datetime, end: datetime
    ) -> dict[datetime, float]:
        """Requests per hour summed across `scopes`: hour start (UTC) -> requests; hours without data
        are absent."""
        ...


class HttpError(Exception):
    """An HTTP request got no answer (refused, reset, timed out); the message says which, for people."""


class Http(Protocol):
    """Plain HTTP GETs for smoke checks and the http_status checklist item."""

    async def get(self, url: str, timeout_seconds: float = 10.0) -> tuple[int, str]:
        """(status, body text); raises HttpError when there is no answer."""
        ...


class Timer(Protocol):
    """Runs `on_due(key)` once at each key's due time (virtual epoch seconds of the clock); a due time
    missed while the process was busy or down is handed to `on_missed(key, due)`. The store is the
    source of truth: the caller rebuilds the jobs at start."""

    misfire_grace_seconds: float

    @property
    def running(self) -> bool: ...

    def bind(
        self,
        on_due: Callable[[str], Awaitable[None]],
        on_missed: Callable[[str, float], Awaitable[None]] | None = None,
    ) -> None: ...

    def start(self) -> None: ...

    def shutdown(self) -> None: ...

    def schedule(self, key: str, due_epoch: float) -> None: ...

    def cancel(self, key: str) -> bool: ...
