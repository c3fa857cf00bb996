"""The deploy domain's records, as the store hands them out: deployments, their audit events, locks, amendments, alerts and stored request answers. Plain values, no I/O."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from bot.domain.machine import State

BOT = "deploybot"  # the actor of everything the bot does by itself


@dataclass(frozen=True)
class StoredAnswer:
    """What the bot answered to a request before (None fields: it is still being handled)."""

    status: int | None
    content_type: str | None
    body: str | None


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
class Amendment:
    """A person's new request met their own earlier one, not started yet: what it is now, what it was
    before this request, and whether this request changed anything (False: it already asked for that)."""

    deployment: Deployment
    from_version: str | None
    from_strategy: str
    changed: bool


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


# ------------------------------------------------------------------------------------------- alerts


@dataclass(frozen=True)
class Alert:
    """An alert raised about a deployment, as the store keeps it. Only critical alerts are acknowledged
    and escalate; warnings raised by a timer (approval waiting, slow rollout) are kept so they are raised
    once. `messages` are the Slack messages showing it ({channel, ts}); the first one's thread gets the
    escalations."""

    id: int
    deployment_id: int
    event: str
    level: str
    text: str
    key: str | None
    raised_at: str
    raised_ts: float
    messages: list[dict[str, str]]
    acked_by: str | None
    acked_at: str | None
    acked_ts: float | None
    resolved_at: str | None
    resolved_ts: float | None
    resolution: str | None
    rounds_claimed: int
    rounds_sent: int
    next_escalation_at: float | None
    paged: str | None = None  # the last PagerDuty action confirmed sent for it

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Alert:
        return cls(
            **{
                **row,
                "messages": json.loads(row["messages"] or "[]"),
                "rounds_claimed": row["rounds_claimed"] or 0,
                "rounds_sent": row["rounds_sent"] or 0,
            }
        )

    @property
    def acknowledged(self) -> bool:
        return self.acked_by is not None

    @property
    def resolved(self) -> bool:
        return self.resolved_at is not None

    @property
    def thread(self) -> dict[str, str] | None:
        return self.messages[0] if self.messages else None

    def pages_due(self, attempted: bool = False) -> list[str]:
        """The PagerDuty actions its incident still needs, in order, from what was confirmed sent: a
        critical alert is triggered, then acknowledged and resolved as it is; one resolved before it was
        ever paged needs nothing — unless its page was `attempted` (PagerDuty was being asked, and failed):
        then the incident is delivered whole, late."""
        if self.level != "critical":
            return []
        wanted = (
            ["trigger"]
            + (["acknowledge"] if self.acknowledged else [])
            + (["resolve"] if self.resolved else [])
        )
        if self.paged is None:
            return [] if self.resolved and not attempted else wanted
        done = wanted.index(self.paged) + 1 if self.paged in wanted else len(wanted)
        return wanted[done:]
