"""The store: deployments, the append-only event log, and locks, in SQLite (WAL) through sqlite-utils.

This is the only module that writes SQL. Every state change is a compare-and-set on the deployment's
current state, checked against bot.machine, and appends its event in the same transaction: the audit
trail cannot miss a transition, and two writers cannot both move one deployment."""

from __future__ import annotations

import json
import logging
import math
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from bot.adapters.store.schema import migrations
from bot.clock import Clock
from bot.domain.checklist import Approval, ItemState
from bot.domain.errors import Conflict, NotFound
from bot.domain.machine import ACTIVE, State, next_state
from bot.domain.model import Alert, Amendment, Deployment, Event, LockInfo, StoredAnswer
from bot.domain.windows import Freeze

log = logging.getLogger(__name__)


_SQLITE_INT = range(-(2**63), 2**63)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")


class Store:
    """Synchronous store. Async code uses AsyncStore, which runs these methods on one thread."""

    def __init__(self, path: str | Path, clock: Clock | None = None):
        self.path = str(path)
        self.clock = clock or Clock()
        conn = sqlite3.connect(self.path, check_same_thread=False, timeout=10, isolation_level=None)
        self.db = Database(conn)
        if self.path != ":memory:":
            self.db.enable_wal()
            self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA foreign_keys=ON")
        migrations.apply(self.db)
        self._requests_swept_at = -math.inf

    def close(self) -> None:
        self.db.close()

    def now(self) -> str:
        return _iso(self.clock.now())

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
    ) -> Deployment | LockInfo:
        """Create a deployment holding the service+env lock, atomically; or return the lock's holder.

        With a request_key already used, the deployment it created is returned unchanged (Slack retries)."""
        now = self.now()
        with self.db.atomic():
            if request_key is not None:
                rows = list(self.db.query("SELECT id FROM deployments WHERE request_key = ?", [request_key]))
                if rows:
                    return self.get(rows[0]["id"])
            held = self.lock_info(service, env)
            if held is not None:
                return held
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
            deployment_id = self.db["deployments"].insert(row).last_pk
            try:
                self.db["locks"].insert(
                    {
                        "service": service,
                        "env": env,
                        "deployment_id": deployment_id,
                        "holder": requested_by,
                        "reason": f"deployment #{deployment_id}",
                        "acquired_at": now,
                    }
                )
            except sqlite3.IntegrityError:  # another process won between our read and insert
                raise Conflict(f"{service} in {env} was locked concurrently") from None
            self._event(
                deployment_id,
                requested_by,
                "request",
                None,
                State.REQUESTED,
                {"version": version, "strategy": strategy, "kind": kind, "reason": reason},
            )
        return self.get(deployment_id)

    def transition(
        self,
        deployment_id: int,
        action: str,
        actor: str,
        details: dict | None = None,
        outcome: str | None = None,
    ) -> Deployment:
        """Move a deployment by a machine action; append its event; release the lock on a terminal state."""
        now = self.now()
        with self.db.atomic():
            current = self.get(deployment_id)
            target = next_state(current.state, action)
            values: dict[str, Any] = {"state": target.value, "updated_at": now}
            if outcome is not None:
                values["outcome"] = outcome
            if target.terminal:
                values["finished_at"] = now
            sets = ", ".join(f"{k} = :{k}" for k in values)
            cursor = self.db.execute(
                f"UPDATE deployments SET {sets} WHERE id = :id AND state = :expected",
                {**values, "id": deployment_id, "expected": current.state.value},
            )
            if cursor.rowcount != 1:
                raise Conflict(f"deployment #{deployment_id} changed state concurrently")
            self._event(deployment_id, actor, action, current.state, target, details)
            if target.terminal:
                self.db.execute("DELETE FROM locks WHERE deployment_id = ?", [deployment_id])
        return self.get(deployment_id)

    def record(
        self, deployment_id: int | None, actor: str, action: str, details: dict | None = None
    ) -> Event:
        """Append an event that does not change state (a step reached, a refusal, a measurement)."""
        with self.db.atomic():
            state = self.get(deployment_id).state if deployment_id is not None else None
            return self._event(deployment_id, actor, action, state, state, details)

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
    ) -> Deployment:
        """Persist where the plan is (and, in the same transaction, the event saying so)."""
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
            self.db["deployments"].update(deployment_id, values)
            if event is not None:
                actor, action, details = event
                state = self.get(deployment_id).state
                self._event(deployment_id, actor, action, state, state, details)
        return self.get(deployment_id)

    def set_message(self, deployment_id: int, channel: str, ts: str) -> None:
        self.db["deployments"].update(deployment_id, {"channel": channel, "message_ts": ts})

    def lock(self, service: str, env: str, holder: str, reason: str) -> LockInfo | None:
        """A manual lock; returns the existing lock instead when one is held."""
        with self.db.atomic():
            held = self.lock_info(service, env)
            if held is not None:
                return held
            self.db["locks"].insert(
                {
                    "service": service,
                    "env": env,
                    "deployment_id": None,
                    "holder": holder,
                    "reason": reason,
                    "acquired_at": self.now(),
                }
            )
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

    def _event(
        self,
        deployment_id: int | None,
        actor: str,
        action: str,
        from_state: State | None,
        to_state: State | None,
        details: dict | None,
    ) -> Event:
        row = {
            "deployment_id": deployment_id,
            "at": self.now(),
            "actor": actor,
            "action": action,
            "from_state": from_state.value if from_state else None,
            "to_state": to_state.value if to_state else None,
            "details": json.dumps(details or {}, default=str, sort_keys=True),
        }
        row["id"] = self.db["events"].insert(row).last_pk
        return Event.from_row(row)

    # -------------------------------------------------------------------- checklist and approvals

    def set_item(
        self, deployment_id: int, item_id: str, done: bool, by: str, evidence: str | None = None
    ) -> ItemState:
        """Record a checklist item's state (ticked by a person, or seen by an automatic check)."""
        now = self.now()
        with self.db.atomic():
            self.db["checklist"].upsert(
                {
                    "deployment_id": deployment_id,
                    "item_id": item_id,
                    "done": int(done),
                    "by": by,
                    "at": now,
                    "evidence": evidence,
                },
                pk=("deployment_id", "item_id"),
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
            self.db["approvals"].insert(
                {"deployment_id": deployment_id, "user": user, "at": self.clock.now()}
            )
            self._record_in_tx(deployment_id, user, "approve", {})

    def approvals(self, deployment_id: int) -> list[Approval]:
        rows = self.db.query("SELECT * FROM approvals WHERE deployment_id = ? ORDER BY id", [deployment_id])
        return [Approval(r["user"], r["at"], bool(r["voided"])) for r in rows]

    def amend(
        self, deployment_id: int, actor: str, *, version: str | None, strategy: str, plan: list[dict]
    ) -> Deployment:
        """A changed version or strategy for a request not started yet: its approvals no longer count.

        A compare-and-set in one transaction: the row changes only while it is still before its start and
        still requested by `actor` (Conflict otherwise), so an amendment can never slip in after the start
        transition, and the version a deployment starts with is the last amendment accepted."""
        before_start = [State.REQUESTED.value, State.AWAITING_APPROVAL.value, State.SCHEDULED.value]
        with self.db.atomic():
            before = self.get(deployment_id)
            cursor = self.db.execute(
                "UPDATE deployments SET version = ?, strategy = ?, plan = ?, updated_at = ? "
                "WHERE id = ? AND requested_by = ? AND state IN (?, ?, ?)",
                [version, strategy, json.dumps(plan), self.now(), deployment_id, actor, *before_start],
            )
            if cursor.rowcount != 1:
                raise Conflict(
                    f"deployment #{deployment_id} is {before.state.word}; it can no longer change",
                    before.state,
                )
            voided = self.db.execute(
                "UPDATE approvals SET voided = 1 WHERE deployment_id = ? AND voided = 0", [deployment_id]
            ).rowcount
            self._record_in_tx(
                deployment_id,
                actor,
                "amend",
                {
                    "from": {"version": before.version, "strategy": before.strategy},
                    "to": {"version": version, "strategy": strategy},
                    "approvals_voided": voided,
                },
            )
            return self.get(deployment_id)

    def request_or_amend(self, *, amendable: bool = True, **fields: Any) -> Deployment | LockInfo | Amendment:
        """What one deploy request does, decided in one transaction against the store (requests of one
        person race each other; this serialises them):
        - nothing holds service+env: the deployment is created with the lock (a Deployment);
        - the holder is this person's own request of the same kind, not started yet (and `amendable`): it
          is amended to this version and strategy, or found already asking for exactly that (Amendment,
          saying what it was before and whether anything changed);
        - else the lock's holder (LockInfo), which may be this person's own started deployment.
        With a request_key already used, the deployment it created is returned unchanged (Slack retries)."""
        with self.db.atomic():
            key = fields.get("request_key")
            if key is not None:
                rows = list(self.db.query("SELECT id FROM deployments WHERE request_key = ?", [key]))
                if rows:
                    return self.get(rows[0]["id"])
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
            ):
                if (d.version, d.strategy) == (fields["version"], fields["strategy"]):
                    return Amendment(d, d.version, d.strategy, changed=False)
                amended = self.amend(
                    d.id,
                    fields["requested_by"],
                    version=fields["version"],
                    strategy=fields["strategy"],
                    plan=fields.get("plan") or [],
                )
                return Amendment(amended, d.version, d.strategy, changed=True)
            return held

    def _record_in_tx(self, deployment_id: int, actor: str, action: str, details: dict) -> Event:
        state = self.get(deployment_id).state
        return self._event(deployment_id, actor, action, state, state, details)

    # ---------------------------------------------------------------------------------------- alerts

    def raise_alert(
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
        """Record an alert (and its audit event). With a `key` already raised, nothing: None. `raised_ts`:
        the instant its escalation was computed from (the store's clock now when not given)."""
        with self.db.atomic():
            if key is not None and list(self.db.query("SELECT id FROM alerts WHERE key = ?", [key])):
                return None
            row = {
                "deployment_id": deployment_id,
                "event": event,
                "level": level,
                "text": text,
                "key": key,
                "raised_at": self.now(),
                "raised_ts": self.clock.now() if raised_ts is None else raised_ts,
                "messages": "[]",
                "rounds_claimed": 0,
                "rounds_sent": 0,
                "next_escalation_at": escalate_at,
            }
            alert_id = self.db["alerts"].insert(row).last_pk
            state = self.get(deployment_id).state
            self._event(
                deployment_id, "deploybot", "alert_raised", state, state,
                {"alert": alert_id, "event": event, "level": level},
            )  # fmt: skip
        return self.alert(alert_id)

    def alert(self, alert_id: int) -> Alert:
        if not isinstance(alert_id, int) or alert_id not in _SQLITE_INT:
            raise NotFound("alert", alert_id)
        rows = list(self.db.query("SELECT * FROM alerts WHERE id = ?", [alert_id]))
        if not rows:
            raise NotFound("alert", alert_id)
        return Alert.from_row(rows[0])

    def add_alert_message(self, alert_id: int, channel: str, ts: str) -> Alert:
        """Remember a Slack message showing the alert (the first one's thread gets the escalations)."""
        with self.db.atomic():
            messages = self.alert(alert_id).messages
            if {"channel": channel, "ts": ts} not in messages:
                messages.append({"channel": channel, "ts": ts})
                self.db["alerts"].update(alert_id, {"messages": json.dumps(messages)})
        return self.alert(alert_id)

    def acknowledge_alert(self, alert_id: int, user: str) -> tuple[bool, Alert]:
        """Acknowledge, as a compare-and-set: (True, alert) when THIS call acknowledged it, (False, alert
        as it is) when it was acknowledged already. Escalation stops with the acknowledgement."""
        with self.db.atomic():
            current = self.alert(alert_id)
            cursor = self.db.execute(
                "UPDATE alerts SET acked_by = ?, acked_at = ?, acked_ts = ?, next_escalation_at = NULL "
                "WHERE id = ? AND acked_by IS NULL",
                [user, self.now(), self.clock.now(), alert_id],
            )
            won = cursor.rowcount == 1
            if won:
                state = self.get(current.deployment_id).state
                self._event(
                    current.deployment_id, user, "alert_acknowledged", state, state,
                    {"alert": alert_id, "rounds_sent": current.rounds_sent},
                )  # fmt: skip
        return won, self.alert(alert_id)

    def resolve_alerts(self, alert_ids: list[int], resolution: str, stop_escalation: bool) -> list[Alert]:
        """Mark alerts resolved (the deployment recovered); returns those THIS call resolved."""
        resolved = []
        with self.db.atomic():
            for alert_id in alert_ids:
                sets = "resolved_at = ?, resolved_ts = ?, resolution = ?"
                if stop_escalation:
                    sets += ", next_escalation_at = NULL"
                cursor = self.db.execute(
                    f"UPDATE alerts SET {sets} WHERE id = ? AND resolved_at IS NULL",
                    [self.now(), self.clock.now(), resolution, alert_id],
                )
                if cursor.rowcount == 1:
                    a = self.alert(alert_id)
                    state = self.get(a.deployment_id).state
                    self._event(
                        a.deployment_id, "deploybot", "alert_resolved", state, state,
                        {"alert": alert_id, "resolution": resolution},
                    )  # fmt: skip
                    resolved.append(a)
        return resolved

    def open_alerts(
        self, deployment_id: int | None = None, service: str | None = None, env: str | None = None
    ) -> list[Alert]:
        """Alerts not resolved yet, for one deployment or one service+env, oldest first."""
        sql, args = "SELECT a.* FROM alerts a JOIN deployments d ON d.id = a.deployment_id", []
        sql += " WHERE a.resolved_at IS NULL"
        for column, value in (("d.id", deployment_id), ("d.service", service), ("d.env", env)):
            if value is not None:
                sql += f" AND {column} = ?"
                args.append(value)
        return [Alert.from_row(r) for r in self.db.query(sql + " ORDER BY a.id", args)]

    def unacknowledged_alerts(self, level: str = "critical") -> list[Alert]:
        rows = self.db.query("SELECT * FROM alerts WHERE level = ? AND acked_by IS NULL ORDER BY id", [level])
        return [Alert.from_row(r) for r in rows]

    def due_escalations(self, now: float) -> list[Alert]:
        """Unacknowledged alerts whose next escalation round is due and not being sent."""
        rows = self.db.query(
            "SELECT * FROM alerts WHERE acked_by IS NULL AND next_escalation_at IS NOT NULL "
            "AND next_escalation_at <= ? AND rounds_claimed = rounds_sent ORDER BY next_escalation_at, id",
            [now],
        )
        return [Alert.from_row(r) for r in rows]

    def next_escalation_due(self) -> float | None:
        rows = list(
            self.db.query(
                "SELECT MIN(next_escalation_at) AS due FROM alerts WHERE acked_by IS NULL "
                "AND next_escalation_at IS NOT NULL AND rounds_claimed = rounds_sent"
            )
        )
        return rows[0]["due"] if rows else None

    def claim_escalation(self, alert_id: int, round_: int, next_at: float | None) -> bool:
        """Take round `round_` of an alert's escalation for sending, atomically: True for exactly one
        caller, and only while the alert is unacknowledged and the previous round has been sent."""
        cursor = self.db.execute(
            "UPDATE alerts SET rounds_claimed = ?, next_escalation_at = ? WHERE id = ? AND acked_by IS NULL "
            "AND rounds_claimed = ? AND rounds_sent = ?",
            [round_, next_at, alert_id, round_ - 1, round_ - 1],
        )
        return cursor.rowcount == 1

    def confirm_escalation(self, alert_id: int, round_: int, details: dict | None = None) -> bool:
        """Round `round_` was posted (or found posted): record it and its audit event."""
        with self.db.atomic():
            cursor = self.db.execute(
                "UPDATE alerts SET rounds_sent = ? WHERE id = ? AND rounds_sent = ? AND rounds_claimed >= ?",
                [round_, alert_id, round_ - 1, round_],
            )
            if cursor.rowcount != 1:
                return False
            a = self.alert(alert_id)
            state = self.get(a.deployment_id).state
            self._event(
                a.deployment_id, "deploybot", "alert_escalated", state, state,
                {"alert": alert_id, "round": round_, **(details or {})},
            )  # fmt: skip
        return True

    def in_doubt_escalations(self) -> list[Alert]:
        """Rounds claimed but not confirmed: the bot stopped while posting them (checked at start)."""
        rows = self.db.query("SELECT * FROM alerts WHERE rounds_claimed > rounds_sent ORDER BY id")
        return [Alert.from_row(r) for r in rows]

    # ---------------------------------------------------------------------------- Slack's requests

    def claim_request(
        self, key: str, now: float, keep_seconds: float = 3600.0, abandoned_seconds: float = 15.0
    ) -> StoredAnswer | None:
        """Claim a request by Slack's identity for it, atomically: None when THIS call claimed it (act on
        it, then `answer_request`), else what was answered to it (fields None while still being handled).
        Claims older than `keep_seconds` (far beyond Slack's 5-minute signature window) are dropped. A claim
        never answered after `abandoned_seconds` (Slack wants an answer within 3) belonged to a process that
        died while handling it: Slack's retry takes it over, so a crash does not swallow the request."""
        with self.db.atomic():
            if now - self._requests_swept_at > 60.0:  # old claims go once a minute, not on every request
                self.db.execute("DELETE FROM requests WHERE at < ?", [now - keep_seconds])
                self._requests_swept_at = now
            rows = list(self.db.query("SELECT * FROM requests WHERE key = ?", [key]))
            if rows:
                r = rows[0]
                if r["status"] is None and r["at"] < now - abandoned_seconds:
                    self.db.execute("UPDATE requests SET at = ? WHERE key = ? AND status IS NULL", [now, key])
                    return None
                return StoredAnswer(r["status"], r["content_type"], r["body"])
            self.db["requests"].insert({"key": key, "at": now})
        return None

    def answer_request(self, key: str, status: int, content_type: str, body: str) -> None:
        self.db.execute(
            "UPDATE requests SET status = ?, content_type = ?, body = ? WHERE key = ?",
            [status, content_type, body, key],
        )

    def answered(self, key: str) -> StoredAnswer | None:
        rows = list(self.db.query("SELECT * FROM requests WHERE key = ?", [key]))
        return StoredAnswer(rows[0]["status"], rows[0]["content_type"], rows[0]["body"]) if rows else None

    # ---------------------------------------------------------------------------- freezes, schedules

    def add_freeze(self, freeze: Freeze) -> Freeze:
        with self.db.atomic():
            self.db["freezes"].insert(
                {
                    "env": freeze.env,
                    "start": freeze.start.isoformat(),
                    "end": freeze.end.isoformat(),
                    "reason": freeze.reason,
                    "created_by": freeze.created_by or "deploybot",
                    "created_at": self.now(),
                }
            )
            self._event(
                None,
                freeze.created_by or "deploybot",
                "freeze",
                None,
                None,
                {"env": freeze.env, "until": freeze.end.isoformat(), "reason": freeze.reason},
            )
        return freeze

    def lift_freezes(self, env: str, actor: str) -> int:
        with self.db.atomic():
            n = self.db.execute(
                "UPDATE freezes SET lifted_by = ?, lifted_at = ? WHERE env = ? AND lifted_at IS NULL",
                [actor, self.now(), env],
            ).rowcount
            self._event(None, actor, "unfreeze", None, None, {"env": env, "lifted": n})
        return n

    def freezes(self) -> list[Freeze]:
        """Freezes declared in Slack and not lifted (config freezes live in settings)."""
        rows = self.db.query("SELECT * FROM freezes WHERE lifted_at IS NULL ORDER BY id")
        return [
            Freeze(
                r["env"],
                datetime.fromisoformat(r["start"]),
                datetime.fromisoformat(r["end"]),
                r["reason"],
                r["created_by"],
            )
            for r in rows
        ]

    def scheduled(self) -> list[Deployment]:
        rows = self.db.query("SELECT * FROM deployments WHERE state = ? ORDER BY id", [State.SCHEDULED.value])
        return [Deployment.from_row(r) for r in rows]

    # ----------------------------------------------------------------------------------------- reads

    def get(self, deployment_id: int) -> Deployment:
        """The deployment; NotFound (a KeyError) for an id that names none, however large."""
        if not isinstance(deployment_id, int) or deployment_id not in _SQLITE_INT:
            raise NotFound("deployment", deployment_id)
        rows = list(self.db.query("SELECT * FROM deployments WHERE id = ?", [deployment_id]))
        if not rows:
            raise NotFound("deployment", deployment_id)
        return Deployment.from_row(rows[0])

    def find(self, deployment_id: int) -> Deployment | None:
        try:
            return self.get(deployment_id)
        except KeyError:
            return None

    def lock_info(self, service: str, env: str) -> LockInfo | None:
        """The lock on service+env with the deployment holding it, in one call (an ack names the holder)."""
        rows = list(self.db.query("SELECT * FROM locks WHERE service = ? AND env = ?", [service, env]))
        if not rows:
            return None
        holder = self.find(rows[0]["deployment_id"]) if rows[0]["deployment_id"] is not None else None
        return LockInfo(**rows[0], deployment=holder)

    def overview(self) -> tuple[list[Deployment], list[LockInfo]]:
        """Active deployments and all locks, for /deploy status, in one call."""
        return self.active(), self.locks()

    def locks(self) -> list[LockInfo]:
        return [LockInfo(**r) for r in self.db.query("SELECT * FROM locks ORDER BY service, env")]

    def events(
        self, deployment_id: int | None = None, since: str | None = None, service: str | None = None
    ) -> list[Event]:
        sql, args = "SELECT e.* FROM events e LEFT JOIN deployments d ON d.id = e.deployment_id WHERE 1=1", []
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
