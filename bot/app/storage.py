"""The store as the app layer sees it: every call is awaited (the adapter runs it on the store's one
thread). bot.adapters.store.aio.AsyncStore implements it over SQLite; the app types against this."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, overload

from bot.domain.checklist import Approval, ItemState
from bot.domain.events import DomainEvent, OutboxEntry
from bot.domain.flags import FlagRecord, FlagState
from bot.domain.model import Alert, Amendment, Deployment, Event, LockInfo, StoredAnswer
from bot.domain.pipelines import Pipeline, Stage
from bot.domain.windows import Freeze


@dataclass(frozen=True)
class PageTrouble:
    """An alert's page on its way to PagerDuty (the store's page_attempts row): `failing_since` the clock
    instant the present run of failures began (None: not failing), `problem` the last failure's reason,
    `refused` the action PagerDuty rejected as malformed, `warned` whether "paging is failing" was said."""

    alert_id: int
    deployment_id: int
    action: str | None
    attempts: int
    failing_since: float | None
    first_failed: float | None
    problem: str | None
    refused: str | None
    warned: bool
    delivered: tuple[str, ...]


class Storage(Protocol):
    """Deployments and their transitions, locks, checklist, alerts, request claims, freezes, the outbox.

    Writes return what a caller would otherwise read back: `transition`, `save_progress` and `record`
    (with a deployment id) return the deployment as it now is."""

    async def create_deployment(
        self,
        *,
        service: str,
        env: str,
        version: str | None,
        strategy: str,
        kind: str,
        requested_by: str,
        reason: str | None = None,
        plan: list[dict] | None = None,
        channel: str | None = None,
        previous_version: str | None = None,
        context: dict | None = None,
        request_key: str | None = None,
        events: Sequence[DomainEvent] = (),
    ) -> Deployment | LockInfo: ...
    async def transition(
        self,
        deployment_id: int,
        action: str,
        actor: str,
        details: dict | None = None,
        outcome: str | None = None,
        events: Sequence[DomainEvent] = (),
    ) -> Deployment: ...
    async def start_as_seen(  # the start, only if version and strategy are as `seen` (Conflict)
        self, seen: Deployment, actor: str, events: Sequence[DomainEvent] = ()
    ) -> Deployment: ...
    async def save_progress(
        self,
        deployment_id: int,
        *,
        step_index: int | None = None,
        context: dict | None = None,
        version: str | None = None,
        previous_version: str | None = None,
        plan: list[dict] | None = None,
        event: tuple[str, str, dict] | None = None,
        events: Sequence[DomainEvent] = (),
        audit: Sequence[tuple[str, str, dict]] = (),
    ) -> Deployment: ...
    async def set_message(self, deployment_id: int, channel: str, ts: str) -> None: ...
    async def record_first_post_attempt(self, deployment_id: int, at: float) -> None: ...
    async def first_post_attempt(self, deployment_id: int) -> float | None: ...
    async def unconfirmed_first_posts(self) -> list[int]: ...
    async def lock(self, service: str, env: str, holder: str, reason: str) -> LockInfo | None: ...
    async def unlock(self, service: str, env: str, actor: str) -> LockInfo | None: ...
    async def release_stale_locks(self) -> list[LockInfo]: ...
    async def set_item(
        self, deployment_id: int, item_id: str, done: bool, by: str, evidence: str | None = None
    ) -> ItemState: ...
    async def items(self, deployment_id: int) -> dict[str, ItemState]: ...
    async def approve(self, deployment_id: int, user: str) -> None: ...
    async def approvals(self, deployment_id: int) -> list[Approval]: ...
    async def amend(
        self,
        deployment_id: int,
        actor: str,
        *,
        version: str | None,
        strategy: str,
        plan: list[dict],
        events: Sequence[DomainEvent] = (),
    ) -> Deployment: ...
    async def scheduled(self) -> list[Deployment]: ...
    async def overview(self) -> tuple[list[Deployment], list[LockInfo]]: ...
    async def locks(self) -> list[LockInfo]: ...
    async def events(
        self, deployment_id: int | None = None, since: str | None = None, service: str | None = None
    ) -> list[Event]: ...
    async def active(self) -> list[Deployment]: ...
    async def in_flight(self) -> list[Deployment]: ...
    async def history(self, service: str, env: str | None = None, limit: int = 10) -> list[Deployment]: ...
    async def latest(self, service: str | None = None, limit: int = 10) -> list[Deployment]: ...
    async def last_succeeded(
        self, service: str, env: str, before: int | None = None
    ) -> Deployment | None: ...
    async def append_events(self, deployment_id: int | None, events: Sequence[DomainEvent]) -> list[int]: ...
    def on_append(self, listener: Callable[[], None]) -> Callable[[], None]: ...
    async def outbox_after(self, consumer: str, limit: int = 100) -> list[OutboxEntry]: ...
    async def delivered(self, consumer: str) -> int: ...
    async def mark_delivered(self, consumer: str, outbox_id: int) -> int: ...
    async def raise_alert(
        self,
        deployment_id: int,
        event: str,
        level: str,
        text: str,
        *,
        escalate_at: float | None = None,
        key: str | None = None,
        raised_ts: float | None = None,
    ) -> Alert | None: ...
    async def alert(self, alert_id: int) -> Alert: ...
    async def add_alert_message(self, alert_id: int, channel: str, ts: str) -> Alert: ...
    async def acknowledge_alert(self, alert_id: int, user: str) -> tuple[bool, Alert]: ...
    async def resolve_alerts(
        self, alert_ids: list[int], resolution: str, stop_escalation: bool
    ) -> list[Alert]: ...
    async def open_alerts(
        self, deployment_id: int | None = None, service: str | None = None, env: str | None = None
    ) -> list[Alert]: ...
    async def mark_paged(self, alert_id: int, action: str) -> None: ...
    async def unpaged_alerts(self) -> list[Alert]: ...
    async def pages_owed(self, deployment_id: int | None = None) -> list[tuple[Alert, list[str]]]: ...
    async def page_attempt(self, alert_id: int, action: str) -> None: ...
    async def page_failed(
        self, alert_id: int, action: str, problem: str, refused: bool = False
    ) -> PageTrouble: ...
    async def page_trouble(self, alert_id: int) -> PageTrouble | None: ...
    async def warn_paging(self, alert_id: int) -> bool: ...
    async def unacknowledged_alerts(self, level: str = "critical") -> list[Alert]: ...
    async def due_escalations(self, now: float) -> list[Alert]: ...
    async def next_escalation_due(self) -> float | None: ...
    async def claim_escalation(self, alert_id: int, round_: int, next_at: float | None) -> bool: ...
    async def confirm_escalation(self, alert_id: int, round_: int, details: dict | None = None) -> bool: ...
    async def in_doubt_escalations(self) -> list[Alert]: ...
    async def claim_request(
        self, key: str, now: float, keep_seconds: float = 3600.0, abandoned_seconds: float = 15.0
    ) -> StoredAnswer | None: ...
    async def answer_request(self, key: str, status: int, content_type: str, body: str) -> None: ...
    async def answered(self, key: str) -> StoredAnswer | None: ...
    async def add_freeze(self, freeze: Freeze) -> Freeze: ...
    async def lift_freezes(self, env: str, actor: str) -> int: ...
    async def freezes(self) -> list[Freeze]: ...
    async def flag_states(self, env: str | None = None) -> list[FlagRecord]: ...
    async def flag_state(self, env: str, key: str) -> FlagRecord: ...
    async def flags_revision(self) -> int: ...
    async def set_flag(
        self,
        env: str,
        key: str,
        state: FlagState,
        *,
        expected_revision: int | None,
        actor: str,
        action: str,
        details: dict[str, Any],
        deployment_id: int | None = None,
        events: Sequence[DomainEvent] = (),
        unless_killed: bool = False,
    ) -> FlagRecord: ...
    async def flag_changes(self, env: str, key: str, limit: int = 10) -> list[Event]: ...
    async def rehearsal(self, service: str, env: str, version: str) -> Event | None: ...
    async def create_pipeline(
        self,
        *,
        name: str,
        service: str,
        version: str,
        requested_by: str,
        roles: Sequence[str],
        stages: Sequence[Stage],
        channel: str | None = None,
        request_key: str | None = None,
    ) -> Pipeline: ...
    async def save_pipeline(
        self,
        p: Pipeline,
        *,
        actor: str,
        action: str,
        details: dict[str, Any] | None = None,
        deployment_id: int | None = None,
        events: Sequence[DomainEvent] = (),
    ) -> Pipeline: ...
    async def pipeline(self, pipeline_id: int) -> Pipeline: ...
    async def find_pipeline(self, pipeline_id: int) -> Pipeline | None: ...
    async def running_pipelines(self) -> list[Pipeline]: ...
    async def latest_pipelines(self, service: str | None = None, limit: int = 10) -> list[Pipeline]: ...
    async def pipeline_events(self, pipeline_id: int) -> list[Event]: ...
    async def get(self, deployment_id: int) -> Deployment: ...
    async def find(self, deployment_id: int) -> Deployment | None: ...
    async def lock_info(self, service: str, env: str) -> LockInfo | None: ...
    @overload
    async def record(
        self,
        deployment_id: int,
        actor: str,
        action: str,
        details: dict | None = None,
        events: Sequence[DomainEvent] = (),
    ) -> Deployment: ...
    @overload
    async def record(
        self,
        deployment_id: None,
        actor: str,
        action: str,
        details: dict | None = None,
        events: Sequence[DomainEvent] = (),
    ) -> None: ...
    async def request_or_amend_many(
        self, requests: Sequence[Mapping[str, Any]]
    ) -> list[Deployment | LockInfo | Amendment | Exception]: ...
    async def request_or_amend(
        self,
        *,
        service: str,
        env: str,
        version: str | None,
        strategy: str,
        kind: str,
        requested_by: str,
        reason: str | None = None,
        plan: list[dict] | None = None,
        channel: str | None = None,
        previous_version: str | None = None,
        context: dict | None = None,
        request_key: str | None = None,
        events: Sequence[DomainEvent] = (),
        amend_events: Sequence[DomainEvent] | None = None,
        amendable: bool = True,
    ) -> Deployment | LockInfo | Amendment: ...
