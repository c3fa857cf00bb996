"""The replicas' leases and the fence, and what follows a success (feedback, notes), on SQLite AND on
PostgreSQL (the `store_url` fixture): written on SQLite first, their SQL must hold on both."""

from __future__ import annotations

import pytest

from bot.adapters.store.aftercare import Aftercare
from bot.adapters.store.sqlite import Store
from bot.clock import ManualClock
from bot.domain.leases import Fenced, deployment_lease
from bot.domain.model import BOT
from tests.unit.app import test_leases as on_sqlite

# The lease tests on the manual clock, collected here again with the `store` fixture below (both backends)
test_a_lease_is_taken_once_until_it_expires_then_taken_over_with_a_new_token = (
    on_sqlite.test_a_lease_is_taken_once_until_it_expires_then_taken_over_with_a_new_token
)
test_an_expired_lease_is_lost_even_before_anyone_takes_it = (
    on_sqlite.test_an_expired_lease_is_lost_even_before_anyone_takes_it
)
test_a_replica_started_again_under_its_name_takes_its_own_lease_back_at_once = (
    on_sqlite.test_a_replica_started_again_under_its_name_takes_its_own_lease_back_at_once
)
test_a_handed_back_lease_is_taken_at_once_and_its_old_token_fenced = (
    on_sqlite.test_a_handed_back_lease_is_taken_at_once_and_its_old_token_fenced
)
test_a_fenced_write_is_refused_and_writes_nothing_and_a_good_one_records_its_intent = (
    on_sqlite.test_a_fenced_write_is_refused_and_writes_nothing_and_a_good_one_records_its_intent
)


@pytest.fixture
def store(store_url: str):
    clock = ManualClock()
    s = Store(store_url, clock)
    yield s, clock
    s.close()


def _deployment(s: Store) -> int:
    d = s.create_deployment(
        service="web", env="staging", version="v2", strategy="canary", kind="deploy", requested_by="alice"
    )
    return d.id  # type: ignore[union-attr]


async def test_two_stores_on_one_database_race_for_a_lease_and_only_one_wins(store, store_url):
    s, clock = store
    other = Store(store_url, clock)
    try:
        name = deployment_lease(_deployment(s))
        tokens = [s.acquire_lease(name, "a", 30), other.acquire_lease(name, "b", 30)]
        assert tokens == [1, None]
        with pytest.raises(Fenced):
            other.fenced(name, 7, 30, "ModifyRule", other.record, 1, BOT, "step_finished", {})
    finally:
        other.close()


async def test_feedback_is_asked_and_answered_once_and_a_keyed_note_is_kept_once(store):
    s, _ = store
    book = Aftercare(s)
    d = _deployment(s)
    assert book.ask(d, [(BOT, "feedback_asked", {})], []) is True
    assert book.ask(d, [(BOT, "feedback_asked", {})], []) is False  # once
    won, _ = book.answer(d, "alice", "smooth", [])
    again, watch = book.answer(d, "alice", "had_issues", [])
    assert (won, again, watch.feedback) == (True, False, "smooth")  # the first answer wins
    assert book.note(d, "bob", "slow <!channel> start", [], key="view-1") is True
    assert book.note(d, "bob", "slow <!channel> start", [], key="view-1") is False  # a double submit
    notes = [e for e in s.events(d) if e.action == "note"]
    assert [(e.actor, e.details["text"]) for e in notes] == [("bob", "slow <!channel> start")]
    assert book.summaries([d]) == {d: (None, 1, "smooth")}


async def test_a_verification_starts_once_supersedes_the_last_and_its_end_shows_on_the_deployment(store):
    s, _ = store
    book = Aftercare(s)
    first = _deployment(s)
    for action in ("start", "succeed"):  # succeeded: its lock is free for the next one
        s.transition(first, action, BOT)
    second = _deployment(s)

    def start(d: int, at: float) -> list[int]:
        return book.start(
            d, slot="green", baseline_slot="blue", started=at, until=at + 900, baseline={"error_rate": 0.01},
            deferred_scale_down=False, audit=[(BOT, "verification_started", {})], events=[],
            superseded=lambda i: ([(BOT, "verify_superseded", {})], []),
        )  # fmt: skip

    assert start(first, 100.0) == []
    assert start(first, 150.0) == []  # once: the second call changes nothing
    assert s.get(first).context["verification"] == {"until": 1000.0, "seconds": 900.0}
    assert start(second, 200.0) == [first]  # a newer deployment of web in staging ends the older one
    assert book.end(second, "verified", 1100.0, [(BOT, "verified", {})], []) is True
    assert book.end(second, "verified", 1101.0, [(BOT, "verified", {})], []) is False
    assert s.get(second).context["verification"] == {"until": 1100.0, "seconds": 900.0, "outcome": "verified"}
    assert [w.deployment_id for w in book.watching()] == []
