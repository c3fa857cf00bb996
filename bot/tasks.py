"""The one background-task helper: work started after an ack (or by a timer) that nobody awaits.

asyncio keeps only a weak reference to a task, so a task nobody holds can be collected mid-flight; and an
exception in a task nobody awaits is reported only when it is collected ("Task exception was never
retrieved"), if ever. A TaskGroup holds every task it spawned until it is done, logs an unexpected
exception once (with the task's name) and can cancel what is left at shutdown."""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger(__name__)


class TaskGroup:
    def __init__(self, name: str = "background") -> None:
        self.name = name
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(
        self, coro: Coroutine[Any, Any, Any], name: str | None = None, *, detached: bool = False
    ) -> asyncio.Task[Any]:
        """Run `coro` in the background, referenced until it is done. `detached`: shared work (not the
        caller's own), run outside the caller's context (`detached_task`)."""
        task = (
            detached_task(coro, name) if detached else asyncio.get_running_loop().create_task(coro, name=name)
        )
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()  # retrieved: asyncio does not report it again
        if exc is not None:
            log.error("%s task %s failed", self.name, task.get_name(), exc_info=exc)

    def __len__(self) -> int:
        return len(self._tasks)

    @property
    def tasks(self) -> frozenset[asyncio.Task[Any]]:
        return frozenset(self._tasks)

    def cancel_all(self) -> None:
        for task in list(self._tasks):
            task.cancel()

    async def wait(self) -> None:
        """Until every task spawned so far (and any they spawn meanwhile) is done."""
        while pending := [t for t in self._tasks if not t.done()]:
            await asyncio.gather(*pending, return_exceptions=True)

    async def aclose(self) -> None:
        """Cancel what is left and wait for it to finish."""
        self.cancel_all()
        await self.wait()


def detached_task(coro: Coroutine[Any, Any, Any], name: str | None = None) -> asyncio.Task[Any]:
    """A task for shared, long-lived work (a worker, a batch for many callers) that one caller happens to
    start: it runs in an empty context, not in the caller's (whose deployment's log fields, bot.logs,
    would otherwise follow it into every later caller's work)."""
    return asyncio.get_running_loop().create_task(coro, name=name, context=contextvars.Context())
