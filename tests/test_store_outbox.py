"""The store's outbox: typed domain events written in the transaction of the change announcing them, read
by each consumer once, in order, from its own cursor, across restarts and crashes; and the writes that
return the deployment so no caller reads it back. On SQLite and on PostgreSQL (the `store_url` fixture)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from bot.adapters.store.aio import AsyncStore
from bot.adapters.store.sqlite import Store
from bot.domain.events import (
    Approved,
    Detail,
    DomainEvent,
    OutboxEntry,
    Requested,
    RolledBack,
    RollingBack,
    Started,
    StepStarted,
)
from bot.domain.machine import IllegalTransition, State
from bot.domain.model import Amendment, Deployment


@dataclass(frozen=True)
class Unstorable(Detail):
    """An event whose serialisation fails: a failure inside the transaction, after the state change."""

    def to_dict(self) -> dict[str, str | int | float | bool | None]:
        raise RuntimeError("cannot serialise")


FIELDS = dict(service="web", env="staging", strategy="rolling", kind="deploy", requested_by="U1")


def new(store: Store, *events: DomainEvent, version: str = "v2") -> Deployment:
    d = store.create_deployment(version=version, events=events, **FIELDS)
    assert isinstance(d, Deployment)
    return d


def outbox_rows(store: Store) -> list[tuple[int | None, str]]:
    return [(r["deployment_id"], r["kind"]) for r in store.db.query("SELECT * FROM outbox ORDER BY id")]


@pytest.fixture
def store(store_url):
    s = Store(store_url)
    yield s
    s.close()


def test_a_transition_writes_state_audit_and_events_together(store):
    d = new(store, Requested())
    moved = store.transition(d.id, "start", "deploybot", events=[Started(), StepStarted(1, "deploy v2")])
    assert moved.state == State.RUNNING
    assert [e.action for e in store.events(d.id)] == ["request", "start"]
    assert [e for _, _, e in store.outbox_after("notifier")] == [
        Requested(),
        Started(),
        StepStarted(index=1, description="deploy v2"),
    ]
    assert outbox_rows(store) == [(d.id, "requested"), (d.id, "started"), (d.id, "step_started")]


def test_an_illegal_transition_writes_no_event(store):
    d = new(store)
    with pytest.raises(IllegalTransition):
        store.transition(d.id, "succeed", "deploybot", events=[RolledBack("never")])
    assert outbox_rows(store) == []
    assert store.get(d.id).state == State.REQUESTED
    assert [e.action for e in store.events(d.id)] == ["request"]


def test_a_failure_after_the_state_change_undoes_state_audit_and_events(store):
    d = new(store)
    with pytest.raises(RuntimeError, match="cannot serialise"):
        store.transition(d.id, "start", "deploybot", events=[Started(), Unstorable("x")])
    assert store.get(d.id).state == State.REQUESTED  # the state change rolled back with the outbox
    assert [e.action for e in store.events(d.id)] == ["request"]
    assert outbox_rows(store) == []
    assert store.lock_info("web", "staging") is not None
    with pytest.raises(RuntimeError):
        store.save_progress(d.id, step_index=3, event=("deploybot", "step", {}), events=[Unstorable("x")])
    assert store.get(d.id).step_index == 0 and len(store.events(d.id)) == 1
    with pytest.raises(RuntimeError):
        store.record(d.id, "deploybot", "detail", {"text": "x"}, events=[Unstorable("x")])
    assert len(store.events(d.id)) == 1 and outbox_rows(store) == []


def test_a_terminal_transition_with_events_releases_the_lock_in_the_same_transaction(store):
    d = new(store)
    store.transition(d.id, "start", "deploybot")
    store.transition(d.id, "rollback", "deploybot", events=[RollingBack("5xx", automatic=True)])
    done = store.transition(d.id, "finish_rollback", "deploybot", events=[RolledBack("5xx")])
    assert done.state == State.ROLLED_BACK and store.lock_info("web", "staging") is None
    assert [e.kind for _, _, e in store.outbox_after("alerting")] == ["rolling_back", "rolled_back"]


def test_two_consumers_each_see_every_event_once_in_order(store):
    d = new(store, Requested())
    store.transition(d.id, "start", "deploybot", events=[Started()])
    store.append_events(d.id, [StepStarted(i, f"step {i}") for i in range(1, 6)])
    seen: dict[str, list[DomainEvent]] = {"notifier": [], "pagerduty": []}
    for _ in range(10):  # batches of 2 for the notifier, 3 for pagerduty, until both are drained
        for consumer, limit in (("notifier", 2), ("pagerduty", 3)):
            batch = store.outbox_after(consumer, limit)
            assert len(batch) <= limit
            for outbox_id, deployment_id, event in batch:
                assert deployment_id == d.id
                seen[consumer].append(event)
                store.mark_delivered(consumer, outbox_id)
    expected = [Requested(), Started(), *(StepStarted(i, f"step {i}") for i in range(1, 6))]
    assert seen == {"notifier": expected, "pagerduty": expected}
    assert store.outbox_after("notifier") == [] and store.outbox_after("pagerduty") == []
    assert store.outbox_after("someone new") != []  # a consumer with no cursor starts at the beginning


def test_a_cursor_never_moves_back(store):
    d = new(store)
    ids = store.append_events(d.id, [Detail("a"), Detail("b"), Detail("c")])
    assert ids == sorted(ids) and len(set(ids)) == 3
    assert store.mark_delivered("notifier", ids[2]) == ids[2]
    assert store.mark_delivered("notifier", ids[0]) == ids[2]  # a late, older mark changes nothing
    assert store.outbox_after("notifier") == []
    assert store.delivered("notifier") == ids[2] and store.delivered("other") == 0


def test_a_restarted_consumer_resumes_after_its_cursor(store_url: str):
    path = store_url
    first = Store(path)
    d = new(first)
    ids = first.append_events(d.id, [Detail("a"), Detail("b"), Detail("c")])
    first.mark_delivered("notifier", ids[0])
    first.close()
    again = Store(path)
    assert again.outbox_after("notifier") == [
        OutboxEntry(ids[1], d.id, Detail("b")),
        OutboxEntry(ids[2], d.id, Detail("c")),
    ]
    again.close()


def test_the_outbox_survives_a_crash_between_the_write_and_the_delivery(store_url: str):
    path = store_url
    crashed = Store(path)
    d = new(crashed)
    crashed.transition(d.id, "start", "deploybot", events=[Started()])
    # The process dies here: the notifier never delivered, and the store is never closed.
    reopened = Store(path)
    entries = reopened.outbox_after("notifier")
    assert [(dep, e) for _, dep, e in entries] == [(d.id, Started())]
    reopened.mark_delivered("notifier", entries[0].id)
    assert reopened.outbox_after("notifier") == []
    reopened.close()
    crashed.close()


def test_creation_amendment_and_progress_carry_their_events(store):
    d = store.request_or_amend(version="v2", events=[Requested()], **FIELDS)
    assert isinstance(d, Deployment)
    amended = store.request_or_amend(version="v3", events=[Detail("amended to v3")], **FIELDS)
    assert isinstance(amended, Amendment) and amended.changed
    same = store.request_or_amend(version="v3", events=[Detail("not written")], **FIELDS)
    assert isinstance(same, Amendment) and not same.changed
    store.amend(d.id, "U1", version="v4", strategy="rolling", plan=[], events=[Approved("U2")])
    assert [e for _, _, e in store.outbox_after("n")] == [
        Requested(),
        Detail("amended to v3"),
        Approved("U2"),
    ]


def test_writes_return_the_deployment_as_it_now_is(store):
    d = new(store)
    progressed = store.save_progress(
        d.id, step_index=2, context={"weight": 10}, events=[StepStarted(2, "10%")]
    )
    assert progressed == store.get(d.id)
    assert (progressed.step_index, progressed.context) == (2, {"weight": 10})
    recorded = store.record(d.id, "deploybot", "detail", {"text": "hello"}, events=[Detail("hello")])
    assert recorded == store.get(d.id) and recorded.updated_at == progressed.updated_at
    assert store.record(None, "U1", "window_override", {"env": "staging"}) is None
    assert [e.action for e in store.events(d.id)] == ["request", "detail"]
    assert [e.kind for _, _, e in store.outbox_after("n")] == ["step_started", "detail"]


async def test_the_async_store_forwards_the_outbox_typed(store_url):
    store = AsyncStore(Store(store_url))
    try:
        d = await store.create_deployment(version="v2", **FIELDS)
        assert isinstance(d, Deployment)
        moved = await store.transition(d.id, "start", "deploybot", events=[Started()])
        assert moved.state == State.RUNNING
        await store.append_events(d.id, [Detail("a")])
        entries = await store.outbox_after("notifier")
        assert [e for _, _, e in entries] == [Started(), Detail("a")]
        assert await store.mark_delivered("notifier", entries[-1].id) == entries[-1].id
        assert await store.outbox_after("notifier") == []
        assert (await store.record(d.id, "deploybot", "detail", {})).id == d.id
    finally:
        store.close()


async def test_the_outbox_readers_are_woken_by_a_write_that_appended_and_by_no_other(store_url):
    """A request answered with the lock's holder (or found already asking for that) appends nothing: its
    events were offered, not written, and the readers are not woken to read nothing."""
    store = AsyncStore(Store(store_url))
    woken: list[str] = []
    store.on_append(lambda: woken.append("woken"))
    try:
        created = await store.request_or_amend(version="v2", events=[Requested()], **FIELDS)
        assert isinstance(created, Deployment) and woken == ["woken"]
        other = dict(FIELDS, requested_by="U2")
        locked = await store.request_or_amend(version="v3", events=[Requested()], **other)
        assert not isinstance(locked, Deployment | Amendment) and woken == ["woken"]
        same = await store.request_or_amend(version="v2", events=[Requested()], **FIELDS)
        assert isinstance(same, Amendment) and not same.changed and woken == ["woken"]
        amended = await store.request_or_amend(version="v4", amend_events=[Detail("to v4")], **FIELDS)
        assert isinstance(amended, Amendment) and amended.changed and woken == ["woken", "woken"]
    finally:
        store.close()
