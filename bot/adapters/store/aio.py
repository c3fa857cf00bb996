"""The one thread boundary in front of the store: every call runs on the store's own thread, so the event
loop never blocks on SQLite. AsyncStore implements bot.app.storage.Storage: one typed `async def` per
Store method, each a `call` of it on that thread."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, ParamSpec, TypeVar, overload

from bot.adapters.store.aio_leases import AsyncLeases
from bot.adapters.store.aio_pipelines import AsyncPipelines
from bot.adapters.store.sqlite import Store
from bot.adapters.store.thread import StoreThread
from bot.app.storage import PageTrouble, Storage
from bot.domain.checklist import Approval, ItemState
from bot.domain.events import DomainEvent, OutboxEntry
from bot.domain.flags import FlagRecord, FlagState
from bot.domain.model import Alert, Amendment, Deployment, Event, LockInfo, StoredAnswer
from bot.domain.windows import Freeze

P = ParamSpec("P")
R = TypeVar("R")


class AsyncStore(AsyncLeases, AsyncPipelines):
    """The store for async code: every call runs on one dedicated thread (sqlite's one thread boundary)."""

    def __init__(self, store: Store):
        self.sync = store
        self._thread = StoreThread()
        self._appended: list[Callable[[], None]] = []

    def on_append(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call `listener` (on the event loop) after each write that appended outbox events: the nudge
        that wakes the outbox's consumers. Returns the function that unsubscribes it."""
        self._appended.append(listener)
        return lambda: self._appended.remove(listener) if listener in self._appended else None

    async def _write(
        self, appended: Sequence[DomainEvent], fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs
    ) -> R:
        """`fn` on the store's thread; the outbox's readers woken if it appended any of `appended`."""
        if not appended:
            return await self.call(fn, *args, **kwargs)

        def run() -> tuple[R, bool]:
            before = self.sync.appended_total
            return fn(*args, **kwargs), self.sync.appended_total != before

        result, wrote = await self._thread.submit(run)
        if wrote:
            for listener in list(self._appended):
                listener()
        return result

    async def call(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        return await self._thread.submit(lambda: fn(*args, **kwargs))

    def later(self, fn: Callable[P, object], *args: P.args, **kwargs: P.kwargs) -> None:
        """Run `fn` on the store's thread without waiting for it. The thread takes calls in order, so
        every call made after this one sees what it wrote."""
        self._thread.submit_nowait(lambda: fn(*args, **kwargs), getattr(fn, "__name__", "call"))

    def close(self) -> None:
        self._thread.close()
        self.sync.close()

    # ------------------------------------------------------------- the store's methods, one each

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
    ) -> Deployment | LockInfo:
        return await self._write(
            events,
            self.sync.create_deployment,
            service=service,
            env=env,
            version=version,
            strategy=strategy,
            kind=kind,
            requested_by=requested_by,
            reason=reason,
            plan=plan,
            channel=channel,
            previous_version=previous_version,
            context=context,
            request_key=request_key,
            events=events,
        )

    async def transition(
        self,
        deployment_id: int,
        action: str,
        actor: str,
        details: dict | None = None,
        outcome: str | None = None,
        events: Sequence[DomainEvent] = (),
    ) -> Deployment:
        return await self._write(
            events, self.sync.transition, deployment_id, action, actor, details, outcome, events
        )

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
    ) -> Deployment:
        return await self._write(
            events,
            self.sync.save_progress,
            deployment_id,
            step_index=step_index,
            context=context,
            version=version,
            previous_version=previous_version,
            plan=plan,
            event=event,
            events=events,
            audit=audit,
        )

    async def set_message(self, deployment_id: int, channel: str, ts: str) -> None:
        return await self.call(self.sync.set_message, deployment_id, channel, ts)

    async def record_first_post_attempt(self, deployment_id: int, at: float) -> None:
        return await self.call(self.sync.record_first_post_attempt, deployment_id, at)

    async def first_post_attempt(self, deployment_id: int) -> float | None:
        return await self.call(self.sync.first_post_attempt, deployment_id)

    async def unconfirmed_first_posts(self) -> list[int]:
        return await self.call(self.sync.unconfirmed_first_posts)

    async def lock(self, service: str, env: str, holder: str, reason: str) -> LockInfo | None:
        return await self.call(self.sync.lock, service, env, holder, reason)

    async def unlock(self, service: str, env: str, actor: str) -> LockInfo | None:
        return await self.call(self.sync.unlock, service, env, actor)

    async def release_stale_locks(self) -> list[LockInfo]:
        return await self.call(
            self.sync.release_stale_locks,
        )

    async def set_item(
        self, deployment_id: int, item_id: str, done: bool, by: str, evidence: str | None = None
    ) -> ItemState:
        return await self.call(self.sync.set_item, deployment_id, item_id, done, by, evidence)

    async def items(self, deployment_id: int) -> dict[str, ItemState]:
        return await self.call(self.sync.items, deployment_id)

    async def approve(self, deployment_id: int, user: str) -> None:
        return await self.call(self.sync.approve, deployment_id, user)

    async def approvals(self, deployment_id: int) -> list[Approval]:
        return await self.call(self.sync.approvals, deployment_id)

    async def amend(
        self,
        deployment_id: int,
        actor: str,
        *,
        version: str | None,
        strategy: str,
        plan: list[dict],
        events: Sequence[DomainEvent] = (),
    ) -> Deployment:
        return await self._write(
            events,
            self.sync.amend,
            deployment_id,
            actor,
            version=version,
            strategy=strategy,
            plan=plan,
            events=events,
        )

    async def scheduled(self) -> list[Deployment]:
        return await self.call(
            self.sync.scheduled,
        )

    async def overview(self) -> tuple[list[Deployment], list[LockInfo]]:
        return await self.call(
            self.sync.overview,
        )

    async def locks(self) -> list[LockInfo]:
        return await self.call(
            self.sync.locks,
        )

    async def events(
        self, deployment_id: int | None = None, since: str | None = None, service: str | None = None
    ) -> list[Event]:
        return await self.call(self.sync.events, deployment_id, since, service)

    async def active(self) -> list[Deployment]:
        return await self.call(
            self.sync.active,
        )

    async def in_flight(self) -> list[Deployment]:
        return await self.call(
            self.sync.in_flight,
        )

    async def history(self, service: str, env: str | None = None, limit: int = 10) -> list[Deployment]:
        return await self.call(self.sync.history, service, env, limit)

    async def latest(self, service: str | None = None, limit: int = 10) -> list[Deployment]:
        return await self.call(self.sync.latest, service, limit)

    async def last_succeeded(self, service: str, env: str, before: int | None = None) -> Deployment | None:
        return await self.call(self.sync.last_succeeded, service, env, before)

    async def append_events(self, deployment_id: int | None, events: Sequence[DomainEvent]) -> list[int]:
        return await self._write(events, self.sync.append_events, deployment_id, events)

    async def outbox_after(self, consumer: str, limit: int = 100) -> list[OutboxEntry]:
        return await self.call(self.sync.outbox_after, consumer, limit)

    async def delivered(self, consumer: str) -> int:
        return await self.call(self.sync.delivered, consumer)

    async def mark_delivered(self, consumer: str, outbox_id: int) -> int:
        return await self.call(self.sync.mark_delivered, consumer, outbox_id)

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
    ) -> Alert | None:
        return await self.call(
            self.sync.raise_alert,
            deployment_id,
            event,
            level,
            text,
            escalate_at=escalate_at,
            key=key,
            raised_ts=raised_ts,
        )

    async def alert(self, alert_id: int) -> Alert:
        return await self.call(self.sync.alert, alert_id)

    async def add_alert_message(self, alert_id: int, channel: str, ts: str) -> Alert:
        return await self.call(self.sync.add_alert_message, alert_id, channel, ts)

    async def acknowledge_alert(self, alert_id: int, user: str) -> tuple[bool, Alert]:
        return await self.call(self.sync.acknowledge_alert, alert_id, user)

    async def resolve_alerts(
        self, alert_ids: list[int], resolution: str, stop_escalation: bool
    ) -> list[Alert]:
        return await self.call(self.sync.resolve_alerts, alert_ids, resolution, stop_escalation)

    async def open_alerts(
        self, deployment_id: int | None = None, service: str | None = None, env: str | None = None
    ) -> list[Alert]:
        return await self.call(self.sync.open_alerts, deployment_id, service, env)

    async def mark_paged(self, alert_id: int, action: str) -> None:
        if await self.call(self.sync.mark_paged, alert_id, action):  # "paging works again" in the outbox
            for listener in list(self._appended):
                listener()

    async def unpaged_alerts(self) -> list[Alert]:
        return await self.call(self.sync.unpaged_alerts)

    async def pages_owed(self, deployment_id: int | None = None) -> list[tuple[Alert, list[str]]]:
        return await self.call(self.sync.pages_owed, deployment_id)

    async def page_attempt(self, alert_id: int, action: str) -> None:
        return await self.call(self.sync.page_attempt, alert_id, action)

    async def page_failed(
        self, alert_id: int, action: str, problem: str, refused: bool = False
    ) -> PageTrouble:
        return await self.call(self.sync.page_failed, alert_id, action, problem, refused)

    async def page_trouble(self, alert_id: int) -> PageTrouble | None:
        return await self.call(self.sync.page_trouble, alert_id)

    async def warn_paging(self, alert_id: int) -> bool:
        warned = await self.call(self.sync.warn_paging, alert_id)
        if warned:  # it appended the warning to the outbox: wake its readers
            for listener in list(self._appended):
                listener()
        return warned

    async def unacknowledged_alerts(self, level: str = "critical") -> list[Alert]:
        return await self.call(self.sync.unacknowledged_alerts, level)

    async def due_escalations(self, now: float) -> list[Alert]:
        return await self.call(self.sync.due_escalations, now)

    async def next_escalation_due(self) -> float | None:
        return await self.call(
            self.sync.next_escalation_due,
        )

    async def claim_escalation(self, alert_id: int, round_: int, next_at: float | None) -> bool:
        return await self.call(self.sync.claim_escalation, alert_id, round_, next_at)

    async def confirm_escalation(self, alert_id: int, round_: int, details: dict | None = None) -> bool:
        return await self.call(self.sync.confirm_escalation, alert_id, round_, details)

    async def in_doubt_escalations(self) -> list[Alert]:
        return await self.call(
            self.sync.in_doubt_escalations,
        )

    async def claim_request(
        self, key: str, now: float, keep_seconds: float = 3600.0, abandoned_seconds: float = 15.0
    ) -> StoredAnswer | None:
        return await self.call(self.sync.claim_request, key, now, keep_seconds, abandoned_seconds)

    async def answer_request(self, key: str, status: int, content_type: str, body: str) -> None:
        return await self.call(self.sync.answer_request, key, status, content_type, body)

    async def answered(self, key: str) -> StoredAnswer | None:
        return await self.call(self.sync.answered, key)

    async def add_freeze(self, freeze: Freeze) -> Freeze:
        return await self.call(self.sync.add_freeze, freeze)

    async def lift_freezes(self, env: str, actor: str) -> int:
        return await self.call(self.sync.lift_freezes, env, actor)

    async def freezes(self) -> list[Freeze]:
        return await self.call(
            self.sync.freezes,
        )

    async def get(self, deployment_id: int) -> Deployment:
        return await self.call(self.sync.get, deployment_id)

    async def find(self, deployment_id: int) -> Deployment | None:
        return await self.call(self.sync.find, deployment_id)

    async def lock_info(self, service: str, env: str) -> LockInfo | None:
        return await self.call(self.sync.lock_info, service, env)

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

    async def record(
        self,
        deployment_id: int | None,
        actor: str,
        action: str,
        details: dict | None = None,
        events: Sequence[DomainEvent] = (),
    ) -> Deployment | None:
        return await self._write(events, self.sync.record, deployment_id, actor, action, details, events)

    async def request_or_amend_many(
        self, requests: Sequence[Mapping[str, Any]]
    ) -> list[Deployment | LockInfo | Amendment | Exception]:
        appended = [e for r in requests for e in (*r.get("events", ()), *(r.get("amend_events") or ()))]
        return await self._write(appended, self.sync.request_or_amend_many, requests)

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
    ) -> Deployment | LockInfo | Amendment:
        return await self._write(
            (*events, *(amend_events or ())),
            self.sync.request_or_amend,
            amendable=amendable,
            service=service,
            env=env,
            version=version,
            strategy=strategy,
            kind=kind,
            requested_by=requested_by,
            reason=reason,
            plan=plan,
            channel=channel,
            previous_version=previous_version,
            context=context,
            request_key=request_key,
            events=events,
            amend_events=amend_events,
        )

    # ------------------------------------------------------------------------------ feature flags

    async def flag_states(self, env: str | None = None) -> list[FlagRecord]:
        return await self.call(self.sync.flag_states, env)

    async def flag_state(self, env: str, key: str) -> FlagRecord:
        return await self.call(self.sync.flag_state, env, key)

    async def flags_revision(self) -> int:
        return await self.call(self.sync.flags_revision)

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
    ) -> FlagRecord:
        return await self._write(
            events,
            self.sync.set_flag,
            env,
            key,
            state,
            expected_revision=expected_revision,
            actor=actor,
            action=action,
            details=details,
            deployment_id=deployment_id,
            events=events,
            unless_killed=unless_killed,
        )

    async def flag_changes(self, env: str, key: str, limit: int = 10) -> list[Event]:
        return await self.call(self.sync.flag_changes, env, key, limit)

    async def rehearsal(self, service: str, env: str, version: str) -> Event | None:
        return await self.call(self.sync.rehearsal, service, env, version)


def as_storage(store: AsyncStore) -> Storage:
    """AsyncStore as the app's Storage (mypy checks here that it implements every method, typed alike)."""
    return store
