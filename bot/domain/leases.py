"""Leases of work that several replicas share: what is leased is named here, and the refusal a replica
gets when it acts on work whose lease changed hands (the fence). Pure: the store keeps the rows."""

from __future__ import annotations

OUTBOX = "outbox"  # the notifier's delivery: the outbox's consumers, alert timers, PagerDuty


def deployment_lease(deployment_id: int) -> str:
    return f"deployment:{deployment_id}"


def fire_lease(key: str, due: float) -> str:
    """The one firing of a schedule timer: `key` due at `due` (clock epoch seconds)."""
    return f"fire:{key}:{due!r}"


class Fenced(BaseException):
    """The lease `name` is no longer held with `token`: another replica took it over (`holder`). What
    the caller set out to do was not done, and it must stop working on that lease's behalf.

    A BaseException, like asyncio's CancelledError and for the same reason: a step's or a rollback's
    `except Exception` (retry, record the failure, roll back) must not handle it — a fenced replica may
    do nothing more for that deployment, not even record that something failed."""

    def __init__(self, name: str, token: int, holder: str | None, holder_token: int | None):
        self.name, self.token, self.holder, self.holder_token = name, token, holder, holder_token
        super().__init__(
            f"lease {name} with token {token} is no longer held: "
            + (f"{holder} holds it with token {holder_token}" if holder else "nobody holds it")
        )
