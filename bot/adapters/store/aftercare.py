"""The store's part for what follows a success (the `aftercare` and `note_keys` tables): verifications,
the requester's answer, notes. Each write goes with its audit event and its outbox events in ONE
transaction of the Store it is given (its database, audit and outbox); AsyncAftercare runs each call on
the store's one thread and wakes the outbox's readers, as AsyncStore does."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from bot.domain.events import DomainEvent
from bot.domain.model import Deployment

if TYPE_CHECKING:
    from bot.adapters.store.aio import AsyncStore
    from bot.adapters.store.sqlite import Store

P = ParamSpec("P")
R = TypeVar("R")
Audit = tuple[str, str, dict[str, Any]]
_NUDGE: Sequence[DomainEvent] = (DomainEvent(),)  # a write that may append events: wake the outbox


@dataclass(frozen=True)
class Watch:
    """One deployment's row: its verification (started/until None: it had none) and its feedback."""

    deployment_id: int
    service: str
    env: str
    slot: str | None
    baseline_slot: str | None
    started: float | None
    until: float | None
    baseline: dict[str, Any] | None
    measurements: list[dict[str, Any]]
    outcome: str | None
    ended: float | None
    deferred_scale_down: bool
    asked: bool
    feedback: str | None
    feedback_by: str | None
    feedback_at: str | None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Watch:
        return cls(
            **{
                **row,
                "baseline": json.loads(row["baseline"]) if row["baseline"] else None,
                "measurements": json.loads(row["measurements"] or "[]"),
                "deferred_scale_down": bool(row["deferred_scale_down"]),
                "asked": bool(row["asked"]),
            }
        )

    @property
    def watching(self) -> bool:
        return self.until is not None and self.outcome is None


class Aftercare:
    """Synchronous; every method runs on the store's thread."""

    def __init__(self, store: Store):
        self.store = store

    @property
    def db(self) -> Any:
        return self.store.db

    def _audit(self, deployment_id: int, audit: Sequence[Audit], events: Sequence[DomainEvent]) -> None:
        state = self.store.get(deployment_id).state
        for actor, action, details in audit:
            self.store._event(deployment_id, actor, action, state, state, details)
        self.store._append_in_tx(deployment_id, events)

    def _ensure(self, d: Deployment) -> None:
        self.db.execute(
            "INSERT INTO aftercare (deployment_id, service, env) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
            [d.id, d.service, d.env],
        )

    def watch(self, deployment_id: int) -> Watch | None:
        rows = self.store._rows("SELECT * FROM aftercare WHERE deployment_id = ?", [deployment_id])
        return Watch.from_row(rows[0]) if rows else None

    def watching(self) -> list[Watch]:
        """Every verification still watching (a restart resumes them), oldest first."""
        rows = self.store._rows(
            "SELECT * FROM aftercare WHERE outcome IS NULL AND until IS NOT NULL ORDER BY deployment_id"
        )
        return [Watch.from_row(r) for r in rows]

    def start(
        self,
        deployment_id: int,
        *,
        slot: str | None,
        baseline_slot: str | None,
        started: float,
        until: float,
        baseline: dict[str, Any] | None,
        deferred_scale_down: bool,
        audit: Sequence[Audit],
        events: Sequence[DomainEvent],
        superseded: Callable[[int], tuple[Sequence[Audit], Sequence[DomainEvent]]],
    ) -> list[int]:
        """Begin deployment's verification (once: a second call changes nothing) and end, as superseded,
        every earlier one of the same service and environment still watching (`superseded(id)` gives
        each one's audit and events). Returns the ids it superseded."""
        with self.db.atomic():
            d = self.store.get(deployment_id)
            ended = self.supersede_in_tx(d, superseded, started)
            self._ensure(d)
            changed = self.db.execute(
                "UPDATE aftercare SET slot = ?, baseline_slot = ?, started = ?, until = ?, baseline = ?, "
                "deferred_scale_down = ? WHERE deployment_id = ? AND started IS NULL",
                [
                    slot,
                    baseline_slot,
                    started,
                    until,
                    json.dumps(baseline) if baseline is not None else None,
                    int(deferred_scale_down),
                    deployment_id,
                ],
            ).rowcount
            if changed:
                shown = {"until": until, "seconds": until - started}
                self._show(deployment_id, "$.verification", shown)
                self._audit(deployment_id, audit, events)
        return ended

    def _show(self, deployment_id: int, path: str, value: Any) -> None:
        """What the deployment's message shows of it (its context's `verification`), in the same write.
        Read, changed and written in the caller's transaction: SQL both stores speak (no json_set)."""
        rows = self.store._rows("SELECT context FROM deployments WHERE id = ?", [deployment_id])
        context = json.loads(rows[0]["context"] or "{}") if rows else {}
        *parents, last = path.removeprefix("$.").split(".")
        node = context
        for key in parents:  # json_set's walk: a missing or non-object step becomes an object
            if not isinstance(node.get(key), dict):
                node[key] = {}
            node = node[key]
        node[last] = value
        self.db.execute(
            "UPDATE deployments SET context = ? WHERE id = ?", [json.dumps(context), deployment_id]
        )

    def supersede_in_tx(
        self,
        d: Deployment,
        superseded: Callable[[int], tuple[Sequence[Audit], Sequence[DomainEvent]]],
        now: float,
    ) -> list[int]:
        rows = self.store._rows(
            "SELECT deployment_id FROM aftercare WHERE service = ? AND env = ? AND outcome IS NULL "
            "AND until IS NOT NULL AND deployment_id < ?",
            [d.service, d.env, d.id],
        )
        ended = []
        for row in rows:
            other = int(row["deployment_id"])
            if self._end_in_tx(other, "superseded", now):
                audit, events = superseded(other)
                self._audit(other, audit, events)
                ended.append(other)
        return ended

    def supersede(
        self,
        deployment_id: int,
        superseded: Callable[[int], tuple[Sequence[Audit], Sequence[DomainEvent]]],
        now: float,
    ) -> list[int]:
        """A newer deployment of the service and environment started: the older verifications end."""
        with self.db.atomic():
            return self.supersede_in_tx(self.store.get(deployment_id), superseded, now)

    def add_measurement(
        self, deployment_id: int, measurement: dict[str, Any], audit: Sequence[Audit]
    ) -> bool:
        """Keep a verification's measurement (with its audit record); False if it no longer watches."""
        with self.db.atomic():
            w = self.watch(deployment_id)
            if w is None or not w.watching:
                return False
            self.db.execute(
                "UPDATE aftercare SET measurements = ? WHERE deployment_id = ?",
                [json.dumps([*w.measurements, measurement]), deployment_id],
            )
            self._audit(deployment_id, audit, ())
        return True

    def _end_in_tx(self, deployment_id: int, outcome: str, now: float) -> bool:
        won = self.db.execute(
            "UPDATE aftercare SET outcome = ?, ended = ? WHERE deployment_id = ? AND outcome IS NULL "
            "AND until IS NOT NULL",
            [outcome, now, deployment_id],
        ).rowcount
        if won:
            self._show(deployment_id, "$.verification.outcome", outcome)
        return bool(won)

    def end(
        self,
        deployment_id: int,
        outcome: str,
        now: float,
        audit: Sequence[Audit],
        events: Sequence[DomainEvent],
    ) -> bool:
        """End a verification with `outcome` (compare-and-set: only the first end counts)."""
        with self.db.atomic():
            won = self._end_in_tx(deployment_id, outcome, now)
            if won:
                self._audit(deployment_id, audit, events)
        return won

    def clear_deferred_scale_down(
        self, deployment_id: int, audit: Sequence[Audit], events: Sequence[DomainEvent]
    ) -> bool:
        with self.db.atomic():
            won = self.db.execute(
                "UPDATE aftercare SET deferred_scale_down = 0 WHERE deployment_id = ? AND deferred_scale_down = 1",
                [deployment_id],
            ).rowcount
            if won:
                self._audit(deployment_id, audit, events)
        return bool(won)

    def ask(self, deployment_id: int, audit: Sequence[Audit], events: Sequence[DomainEvent]) -> bool:
        """Ask the requester how it went, once (True: this call asked)."""
        with self.db.atomic():
            self._ensure(self.store.get(deployment_id))
            won = self.db.execute(
                "UPDATE aftercare SET asked = 1 WHERE deployment_id = ? AND asked = 0", [deployment_id]
            ).rowcount
            if won:
                self._audit(deployment_id, audit, events)
        return bool(won)

    def answer(
        self, deployment_id: int, by: str, answer: str, events: Sequence[DomainEvent]
    ) -> tuple[bool, Watch]:
        """The first answer wins (a double click or a retry records nothing more); (won, the row)."""
        with self.db.atomic():
            self._ensure(self.store.get(deployment_id))
            won = self.db.execute(
                "UPDATE aftercare SET feedback = ?, feedback_by = ?, feedback_at = ? "
                "WHERE deployment_id = ? AND feedback IS NULL",
                [answer, by, self.store.now(), deployment_id],
            ).rowcount
            if won:
                self._audit(deployment_id, [(by, "feedback", {"answer": answer})], events)
            w = self.watch(deployment_id)
        assert w is not None
        return bool(won), w

    def note(
        self, deployment_id: int, by: str, text: str, events: Sequence[DomainEvent], key: str | None = None
    ) -> bool:
        """A person's note on a deployment (audit action `note`); with `key`, once per key. NotFound for
        no such deployment."""
        with self.db.atomic():
            self.store.get(deployment_id)
            if key is not None:
                added = self.db.execute(
                    "INSERT INTO note_keys (key, deployment_id, at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                    [key, deployment_id, self.store.now()],
                ).rowcount
                if not added:
                    return False
            self._audit(deployment_id, [(by, "note", {"text": text})], events)
        return True

    def summaries(self, deployment_ids: Sequence[int]) -> dict[int, tuple[str | None, int, str | None]]:
        """Per deployment: (its verification's outcome, how many notes, the requester's answer)."""
        if not deployment_ids:
            return {}
        marks = ", ".join("?" * len(deployment_ids))
        out: dict[int, tuple[str | None, int, str | None]] = {}
        notes = {
            r["deployment_id"]: r["n"]
            for r in self.store._rows(
                f"SELECT deployment_id, COUNT(*) AS n FROM events WHERE action = 'note' "
                f"AND deployment_id IN ({marks}) GROUP BY deployment_id",
                list(deployment_ids),
            )
        }
        rows = {
            r["deployment_id"]: r
            for r in self.store._rows(
                f"SELECT deployment_id, outcome, until, feedback FROM aftercare WHERE deployment_id IN ({marks})",
                list(deployment_ids),
            )
        }
        for i in deployment_ids:
            row = rows.get(i)
            outcome = None
            if row is not None and row["until"] is not None:
                outcome = row["outcome"] or "watching"
            out[i] = (outcome, int(notes.get(i, 0)), row["feedback"] if row else None)
        return out


class AsyncAftercare:
    """Aftercare for async code: each call on the store's thread; a write with events wakes the outbox."""

    def __init__(self, store: AsyncStore):
        self.astore = store
        self.sync = Aftercare(store.sync)

    async def _call(
        self, events: Sequence[DomainEvent], fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs
    ) -> R:
        return await self.astore._write(events, fn, *args, **kwargs)

    async def watch(self, deployment_id: int) -> Watch | None:
        return await self.astore.call(self.sync.watch, deployment_id)

    async def watching(self) -> list[Watch]:
        return await self.astore.call(self.sync.watching)

    async def start(self, deployment_id: int, **fields: Any) -> list[int]:
        return await self._call(_NUDGE, self.sync.start, deployment_id, **fields)

    async def supersede(
        self,
        deployment_id: int,
        superseded: Callable[[int], tuple[Sequence[Audit], Sequence[DomainEvent]]],
        now: float,
    ) -> list[int]:
        return await self._call(_NUDGE, self.sync.supersede, deployment_id, superseded, now)

    async def add_measurement(
        self, deployment_id: int, measurement: dict[str, Any], audit: Sequence[Audit]
    ) -> bool:
        return await self.astore.call(self.sync.add_measurement, deployment_id, measurement, audit)

    async def end(
        self,
        deployment_id: int,
        outcome: str,
        now: float,
        audit: Sequence[Audit],
        events: Sequence[DomainEvent],
    ) -> bool:
        return await self._call(events, self.sync.end, deployment_id, outcome, now, audit, events)

    async def clear_deferred_scale_down(
        self, deployment_id: int, audit: Sequence[Audit], events: Sequence[DomainEvent]
    ) -> bool:
        return await self._call(events, self.sync.clear_deferred_scale_down, deployment_id, audit, events)

    async def ask(self, deployment_id: int, audit: Sequence[Audit], events: Sequence[DomainEvent]) -> bool:
        return await self._call(events, self.sync.ask, deployment_id, audit, events)

    async def answer(
        self, deployment_id: int, by: str, answer: str, events: Sequence[DomainEvent]
    ) -> tuple[bool, Watch]:
        return await self._call(events, self.sync.answer, deployment_id, by, answer, events)

    async def note(
        self, deployment_id: int, by: str, text: str, events: Sequence[DomainEvent], key: str | None = None
    ) -> bool:
        return await self._call(events, self.sync.note, deployment_id, by, text, events, key)

    async def summaries(self, deployment_ids: Sequence[int]) -> dict[int, tuple[str | None, int, str | None]]:
        return await self.astore.call(self.sync.summaries, list(deployment_ids))
