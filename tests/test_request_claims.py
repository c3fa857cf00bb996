"""Request claims batched onto the store's thread: concurrent claims share one hop, keep their order, and a
replay's claim finds the first copy's answer."""

from __future__ import annotations

import asyncio

import pytest

from bot.adapters.store import replays
from bot.adapters.store.aio import AsyncStore
from bot.adapters.store.replays import Guard, Replayed
from bot.adapters.store.sqlite import Store
from bot.domain.model import Deployment
from bot.tasks import TaskGroup, detached_task
from handlers.request_claims import RequestClaims


class CountingStore(AsyncStore):
    def __init__(self, store: Store):
        super().__init__(store)
        self.hops = 0

    async def call(self, fn, *args, **kwargs):  # type: ignore[no-untyped-def]
        self.hops += 1
        return await super().call(fn, *args, **kwargs)


async def test_fifty_concurrent_claims_take_two_hops_and_each_is_claimed_once(store_url):
    store = CountingStore(Store(store_url))  # on SQLite and on PostgreSQL
    claims = RequestClaims(store)
    try:
        keys = [f"trigger:{i}" for i in range(50)]
        first = await asyncio.gather(*(claims.claim(k, 1000.0) for k in keys))
        assert first == [None] * 50  # every one claimed by its own call
        assert store.hops <= 2  # the first claim alone, then the 49 asked meanwhile together
        again = await asyncio.gather(*(claims.claim(k, 1001.0) for k in keys[:3]))
        assert [a is not None and a.status is None for a in again] == [True] * 3  # still being handled
    finally:
        store.close()


async def test_a_replay_claimed_after_the_answer_gets_that_answer_even_in_one_batch(store_url):
    store = CountingStore(Store(store_url))
    claims = RequestClaims(store)
    try:
        assert await claims.claim("trigger:x", 1000.0) is None
        claims.answer("trigger:x", 200, "application/json", '{"text": "done"}')
        replay = await claims.claim("trigger:x", 1001.0)  # asked after the answer: the same batch, after it
        assert replay is not None and (replay.status, replay.body) == (200, '{"text": "done"}')
    finally:
        store.close()


async def test_a_failing_claim_fails_alone():
    store = CountingStore(Store(":memory:"))
    claims = RequestClaims(store)
    real = store.sync.claim_request

    def claim_request(key: str, now: float, *args: object) -> object:
        if key == "trigger:bad":
            raise RuntimeError("disk full")
        return real(key, now)

    store.sync.claim_request = claim_request  # type: ignore[method-assign, assignment]
    try:
        results = await asyncio.gather(
            claims.claim("trigger:a", 1000.0), claims.claim("trigger:bad", 1000.0), return_exceptions=True
        )
        assert results[0] is None
        assert isinstance(results[1], RuntimeError)
    finally:
        store.close()


# ---------------------------------------------- a request handled while its claim is on its way (guards)


async def _deploy(store: AsyncStore, key: str) -> object:
    return await store.create_deployment(
        service="web", env="staging", version="v2", strategy="rolling", kind="deploy",
        requested_by="U1", request_key=key,
    )  # fmt: skip


async def test_a_guarded_replay_writes_nothing_and_its_first_copy_writes_once(store_url):
    store = AsyncStore(Store(store_url))  # on SQLite and on PostgreSQL
    claims = RequestClaims(store)
    try:
        first, replay = claims.guard("trigger:g", 1000.0), claims.guard("trigger:g", 1000.5)

        async def handle(guard: Guard) -> object:
            token = replays.enter(guard)
            try:  # the write waits for the claims to go first (one turn), then runs behind them
                return await _deploy(store, "trigger:g")
            finally:
                replays.leave(token)

        results = await asyncio.gather(handle(replay), handle(first), return_exceptions=True)
        assert isinstance(results[0], Replayed), results  # its claim ran first on the thread: seen
        assert isinstance(results[1], Deployment) and results[1].id == 1, results
        assert await first.fresh() is True and await replay.fresh() is False
        assert [d.id for d in await store.history("web", "staging", 10)] == [1]
        assert [e.action for e in await store.events(1)] == ["request"]  # audited once
    finally:
        store.close()


async def test_a_task_a_replay_starts_is_refused_but_shared_work_it_happens_to_start_is_not(store_url):
    store = AsyncStore(Store(store_url))
    claims = RequestClaims(store)
    try:
        assert await claims.claim("trigger:h", 1000.0) is None
        replay = claims.guard("trigger:h", 1001.0)
        token = replays.enter(replay)
        try:
            own = TaskGroup("test").spawn(_deploy(store, "trigger:own"))
            shared = detached_task(_deploy(store, "trigger:shared"))
        finally:
            replays.leave(token)
        with pytest.raises(Replayed):
            await own
        assert isinstance(await shared, Deployment)
        assert await replays.fresh() is True  # outside any guard
        assert [d.request_key for d in await store.history("web", "staging", 10)] == ["trigger:shared"]
    finally:
        store.close()


async def test_a_guard_whose_claim_fails_refuses_with_that_failure():
    store = AsyncStore(Store(":memory:"))
    claims = RequestClaims(store)

    def claim_request(key: str, now: float, *args: object) -> object:
        raise RuntimeError("disk full")

    store.sync.claim_request = claim_request  # type: ignore[method-assign, assignment]
    try:
        guard = claims.guard("trigger:f", 1000.0)
        token = replays.enter(guard)
        try:
            with pytest.raises(RuntimeError, match="disk full"):
                await _deploy(store, "trigger:f")
            assert await replays.fresh() is False  # nothing beyond the store is done either
        finally:
            replays.leave(token)
        with pytest.raises(RuntimeError, match="disk full"):
            await guard.fresh()
        assert await store.history("web", "staging", 10) == []
    finally:
        store.close()
