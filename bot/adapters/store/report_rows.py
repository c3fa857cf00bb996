"""What the delivery report (bot.app.report) reads from the store: the ended deployments and the few audit
events it needs of them (their start, measurements and verification regressions), in two queries."""

from __future__ import annotations

from bot.adapters.store.sqlite import Store
from bot.domain.model import Deployment, Event

ACTIONS = ("start", "measurement", "verify_regressed")


def report_records(
    store: Store, service: str | None = None, env: str | None = None
) -> tuple[list[Deployment], list[Event]]:
    scope = [(column, value) for column, value in (("service", service), ("env", env)) if value is not None]
    where = "".join(f" AND d.{column} = ?" for column, _ in scope)
    args = [value for _, value in scope]
    deployments = [
        Deployment.from_row(r)
        for r in store.db.query(
            f"SELECT d.* FROM deployments d WHERE d.finished_at IS NOT NULL{where} ORDER BY d.id", args
        )
    ]
    marks = ",".join("?" * len(ACTIONS))
    events = [
        Event.from_row(r)
        for r in store.db.query(
            "SELECT e.* FROM events e JOIN deployments d ON d.id = e.deployment_id "
            f"WHERE e.action IN ({marks}){where} ORDER BY e.id",
            [*ACTIONS, *args],
        )
    ]
    return deployments, events


def known_services(store: Store) -> set[str]:
    return {r["service"] for r in store.db.query("SELECT DISTINCT service FROM deployments")}


def known_envs(store: Store) -> set[str]:
    return {r["env"] for r in store.db.query("SELECT DISTINCT env FROM deployments")}
