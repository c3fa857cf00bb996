"""bot.tasks.TaskGroup: background work is held until done, its failures are logged once, shutdown cancels."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import logging

import pytest

from bot.tasks import TaskGroup, detached_task


async def test_a_spawned_task_is_held_until_it_is_done():
    group, gate = TaskGroup(), asyncio.Event()
    done: list[str] = []

    async def work() -> None:
        await gate.wait()
        done.append("yes")

    group.spawn(work(), "work")
    gc.collect()  # nobody else references the task: the group must
    assert len(group) == 1
    gate.set()
    await group.wait()
    assert done == ["yes"] and len(group) == 0


async def test_an_unexpected_exception_is_logged_once_with_the_task_name(caplog: pytest.LogCaptureFixture):
    group = TaskGroup("test")

    async def boom() -> None:
        raise RuntimeError("nope")

    with caplog.at_level(logging.ERROR, logger="bot.tasks"):
        group.spawn(boom(), "exploding")
        await group.wait()
    failures = [r for r in caplog.records if "exploding" in r.getMessage()]
    assert len(failures) == 1 and failures[0].exc_info is not None


async def test_aclose_cancels_what_is_left():
    group = TaskGroup()
    task = group.spawn(asyncio.Event().wait(), "forever")
    await group.aclose()
    assert task.cancelled() and len(group) == 0


async def test_a_detached_task_runs_outside_its_callers_context():
    """Shared work one deployment's code happens to start must not log with that deployment's fields."""
    var: contextvars.ContextVar[str] = contextvars.ContextVar("who", default="nobody")
    var.set("deployment #7")

    async def who() -> str:
        return var.get()

    assert await TaskGroup("t").spawn(who()) == "deployment #7"  # a task of its own: the caller's context
    assert await TaskGroup("t").spawn(who(), detached=True) == "nobody"
    assert await detached_task(who()) == "nobody"
