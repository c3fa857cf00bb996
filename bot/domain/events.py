"""Typed domain events: what a deployment's state change announces, written to the store's outbox in the
same transaction as the change (bot/adapters/store/outbox.py) and read back by the notifier, alerting and
PagerDuty. Facts only: no Slack markup, no wording (that lives in handlers/ui/). Each event knows its alert
level and the alert event name it is (alerts.EVENT_LEVELS), so nothing classifies events by their text.

Stdlib only; `kind` names each class in storage (`to_dict`/`from_dict` round-trip the fields)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import ClassVar, Literal, NamedTuple

Level = Literal["info", "warning", "critical"]
JsonValue = str | int | float | bool | None


@dataclass(frozen=True)
class DomainEvent:
    """The base of every event. Subclasses set `kind` (the stored name), `alert` (the alert event it is,
    a key of bot.domain.alerts.EVENT_LEVELS) and `base_level`; `level()` may refine it from fields."""

    kind: ClassVar[str] = ""
    alert: ClassVar[str] = "detail"
    base_level: ClassVar[Level] = "info"

    def level(self) -> Level:
        return self.base_level

    def alert_event(self) -> str:
        return self.alert

    def to_dict(self) -> dict[str, JsonValue]:
        return dict(asdict(self))

    @staticmethod
    def from_dict(kind: str, data: dict[str, JsonValue]) -> DomainEvent:
        """The event stored as (kind, to_dict()); ValueError for an unknown kind or wrong fields."""
        cls = EVENT_TYPES.get(kind)
        if cls is None:
            raise ValueError(f"unknown domain event kind {kind!r}")
        names = {f.name for f in fields(cls)}
        if set(data) != names:
            raise ValueError(f"{kind}: fields {sorted(data)} are not {sorted(names)}")
        event: DomainEvent = cls(**data)
        return event


# ------------------------------------------------------------------------------------ before start


@dataclass(frozen=True)
class Requested(DomainEvent):
    """A deployment was created (its message shows it)."""

    kind: ClassVar[str] = "requested"
    alert: ClassVar[str] = "requested"


@dataclass(frozen=True)
class EmergencyRequested(DomainEvent):
    """Broken glass: `by` skips the manual items and approvals, saying `reason`."""

    by: str
    reason: str
    rollback: bool = False
    kind: ClassVar[str] = "emergency_requested"
    alert: ClassVar[str] = "emergency_deploy"
    base_level: ClassVar[Level] = "critical"


@dataclass(frozen=True)
class Amended(DomainEvent):
    """The requester changed the version or strategy before it started (approvals no longer count)."""

    by: str
    version: str | None
    strategy: str
    kind: ClassVar[str] = "amended"


@dataclass(frozen=True)
class Approved(DomainEvent):
    by: str
    kind: ClassVar[str] = "approved"


@dataclass(frozen=True)
class Rejected(DomainEvent):
    by: str
    reason: str
    kind: ClassVar[str] = "rejected"
    alert: ClassVar[str] = "cancelled"
    base_level: ClassVar[Level] = "warning"


@dataclass(frozen=True)
class ApprovalWaiting(DomainEvent):
    kind: ClassVar[str] = "approval_waiting"
    alert: ClassVar[str] = "approval_waiting"
    base_level: ClassVar[Level] = "warning"


@dataclass(frozen=True)
class FreezeOverridden(DomainEvent):
    """`by` deploys during a freeze (`freeze_reason`: the freeze's), saying `reason`."""

    by: str
    freeze_reason: str
    reason: str = ""
    kind: ClassVar[str] = "freeze_overridden"
    alert: ClassVar[str] = "freeze_override"
    base_level: ClassVar[Level] = "critical"


@dataclass(frozen=True)
class Scheduled(DomainEvent):
    """It waits for its time (`run_at`, an ISO instant)."""

    run_at: str
    kind: ClassVar[str] = "scheduled"
    alert: ClassVar[str] = "requested"


@dataclass(frozen=True)
class WindowMissed(DomainEvent):
    """A scheduled deploy whose window passed (`why`): moved to the next one (`moved_to`, an ISO instant,
    shown in `tz`), or cancelled (`moved_to` None)."""

    moved_to: str | None
    why: str = ""
    tz: str = "UTC"
    kind: ClassVar[str] = "window_missed"
    alert: ClassVar[str] = "missed_window"
    base_level: ClassVar[Level] = "warning"


@dataclass(frozen=True)
class Refused(DomainEvent):
    """The gate refused to start it (a guard, or an error while checking it): cancelled, for `reason`."""

    reason: str
    kind: ClassVar[str] = "refused"
    alert: ClassVar[str] = "cancelled"
    base_level: ClassVar[Level] = "warning"


@dataclass(frozen=True)
class GateChanged(DomainEvent):
    """What the admission gate waits on changed (a check passed, an approval came in)."""

    kind: ClassVar[str] = "gate_changed"
    alert: ClassVar[str] = "requested"


# ------------------------------------------------------------------------------------------ running


@dataclass(frozen=True)
class Started(DomainEvent):
    kind: ClassVar[str] = "started"
    alert: ClassVar[str] = "started"


@dataclass(frozen=True)
class StepStarted(DomainEvent):
    """Step `index` (0-based) of the plan, or of the rollback plan (`rollback`), began."""

    index: int
    description: str
    rollback: bool = False
    kind: ClassVar[str] = "step_started"
    alert: ClassVar[str] = "step_reached"


@dataclass(frozen=True)
class Progress(DomainEvent):
    """The running step's live line (a countdown, a rollout's task count): shown on the message."""

    text: str
    kind: ClassVar[str] = "progress"
    alert: ClassVar[str] = "step_reached"


@dataclass(frozen=True)
class Detail(DomainEvent):
    """A line for the deployment's thread (a step's report)."""

    text: str
    kind: ClassVar[str] = "detail"


@dataclass(frozen=True)
class RestartResumed(DomainEvent):
    """The bot restarted and carries the deployment on from step `step_index` (0-based)."""

    step_index: int
    kind: ClassVar[str] = "restart_resumed"


@dataclass(frozen=True)
class SlowRollout(DomainEvent):
    detail: str
    kind: ClassVar[str] = "slow_rollout"
    alert: ClassVar[str] = "slow_rollout"
    base_level: ClassVar[Level] = "warning"


@dataclass(frozen=True)
class Paused(DomainEvent):
    """Paused: by a person (`by`), or by the bot asking `question`; `inconclusive`: an analysis could not
    decide, or a planned pause asks a person (a warning)."""

    question: str
    inconclusive: bool = False
    by: str | None = None
    kind: ClassVar[str] = "paused"
    alert: ClassVar[str] = "paused"

    def level(self) -> Level:
        return "warning" if self.inconclusive else "info"

    def alert_event(self) -> str:
        return "inconclusive_analysis" if self.inconclusive else "paused"


@dataclass(frozen=True)
class Resumed(DomainEvent):
    by: str
    kind: ClassVar[str] = "resumed"
    alert: ClassVar[str] = "started"


@dataclass(frozen=True)
class Promoted(DomainEvent):
    by: str
    full: bool
    kind: ClassVar[str] = "promoted"
    alert: ClassVar[str] = "started"


# ------------------------------------------------------------------------------------------- endings


@dataclass(frozen=True)
class Cancelled(DomainEvent):
    by: str
    kind: ClassVar[str] = "cancelled"
    alert: ClassVar[str] = "cancelled"


@dataclass(frozen=True)
class Aborted(DomainEvent):
    """`by` aborted it: it rolls back."""

    by: str
    kind: ClassVar[str] = "aborted"
    alert: ClassVar[str] = "aborted"
    base_level: ClassVar[Level] = "warning"


@dataclass(frozen=True)
class Succeeded(DomainEvent):
    """`version` is live (the service and environment are the deployment's)."""

    version: str | None = None
    kind: ClassVar[str] = "succeeded"
    alert: ClassVar[str] = "succeeded"


@dataclass(frozen=True)
class RollingBack(DomainEvent):
    """Rolling back: by a person (`automatic` False, a warning) or by the bot (critical)."""

    reason: str
    automatic: bool
    unhealthy_after_switch: bool = False
    kind: ClassVar[str] = "rolling_back"

    def level(self) -> Level:
        return "critical" if self.automatic else "warning"

    def alert_event(self) -> str:
        if not self.automatic:
            return "aborted"
        return "unhealthy_after_switch" if self.unhealthy_after_switch else "automatic_rollback"


@dataclass(frozen=True)
class RolledBack(DomainEvent):
    """Back where it was, after `reason`: on `back_on` (a version; None: the previous one), or
    `changed` False: nothing had changed yet."""

    reason: str
    back_on: str | None = None
    changed: bool = True
    kind: ClassVar[str] = "rolled_back"
    alert: ClassVar[str] = "rolled_back"


@dataclass(frozen=True)
class RollbackFailed(DomainEvent):
    """The rollback failed (`reason`); it was rolling back because of `after`. Written by versions
    before rollbacks kept trying (RollbackStuck); kept so their outbox rows and records still read."""

    reason: str
    after: str = ""
    kind: ClassVar[str] = "rollback_failed"
    alert: ClassVar[str] = "rollback_failed"
    base_level: ClassVar[Level] = "critical"


@dataclass(frozen=True)
class RollbackStuck(DomainEvent):
    """A rollback step failed (`reason`, at rollback step `step`) while traffic is not yet whole on the
    stable side; the bot keeps trying (attempt `attempt`, the next in `retry_seconds`) until it is, or a
    person acts. It was rolling back because of `after`."""

    reason: str
    after: str = ""
    step: str = ""
    attempt: int = 1
    retry_seconds: float = 0.0
    kind: ClassVar[str] = "rollback_stuck"
    alert: ClassVar[str] = "rollback_stuck"
    base_level: ClassVar[Level] = "critical"


@dataclass(frozen=True)
class RollbackRetried(DomainEvent):
    """A stuck rollback was tried again: by a person (`by`), or by the bot after `attempts` failed tries
    (`by` empty) when it got through."""

    by: str = ""
    attempts: int = 0
    kind: ClassVar[str] = "rollback_retried"


@dataclass(frozen=True)
class TrafficForced(DomainEvent):
    """A person (`by`) sent all traffic to the stable slot `slot` (running `version`) while a rollback
    was stuck; `running`/`desired`: that slot's tasks as AWS showed them."""

    by: str
    slot: str
    version: str
    running: int = 0
    desired: int = 0
    kind: ClassVar[str] = "traffic_forced"
    alert: ClassVar[str] = "traffic_forced"
    base_level: ClassVar[Level] = "warning"


@dataclass(frozen=True)
class TrafficRepaired(DomainEvent):
    """The deployment found traffic split (`was`, e.g. "blue 25%, green 75%") and first put all of it on
    `slot`, which runs `version`, the last version known good in the environment."""

    was: str
    slot: str
    version: str
    kind: ClassVar[str] = "traffic_repaired"
    alert: ClassVar[str] = "traffic_repaired"
    base_level: ClassVar[Level] = "warning"


@dataclass(frozen=True)
class DeployFailed(DomainEvent):
    """It failed for `reason`; `nothing_changed`: before any change to the service."""

    reason: str
    nothing_changed: bool = False
    kind: ClassVar[str] = "deploy_failed"
    alert: ClassVar[str] = "deploy_failed"
    base_level: ClassVar[Level] = "critical"


@dataclass(frozen=True)
class SnapshotRestoring(DomainEvent):
    """Broken glass after a migration: `by` asked for the deployment's pre-migration `snapshot` to be
    restored to a NEW instance `instance`, saying `reason`; the old instance is untouched."""

    by: str
    snapshot: str
    instance: str
    reason: str
    kind: ClassVar[str] = "snapshot_restoring"
    alert: ClassVar[str] = "snapshot_restoring"
    base_level: ClassVar[Level] = "critical"


@dataclass(frozen=True)
class MigrationUndoFailed(DomainEvent):
    """Traffic is back, but the migration's down failed (`reason`): the schema may be half-way; `snapshot`
    holds the data from before the migration (/deploy restore)."""

    reason: str
    snapshot: str = ""
    kind: ClassVar[str] = "migration_undo_failed"
    alert: ClassVar[str] = "migration_undo_failed"
    base_level: ClassVar[Level] = "critical"


EVENT_TYPES: dict[str, type[DomainEvent]] = {
    cls.kind: cls
    for cls in (
        Requested, EmergencyRequested, Amended, Approved, Rejected, ApprovalWaiting, FreezeOverridden,
        Scheduled, WindowMissed, Refused, GateChanged, Started, StepStarted, Progress, Detail,
        RestartResumed, SlowRollout, Paused, Resumed, Promoted, Cancelled, Aborted, Succeeded, RollingBack,
        RolledBack, RollbackFailed, RollbackStuck, RollbackRetried, TrafficForced, TrafficRepaired,
        DeployFailed, SnapshotRestoring, MigrationUndoFailed,
    )
}  # fmt: skip


# The events that end a deployment's trouble: its open alerts are resolved.
RECOVERY = (Succeeded, RolledBack)


class OutboxEntry(NamedTuple):
    """One event read from the outbox: its outbox id (the consumer's cursor), its deployment, the event."""

    id: int
    deployment_id: int | None
    event: DomainEvent


# ------------------------------------------------------------------------------------------ paging
# (appended after the registry: registered below)


@dataclass(frozen=True)
class PagingFailing(DomainEvent):
    """PagerDuty has not taken the `action` page of this deployment's incident for `seconds` (`problem`:
    "HTTP 500: …", "no answer: …"); `refused`: it rejected the event itself (a 400), so it is not retried.
    Said once per trouble (bot.adapters.store.alerts records it); the bot keeps trying unless refused."""

    action: str
    problem: str
    seconds: int
    refused: bool = False
    kind: ClassVar[str] = "paging_failing"
    base_level: ClassVar[Level] = "warning"


@dataclass(frozen=True)
class PagingRestored(DomainEvent):
    """PagerDuty takes this incident's pages again after a PagingFailing: `delivered` (the actions sent
    since the trouble began, space-separated, in order), `seconds` after the trouble began. A warning
    like the one it closes, so it reaches the same channels."""

    delivered: str
    seconds: int
    kind: ClassVar[str] = "paging_restored"
    base_level: ClassVar[Level] = "warning"


EVENT_TYPES.update({cls.kind: cls for cls in (PagingFailing, PagingRestored)})


# ------------------------------------------------------------------------------------ feature flags
# A flag's change is written with its audit event; one without a deployment (a person's immediate
# change, the kill switch) has no deployment message: the notifier posts it to the level's channels.


@dataclass(frozen=True)
class FlagChanged(DomainEvent):
    """`by` changed what `flag` answers in `env` (`summary`: what it does now, in plain words)."""

    flag: str
    env: str
    by: str
    summary: str
    revision: int = 0
    kind: ClassVar[str] = "flag_changed"
    alert: ClassVar[str] = "flag_changed"


@dataclass(frozen=True)
class FlagKilled(DomainEvent):
    """The kill switch: every evaluation of `flag` in `env` answers its off variant (`rollout`: the id
    of the rollout it stopped, 0 for none)."""

    flag: str
    env: str
    by: str
    reason: str = ""
    rollout: int = 0
    kind: ClassVar[str] = "flag_killed"
    alert: ClassVar[str] = "flag_killed"
    base_level: ClassVar[Level] = "warning"


FLAG_EVENTS = (FlagChanged, FlagKilled)
EVENT_TYPES.update({cls.kind: cls for cls in FLAG_EVENTS})
