"""The audit export: every event joined with its deployment, oldest first, as rows for JSON or CSV."""

from __future__ import annotations

from typing import Any

from bot.adapters.store.sqlite import Store


def audit_rows(store: Store, since: str | None, service: str | None) -> list[dict[str, Any]]:
    """Every event, joined with its deployment, oldest first; an emergency deploy's events are flagged."""
    deployments: dict[int, Any] = {}
    rows = []
    for e in store.events(since=since, service=service):
        d = deployments.get(e.deployment_id) if e.deployment_id is not None else None
        if d is None and e.deployment_id is not None:
            d = deployments[e.deployment_id] = store.find(e.deployment_id)
        rows.append(
            {
                "event_id": e.id,
                "at": e.at,
                "deployment_id": e.deployment_id,
                "service": d.service if d else e.details.get("service"),
                "env": d.env if d else e.details.get("env"),
                "version": d.version if d else None,
                "actor": e.actor,
                "action": e.action,
                "from_state": e.from_state,
                "to_state": e.to_state,
                "emergency": bool(d and d.context.get("emergency")) or e.action == "emergency",
                "details": e.details,
            }
        )
    return rows
