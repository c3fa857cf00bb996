"""The store: deployments, the append-only event log, locks and the outbox, in SQLite (WAL) through
sqlite-utils, or in PostgreSQL through the same SQL (pg.py). Every state change is a compare-and-set on the
deployment's current state, checked against bot.machine, and appends its event in the same transaction:
the audit trail cannot miss a transition, and two writers cannot both move one deployment."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any, overload

from bot.adapters.store.alerts import AlertsMixin
from bot.adapters.store.base import StoreBase
from bot.adapters.store.flags import FlagsMixin
from bot.adapters.store.leases import LeasesMixin
from bot.adapters.store.messages import MessagesMixin
from bot.adapters.store.outbox import OutboxMixin
from bot.adapters.store.pipelines import PipelinesMixin
from bot.adapters.store.requests import RequestsMixin
from bot.adapters.store.tasks import TasksMixin
from bot.domain.checklist import Approval, ItemState
from bot.domain.errors import Conflict
from bot.domain.events import DomainEvent
from bot.domain.machine import ACTIVE, State, next_state
from bot.domain.model import Amendment, Deployment, Event, LockInfo

log = logging.getLogger(__name__)
DECIDE_ATTEMPTS = 3  # a request decided again after another writer overtook it (request_or_amend)

__all__ = ["Store", "StoreBase", "log"]


class Store(
    OutboxMixin,
    AlertsMixin,
    RequestsMixin,
    MessagesMixin,
    FlagsMixin,
    TasksMixin,
    PipelinesMixin,
    LeasesMixin,
    StoreBase,
):
    """Synchronous store (AsyncStore runs these methods on one thread). One class over one Database: deployments, transitions, locks, checklist and reads here; alerts
    (alerts.py), request claims and freezes (requests.py), the outbox (outbox.py), first-post attempts (messages.py),
    feature flags' states (flags.py), pipelines (pipelines.py) and leases (leases.py) are its parts."""

    # ---------------------------------------------------------------------------------------- writes

    def create_deployment(
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
        """Create a deployment holding the service+env lock, atomically; or return the lock's holder.

        With a request_key already used, the deployment it created is returned unchanged (Slack retries)."""
        with self.db.atomic():
            held = self._by_request_key(request_key) or self.lock_info(service, env)
            if held is not None:
                return held
            now = self.now()
            row = {
                "service": service,
                "env": env,
                "version": version,
                "strategy": strategy,
                "kind": kind,
                "requested_by": requested_by,
                "reason": reason,
                "state": State.REQUESTED.value,
                "plan": json.dumps(plan or []),
                "context": json.dumps(context or {}),
                "channel": channel,
                "previous_version": previous_version,
                "created_at": now,
                "updated_at": now,
                "request_key": request_key,
            }
            deployment_id = self._insert("deployments", row)
            try:
                lock = dict(service=service, env=env, deployment_id=deployment_id, holder=requested_by)
                self._insert_row("locks", dict(lock, reason=f"deployment #{deployment_id}", acquired_at=now))
            except self.integrity_errors:  # another process won between our read and insert
                raise Conflict(f"{service} in {env} was locked concurrently") from None
            self._event(
                deployment_id,
                requested_by,
                "request",
                None,
                State.REQUESTED,
                {"version": version, "strategy": strategy, "kind": kind, "reason": reason},
            )
            self._append_in_tx(deployment_id, events)
        return self.get(deployment_id)

    def _by_request_key(self, request_key: str | None) -> Deployment | None:
        """The deployment a request_key already created (a Slack retry), else None."""
        if request_key is None:
            return None
        rows = self._rows("SELECT * FROM deployments WHERE request_key = ?", [request_key])
        return Deployment.from_row(rows[0]) if rows else None

    def transition(
        self,
        deployment_id: int,
        action: str,
        actor: str,
        details: dict | None = None,
        outcome: str | None = None,
        events: Sequence[DomainEvent] = (),
    ) -> Deployment:
        """Move a deployment by a machine action; append its audit event and `events` (the outbox), in the
        same transaction; release the lock on a terminal state. Returns the deployment as it now is."""
        now = self.now()
        with self.db.atomic():
            current = self.get(deployment_id)
            target = next_state(current.state, action)
            values: dict[str, Any] = {"state": target.value, "updated_at": now}
            if outcome is not None:
                values["outcome"] = outcome
            if target.terminal:
                values["finished_at"] = now
            sets = ", ".join(f"{k} = ?" for k in values)
            moved = self._rows(  # the compare-and-set; the row as it now is comes back with it
                f"UPDATE deployments SET {sets} WHERE id = ? AND state = ? RETURNING *",
                [*values.values(), deployment_id, current.state.value],
            )
            if len(moved) != 1:
                raise Conflict(f"deployment #{deployment_id} changed state concurrently")
            self._event(deployment_id, actor, action, current.state, target, details)
            self._append_in_tx(deployment_id, events)
            if target.terminal:
                self.db.execute("DELETE FROM locks WHERE deployment_id = ?", [deployment_id])
        return Deployment.from_row(moved[0])

    @overload
    def record(
        self,
        deployment_id: int,
        actor: str,
        action: str,
        details: dict | None = None,
        events: Sequence[DomainEvent] = (),
    ) -> Deployment: ...

    @overload
    def record(
        self,
        deployment_id: None,
        actor: str,
        action: str,
        details: dict | None = None,
        events: Sequence[DomainEvent] = (),
    ) -> None: ...

    def record(
        self,
        deployment_id: int | None,
        actor: str,
        action: str,
        details: dict | None = None,
        events: Sequence[DomainEvent] = (),
    ) -> Deployment | None:
        """Append an event that does not change state (a step reached, a refusal, a measurement), with
        its outbox `events` in the same transaction. Returns the deployment (None for none), so a caller
        never needs to read it again."""
        with self.db.atomic():
            state = self.get(deployment_id).state if deployment_id is not None else None
            self._event(deployment_id, actor, action, state, state, details)
            self._append_in_tx(deployment_id, events)
        return self.get(deployment_id) if deployment_id is not None else None

    def save_progress(
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
        """Persist where the plan is (and, in the same transaction, the audit events saying so — `audit`,
        then `event` — and the outbox `events`). Returns the deployment as it now is: no need to `get` it
        after."""
        values: dict[str, Any] = {"updated_at": self.now()}
        if step_index is not None:
            values["step_index"] = step_index
        if context is not None:
            values["context"] = json.dumps(context)
        if version is not None:
            values["version"] = version
        if previous_version is not None:
            values["previous_version"] = previous_version
        if plan is not None:
            values["plan"] = json.dumps(plan)
        with self.db.atomic():
            self._update("deployments", deployment_id, values)
            now = self.get(deployment_id)  # NotFound for no such deployment (nothing was written)
            for actor, action, details in [*audit, *([event] if event is not None else [])]:
                self._event(deployment_id, actor, action, now.state, now.state, details)
            self._append_in_tx(deployment_id, events)
        return now

    def set_message(self, deployment_id: int, channel: str, ts: str) -> None:
        self._update("deployments", deployment_id, {"channel": channel, "message_ts": ts})

    def lock(self, service: str, env: str, holder: str, reason: str) -> LockInfo | None:
        """A manual lock; returns the existing lock instead when one is held."""
        with self.db.atomic():
            held = self.lock_info(service, env)
            if held is not None:
                return held
            row = {
                "service": service,
                "env": env,
                "deployment_id": None,
                "holder": holder,
                "reason": reason,
                "acquired_at": self.now(),
            }
            if not self._insert_row("locks", row, unless=("service", "env")):  # taken meanwhile
                return self.lock_info(service, env)
            self._event(None, holder, "lock", None, None, {"service": service, "env": env, "reason": reason})
        return None

    def unlock(self, service: str, env: str, actor: str) -> LockInfo | None:
        """Remove a manual lock; returns what was removed (None when there was none)."""
        with self.db.atomic():
            held = self.lock_info(service, env)
            if held is None or held.deployment_id is not None:
                return None
            self.db.execute("DELETE FROM locks WHERE service = ? AND env = ?", [service, env])
            self._event(None, actor, "unlock", None, None, {"service": service, "env": env})
        return held

    def release_stale_locks(self) -> list[LockInfo]:
        """Locks whose deployment finished or vanished (after a crash between writes, or a hand edit)."""
        rows = list(
            self.db.query(
                "SELECT l.* FROM locks l LEFT JOIN deployments d ON d.id = l.deployment_id "
                "WHERE l.deployment_id IS NOT NULL AND (d.id IS NULL OR d.state IN (?, ?, ?, ?))",
                [s.value for s in (State.SUCCEEDED, State.ROLLED_BACK, State.FAILED, State.CANCELLED)],
            )
        )
        with self.db.atomic():
            for row in rows:
                self.db.execute(
                    "DELETE FROM locks WHERE service = ? AND env = ?", [row["service"], row["env"]]
                )
                self._event(None, "deploybot", "release_stale_lock", None, None, row)
        return [LockInfo(**r) for r in rows]

    # -------------------------------------------------------------------- checklist and approvals

    def set_item(
        self, deployment_id: int, item_id: str, done: bool, by: str, evidence: str | None = None
    ) -> ItemState:
        """Record a checklist item's state (ticked by a person, or seen by an automatic check)."""
        now = self.now()
        with self.db.atomic():
            self.db.execute(
                "INSERT INTO checklist (deployment_id, item_id, done, [by], at, evidence) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (deployment_id, item_id) DO UPDATE SET "
                "done = excluded.done, [by] = excluded.[by], at = excluded.at, evidence = excluded.evidence",
                [deployment_id, item_id, int(done), by, now, evidence],
            )
            self._record_in_tx(
                deployment_id, by, "checklist", {"item": item_id, "done": done, "evidence": evidence}
            )
        return ItemState(item_id, done, by, now, evidence)

    def items(self, deployment_id: int) -> dict[str, ItemState]:
        rows = self.db.query("SELECT * FROM checklist WHERE deployment_id = ?", [deployment_id])
        return {
            r["item_id"]: ItemState(r["item_id"], bool(r["done"]), r["by"], r["at"], r["evidence"])
            for r in rows
        }

    def approve(self, deployment_id: int, user: str) -> None:
        with self.db.atomic():
            self._insert("approvals", {"deployment_id": deployment_id, "user": user, "at": self.clock.now()})
            self._record_in_tx(deployment_id, user, "approve", {})

    def approvals(self, deployment_id: int) -> list[Approval]:
        rows = self.db.query("SELECT * FROM approvals WHERE deployment_id = ? ORDER BY id", [deployment_id])
        return [Approval(r["user"], r["at"], bool(r["voided"])) for r in rows]

    def amend(
        self,
        deployment_id: int,
        actor: str,
        *,
        version: str | None,
        strategy: str,
        plan: list[dict],
        events: Sequence[DomainEvent] = (),
    ) -> Deployment:
        """A changed version or strategy for a request not started yet: its approvals no longer count.

        A compare-and-set in one transaction: the row changes only while it is still before its start and
        still requested by `actor` (Conflict otherwise), so an amendment can never slip in after the start
        transition, and the version a deployment starts with is the last amendment accepted."""
        with self.db.atomic():
            return self._amend_in_tx(
                self.get(deployment_id), actor, version=version, strategy=strategy, plan=plan, events=events
            )

    def _amend_in_tx(
        self,
        before: Deployment,
        actor: str,
        *,
        version: str | None,
        strategy: str,
        plan: list[dict],
        events: Sequence[DomainEvent] = (),
    ) -> Deployment:
        """amend inside the caller's transaction; `before`: the deployment as read in it."""
        before_start = [State.REQUESTED.value, State.AWAITING_APPROVAL.value, State.SCHEDULED.value]
        now, stored = self.now(), None if plan == before.plan else json.dumps(plan)  # a burst: same steps
        cursor = self.db.execute(
            "UPDATE deployments SET version = ?, strategy = ?, updated_at = ?, plan = COALESCE(?, plan) "
            "WHERE id = ? AND requested_by = ? AND state IN (?, ?, ?)",
            [version, strategy, now, stored, before.id, actor, *before_start],
        )
        if cursor.rowcount != 1:
            raise Conflict(
                f"deployment #{before.id} is {before.state.word}; it can no longer change", before.state
            )
        voided = self.db.execute(
            "UPDATE approvals SET voided = 1 WHERE deployment_id = ? AND voided = 0", [before.id]
        ).rowcount
        self._record_in_tx(
            before.id,
            actor,
            "amend",
            {
                "from": {"version": before.version, "strategy": before.strategy},
                "to": {"version": version, "strategy": strategy},
                "approvals_voided": voided,
            },
            state=before.state,  # the UPDATE above matched it: still the state read in this transaction
        )
        self._append_in_tx(before.id, events)
        steps = before.plan if stored is None else json.loads(stored)  # the row as written, not read again
        return dataclasses.replace(before, version=version, strategy=strategy, plan=steps, updated_at=now)

    def request_or_amend(self, *, amendable: bool = True, **fields: Any) -> Deployment | LockInfo | Amendment:
        """What one deploy request does, decided in one transaction against the store (requests of one
        person race each other; this serialises them):
        - nothing holds service+env: the deployment is created with the lock (a Deployment);
        - the holder is this person's own request of the same kind, not started yet (and `amendable`): it
          is amended (appending `amend_events` when given, else `events`) to this version and strategy, or found already asking for exactly that (Amendment,
          saying what it was before and whether anything changed);
        - else the lock's holder (LockInfo), which may be this person's own started deployment.
        With a request_key already used, the deployment it created is returned unchanged (Slack retries).
        Overtaken by another writer (two replicas read the lock free; the one to amend started): again."""
        amend_events = fields.pop("amend_events", None)
        for _ in range(DECIDE_ATTEMPTS - 1):  # overtaken (Conflict): decided again on what is there now
            with contextlib.suppress(Conflict):
                return self._request_or_amend(amendable, amend_events, fields)
        return self._request_or_amend(amendable, amend_events, fields)

    def _request_or_amend(
        self, amendable: bool, amend_events: Sequence[DomainEvent] | None, fields: dict[str, Any]
    ) -> Deployment | LockInfo | Amendment:
        with self.db.atomic():
            seen = self._by_request_key(fields.get("request_key"))
            if seen is not None:
                return seen
            held = self.lock_info(fields["service"], fields["env"])
            if held is None:
                return self.create_deployment(**fields)
            d = held.deployment
            if (
                amendable
                and d is not None
                and d.requested_by == fields["requested_by"]
                and d.kind == fields["kind"]
                and d.state in (State.REQUESTED, State.AWAITING_APPROVAL, State.SCHEDULED)
                and "pipeline" not in d.context  # a pipeline's deployment keeps its pipeline's version
            ):
                if (d.version, d.strategy) == (fields["version"], fields["strategy"]):
                    return Amendment(d, d.version, d.strategy, changed=False)
                amended = self._amend_in_tx(
                    d,
                    fields["requested_by"],
                    version=fields["version"],
                    strategy=fields["strategy"],
                    plan=fields.get("plan") or [],
                    events=fields.get("events", ()) if amend_events is None else amend_events,
                )
                return Amendment(amended, d.version, d.strategy, changed=True)
            return held

    def request_or_amend_many(
        self, requests: Sequence[Mapping[str, Any]]
    ) -> list[Deployment | LockInfo | Amendment | Exception]:
        """request_or_amend of each, in order, in its own transaction (a failure in its place): one trip."""
        results: list[Deployment | LockInfo | Amendment | Exception] = []
        for fields in requests:
            try:
                results.append(self.request_or_amend(**dict(fields)))
            except Exception as exc:
                results.append(exc)
        return results

    def scheduled(self) -> list[Deployment]:
        rows = self.db.query("SELECT * FROM deployments WHERE state = ? ORDER BY id", [State.SCHEDULED.value])
        return [Deployment.from_row(r) for r in rows]

    # ----------------------------------------------------------------------------------------- reads

    def overview(self) -> tuple[list[Deployment], list[LockInfo]]:
        """Active deployments and all locks, for /deploy status, in one call."""
        return self.active(), self.locks()

    def locks(self) -> list[LockInfo]:
        return [LockInfo(**r) for r in self.db.query("SELECT * FROM locks ORDER BY service, env")]

    def events(
        self, deployment_id: int | None = None, since: str | None = None, service: str | None = None
    ) -> list[Event]:
        sql = "SELECT e.* FROM events e LEFT JOIN deployments d ON d.id = e.deployment_id WHERE 1=1"
        args: list[int | str] = []
        if deployment_id is not None:
            sql += " AND e.deployment_id = ?"
            args.append(deployment_id)
        if since is not None:
            sql += " AND e.at >= ?"
            args.append(since)
        if service is not None:
            sql += " AND (d.service = ? OR json_extract(e.details, '$.service') = ?)"
            args += [service, service]
        return [Event.from_row(r) for r in self.db.query(sql + " ORDER BY e.id", args)]

    def active(self) -> list[Deployment]:
        marks = ",".join("?" * len(ACTIVE))
        rows = self.db.query(
            f"SELECT * FROM deployments WHERE state IN ({marks}) ORDER BY id", [s.value for s in ACTIVE]
        )
        return [Deployment.from_row(r) for r in rows]

    def in_flight(self) -> list[Deployment]:
        """Deployments a crash may have interrupted mid-plan."""
        states = [State.RUNNING.value, State.ROLLING_BACK.value, State.PAUSED.value]
        rows = self.db.query("SELECT * FROM deployments WHERE state IN (?, ?, ?) ORDER BY id", states)
        return [Deployment.from_row(r) for r in rows]

    def history(self, service: str, env: str | None = None, limit: int = 10) -> list[Deployment]:
        sql, args = "SELECT * FROM deployments WHERE service = ?", [service]
        if env is not None:
            sql += " AND env = ?"
            args.append(env)
        rows = self.db.query(sql + " ORDER BY id DESC LIMIT ?", [*args, limit])
        return [Deployment.from_row(r) for r in rows]

    def latest(self, service: str | None = None, limit: int = 10) -> list[Deployment]:
        if service is None:
            rows = self.db.query("SELECT * FROM deployments ORDER BY id DESC LIMIT ?", [limit])
        else:
            rows = self.db.query(
                "SELECT * FROM deployments WHERE service = ? ORDER BY id DESC LIMIT ?", [service, limit]
            )
        return [Deployment.from_row(r) for r in rows]

    def last_succeeded(self, service: str, env: str, before: int | None = None) -> Deployment | None:
        sql = "SELECT * FROM deployments WHERE service = ? AND env = ? AND state = ?"
        args: list[Any] = [service, env, State.SUCCEEDED.value]
        if before is not None:
            sql += " AND id < ?"
            args.append(before)
        rows = list(self.db.query(sql + " ORDER BY id DESC LIMIT 1", args))
        return Deployment.from_row(rows[0]) if rows else None
