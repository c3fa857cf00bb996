"""The store: deployments, the append-only event log, and locks, in SQLite (WAL) through sqlite-utils.

This is the only module that writes SQL. Every state change is a compare-and-set on the deployment's
current state, checked against bot.machine, and appends its event in the same transaction: the audit
trail cannot miss a transition, and two writers cannot both move one deployment."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from sqlite_utils import Database, Migrations

from bot.clock import Clock
from bot.machine import ACTIVE, State, next_state

migrations = Migrations("deploybot")


@migrations()
def m001_initial(db: Database) -> None:
    db["deployments"].create(
        {
            "id": int,
            "service": str,
            "env": str,
            "version": str,
            "previous_version": str,
            "strategy": str,
            "kind": str,
            "requested_by": str,
            "reason": str,
            "state": str,
            "step_index": int,
            "plan": str,
            "context": str,
            "channel": str,
            "message_ts": str,
            "outcome": str,
            "created_at": str,
            "updated_at": str,
            "finished_at": str,
            "request_key": str,
        },
        pk="id",
        not_null={"service", "env", "kind", "requested_by", "state", "created_at"},
        defaults={"step_index": 0, "plan": "[]", "context": "{}"},
    )
    db["deployments"].create_index(["service", "env", "state"])
    # Slack's trigger_id: a retried or replayed request finds its deployment instead of making another.
    db["deployments"].create_index(["request_key"], unique=True)
    db["events"].create(
        {
            "id": int,
            "deployment_id": int,
            "at": str,
            "actor": str,
            "action": str,
            "from_state": str,
            "to_state": str,
            "details": str,
        },
        pk="id",
        not_null={"at", "actor", "action"},
        defaults={"details": "{}"},
        foreign_keys=[("deployment_id", "deployments", "id")],
    )
    db["events"].create_index(["deployment_id", "id"])
    # Append-only: the audit trail can be added to, never edited.
    db.execute(
        "CREATE TRIGGER events_no_update BEFORE UPDATE ON events "
        "BEGIN SELECT RAISE(ABORT, 'events are append-only'); END"
    )
    db.execute(
        "CREATE TRIGGER events_no_delete BEFORE DELETE ON events "
        "BEGIN SELECT RAISE(ABORT, 'events are append-only'); END"
    )
    db["locks"].create(
        {"service": str, "env": str, "deployment_id": int, "holder": str, "reason": str, "acquired_at": str},
        pk=("service", "env"),
        not_null={"holder", "acquired_at"},
    )


class Conflict(Exception):
    """A state change lost a race, or asked for a move the machine does not allow."""

    def __init__(self, message: str, state: State | None = None):
        self.state = state
        super().__init__(message)


@dataclass(frozen=True)
class LockInfo:
    service: str
    env: str
    deployment_id: int | None
    holder: str
    reason: str | None
    acquired_at: str
    deployment: Deployment | None = None  # the deployment holding it (None for a manual lock)


@dataclass(frozen=True)
class Deployment:
    id: int
    service: str
    env: str
    version: str | None
    previous_version: str | None
    strategy: str
    kind: str
    requested_by: str
    reason: str | None
    state: State
    step_index: int
    plan: list[dict[str, Any]]
    context: dict[str, Any]
    channel: str | None
    message_ts: str | None
    outcome: str | None
    created_at: str
    updated_at: str | None
    finished_at: str | None
    request_key: str | None = None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Deployment:
        return cls(
            **{
                **row,
                "state": State(row["state"]),
                "plan": json.loads(row["plan"] or "[]"),
                "context": json.loads(row["context"] or "{}"),
                "step_index": row["step_index"] or 0,
            }
        )

    @property
    def ref(self) -> str:
        return f"#{self.id}"


@dataclass(frozen=True)
class Event:
    id: int
    deployment_id: int | None
    at: str
    actor: str
    action: str
    from_state: str | None
    to_state: str | None
    details: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Event:
        return cls(**{**row, "details": json.loads(row["details"] or "{}")})


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

    # ----------------------------------------------------------------------------------------- reads

    def get(self, deployment_id: int) -> Deployment:
        rows = list(self.db.query("SELECT * FROM deployments WHERE id = ?", [deployment_id]))
        if not rows:
            raise KeyError(f"no deployment #{deployment_id}")
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


P = ParamSpec("P")
R = TypeVar("R")


class AsyncStore:
    """The store for async code: every call runs on one dedicated thread (sqlite's one thread boundary)."""

    def __init__(self, store: Store):
        self.sync = store
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")

    async def call(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(*args, **kwargs))

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self.sync, name)

        async def run(*args: Any, **kwargs: Any) -> Any:
            return await self.call(method, *args, **kwargs)

        return run

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        self.sync.close()
