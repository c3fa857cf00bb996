"""Request claims batched onto the store's thread: concurrent claims share one hop, keep their order, and a
replay's claim finds the first copy's answer."""

from __future__ import annotations

import asyncio

from bot.adapters.store.aio import AsyncStore
from bot.adapters.store.sqlite import Store
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
