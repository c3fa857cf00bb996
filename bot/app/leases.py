"""This replica's leases (several bot processes share one store): which it holds and with what token,
their renewal, the hand-back at shutdown, and the fence every AWS-mutating call and every write of a
running deployment goes through. The store checks a token in the transaction of the write it allows
(bot.adapters.store.leases); an AWS call is allowed by a transaction that records its intent BEFORE
the call, so a replica whose lease was taken over never calls AWS for it again.

What a fence cannot cover: a replica stopped for longer than the lease BETWEEN its check and its HTTP
request (AWS takes no fencing token). The check renews the lease to a full `ttl`, so that needs a stall
of a whole lease time inside one call's few milliseconds."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from bot.app.ports import Backups, Platform, Snapshot
from bot.clock import Clock
from bot.config.model import Target
from bot.domain.leases import Fenced
from bot.domain.model import Deployment

log = logging.getLogger(__name__)
DEFAULT_TTL = 15.0  # clock seconds a lease lasts unless renewed (renewed every third of it)


class LeaseStore(Protocol):
    async def lease(self, name: str) -> dict[str, Any] | None: ...

    async def acquire_lease(self, name: str, owner: str, ttl: float) -> int | None: ...

    async def renew_lease(self, name: str, token: int, ttl: float) -> bool: ...

    async def release_lease(self, name: str, token: int) -> bool: ...

    async def release_leases(self, owner: str) -> int: ...

    async def fence(self, name: str, token: int, ttl: float, intent: str) -> None: ...

    async def fenced(
        self, name: str, token: int, ttl: float, intent: str | None, method: str, *args: Any, **kwargs: Any
    ) -> Any: ...

    async def unleased_in_flight(self) -> list[Deployment]: ...


class Leases:
    """The leases this replica (`owner`) holds: name -> token, and who hears when one is lost."""

    def __init__(self, store: LeaseStore, clock: Clock, owner: str, ttl: float = DEFAULT_TTL):
        if ttl <= 0:
            raise ValueError(f"lease ttl must be > 0, got {ttl}")
        self.store, self.clock, self.owner, self.ttl = store, clock, owner, float(ttl)
        self.tokens: dict[str, int] = {}
        self._on_lost: dict[str, Callable[[Fenced], None]] = {}
        self._lost: dict[str, Fenced] = {}  # why each lease lost since it was last taken was lost
        self.closing = False  # shutting down: take nothing more

    @property
    def renew_every(self) -> float:
        return self.ttl / 3

    def holds(self, name: str) -> bool:
        return name in self.tokens

    async def acquire(self, name: str, on_lost: Callable[[Fenced], None] | None = None) -> bool:
        """Take `name` (free, expired, or this owner's from an earlier life); False while another holds it."""
        if self.closing:
            return False
        token = await self.store.acquire_lease(name, self.owner, self.ttl)
        if token is None:
            return False
        self.tokens[name] = token
        self._lost.pop(name, None)
        if on_lost is not None:
            self._on_lost[name] = on_lost
        return True

    async def release(self, name: str) -> None:
        token = self.tokens.pop(name, None)
        self._on_lost.pop(name, None)
        if token is not None:
            await self.store.release_lease(name, token)

    async def release_all(self) -> int:
        """Hand back every lease (shutdown): another replica takes each at once."""
        self.closing = True
        self.tokens.clear()
        self._on_lost.clear()
        return await self.store.release_leases(self.owner)

    async def renew_all(self) -> list[str]:
        """Renew every lease held; the names of those lost (each loser's on_lost was called)."""
        lost = []
        for name, token in list(self.tokens.items()):
            if await self.store.renew_lease(name, token, self.ttl):
                continue
            if self.tokens.get(name) != token:
                continue  # released or taken again meanwhile
            row = await self.store.lease(name)
            self.lose(name, Fenced(name, token, row["owner"] if row else None, row["token"] if row else None))
            lost.append(name)
        return lost

    def lose(self, name: str, fenced: Fenced) -> None:
        """`name` is no longer ours: say so and tell its holder in this process to stop."""
        if self.tokens.get(name) == fenced.token:
            del self.tokens[name]
            self._lost[name] = fenced
        log.warning("fenced: %s; replica %s stops working on it", fenced, self.owner)
        on_lost = self._on_lost.pop(name, None)
        if on_lost is not None:
            on_lost(fenced)

    def _token(self, name: str) -> int:
        token = self.tokens.get(name)
        if token is None:
            raise self._lost.get(name) or Fenced(name, 0, None, None)
        return token

    async def fence(self, name: str, intent: str) -> None:
        """Allow one AWS call for `name` (Fenced if its lease is lost); the intent goes on the record."""
        try:
            await self.store.fence(name, self._token(name), self.ttl, intent)
        except Fenced as exc:
            log.warning("fenced: refused %s for %s: %s", intent, name, exc)
            self.lose(name, exc)
            raise

    async def fenced(self, name: str, method: str, *args: Any, **kwargs: Any) -> Any:
        """The store's write `method` for `name`'s work, only while its lease holds (one transaction)."""
        try:
            return await self.store.fenced(name, self._token(name), self.ttl, None, method, *args, **kwargs)
        except Fenced as exc:
            log.warning("fenced: refused to record %s for %s: %s", method, name, exc)
            self.lose(name, exc)
            raise


class FencedPlatform:
    """A Platform whose mutating calls for one deployment pass the fence first; reads go straight."""

    def __init__(self, platform: Platform, leases: Leases, name: str):
        self._platform, self._leases, self._name = platform, leases, name

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._platform, attr)

    async def register_revision(self, target: Target, base: str, image: str, *, key: str) -> str:
        await self._leases.fence(self._name, f"RegisterTaskDefinition {target.service.name} {image}")
        return await self._platform.register_revision(target, base, image, key=key)

    async def update_slot(self, target: Target, slot: str, *args: Any, **kwargs: Any) -> Any:
        await self._leases.fence(self._name, f"UpdateService {target.service.name} {slot}")
        return await self._platform.update_slot(target, slot, *args, **kwargs)

    async def set_weights(self, target: Target, weights: Mapping[str, int]) -> None:
        shown = " ".join(f"{k}={v}" for k, v in sorted(weights.items()))
        await self._leases.fence(self._name, f"ModifyRule {target.service.name} {shown}")
        await self._platform.set_weights(target, weights)

    async def run_task(self, target: Target, *args: Any, **kwargs: Any) -> Any:
        await self._leases.fence(self._name, f"RunTask {target.service.name}")
        return await self._platform.run_task(target, *args, **kwargs)


class FencedBackups:
    """Backups whose snapshot and restore pass the fence first."""

    def __init__(self, backups: Backups, leases: Leases, name: str):
        self._backups, self._leases, self._name = backups, leases, name

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._backups, attr)

    async def create_snapshot(self, account: str | None, instance: str, snapshot_id: str) -> Snapshot:
        await self._leases.fence(self._name, f"CreateDBSnapshot {snapshot_id}")
        return await self._backups.create_snapshot(account, instance, snapshot_id)


class FencedFlags:
    """Flags whose changes for one deployment (a flag rollout's steps) are written with the fence, in one
    transaction: a replica whose lease was taken over never serves its rollout's next share."""

    def __init__(self, flags: Any, leases: Leases, name: str):
        self._flags, self._leases, self._name = flags, leases, name

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._flags, attr)

    async def change(self, *args: Any, **kwargs: Any) -> Any:
        async def set_flag(*a: Any, **k: Any) -> Any:
            return await self._leases.fenced(self._name, "set_flag", *a, **k)

        return await self._flags.change(*args, set_flag=set_flag, **kwargs)
