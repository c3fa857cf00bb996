"""The one thread boundary in front of the store: every call runs on the store's own thread, so the event loop never blocks on SQLite."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ParamSpec, TypeVar

from bot.adapters.store.sqlite import Store, log

P = ParamSpec("P")
R = TypeVar("R")


class AsyncStore:
    """The store for async code: every call runs on one dedicated thread (sqlite's one thread boundary)."""

    def __init__(self, store: Store):
        self.sync = store
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")

    async def call(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(*args, **kwargs))

    def later(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run `fn` on the store's thread without waiting for it. The thread takes calls in order, so
        every call made after this one sees what it wrote."""

        def done(f: Any) -> None:
            if f.exception() is not None:
                log.error("store write %s failed: %s", getattr(fn, "__name__", fn), f.exception())

        self._executor.submit(fn, *args).add_done_callback(done)

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self.sync, name)

        async def run(*args: Any, **kwargs: Any) -> Any:
            return await self.call(method, *args, **kwargs)

        return run

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        self.sync.close()
