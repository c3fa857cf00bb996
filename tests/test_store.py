"""The store: migrations on an empty and an existing file, WAL, atomic locks, append-only events.

Each test that takes `store` or `store_url` runs on SQLite and on PostgreSQL (tests/store_backends.py)."""

import sqlite3
import threading

import pytest

from bot.adapters.store.schema import migrations
from bot.adapters.store.sqlite import Store
from bot.domain.errors import Conflict
from bot.domain.machine import IllegalTransition, State
from bot.domain.model import LockInfo


def new(store: Store, version: str = "v2", user: str = "U1", **kw):
    return store.create_deployment(
        service="web",
        env="staging",
        version=version,
        strategy="rolling",
        kind="deploy",
        requested_by=user,
        **kw,
    )


@pytest.fixture
def store(store_url):
    s = Store(store_url)
    yield s
    s.close()


def test_migrations_on_empty_file_then_existing_file_keep_data(store_url):
    s = Store(store_url)
    if s.dialect == "sqlite":
        assert s.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    d = new(s)
    applied = s.applied_migrations()
    assert applied == [m.name for m in migrations._migrations]
    s.close()
    again = Store(store_url)  # an existing database: nothing re-applied, nothing lost
    assert again.applied_migrations() == applied
    assert again.get(d.id).version == "v2"
    assert len(again.events(d.id)) == 1
    again.close()


def test_a_failing_migration_leaves_nothing_and_stops_the_rest(store_url, monkeypatch):
    def broken(db):
        db.table("half_done").create({"id": int}, pk="id")
        raise RuntimeError("migration failed half-way")

    entry = type(migrations._migrations[0])("m999_broken", broken)
    monkeypatch.setattr(migrations, "_migrations", [*migrations._migrations, entry])
    with pytest.raises(RuntimeError, match="half-way"):
        Store(store_url)
    monkeypatch.undo()
    s = Store(store_url)
    try:
        assert "m999_broken" not in s.applied_migrations()
        assert s._rows("SELECT COUNT(*) AS n FROM deployments")[0]["n"] == 0
        with pytest.raises(Exception, match="half_done"):
            s._rows("SELECT * FROM half_done")
    finally:
        s.close()


def test_one_active_deployment_per_service_env_and_lock_names_holder(store):
    first = new(store, user="U_ALICE")
    second = new(store, version="v3", user="U_BOB")
    assert isinstance(second, LockInfo)
    assert (second.deployment_id, second.holder) == (first.id, "U_ALICE")
    other_env = store.create_deployment(
        service="web", env="production", version="v3", strategy="rolling", kind="deploy", requested_by="U_BOB"
    )
    assert other_env.state == State.REQUESTED


def test_terminal_state_releases_the_lock_and_events_record_every_transition(store):
    d = new(store)
    for action in ("start", "rollback", "finish_rollback"):
        d = store.transition(d.id, action, "deploybot")
    assert d.state == State.ROLLED_BACK and d.finished_at
    assert store.lock_info("web", "staging") is None
    path = [(e.from_state, e.to_state) for e in store.events(d.id)]
    assert path == [
        (None, "requested"),
        ("requested", "running"),
        ("running", "rolling_back"),
        ("rolling_back", "rolled_back"),
    ]
    assert isinstance(new(store, version="v4"), type(d))


def test_illegal_transition_changes_nothing(store):
    d = new(store)
    with pytest.raises(IllegalTransition):
        store.transition(d.id, "succeed", "deploybot")  # requested -> succeeded is not a move
    assert store.get(d.id).state == State.REQUESTED
    assert len(store.events(d.id)) == 1


def test_events_are_append_only(store):
    new(store)
    with pytest.raises(store.integrity_errors, match="append-only"):
        store.db.execute("UPDATE events SET actor = 'mallory'")
    with pytest.raises(store.integrity_errors, match="append-only"):
        store.db.execute("DELETE FROM events")
    assert len(store.events()) == 1


def test_same_request_key_returns_the_same_deployment(store):
    a = new(store, request_key="trigger-1")
    b = new(store, version="v9", request_key="trigger-1")
    assert a.id == b.id and b.version == "v2"
    assert len(store.latest()) == 1


def test_concurrent_requests_from_two_connections_create_exactly_one(store_url):
    path = store_url
    Store(path).close()
    stores = [Store(path) for _ in range(8)]
    results, barrier = [], threading.Barrier(len(stores))

    def go(s):
        barrier.wait()
        try:
            results.append(new(s, user=f"U{id(s)}"))
        except (Conflict, sqlite3.OperationalError) as exc:  # lost the race at the constraint
            results.append(exc)

    threads = [threading.Thread(target=go, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    created = [r for r in results if not isinstance(r, (LockInfo, Exception))]
    assert len(created) == 1
    assert len(stores[0].latest()) == 1
    for s in stores:
        s.close()


def test_manual_lock_blocks_deploys_until_unlocked(store):
    assert store.lock("web", "staging", "U_BOB", "db migration running") is None
    held = new(store)
    assert isinstance(held, LockInfo) and held.reason == "db migration running" and held.deployment_id is None
    assert store.unlock("web", "staging", "U_BOB").holder == "U_BOB"
    assert new(store).state == State.REQUESTED
    assert store.unlock("web", "staging", "U_BOB") is None  # a deployment's lock is not a manual one


def test_stale_locks_are_released(store):
    d = new(store)
    store.db.execute("UPDATE deployments SET state = 'failed' WHERE id = ?", [d.id])  # a crash between writes
    released = store.release_stale_locks()
    assert [r.deployment_id for r in released] == [d.id]
    assert store.lock_info("web", "staging") is None


def ask(store: Store, version: str, user: str = "U1", strategy: str = "rolling"):
    return store.request_or_amend(
        service="web", env="staging", version=version, strategy=strategy, kind="deploy", requested_by=user
    )


def test_request_or_amend_decides_create_amend_same_or_locked_in_one_step(store):
    from bot.domain.model import Amendment, Deployment

    first = ask(store, "v20")
    assert isinstance(first, Deployment) and first.version == "v20"
    changed = ask(store, "v24")
    assert isinstance(changed, Amendment) and changed.changed
    assert (changed.from_version, changed.deployment.version) == ("v20", "v24")
    same = ask(store, "v24")
    assert isinstance(same, Amendment) and not same.changed and same.deployment.version == "v24"
    other = ask(store, "v26", user="U2")
    assert isinstance(other, LockInfo) and other.deployment.version == "v24"
    store.transition(first.id, "start", "deploybot")
    after_start = ask(store, "v28")
    assert isinstance(after_start, LockInfo) and after_start.deployment.requested_by == "U1"
    assert store.get(first.id).version == "v24"  # the last accepted amendment is what started
    amends = [e.details["to"]["version"] for e in store.events(first.id) if e.action == "amend"]
    assert amends == ["v24"]


def test_amend_is_a_compare_and_set_on_state_and_requester(store):
    d = new(store, version="v1")
    with pytest.raises(Conflict):
        store.amend(d.id, "U2", version="v9", strategy="rolling", plan=[])  # not the requester
    store.transition(d.id, "start", "deploybot")
    with pytest.raises(Conflict):
        store.amend(d.id, "U1", version="v9", strategy="rolling", plan=[])  # started already
    assert store.get(d.id).version == "v1"
    assert [e.action for e in store.events(d.id)] == ["request", "start"]


def test_unknown_ids_raise_not_found_with_a_plain_message_however_large(store):
    from bot.domain.errors import NotFound

    for ident in (0, -1, 424242, 2**63, 10**30):
        with pytest.raises(NotFound) as caught:
            store.get(ident)
        assert str(caught.value) == f"There is no deployment #{ident}."
        assert store.find(ident) is None
    with pytest.raises(KeyError):  # callers catching KeyError keep working
        store.alert(10**30)


def test_a_request_is_claimed_once_and_its_answer_kept_for_replays(store):
    assert store.claim_request("trigger:1", now=1000.0) is None
    pending = store.claim_request("trigger:1", now=1001.0)
    assert pending is not None and pending.status is None  # still being handled
    store.answer_request("trigger:1", 200, "application/json", '{"text": "done"}')
    again = store.claim_request("trigger:1", now=1002.0)
    assert (again.status, again.content_type, again.body) == (200, "application/json", '{"text": "done"}')
    assert store.claim_request("trigger:1", now=1002.0 + 7200) is None  # long past any replay window


def test_a_claim_left_unanswered_by_a_crashed_process_is_taken_over_by_slack_s_retry(store):
    assert store.claim_request("trigger:2", now=1000.0) is None  # this process dies before it answers
    assert store.claim_request("trigger:2", now=1005.0).status is None  # a copy moments later waits
    assert store.claim_request("trigger:2", now=1060.0) is None  # Slack's retry a minute later acts on it
    assert store.claim_request("trigger:2", now=1061.0).status is None  # ... and now holds the claim
    store.answer_request("trigger:2", 200, "application/json", "{}")
    assert store.claim_request("trigger:2", now=1200.0).status == 200  # an answered one is never redone


def test_request_or_amend_many_decides_each_in_order_and_a_failure_stays_its_own(store):
    base = dict(service="web", env="staging", strategy="rolling", kind="deploy", requested_by="U1", plan=[])
    results = store.request_or_amend_many(
        [
            {**base, "version": "v1"},
            {**base, "version": "v2"},
            {**base, "version": "v3", "plan": [object()]},  # cannot be stored
            {**base, "version": "v4"},
            {**base, "version": "v9", "requested_by": "U2"},
        ]
    )
    first, second, bad, fourth, other = results
    assert first.version == "v1"
    assert second.changed and second.from_version == "v1" and second.deployment.version == "v2"
    assert isinstance(bad, TypeError)
    assert fourth.changed and fourth.from_version == "v2"  # the failed one changed nothing
    assert fourth.deployment.version == "v4" and fourth.deployment.id == first.id
    assert other.deployment.id == first.id and other.deployment.requested_by == "U1"  # someone else: locked


def test_save_progress_for_no_such_deployment_is_not_found_and_writes_nothing(store):
    from bot.domain.errors import NotFound
    from bot.domain.events import Detail

    with pytest.raises(NotFound):
        store.save_progress(404, context={"a": 1}, audit=[("bot", "detail", {})], events=[Detail("x")])
    assert store.outbox_after("anyone") == [] and store.events() == []
