"""The store's one thread: store calls run there in the order they were asked for, each to its end (its
own transaction committed) before its caller hears of it. AsyncStore (aio.py) puts every call through it."""

from __future__ import annotations

import asyncio
import atexit
import logging
import threading
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

R = TypeVar("R")
log = logging.getLogger("bot.adapters.store.sqlite")  # the store's own log, as before

_Job = tuple[Callable[[], Any], asyncio.AbstractEventLoop | None, "asyncio.Future[Any] | None", str]


class StoreThread:
    """One thread running store calls in the order they were asked for, each to its end (its own
    transaction committed) before its caller hears of it.

    A burst of requests asks for many calls at once; a thread pool's hop per call (a future chained to a
    future, a self-pipe write per result, each waking the event loop) was a good part of the ack path on
    a busy machine. Here the thread takes every call queued when it wakes, and hands results back with at
    most one wake-up of the event loop outstanding: the loop takes all results ready when it runs."""

    def __init__(self, name: str = "store") -> None:
        self._jobs: deque[_Job] = deque()
        self._cv = threading.Condition(threading.Lock())
        self._closed = False
        # calls handed over and calls done, each written by one thread only (no lock): `busy`
        self._handed, self._done_count = 0, 0
        self._done_lock = threading.Lock()
        self._done: dict[
            asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Any, BaseException | None]]
        ] = {}
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()
        atexit.register(_close_at_exit, weakref.ref(self))  # what is queued still runs at exit

    def submit(self, fn: Callable[[], R]) -> asyncio.Future[R]:
        """Queue `fn`; the future (of the running loop) resolves with its result once it has run."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._put((fn, loop, future, getattr(fn, "__name__", "call")))
        return future

    def submit_nowait(self, fn: Callable[[], object], name: str) -> None:
        """Queue `fn` without waiting for it; a failure is logged."""
        self._put((fn, None, None, name))

    def _put(self, job: _Job) -> None:
        with self._cv:
            if self._closed:
                raise RuntimeError("the store is closed")
            self._jobs.append(job)
            self._handed += 1
            if len(self._jobs) == 1:
                self._cv.notify()

    @property
    def busy(self) -> bool:
        """A call is queued or running, or its answer is not yet handed to its loop."""
        return self._handed != self._done_count

    def close(self) -> None:
        """Run what is queued, then stop the thread."""
        with self._cv:
            self._closed = True
            self._cv.notify()
        if threading.current_thread() is not self._thread:
            self._thread.join()

    def _main(self) -> None:
        while True:
            with self._cv:
                while not self._jobs and not self._closed:
                    self._cv.wait()
                if not self._jobs:
                    return
                batch = list(self._jobs)
                self._jobs.clear()
            for fn, loop, future, name in batch:
                try:
                    result, error = fn(), None
                except BaseException as exc:  # handed to its caller (or logged): never kills the thread
                    result, error = None, exc
                if loop is None or future is None:
                    if error is not None:
                        log.error("store write %s failed: %s", name, error)
                else:
                    self._deliver(loop, future, result, error)
                self._done_count += 1  # after its answer is on its loop's ready queue

    def _deliver(
        self,
        loop: asyncio.AbstractEventLoop,
        future: asyncio.Future[Any],
        result: Any,
        error: BaseException | None,
    ) -> None:
        with self._done_lock:
            pending = self._done.get(loop)
            if pending is not None:  # a wake-up of that loop is already on its way: it takes this too
                pending.append((future, result, error))
                return
            self._done[loop] = [(future, result, error)]
        try:
            loop.call_soon_threadsafe(self._settle, loop)
        except RuntimeError:  # that loop is closed: nobody waits any more
            with self._done_lock:
                self._done.pop(loop, None)

    def _settle(self, loop: asyncio.AbstractEventLoop) -> None:
        """On the loop: resolve every future whose call has run."""
        with self._done_lock:
            ready = self._done.pop(loop, [])
        for future, result, error in ready:
            if future.cancelled():
                continue
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)


def _close_at_exit(ref: weakref.ref[StoreThread]) -> None:
    thread = ref()
    if thread is not None:
        thread.close()
