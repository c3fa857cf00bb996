"""The latest analysis charts posted (the `chart_posted` audit events handlers/charts.py writes), for the
Home tab's links: one query, newest first."""

from __future__ import annotations

from bot.adapters.store.sqlite import Store
from bot.domain.model import Deployment


def latest_charts(store: Store, limit: int = 5) -> list[tuple[Deployment, str]]:
    """(deployment, the chart's permalink), newest first; one per deployment (its latest chart)."""
    rows = store.db.query(
        "SELECT deployment_id, json_extract(details, '$.permalink') AS link FROM events "
        "WHERE action = 'chart_posted' AND json_extract(details, '$.permalink') IS NOT NULL "
        "ORDER BY id DESC LIMIT ?",
        [limit * 4],
    )
    out: list[tuple[Deployment, str]] = []
    seen: set[int] = set()
    for r in rows:
        if r["deployment_id"] in seen or len(out) >= limit:
            continue
        seen.add(r["deployment_id"])
        out.append((store.get(r["deployment_id"]), r["link"]))
    return out
