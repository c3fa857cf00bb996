"""People first: Slack waits at most 3 s for an answer to a slash command or a click, a deployment's next
step does not mind 50 ms. Requests in flight are counted here (the Slack adapter's `begin`/`end`), and
background work (a deployment's AWS calls and checkpoints, the notifier's deliveries) waits for them to be
answered before taking the event loop again, never longer than `max_wait` at a time, so a steady stream of
requests slows deployments down but never stops them.

Measured (benchmarks/ack_latency.py): 50 /deploy at once, two of which start deployments while the other 48
are still waiting for their answer."""

from __future__ import annotations

import asyncio
import contextvars

# set in a deployment's task (and what it starts): this work may wait for people's requests
BACKGROUND: contextvars.ContextVar[bool] = contextvars.ContextVar("deploybot_background", default=False)


class Foreground:
    def __init__(self, max_wait: float = 0.25):
        self.max_wait = max_wait
        self._in_flight = 0
        # futures of whichever loop is waiting (not one asyncio.Event: that binds to the first loop that
        # waits on it, and tests run many loops in one process)
        self._waiters: list[asyncio.Future[None]] = []

    def begin(self) -> None:
        self._in_flight += 1

    def end(self) -> None:
        self._in_flight = max(0, self._in_flight - 1)
        if self._in_flight == 0:
            waiters, self._waiters = self._waiters, []
            for w in waiters:
                if not w.done():
                    w.set_result(None)

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def waiting(self) -> int:
        """Background tasks waiting now for the requests in flight."""
        return len(self._waiters)

    async def quiet(self) -> None:
        """Return when no request is in flight, or after `max_wait` seconds."""
        if self._in_flight == 0:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await asyncio.wait_for(waiter, self.max_wait)
        except TimeoutError:
            pass
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    async def background_turn(self) -> None:
        """`quiet()`, when called from background work (BACKGROUND set); at once otherwise."""
        if BACKGROUND.get():
            await self.quiet()


FOREGROUND = Foreground()  # one per process: the requests it serves and the work it runs share one loop
