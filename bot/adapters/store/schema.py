"""The store's schema as named migrations (sqlite-utils), applied in order at open; append-only triggers keep the audit log honest.

The same migrations run on PostgreSQL (bot.adapters.store.pg: its table() and DDL rewriting); where the
two differ (triggers) a migration asks `db.dialect`."""

from __future__ import annotations

from typing import Any

from sqlite_utils import Database, Migrations

migrations = Migrations("deploybot")


@migrations()
def m001_initial(db: Database) -> None:
    db.table("deployments").create(
        {
            "id": int,
            "service": str,
            "env": str,
            "version": str,
            "previous_version": str,
            "strategy": str,
            "kind": str,
            "requested_by": str,
            "reason": str,
            "state": str,
            "step_index": int,
            "plan": str,
            "context": str,
            "channel": str,
            "message_ts": str,
            "outcome": str,
            "created_at": str,
            "updated_at": str,
            "finished_at": str,
            "request_key": str,
        },
        pk="id",
        not_null={"service", "env", "kind", "requested_by", "state", "created_at"},
        defaults={"step_index": 0, "plan": "[]", "context": "{}"},
    )
    db.table("deployments").create_index(["service", "env", "state"])
    # Slack's trigger_id: a retried or replayed request finds its deployment instead of making another.
    db.table("deployments").create_index(["request_key"], unique=True)
    db.table("events").create(
        {
            "id": int,
            "deployment_id": int,
            "at": str,
            "actor": str,
            "action": str,
            "from_state": str,
            "to_state": str,
            "details": str,
        },
        pk="id",
        not_null={"at", "actor", "action"},
        defaults={"details": "{}"},
        foreign_keys=[("deployment_id", "deployments", "id")],
    )
    db.table("events").create_index(["deployment_id", "id"])
    # Append-only: the audit trail can be added to, never edited.
    if getattr(db, "dialect", "sqlite") == "postgres":
        _append_only_postgres(db)
    else:
        db.execute(
            "CREATE TRIGGER events_no_update BEFORE UPDATE ON events "
            "BEGIN SELECT RAISE(ABORT, 'events are append-only'); END"
        )
        db.execute(
            "CREATE TRIGGER events_no_delete BEFORE DELETE ON events "
            "BEGIN SELECT RAISE(ABORT, 'events are append-only'); END"
        )
    db.table("locks").create(
        {"service": str, "env": str, "deployment_id": int, "holder": str, "reason": str, "acquired_at": str},
        pk=("service", "env"),
        not_null={"holder", "acquired_at"},
    )


def _append_only_postgres(db: Any) -> None:
    db.execute(
        "CREATE FUNCTION events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "RAISE EXCEPTION 'events are append-only' USING ERRCODE = 'integrity_constraint_violation'; END $$"
    )
    db.execute(
        "CREATE TRIGGER events_no_update BEFORE UPDATE OR DELETE ON events "
        "FOR EACH ROW EXECUTE FUNCTION events_append_only()"
    )
    db.execute(
        "CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events "
        "FOR EACH STATEMENT EXECUTE FUNCTION events_append_only()"
    )


@migrations()
def m002_alerts(db: Database) -> None:
    # One row per alert raised about a deployment. Escalation is a timer kept here (next_escalation_at, in
    # the clock's epoch seconds) so a restart rebuilds it; a round is claimed before it is posted and
    # confirmed after (rounds_claimed / rounds_sent), so it is never sent twice.
    db.table("alerts").create(
        {
            "id": int,
            "deployment_id": int,
            "event": str,
            "level": str,
            "text": str,
            "key": str,
            "raised_at": str,
            "raised_ts": float,
            "messages": str,
            "acked_by": str,
            "acked_at": str,
            "acked_ts": float,
            "resolved_at": str,
            "resolved_ts": float,
            "resolution": str,
            "rounds_claimed": int,
            "rounds_sent": int,
            "next_escalation_at": float,
        },
        pk="id",
        not_null={"deployment_id", "event", "level", "raised_at", "raised_ts"},
        defaults={"messages": "[]", "rounds_claimed": 0, "rounds_sent": 0},
        foreign_keys=[("deployment_id", "deployments", "id")],
    )
    db.table("alerts").create_index(["deployment_id"])
    db.table("alerts").create_index(["next_escalation_at"])
    db.table("alerts").create_index(["key"], unique=True)  # a timer's warning is raised once


@migrations()
def m010_checklist_and_approvals(db: Database) -> None:
    db.table("checklist").create(
        {"deployment_id": int, "item_id": str, "done": int, "by": str, "at": str, "evidence": str},
        pk=("deployment_id", "item_id"),
        foreign_keys=[("deployment_id", "deployments", "id")],
    )
    db.table("approvals").create(
        {"id": int, "deployment_id": int, "user": str, "at": float, "voided": int},
        pk="id",
        not_null={"deployment_id", "user", "at"},
        defaults={"voided": 0},
        foreign_keys=[("deployment_id", "deployments", "id")],
    )
    db.table("approvals").create_index(["deployment_id"])


@migrations()
def m020_freezes(db: Database) -> None:
    db.table("freezes").create(
        {
            "id": int,
            "env": str,
            "start": str,
            "end": str,
            "reason": str,
            "created_by": str,
            "created_at": str,
            "lifted_by": str,
            "lifted_at": str,
        },
        pk="id",
        not_null={"env", "start", "end", "reason", "created_by", "created_at"},
    )


@migrations()
def m030_requests(db: Database) -> None:
    # Slack's identity of each signed request (trigger_id, else a hash of the signed timestamp and body),
    # claimed before the request is acted on and kept with its answer: a replay or a retry of the same
    # request gets the first answer back and changes nothing. `at` is wall-clock epoch seconds (Slack's
    # signatures are checked against wall time), so old rows can be dropped.
    db.table("requests").create(
        {"key": str, "at": float, "status": int, "content_type": str, "body": str},
        pk="key",
        not_null={"at"},
    )
    db.table("requests").create_index(["at"])


@migrations()
def m040_outbox(db: Database) -> None:
    # Typed domain events (bot.domain.events), written in the transaction of the state change that
    # announces them; each consumer (notifier, alerting, PagerDuty) keeps the last id it delivered, so a
    # crash between the write and the delivery loses nothing and a restart repeats nothing.
    # AUTOINCREMENT: an id is never reused, even after the newest row goes, so a cursor stays valid.
    db.execute(
        "CREATE TABLE outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, "
        "deployment_id INTEGER REFERENCES deployments(id), kind TEXT NOT NULL, "
        "payload TEXT NOT NULL DEFAULT '{}', created TEXT NOT NULL)"
    )
    db.table("outbox_cursors").create({"consumer": str, "last_id": int}, pk="consumer", not_null={"last_id"})


@migrations()
def m050_paged(db: Database) -> None:
    # The last PagerDuty action an alert's incident was confirmed to have (trigger, acknowledge, resolve),
    # so a page the bot stopped before sending is sent at the next start, and none is sent twice.
    db.table("alerts").add_column("paged", str)


@migrations()
def m051_page_attempts(db: Database) -> None:
    # PagerDuty's persistent queue, beside `alerts.paged`: one row per alert whose page is being delivered.
    # Written before the first attempt (so an alert resolved during an outage is still delivered whole),
    # kept while the alert owes PagerDuty an action, removed (in the same transaction as the last
    # `paged`) when it owes nothing. `failing_since`: the clock instant the present run of failures began
    # (NULL: not failing); `first_failed`: when this row's trouble began; `warned`: the "paging is failing"
    # warning was written to the outbox (said once per row, across restarts); `refused`: the action
    # PagerDuty rejected as malformed (a 400); `delivered`: the actions confirmed since the row was made.
    db.table("page_attempts").create(
        {
            "alert_id": int,
            "deployment_id": int,
            "action": str,
            "attempts": int,
            "failing_since": float,
            "first_failed": float,
            "problem": str,
            "refused": str,
            "warned": int,
            "delivered": str,
            "created": float,
        },
        pk="alert_id",
        not_null={"deployment_id", "created"},
        defaults={"attempts": 0, "warned": 0, "delivered": ""},
        foreign_keys=[("alert_id", "alerts", "id"), ("deployment_id", "deployments", "id")],
    )


@migrations()
def m052_first_posts(db: Database) -> None:
    # When the notifier last set out to post a deployment's top-level message (epoch seconds of the
    # clock), written BEFORE the post: a restart that finds one without the deployment's message_ts
    # looks for that message in the channel (its metadata names the deployment) instead of posting again.
    db.execute(
        "CREATE TABLE first_posts (deployment_id INTEGER PRIMARY KEY REFERENCES deployments(id), "
        "attempted REAL NOT NULL)"
    )


@migrations()
def m053_flags(db: Database) -> None:
    # Each environment's state of each feature flag (bot.domain.flags.FlagState as JSON). `revision`
    # counts its changes: every change is a compare-and-set on it, written with its audit event (an
    # `events` row whose details name the flag and the environment) in one transaction. A flag without a
    # row is off. The index finds a flag's changes in the audit log without a scan.
    db.execute(
        "CREATE TABLE flag_states (env TEXT NOT NULL, key TEXT NOT NULL, state TEXT NOT NULL, "
        "revision INTEGER NOT NULL, updated_by TEXT, updated_at TEXT, PRIMARY KEY (env, key))"
    )
    db.execute(
        "CREATE INDEX events_flag ON events (json_extract(details, '$.flag'), json_extract(details, '$.env'))"
    )


@migrations()
def m060_pipelines(db: Database) -> None:
    # One row per pipeline (bot.domain.pipelines): its stages as JSON, each with its deployment or task.
    # `revision` counts its saves: every save is a compare-and-set on it, written with its audit event (an
    # `events` row whose details name the pipeline) and its outbox events in one transaction.
    # `request_key`: Slack's identity of the request that made it (a retry finds it). `post_attempted`:
    # when the pipeline's message was last set out to be posted (clock epoch), written before the post.
    db.execute(
        "CREATE TABLE pipelines (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL, "
        "service TEXT NOT NULL, version TEXT NOT NULL, requested_by TEXT NOT NULL, "
        "roles TEXT NOT NULL DEFAULT '[]', state TEXT NOT NULL, stages TEXT NOT NULL, reason TEXT, "
        "channel TEXT, message_ts TEXT, post_attempted REAL, revision INTEGER NOT NULL DEFAULT 0, "
        "request_key TEXT UNIQUE, created_at TEXT NOT NULL, updated_at TEXT, finished_at TEXT)"
    )
    db.execute("CREATE INDEX pipelines_state ON pipelines (state)")
    db.execute("CREATE INDEX events_pipeline ON events (json_extract(details, '$.pipeline'))")


@migrations()
def m070_verify_aftercare(db: Database) -> None:
    # What happens to a deployment after it succeeded (bot.app.verification): its verification — the
    # watched period [started, until] (clock epoch), the live and pre-deploy slots, the baseline
    # (GroupMetrics as JSON, NULL: none), the measurements so far, and how it ended (`outcome` NULL while
    # it watches: a restart resumes every such row) — and the question to its requester (`asked` once;
    # the first `feedback` answer wins). `deferred_scale_down`: the old slot is scaled down when it ends.
    # Each change is written with its audit event and outbox events in one transaction.
    db.execute(
        "CREATE TABLE aftercare (deployment_id INTEGER PRIMARY KEY REFERENCES deployments(id), "
        "service TEXT NOT NULL, env TEXT NOT NULL, slot TEXT, baseline_slot TEXT, started REAL, until REAL, "
        "baseline TEXT, measurements TEXT NOT NULL DEFAULT '[]', outcome TEXT, ended REAL, "
        "deferred_scale_down INTEGER NOT NULL DEFAULT 0, asked INTEGER NOT NULL DEFAULT 0, "
        "feedback TEXT, feedback_by TEXT, feedback_at TEXT)"
    )
    db.execute("CREATE INDEX aftercare_watching ON aftercare (service, env) WHERE outcome IS NULL")
    # A note from a modal is recorded once per view (a double submit or a retry carries the same view id).
    db.execute("CREATE TABLE note_keys (key TEXT PRIMARY KEY, deployment_id INTEGER NOT NULL, at TEXT)")


@migrations()
def m071_replicas_leases(db: Database) -> None:
    # Leases of work several replicas share (bot.adapters.store.leases): `name` is what is leased
    # ("deployment:12", "outbox", "fire:schedule:12:1764000000.0"), `owner` the replica holding it,
    # `token` a number that grows at every change of hands (the fence), `expires` clock epoch seconds.
    # `intent`: the last AWS call its holder set out to make, written with the token check.
    db.execute(
        "CREATE TABLE leases (name TEXT PRIMARY KEY, owner TEXT NOT NULL, token INTEGER NOT NULL, "
        "expires REAL NOT NULL, intent TEXT, updated_at TEXT)"
    )
