"""What the delivery report (bot.app.report) reads from the store: the ended deployments and the few audit
events it needs of them (their start, measurements and verification regressions), in two queries."""

from __future__ import annotations

from bot.adapters.store.sqlite import Store
from bot.domain.model import Deployment, Event

ACTIONS = ("start", "measurement", "verify_regressed")


def report_records(
    store: Store, service: str | None = None, env: str | None = None
) -> tuple[list[Deployment], list[Event]]:
    sql, args = "SELECT * FROM deployments WHERE finished_at IS NOT NULL", []
    for column, value in (("service", service), ("env", env)):
        if value is not None:
            sql += f" AND {column} = ?"
            args.append(value)
    deployments = [Deployment.from_row(r) for r in store.db.query(sql + " ORDER BY id", args)]
    marks = ",".join("?" * len(ACTIONS))
    events = [
        Event.from_row(r)
        for r in store.db.query(
            f"SELECT e.* FROM events e JOIN deployments d ON d.id = e.deployment_id "
            f"WHERE e.action IN ({marks})"
            + "".join(f" AND d.{c} = ?" for c, v in (("service", service), ("env", env)) if v is not None)
            + " ORDER BY e.id",
            [*ACTIONS, *args],
        )
    ]
    return deployments, events


def known_services(store: Store) -> set[str]:
    return {r["service"] for r in store.db.query("SELECT DISTINCT service FROM deployments")}


def known_envs(store: Store) -> set[str]:
    return {r["env"] for r in store.db.query("SELECT DISTINCT env FROM deployments")}
