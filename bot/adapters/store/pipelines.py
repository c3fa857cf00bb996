"""The store's pipelines: one row each, saved by compare-and-set on its revision with the audit event of
the change (and its outbox events) in the same transaction, so a pipeline's record, its audit trail and
what its message is told never disagree, and two drivers of one pipeline cannot both move it."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from bot.adapters.store.base import _SQLITE_INT, StoreBase
from bot.domain.errors import Conflict, NotFound
from bot.domain.events import DomainEvent
from bot.domain.model import Event
from bot.domain.pipelines import RUNNING, Pipeline, Stage

_COLUMNS = (
    "id, name, service, version, requested_by, roles, state, stages, reason, channel, message_ts, "
    "revision, created_at, updated_at, finished_at, request_key"
)


class PipelinesMixin(StoreBase):
    """Pipelines (part of Store)."""

    if TYPE_CHECKING:

        def _append_in_tx(self, deployment_id: int | None, events: Sequence[DomainEvent]) -> list[int]: ...

    def create_pipeline(
        self,
        *,
        name: str,
        service: str,
        version: str,
        requested_by: str,
        roles: Sequence[str],
        stages: Sequence[Stage],
        channel: str | None = None,
        request_key: str | None = None,
    ) -> Pipeline:
        """A new running pipeline, audited (`pipeline_requested`); with a request_key already used, the
        pipeline it made is returned unchanged (a retried request)."""
        with self.db.atomic():
            if request_key is not None:
                rows = self._rows(f"SELECT {_COLUMNS} FROM pipelines WHERE request_key = ?", [request_key])
                if rows:
                    return Pipeline.from_row(rows[0])
            now = self.now()
            pipeline_id = self._insert(
                "pipelines",
                {
                    "name": name,
                    "service": service,
                    "version": version,
                    "requested_by": requested_by,
                    "roles": json.dumps(sorted(roles)),
                    "state": RUNNING,
                    "stages": json.dumps([s.to_dict() for s in stages], sort_keys=True),
                    "channel": channel,
                    "request_key": request_key,
                    "created_at": now,
                    "updated_at": now,
                },
            )
            details = {
                "pipeline": pipeline_id,
                "name": name,
                "service": service,
                "version": version,
                "environments": list(dict.fromkeys(s.env for s in stages)),
            }
            self._event(None, requested_by, "pipeline_requested", None, None, details)
        return self.pipeline(pipeline_id)

    def save_pipeline(
        self,
        p: Pipeline,
        *,
        actor: str,
        action: str,
        details: dict[str, Any] | None = None,
        deployment_id: int | None = None,
        events: Sequence[DomainEvent] = (),
    ) -> Pipeline:
        """Write `p` (its state, stages and reason) if the stored revision is still `p.revision`, with its
        audit event (`action`; about deployment `deployment_id` when a stage's deployment is concerned)
        and outbox `events`, in one transaction. Conflict when someone saved it meanwhile."""
        now = self.now()
        with self.db.atomic():
            cursor = self.db.conn.execute(
                "UPDATE pipelines SET state = ?, stages = ?, reason = ?, revision = revision + 1, "
                "updated_at = ?, finished_at = ? WHERE id = ? AND revision = ?",
                [
                    p.state,
                    p.stages_json(),
                    p.reason,
                    now,
                    None if p.state == RUNNING else now,
                    p.id,
                    p.revision,
                ],
            )
            if cursor.rowcount != 1:
                raise Conflict(f"{p.ref} changed meanwhile")
            state = self.get(deployment_id).state if deployment_id is not None else None
            audit = {**(details or {}), "pipeline": p.id, "service": p.service, "state": p.state}
            self._event(deployment_id, actor, action, state, state, audit)
            self._append_in_tx(None, events)
        return self.pipeline(p.id)

    def pipeline(self, pipeline_id: int) -> Pipeline:
        """The pipeline; NotFound for an id that names none."""
        if not isinstance(pipeline_id, int) or pipeline_id not in _SQLITE_INT:
            raise NotFound("pipeline", pipeline_id)
        rows = self._rows(f"SELECT {_COLUMNS} FROM pipelines WHERE id = ?", [pipeline_id])
        if not rows:
            raise NotFound("pipeline", pipeline_id)
        return Pipeline.from_row(rows[0])

    def find_pipeline(self, pipeline_id: int) -> Pipeline | None:
        try:
            return self.pipeline(pipeline_id)
        except KeyError:
            return None

    def running_pipelines(self) -> list[Pipeline]:
        rows = self._rows(f"SELECT {_COLUMNS} FROM pipelines WHERE state = ? ORDER BY id", [RUNNING])
        return [Pipeline.from_row(r) for r in rows]

    def latest_pipelines(self, service: str | None = None, limit: int = 10) -> list[Pipeline]:
        sql, args = f"SELECT {_COLUMNS} FROM pipelines", []
        if service is not None:
            sql, args = sql + " WHERE service = ?", [service]
        rows = self._rows(sql + " ORDER BY id DESC LIMIT ?", [*args, limit])
        return [Pipeline.from_row(r) for r in rows]

    def pipeline_events(self, pipeline_id: int) -> list[Event]:
        """The pipeline's audited transitions, oldest first."""
        rows = self._rows(
            "SELECT * FROM events WHERE json_extract(details, '$.pipeline') = ? ORDER BY id", [pipeline_id]
        )
        return [Event.from_row(r) for r in rows]

    def record_pipeline_post(self, pipeline_id: int, at: float) -> None:
        """The pipeline's message is being posted (before the post: a restart looks for it first)."""
        self.db.execute("UPDATE pipelines SET post_attempted = ? WHERE id = ?", [at, pipeline_id])

    def pipeline_post_attempted(self, pipeline_id: int) -> float | None:
        rows = self._rows("SELECT post_attempted FROM pipelines WHERE id = ?", [pipeline_id])
        return rows[0]["post_attempted"] if rows else None

    def unconfirmed_pipeline_posts(self) -> list[int]:
        """Pipelines whose message was set out to be posted with no ts stored."""
        rows = self._rows(
            "SELECT id FROM pipelines WHERE post_attempted IS NOT NULL AND message_ts IS NULL ORDER BY id"
        )
        return [int(r["id"]) for r in rows]

    def set_pipeline_message(self, pipeline_id: int, channel: str, ts: str) -> None:
        self.db.execute(
            "UPDATE pipelines SET channel = ?, message_ts = ? WHERE id = ?", [channel, ts, pipeline_id]
        )
