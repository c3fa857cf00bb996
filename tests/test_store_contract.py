"""The store's parts beyond deployments, on SQLite and on PostgreSQL (the `store_url` fixture): flags'
compare-and-set, pipelines, checklist, approvals, freezes, first posts, rehearsals, the JSON lookups of
the audit log; and the races two replicas run into, decided by the database (one connection each)."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from bot.adapters.store.sqlite import Store
from bot.domain.errors import Conflict
from bot.domain.events import StepStarted
from bot.domain.flags import FlagState
from bot.domain.model import Deployment, LockInfo
from bot.domain.pipelines import RUNNING, Stage
from bot.domain.windows import Freeze

FIELDS = dict(service="web", env="staging", strategy="rolling", kind="deploy", requested_by="U1")


@pytest.fixture
def store(store_url: str):
    s = Store(store_url)
    yield s
    s.close()


def new(store: Store, **kw: Any) -> Deployment:
    d = store.create_deployment(version=kw.pop("version", "v2"), **{**FIELDS, **kw})
    assert isinstance(d, Deployment)
    return d


def test_a_flag_change_is_a_compare_and_set_on_its_revision_audited_and_found_by_flag(store):
    on = FlagState(enabled=True)
    first = store.set_flag(
        "staging", "checkout", on, expected_revision=0, actor="U1", action="flag_on", details={}
    )
    assert first.revision == 1 and store.flag_state("staging", "checkout").state == on
    with pytest.raises(Conflict):
        store.set_flag(
            "staging", "checkout", FlagState(), expected_revision=0, actor="U2", action="x", details={}
        )
    store.set_flag(
        "production", "checkout", on, expected_revision=None, actor="U1", action="flag_on", details={}
    )
    assert [r.env for r in store.flag_states()] == ["production", "staging"]
    assert [e.actor for e in store.flag_changes("staging", "checkout")] == ["U1"]
    assert store.flags_revision() == 2 * 1000 + 2
    assert [e.action for e in store.events(service="flag:checkout")] == ["flag_on", "flag_on"]


def test_checklist_approvals_and_freezes_round_trip(store):
    d = new(store)
    store.set_item(d.id, "tests", False, "bot")
    store.set_item(d.id, "tests", True, "U2", evidence="ci #7")  # an upsert: one row, the last state
    assert store.items(d.id)["tests"].done and store.items(d.id)["tests"].by == "U2"
    store.approve(d.id, "U3")
    assert [(a.user, a.voided) for a in store.approvals(d.id)] == [("U3", False)]
    store.amend(d.id, "U1", version="v3", strategy="rolling", plan=[])
    assert [a.voided for a in store.approvals(d.id)] == [True]
    start, end = datetime(2030, 1, 1, tzinfo=UTC), datetime(2030, 1, 2, tzinfo=UTC)
    store.add_freeze(Freeze("production", start, end, "holidays", "U1"))
    assert [(f.env, f.end) for f in store.freezes()] == [("production", end)]
    assert store.lift_freezes("production", "U1") == 1 and store.freezes() == []


def test_an_amendment_answers_with_what_a_read_of_the_deployment_gives_plan_changed_or_not(store):
    """The amendment's answer is built from the row it updated, not read again: it must be what a read
    gives, whether the plan was rewritten (another strategy's steps) or left (the same steps)."""
    steps = [{"kind": "deploy", "target": "web"}, {"kind": "verify"}]
    d = new(store, plan=steps)
    for version, strategy, plan in (
        ("v3", "rolling", steps),  # the same steps: the stored plan is left as it is
        ("v4", "canary", [{"kind": "canary", "weight": 10}]),  # new steps: rewritten
        ("v5", "canary", [{"kind": "canary", "weight": 10}]),
    ):
        answer = store.request_or_amend(**{**FIELDS, "strategy": strategy}, version=version, plan=plan)
        assert answer.changed and answer.deployment == store.get(d.id), (answer, store.get(d.id))
        assert (answer.deployment.version, answer.deployment.plan) == (version, plan)
    answer.deployment.plan[0]["weight"] = 99  # the answer's plan is its own: the store's row is untouched
    assert store.get(d.id).plan == [{"kind": "canary", "weight": 10}]


def test_pipelines_first_posts_and_rehearsals(store):
    p = store.create_pipeline(
        name="ship", service="web", version="v2", requested_by="U1", roles=["engineers"],
        stages=[Stage("deploy", "staging"), Stage("deploy", "production")], request_key="trig-1",
    )  # fmt: skip
    again = store.create_pipeline(
        name="ship", service="web", version="v9", requested_by="U1", roles=[], stages=[], request_key="trig-1"
    )
    assert again.id == p.id and again.version == "v2"
    saved = store.save_pipeline(p, actor="bot", action="pipeline_stage")
    assert saved.revision == p.revision + 1 and saved.state == RUNNING
    with pytest.raises(Conflict):
        store.save_pipeline(p, actor="bot", action="pipeline_stage")  # an old revision
    assert [e.action for e in store.pipeline_events(p.id)] == ["pipeline_requested", "pipeline_stage"]
    store.record_pipeline_post(p.id, 12.5)
    assert store.pipeline_post_attempted(p.id) == 12.5 and store.unconfirmed_pipeline_posts() == [p.id]
    d = new(store)
    store.record_first_post_attempt(d.id, 1.25)
    store.record_first_post_attempt(d.id, 2.5)
    assert store.first_post_attempt(d.id) == 2.5 and store.unconfirmed_first_posts() == [d.id]
    store.set_message(d.id, "C1", "1.0001")
    assert store.unconfirmed_first_posts() == []
    store.record(d.id, "bot", "migration_rehearsed", {"version": "v2"})
    assert (
        store.rehearsal("web", "staging", "v2") is not None
        and store.rehearsal("web", "staging", "v3") is None
    )


def test_ids_and_epoch_seconds_keep_their_full_width(store):
    d = new(store)
    alert = store.raise_alert(d.id, "deploy_failed", "critical", "x", escalate_at=1_800_000_000.123456)
    assert alert is not None and store.alert(alert.id).next_escalation_at == 1_800_000_000.123456
    store.mark_delivered("n", 2**62)
    assert store.delivered("n") == 2**62 and store.mark_delivered("n", 5) == 2**62


def race(store_url: str, n: int, fn: Callable[[Store], Any]) -> list[Any]:
    """`fn` on `n` stores (connections) at once; each one's result or exception."""
    stores = [Store(store_url) for _ in range(n)]
    barrier, results = threading.Barrier(n), []

    def go(s: Store) -> None:
        barrier.wait()
        try:
            results.append(fn(s))
        except Exception as exc:
            results.append(exc)

    threads = [threading.Thread(target=go, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s in stores:
        s.close()
    return results


def test_of_replicas_claiming_one_request_exactly_one_acts_and_the_others_wait(store_url):
    Store(store_url).close()
    results = race(store_url, 6, lambda s: s.claim_request("trigger:9", now=1000.0))
    assert results.count(None) == 1
    assert all(r is not None and not isinstance(r, Exception) and r.status is None for r in results if r)


def test_of_replicas_changing_one_flag_from_one_revision_exactly_one_wins(store_url):
    Store(store_url).close()

    def change(s: Store) -> Any:
        return s.set_flag("staging", "f", FlagState(enabled=True), expected_revision=0, actor="U",
                          action="flag_on", details={})  # fmt: skip

    results = race(store_url, 6, change)
    won = [r for r in results if not isinstance(r, Exception)]
    assert len(won) == 1  # the others: Conflict (SQLite may also say "database is locked": one writer)
    assert all(isinstance(r, Conflict | sqlite3.OperationalError) for r in results if r not in won)
    s = Store(store_url)
    try:
        assert s.flag_state("staging", "f").revision == 1 and len(s.flag_changes("staging", "f")) == 1
    finally:
        s.close()


def test_an_outbox_reader_skips_a_cursor_another_replica_holds_and_never_skips_events(store_url):
    store = Store(store_url)
    try:
        d = new(store)
        ids = store.append_events(d.id, [StepStarted(0, "a"), StepStarted(1, "b")])
        store.mark_delivered("notifier", 0)
        if store.dialect == "postgres":
            other = Store(store_url)
            try:
                with other.db.atomic():  # another replica's reader, mid-read of the same consumer
                    other._rows("SELECT * FROM outbox_cursors WHERE consumer = 'notifier' FOR UPDATE")
                    assert store.outbox_after("notifier") == []  # at once, not after it lets go
                    assert [e.id for e in store.outbox_after("pager")] == ids  # another consumer reads
            finally:
                other.close()
        assert [e.id for e in store.outbox_after("notifier")] == ids  # every event still there, in order
    finally:
        store.close()


def test_of_replicas_raising_one_keyed_alert_or_one_manual_lock_exactly_one_does(store_url):
    setup = Store(store_url)
    d = new(setup)
    setup.close()
    raised = race(store_url, 4, lambda s: s.raise_alert(d.id, "approval_waiting", "warning", "w", key="k:1"))
    assert len([r for r in raised if r is not None and not isinstance(r, Exception)]) == 1
    assert all(
        r is None or isinstance(r, sqlite3.OperationalError) for r in raised if not hasattr(r, "id")
    ), raised
    locked = race(store_url, 4, lambda s: s.lock("api", "production", f"U{id(s)}", "maintenance"))
    assert locked.count(None) == 1  # one took it; the others were told who holds it
    assert all(r is None or isinstance(r, sqlite3.OperationalError) or r.holder for r in locked), locked
    s = Store(store_url)
    try:
        assert len([a for a in s.open_alerts(d.id) if a.key == "k:1"]) == 1
        assert [e.action for e in s.events() if e.action == "lock"] == ["lock"]
    finally:
        s.close()


def test_of_replicas_moving_one_deployment_at_once_exactly_one_moves_it(store_url):
    from bot.domain.machine import IllegalTransition

    setup = Store(store_url)
    d = new(setup)
    setup.close()
    moved = race(store_url, 4, lambda s: s.transition(d.id, "start", "deploybot"))
    won = [r for r in moved if isinstance(r, Deployment)]
    assert len(won) == 1 and won[0].state.value == "running"
    # the others: the compare-and-set missed (Conflict), or they read it started (IllegalTransition)
    assert all(
        isinstance(r, Conflict | IllegalTransition | sqlite3.OperationalError) for r in moved if r not in won
    )
    s = Store(store_url)
    try:
        assert [e.action for e in s.events(d.id)] == ["request", "start"]  # one audit event, not four
    finally:
        s.close()


def test_of_replicas_requesting_one_service_at_once_one_creates_and_the_others_hear_who_holds_it(store_url):
    Store(store_url).close()
    users = iter(f"U{i}" for i in range(6))
    lock = threading.Lock()

    def ask(s: Store) -> Any:
        with lock:
            user = next(users)
        return s.request_or_amend(**{**FIELDS, "requested_by": user}, version="v2", request_key=f"t-{user}")

    results = race(store_url, 6, ask)
    created = [r for r in results if isinstance(r, Deployment)]
    assert len(created) == 1, results
    # never Conflict ("it changed while you asked"); SQLite may say "database is locked" (one writer)
    others = [r for r in results if r not in created and not isinstance(r, sqlite3.OperationalError)]
    assert all(isinstance(r, LockInfo) and r.deployment_id == created[0].id for r in others), results


def test_a_request_that_read_the_lock_free_while_another_took_it_hears_who_holds_it(store):
    """The window two replicas can both be in on PostgreSQL (READ COMMITTED): both read the lock free,
    and the second's insert of the lock fails. Its request is decided again, not answered "it changed"."""
    held = store.request_or_amend(**FIELDS, version="v2", request_key="t-first")
    assert isinstance(held, Deployment)
    real, stale = store.lock_info, [None, None]  # the first attempt's two reads, before its insert

    def lock_info(service: str, env: str) -> LockInfo | None:
        return stale.pop() if stale else real(service, env)

    store.lock_info = lock_info  # type: ignore[method-assign]
    answer = store.request_or_amend(**{**FIELDS, "requested_by": "U2"}, version="v3", request_key="t-second")
    assert isinstance(answer, LockInfo) and answer.deployment_id == held.id, answer
    assert [d.id for d in store.history("web", "staging", 10)] == [held.id]  # its insert rolled back
