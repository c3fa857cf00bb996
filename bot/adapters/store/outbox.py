"""The store's outbox: typed domain events (bot.domain.events) appended in the transaction of the state
change that announces them, and per-consumer cursors (the last id each consumer delivered), so a crash
between a transition and its delivery loses nothing, and a restart repeats nothing."""

from __future__ import annotations

import json
from collections.abc import Sequence

from bot.adapters.store.base import StoreBase
from bot.domain import (
    analysis_events,  # noqa: F401 - registers the analysis' events, read back here
    pipelines,  # noqa: F401 - registers the pipelines' events, read back here
    verification,  # noqa: F401 - registers verification's and feedback's events
)
from bot.domain.events import DomainEvent, OutboxEntry


class OutboxMixin(StoreBase):
    """The outbox (part of Store)."""

    # How many events this store object has appended (rolled-back ones included): AsyncStore compares it
    # before and after a write to wake the outbox's readers only when the write appended something (a
    # request answered "locked" appends nothing, and 48 of them were 48 wake-ups and outbox reads).
    appended_total: int = 0

    def _append_in_tx(self, deployment_id: int | None, events: Sequence[DomainEvent]) -> list[int]:
        """Append inside the caller's transaction (its state change and audit event commit with these)."""
        if events:
            self.appended_total += len(events)
        created = self.now()
        return [
            self._insert(
                "outbox",
                {
                    "deployment_id": deployment_id,
                    "kind": e.kind,
                    "payload": json.dumps(e.to_dict(), sort_keys=True),
                    "created": created,
                },
            )
            for e in events
        ]

    def append_events(self, deployment_id: int | None, events: Sequence[DomainEvent]) -> list[int]:
        """Append events that go with no state change; returns their outbox ids, in order."""
        with self.db.atomic():
            return self._append_in_tx(deployment_id, events)

    def outbox_after(self, consumer: str, limit: int = 100) -> list[OutboxEntry]:
        """The next events `consumer` has not delivered, oldest first: (outbox id, deployment id, event).

        On PostgreSQL the consumer's cursor row is read FOR UPDATE SKIP LOCKED: while another replica's
        reader of the same consumer holds it (reading, or marking), this one gets nothing at once instead
        of waiting and then reading the same batch. The lock is on the cursor, never on events: skipping
        events would let the cursor pass ones a crashed reader never delivered."""
        with self.db.atomic():
            after = self._cursor_for_read(consumer)
            if after is None:
                return []
            rows = self._rows(
                "SELECT id, deployment_id, kind, payload FROM outbox WHERE id > ? ORDER BY id LIMIT ?",
                [after, limit],
            )
        return [
            OutboxEntry(
                r["id"], r["deployment_id"], DomainEvent.from_dict(r["kind"], json.loads(r["payload"]))
            )
            for r in rows
        ]

    def _cursor_for_read(self, consumer: str) -> int | None:
        """The consumer's cursor, held for this transaction on PostgreSQL; None: another reader holds it."""
        if self.dialect != "postgres":
            return self.delivered(consumer)
        sql = "SELECT last_id FROM outbox_cursors WHERE consumer = ?"
        rows = self._rows(sql + " FOR UPDATE SKIP LOCKED", [consumer])
        if rows:
            return int(rows[0]["last_id"])
        return None if self._rows(sql, [consumer]) else 0  # a row we could not lock: someone reads it

    def delivered(self, consumer: str) -> int:
        """The last outbox id `consumer` delivered (0: none yet)."""
        rows = list(self.db.query("SELECT last_id FROM outbox_cursors WHERE consumer = ?", [consumer]))
        return int(rows[0]["last_id"]) if rows else 0

    def mark_delivered(self, consumer: str, outbox_id: int) -> int:
        """Move `consumer`'s cursor to `outbox_id`; never back (a late, older mark changes nothing).
        Returns the cursor as it now stands."""
        with self.db.atomic():
            self.db.execute(
                "INSERT INTO outbox_cursors (consumer, last_id) VALUES (?, ?) ON CONFLICT (consumer) "
                "DO UPDATE SET last_id = excluded.last_id WHERE excluded.last_id > outbox_cursors.last_id",
                [consumer, outbox_id],
            )
            return self.delivered(consumer)
