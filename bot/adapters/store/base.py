"""The store's shared core: opening the database (WAL, migrations), the clock, the audit event every write appends, and the reads the other parts build on."""

from __future__ import annotations

import contextlib
import json
import math
import sqlite3
import time
from collections.abc import Generator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from sqlite_utils import Database

from bot.adapters.store.schema import migrations
from bot.adapters.store.urls import is_postgres_url
from bot.clock import Clock
from bot.domain.errors import NotFound
from bot.domain.machine import State
from bot.domain.model import Deployment, Event, LockInfo

_SQLITE_INT = range(-(2**63), 2**63)
BUSY_SECONDS = 10.0  # how long a write waits for another process's transaction


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")


class _Database(Database):
    """Transactions begin IMMEDIATE: several processes share one file (replicas), and a deferred one
    that read before it writes fails at once with "database is locked" when another process wrote in
    between, instead of waiting its turn (the busy timeout only covers taking the write lock)."""

    @contextlib.contextmanager
    def atomic(self) -> Generator[Database, None, None]:
        if self.conn.in_transaction:
            with super().atomic() as db:
                yield db
            return
        self._begin_immediate()
        try:
            yield self
        except BaseException:
            self.rollback()
            raise
        try:
            self.conn.execute("COMMIT")
        except BaseException:
            self.rollback()
            raise

    def _begin_immediate(self) -> None:
        """Take the write lock, polling every few tenths of a millisecond while another process holds
        it: SQLite's own busy handler sleeps ever longer (up to 100 ms a try), and a process that keeps
        losing the race to one making many short writes waits far longer than their sum."""
        try:
            self.conn.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
        deadline = time.monotonic() + BUSY_SECONDS
        self.conn.execute("PRAGMA busy_timeout = 0")
        try:
            while True:
                try:
                    self.conn.execute("BEGIN IMMEDIATE")
                    return
                except sqlite3.OperationalError as exc:
                    if ("locked" not in str(exc) and "busy" not in str(exc)) or time.monotonic() > deadline:
                        raise
                time.sleep(0.0002)
        finally:
            self.conn.execute(f"PRAGMA busy_timeout = {int(BUSY_SECONDS * 1000)}")


class StoreBase:
    """The open database and what every part of the store shares: the clock, the audit event, `get`."""

    dialect = "sqlite"
    #: what a unique or check constraint's violation raises, on either database
    integrity_errors: tuple[type[Exception], ...] = (sqlite3.IntegrityError,)

    def __init__(self, path: str | Path, clock: Clock | None = None):
        """`path`: a SQLite file (or `:memory:`), or a `postgresql://` URL (bot.adapters.store.pg)."""
        self.path = str(path)
        self.clock = clock or Clock()
        self._requests_swept_at = -math.inf
        if is_postgres_url(self.path):
            self._open_postgres()
            return
        conn = sqlite3.connect(self.path, check_same_thread=False, timeout=10, isolation_level=None)
        self.db: Database = _Database(conn)
        if self.path != ":memory:":
            self.db.enable_wal()
            self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA foreign_keys=ON")
        migrations.apply(self.db)

    def _open_postgres(self) -> None:
        try:
            from bot.adapters.store import pg
        except ImportError as exc:  # psycopg is the `postgres` extra
            raise RuntimeError(
                f"a PostgreSQL store needs psycopg: pip install 'deploybot[postgres]' ({exc})"
            ) from None
        database = pg.PgDatabase(self.path)
        pg.apply_migrations(database, migrations._migrations)
        self.db = cast(Database, database)  # the part of sqlite-utils' Database the store uses
        self.dialect = "postgres"
        self.integrity_errors = (sqlite3.IntegrityError, pg.psycopg.IntegrityError)

    def close(self) -> None:
        self.db.close()

    def applied_migrations(self) -> list[str]:
        """The names of the migrations applied to this database, in the order they were."""
        if self.dialect == "postgres":
            from bot.adapters.store import pg

            return pg.applied(cast(pg.PgDatabase, self.db))
        return [m.name for m in migrations.applied(self.db)]

    def now(self) -> str:
        return _iso(self.clock.now())

    def _insert(self, table: str, row: dict[str, Any]) -> int:
        """Insert a row; its new integer id. Plain SQL: the table's columns are known, and a request's
        writes are the ack's critical path (sqlite-utils' insert reads the table's schema every time)."""
        columns = ", ".join(f"[{c}]" for c in row)
        marks = ", ".join("?" * len(row))
        sql = f"INSERT INTO [{table}] ({columns}) VALUES ({marks})"
        if self.dialect == "postgres":  # no lastrowid there: the id comes back with the insert
            found = self.db.execute(sql + " RETURNING id", list(row.values())).fetchone()
            pk = found[0] if found else None
        else:
            pk = self.db.execute(sql, list(row.values())).lastrowid
        if not isinstance(pk, int):
            raise TypeError(f"{table}: no integer id for the inserted row")
        return pk

    def _insert_row(self, table: str, row: dict[str, Any], unless: Sequence[str] = ()) -> bool:
        """Insert a row of a table without an integer id (locks). `unless`: the columns of a unique key;
        a row with the same values there already (another replica's, just committed) leaves nothing
        inserted: False."""
        columns = ", ".join(f"[{c}]" for c in row)
        marks = ", ".join("?" * len(row))
        sql = f"INSERT INTO [{table}] ({columns}) VALUES ({marks})"
        if unless:
            sql += " ON CONFLICT (" + ", ".join(f"[{c}]" for c in unless) + ") DO NOTHING"
        return bool(self.db.execute(sql, list(row.values())).rowcount == 1)

    def _update(self, table: str, pk: int, values: dict[str, Any]) -> int:
        """Update one row by its id in plain SQL (sqlite-utils' update reads the table's schema each
        time); how many rows it changed (0: no such row)."""
        sets = ", ".join(f"[{c}] = ?" for c in values)
        cursor = self.db.conn.execute(f"UPDATE [{table}] SET {sets} WHERE id = ?", [*values.values(), pk])
        return cursor.rowcount

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """The rows a query returns, as dicts (what sqlite-utils' query gives, without its overhead)."""
        cursor = self.db.conn.execute(sql, params)
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, r, strict=True)) for r in cursor]

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
        row["id"] = self._insert("events", row)
        return Event.from_row(row)

    def _record_in_tx(
        self, deployment_id: int, actor: str, action: str, details: dict, state: State | None = None
    ) -> Event:
        """An audit event that changes no state; `state`: the deployment's, when the caller just read it."""
        if state is None:
            state = self.get(deployment_id).state
        return self._event(deployment_id, actor, action, state, state, details)

    def get(self, deployment_id: int) -> Deployment:
        """The deployment; NotFound (a KeyError) for an id that names none, however large."""
        if not isinstance(deployment_id, int) or deployment_id not in _SQLITE_INT:
            raise NotFound("deployment", deployment_id)
        rows = self._rows("SELECT * FROM deployments WHERE id = ?", [deployment_id])
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
        rows = self._rows("SELECT * FROM locks WHERE service = ? AND env = ?", [service, env])
        if not rows:
            return None
        holder = self.find(rows[0]["deployment_id"]) if rows[0]["deployment_id"] is not None else None
        return LockInfo(**rows[0], deployment=holder)
