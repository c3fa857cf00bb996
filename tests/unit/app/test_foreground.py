"""People first: background work waits for the requests in flight to be answered, never longer than the
bound, and only background work waits."""

from __future__ import annotations

import asyncio
import contextvars

from bot.app.foreground import BACKGROUND, Foreground


async def test_no_request_in_flight_waits_for_nothing() -> None:
    fg = Foreground(max_wait=3600)
    async with asyncio.timeout(5):
        await fg.quiet()


async def test_background_work_goes_on_when_the_last_request_is_answered() -> None:
    fg = Foreground(max_wait=3600)
    fg.begin()
    fg.begin()
    waiting = asyncio.ensure_future(fg.quiet())
    await asyncio.sleep(0)
    fg.end()
    await asyncio.sleep(0)
    assert not waiting.done() and fg.in_flight == 1  # one is still being answered
    fg.end()
    async with asyncio.timeout(5):
        await waiting
    assert fg.in_flight == 0


async def test_a_steady_stream_of_requests_delays_background_work_but_never_stops_it() -> None:
    fg = Foreground(max_wait=0.01)
    fg.begin()  # never answered
    async with asyncio.timeout(5):
        await fg.quiet()
    assert fg.in_flight == 1


async def test_only_background_work_waits() -> None:
    fg = Foreground(max_wait=3600)
    fg.begin()
    async with asyncio.timeout(5):
        await fg.background_turn()  # a request's own call: at once

    async def deployment() -> None:
        BACKGROUND.set(True)
        await fg.background_turn()

    task = asyncio.get_running_loop().create_task(deployment(), context=contextvars.copy_context())
    await asyncio.sleep(0)
    assert not task.done()
    fg.end()
    async with asyncio.timeout(5):
        await task
    assert BACKGROUND.get() is False  # the deployment's context is its own


async def test_more_ends_than_begins_leave_nothing_waiting() -> None:
    fg = Foreground(max_wait=3600)
    fg.end()
    assert fg.in_flight == 0
    async with asyncio.timeout(5):
        await fg.quiet()
