"""Waiting for the engine to be quiet without sleeping: for the tests that move a ManualClock step by step.

Between two clock steps every task the last step woke must run to its next wait (the clock, an event, a
store call), or the next step jumps past what it was about to do. Sleeping a few milliseconds of real time
for that held each step for 60 ms and was a guess (a loaded machine can need longer). Here: a no-op handed
to the store's thread comes back only after every call handed to it before (the thread takes them in
order), the loop then runs what their answers woke, and the engine is quiet when, twice in a row, the loop
has nothing ready and no call is queued on the store's thread, running there or on its way back (a task
waiting for one would wake). The thread is read first: once it is not busy, every answer it gave is on
the loop's ready queue already (call_soon_threadsafe), and only this loop hands it new calls."""

from __future__ import annotations

import asyncio

from bot.adapters.store.aio import AsyncStore

PASSES = 2  # quiet this many times in a row
LIMIT = 10_000  # passes before it says the engine never went quiet (each is one store round trip)


def _noop() -> None:
    return None


async def quiet(*stores: AsyncStore) -> None:
    """Until the tasks of this loop wait on nothing but the clock or each other (several stores: replicas
    on one database, each with its own thread)."""
    loop = asyncio.get_running_loop()
    calm = 0
    for _ in range(LIMIT):
        for store in stores:
            await store.call(_noop)
        for _ in range(3):
            await asyncio.sleep(0)
        busy = any(store._thread.busy for store in stores)  # read before the loop's queue: see the doc
        calm = calm + 1 if not busy and not loop._ready else 0
        if calm >= PASSES:
            return
    raise AssertionError(f"the engine did not go quiet in {LIMIT} passes")
