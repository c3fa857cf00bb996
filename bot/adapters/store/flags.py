"""The store's feature flags: each environment's state of each flag, changed by compare-and-set on its
revision with the audit event (and outbox events) of the change in the same transaction."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from bot.adapters.store.base import StoreBase
from bot.domain.errors import Conflict
from bot.domain.events import DomainEvent
from bot.domain.flags import FlagRecord, FlagState, flag_service
from bot.domain.model import Event


class FlagsMixin(StoreBase):
    """Flag states (part of Store)."""

    if TYPE_CHECKING:

        def _append_in_tx(self, deployment_id: int | None, events: Sequence[DomainEvent]) -> list[int]: ...

    def flag_states(self, env: str | None = None) -> list[FlagRecord]:
        """Every stored flag state (of one environment); a flag without one is off."""
        sql, params = "SELECT * FROM flag_states", []
        if env is not None:
            sql, params = sql + " WHERE env = ?", [env]
        return [_record(r) for r in self._rows(sql + " ORDER BY env, key", params)]

    def flag_state(self, env: str, key: str) -> FlagRecord:
        rows = self._rows("SELECT * FROM flag_states WHERE env = ? AND key = ?", [env, key])
        return _record(rows[0]) if rows else FlagRecord(env, key, FlagState())

    def flags_revision(self) -> int:
        """The sum of every flag's revision: it changes with every flag change anywhere (a replica polls it)."""
        rows = self._rows("SELECT COALESCE(SUM(revision), 0) AS r, COUNT(*) AS n FROM flag_states")
        return int(rows[0]["r"]) * 1000 + int(rows[0]["n"])

    def set_flag(
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
        """Write a flag's new state if its revision is still `expected_revision` (None: whatever it is),
        with its audit event and outbox `events`, in one transaction. Conflict when someone changed it
        meanwhile, or (`unless_killed`) when the kill switch turned it off: a rollout step never turns a
        killed flag back on."""
        with self.db.atomic():
            now = self.flag_state(env, key)
            if expected_revision is not None and now.revision != expected_revision:
                raise Conflict(
                    f"{key} in {env} changed meanwhile (by {now.updated_by or 'someone'}); look again and retry"
                )
            if unless_killed and now.state.killed:
                raise Conflict(f"{key} in {env} was killed: the kill switch stays until someone turns it on")
            at = self.now()
            revision = now.revision + 1
            written = self.db.execute(
                "INSERT INTO flag_states (env, key, state, revision, updated_by, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (env, key) DO UPDATE SET state = excluded.state, "
                "revision = excluded.revision, updated_by = excluded.updated_by, "
                "updated_at = excluded.updated_at WHERE flag_states.revision = ?",
                [env, key, json.dumps(state.to_dict(), sort_keys=True), revision, actor, at, now.revision],
            ).rowcount
            if written != 1:  # another writer changed it between our read and this write (a replica)
                raise Conflict(f"{key} in {env} changed meanwhile; look again and retry")
            audit = {
                **details,
                "flag": key,
                "env": env,
                "service": flag_service(key),  # `deploybot audit --service flag:KEY` finds every change
                "revision": revision,
                "before": now.state.to_dict(),
                "after": state.to_dict(),
            }
            at_state = self.get(deployment_id).state if deployment_id is not None else None
            self._event(deployment_id, actor, action, at_state, at_state, audit)
            self._append_in_tx(deployment_id, events)
        return FlagRecord(env, key, state, revision, actor, at)

    def flag_changes(self, env: str, key: str, limit: int = 10) -> list[Event]:
        """A flag's audited changes in an environment, newest first."""
        rows = self._rows(
            "SELECT * FROM events WHERE json_extract(details, '$.flag') = ? "
            "AND json_extract(details, '$.env') = ? ORDER BY id DESC LIMIT ?",
            [key, env, limit],
        )
        return [Event.from_row(r) for r in rows]


def _record(row: dict[str, Any]) -> FlagRecord:
    return FlagRecord(
        row["env"],
        row["key"],
        FlagState.from_dict(json.loads(row["state"])),
        int(row["revision"]),
        row["updated_by"],
        row["updated_at"],
    )
