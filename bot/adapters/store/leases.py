"""Leases (part of Store): one row per leased piece of work — owner, token, expiry — each change a
compare-and-set on the row's token, in standard SQL (it runs unchanged on PostgreSQL). A lease is taken
when it has no row, when it expired, or by its own owner (a replica started again under its name); each
change of hands increments the token. `fenced` runs a write only while the caller's token still holds,
in one transaction with the check, and records the caller's intent (the AWS call it sets out to make)
on the row: a replica whose lease was taken over can neither record a step nor set out to call AWS.

And the start of a deployment as a compare-and-set on what the gate saw (`start_as_seen`): within one
process the gate's admission lock keeps an amendment out of the gap between the readiness check and the
start; with several replicas an amendment may come through another one. An amendment changes the
version or the strategy (an unchanged request writes nothing), so the start refuses (Conflict) and the
amendment's own recheck decides again."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from bot.adapters.store.base import StoreBase
from bot.domain.errors import Conflict
from bot.domain.events import DomainEvent
from bot.domain.leases import Fenced
from bot.domain.machine import State
from bot.domain.model import Deployment

R = TypeVar("R")


class LeasesMixin(StoreBase):
    """Leases (part of Store)."""

    def lease(self, name: str) -> dict[str, Any] | None:
        rows = self._rows("SELECT * FROM leases WHERE name = ?", [name])
        return rows[0] if rows else None

    def leases(self, prefix: str = "") -> list[dict[str, Any]]:
        return self._rows("SELECT * FROM leases WHERE name LIKE ? ORDER BY name", [prefix + "%"])

    def acquire_lease(self, name: str, owner: str, ttl: float) -> int | None:
        """Take `name` for `owner` until now + ttl; its new token, or None while another owner holds it."""
        now = self.clock.now()
        with self.db.atomic():
            row = self.lease(name)
            if row is None:
                try:
                    self.db.execute(
                        "INSERT INTO leases (name, owner, token, expires, updated_at) VALUES (?, ?, 1, ?, ?)",
                        [name, owner, now + ttl, self.now()],
                    )
                except sqlite3.IntegrityError:  # another replica inserted it first
                    return None
                return 1
            if row["owner"] != owner and row["expires"] > now:
                return None
            token = int(row["token"]) + 1
            changed = self.db.execute(
                "UPDATE leases SET owner = ?, token = ?, expires = ?, intent = NULL, updated_at = ? "
                "WHERE name = ? AND token = ?",
                [owner, token, now + ttl, self.now(), name, row["token"]],
            ).rowcount
            return token if changed == 1 else None

    def renew_lease(self, name: str, token: int, ttl: float) -> bool:
        """Keep `name` until now + ttl; False when `token` no longer holds it (taken over, or released)."""
        return self._extend(name, token, self.clock.now() + ttl, None)

    def release_lease(self, name: str, token: int) -> bool:
        """Hand `name` back: it expires now, so another replica takes it at once."""
        return self._extend(name, token, self.clock.now() - 1e-3, None)

    def release_leases(self, owner: str) -> int:
        """Hand back every lease `owner` holds (a replica shutting down)."""
        with self.db.atomic():
            return self.db.execute(
                "UPDATE leases SET expires = ?, updated_at = ? WHERE owner = ? AND expires > ?",
                [self.clock.now() - 1e-3, self.now(), owner, self.clock.now()],
            ).rowcount

    def _extend(self, name: str, token: int, expires: float, intent: str | None) -> bool:
        with self.db.atomic():
            return (
                self.db.execute(
                    "UPDATE leases SET expires = ?, intent = COALESCE(?, intent), updated_at = ? "
                    "WHERE name = ? AND token = ? AND expires > ?",
                    [expires, intent, self.now(), name, token, self.clock.now()],
                ).rowcount
                == 1
            )

    def fence(self, name: str, token: int, ttl: float, intent: str | None) -> None:
        """Raise Fenced unless `token` still holds `name`, which it then keeps until now + ttl, with
        `intent` recorded: the check an AWS call is allowed by."""
        with self.db.atomic():
            if not self._extend(name, token, self.clock.now() + ttl, intent):
                row = self.lease(name)
                raise Fenced(name, token, row["owner"] if row else None, row["token"] if row else None)

    def fenced(
        self,
        name: str,
        token: int,
        ttl: float,
        intent: str | None,
        fn: Callable[..., R],
        *args: Any,
        **kwargs: Any,
    ) -> R:
        """`fn(*args, **kwargs)` in one transaction with the fence (Fenced: nothing was written)."""
        with self.db.atomic():
            self.fence(name, token, ttl, intent)
            return fn(*args, **kwargs)

    def unleased_in_flight(self) -> list[Deployment]:
        """Deployments mid-plan whose lease expired or that never had one: a replica takes them over."""
        states = [State.RUNNING.value, State.ROLLING_BACK.value, State.PAUSED.value]
        rows = self._rows(
            "SELECT d.* FROM deployments d LEFT JOIN leases l ON l.name = 'deployment:' || d.id "
            "WHERE d.state IN (?, ?, ?) AND (l.name IS NULL OR l.expires <= ?) ORDER BY d.id",
            [*states, self.clock.now()],
        )
        return [Deployment.from_row(r) for r in rows]

    def outbox_head(self) -> int:
        """The newest outbox id (0: none): a replica delivering the outbox polls it for others' events."""
        rows = self._rows("SELECT MAX(id) AS head FROM outbox")
        return int(rows[0]["head"] or 0)

    def start_as_seen(self, seen: Deployment, actor: str, events: Sequence[DomainEvent] = ()) -> Deployment:
        with self.db.atomic():
            now = self.get(seen.id)
            if (now.version, now.strategy) != (seen.version, seen.strategy):
                raise Conflict(f"deployment #{seen.id} changed since its checks: deciding again", now.state)
            return self.transition(seen.id, "start", actor, events=events)  # type: ignore[attr-defined]
