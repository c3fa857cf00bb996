"""The leases' part of AsyncStore (bot.adapters.store.aio): each method a call of the Store's own on the
store's thread. `fenced` runs a Store write (an AsyncStore method's sync twin) behind the lease check, in
one transaction; one that appends outbox events wakes the outbox's readers as `_write` does."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from bot.domain.events import DomainEvent
from bot.domain.model import Alert, Deployment

if TYPE_CHECKING:
    from bot.adapters.store.sqlite import Store

P = ParamSpec("P")
R = TypeVar("R")


class AsyncLeases:
    """Mixed into AsyncStore, which provides `sync`, `call` and `_write`."""

    if TYPE_CHECKING:
        sync: Store

        async def call(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R: ...

        async def _write(
            self, appended: Sequence[DomainEvent], fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs
        ) -> R: ...

    async def lease(self, name: str) -> dict[str, Any] | None:
        return await self.call(self.sync.lease, name)

    async def leases(self, prefix: str = "") -> list[dict[str, Any]]:
        return await self.call(self.sync.leases, prefix)

    async def acquire_lease(self, name: str, owner: str, ttl: float) -> int | None:
        return await self.call(self.sync.acquire_lease, name, owner, ttl)

    async def renew_lease(self, name: str, token: int, ttl: float) -> bool:
        return await self.call(self.sync.renew_lease, name, token, ttl)

    async def release_lease(self, name: str, token: int) -> bool:
        return await self.call(self.sync.release_lease, name, token)

    async def release_leases(self, owner: str) -> int:
        return await self.call(self.sync.release_leases, owner)

    async def fence(self, name: str, token: int, ttl: float, intent: str) -> None:
        return await self.call(self.sync.fence, name, token, ttl, intent)

    async def fenced(
        self, name: str, token: int, ttl: float, intent: str | None, method: str, *args: Any, **kwargs: Any
    ) -> Any:
        """The Store's `method` (by name: save_progress, transition, record) behind the fence."""
        fn = getattr(self.sync, method)
        appended = kwargs.get("events") or ()
        return await self._write(appended, self.sync.fenced, name, token, ttl, intent, fn, *args, **kwargs)

    async def unleased_in_flight(self) -> list[Deployment]:
        return await self.call(self.sync.unleased_in_flight)

    async def start_as_seen(
        self, seen: Deployment, actor: str, events: Sequence[DomainEvent] = ()
    ) -> Deployment:
        return await self._write(events, self.sync.start_as_seen, seen, actor, events)

    async def outbox_head(self) -> int:
        return await self.call(self.sync.outbox_head)

    async def unshown_alerts(self, since_ts: float) -> list[Alert]:
        return await self.call(self.sync.unshown_alerts, since_ts)
