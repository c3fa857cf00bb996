"""The store's one thread (bot.adapters.store.aio.StoreThread): calls run in the order they were asked for,
one failing fails alone, a caller hears of its call only once it has run to its end (its transaction
committed), a burst's results wake the event loop once, and closing runs what is still queued. The tests
with a store run on SQLite and on PostgreSQL (the `store_url` fixture)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from bot.adapters.store.aio import AsyncStore
from bot.adapters.store.sqlite import Store
from bot.adapters.store.thread import StoreThread


async def test_calls_run_in_the_order_they_were_asked_for_each_with_its_own_result():
    thread = StoreThread()
    ran: list[int] = []
    try:

        def job(i: int) -> int:
            ran.append(i)
            return i * i

        results = await asyncio.gather(*(thread.submit(lambda i=i: job(i)) for i in range(200)))
        assert ran == list(range(200))
        assert results == [i * i for i in range(200)]
    finally:
        thread.close()


async def test_a_failing_call_fails_alone():
    thread = StoreThread()
    release = threading.Event()
    try:
        blocker = thread.submit(release.wait)  # holds the thread, so the next calls queue together

        def fails() -> None:
            raise RuntimeError("disk full")

        calls = [thread.submit(lambda: "a"), thread.submit(fails), thread.submit(lambda: "c")]
        release.set()
        assert await blocker is True
        results = await asyncio.gather(*calls, return_exceptions=True)
        assert results[0] == "a" and results[2] == "c"
        assert isinstance(results[1], RuntimeError) and str(results[1]) == "disk full"
        assert await thread.submit(lambda: "still running") == "still running"
    finally:
        thread.close()


async def test_the_caller_hears_of_a_call_only_after_it_ran_to_its_end_and_committed(store_url):
    store = AsyncStore(Store(store_url))
    gate = threading.Event()
    real = store.sync.claim_request

    def slow_claim(key: str, now: float, *args: object) -> object:
        gate.wait()
        return real(key, now)

    store.sync.claim_request = slow_claim  # type: ignore[method-assign, assignment]
    try:
        claimed = asyncio.ensure_future(store.claim_request("trigger:1", 1000.0))
        for _ in range(20):  # the event loop turns; the call cannot have answered yet
            await asyncio.sleep(0)
        assert not claimed.done()
        gate.set()
        assert await claimed is None
        # Committed when the caller hears of it: another connection sees the claim.
        other = Store(store_url)
        try:
            assert other._rows("SELECT key FROM requests") == [{"key": "trigger:1"}]
        finally:
            other.close()
    finally:
        store.close()


async def test_a_burst_of_results_wakes_the_event_loop_once():
    thread = StoreThread()
    loop = asyncio.get_running_loop()
    wakeups = 0
    real = loop.call_soon_threadsafe

    def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
        nonlocal wakeups
        wakeups += 1
        return real(*args, **kwargs)

    release = threading.Event()
    try:
        blocker = thread.submit(release.wait)
        calls = [thread.submit(lambda i=i: i) for i in range(50)]
        loop.call_soon_threadsafe = counting  # type: ignore[method-assign]
        release.set()  # the thread runs the 51 calls without the loop taking any result meanwhile
        await blocker
        assert await asyncio.gather(*calls) == list(range(50))
        assert wakeups < 10  # 51 results, not 51 wake-ups (usually 1 or 2)
    finally:
        loop.call_soon_threadsafe = real  # type: ignore[method-assign]
        thread.close()


async def test_a_caller_that_went_away_does_not_stop_the_call_or_the_others():
    thread = StoreThread()
    release = threading.Event()
    ran: list[str] = []
    try:
        blocker = thread.submit(release.wait)
        gone = thread.submit(lambda: ran.append("gone"))
        kept = thread.submit(lambda: ran.append("kept") or "kept")
        gone.cancel()
        release.set()
        await blocker
        assert await kept == "kept"
        assert ran == ["gone", "kept"]  # a queued write still happens: its caller only stopped waiting
    finally:
        thread.close()


async def test_closing_runs_what_is_still_queued(store_url):
    store = AsyncStore(Store(store_url))
    assert await store.claim_request("trigger:1", 1000.0) is None
    store.later(store.sync.answer_request, "trigger:1", 200, "application/json", '{"text": "ok"}')
    store.close()
    again = Store(store_url)
    try:
        answer = again.answered("trigger:1")
        assert answer is not None and (answer.status, answer.body) == (200, '{"text": "ok"}')
    finally:
        again.close()
    with pytest.raises(RuntimeError):
        store.later(lambda: None)
