"""The store: migrations on an empty and an existing file, WAL, atomic locks, append-only events."""

import sqlite3
import threading

import pytest

from bot.machine import IllegalTransition, State
from bot.store import Conflict, LockInfo, Store, migrations


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
def store():
    s = Store(":memory:")
    yield s
    s.close()


def test_migrations_on_empty_file_then_existing_file_keep_data(tmp_path):
    path = tmp_path / "d.db"
    s = Store(path)
    assert s.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    d = new(s)
    applied = [m.name for m in migrations.applied(s.db)]
    assert applied == [m.name for m in migrations._migrations]
    s.close()
    again = Store(path)  # an existing file: nothing re-applied, nothing lost
    assert [m.name for m in migrations.applied(again.db)] == applied
    assert again.get(d.id).version == "v2"
    assert len(again.events(d.id)) == 1
    again.close()


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
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        store.db.execute("UPDATE events SET actor = 'mallory'")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        store.db.execute("DELETE FROM events")


def test_same_request_key_returns_the_same_deployment(store):
    a = new(store, request_key="trigger-1")
    b = new(store, version="v9", request_key="trigger-1")
    assert a.id == b.id and b.version == "v2"
    assert len(store.latest()) == 1


def test_concurrent_requests_from_two_connections_create_exactly_one(tmp_path):
    path = tmp_path / "race.db"
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
