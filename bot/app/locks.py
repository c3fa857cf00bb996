"""Manual locks: a person holds a service in an environment (nothing deploys it) and lets it go. Access is
checked first and every lock and unlock is on the audit trail (the store writes both in one step)."""

from __future__ import annotations

from dataclasses import dataclass

from bot.app.access import Access
from bot.app.storage import Storage
from bot.domain.model import LockInfo


@dataclass(frozen=True)
class Unlocked:
    """The outcome of an unlock: `removed` when a manual lock was released; else who holds it (a
    deployment, released when it finishes) or None when it was not locked at all."""

    removed: LockInfo | None
    held_by: LockInfo | None


class Locks:
    def __init__(self, store: Storage, access: Access):
        self.store, self.access = store, access

    async def lock(
        self, service: str, env: str, user: str, roles: frozenset[str], reason: str
    ) -> LockInfo | None:
        """None when the lock is now `user`'s; else the lock that was already there."""
        await self.access.check("lock", env, user, roles, service=service)
        return await self.store.lock(service, env, user, reason)

    async def unlock(self, service: str, env: str, user: str, roles: frozenset[str]) -> Unlocked:
        await self.access.check("lock", env, user, roles, service=service)
        removed = await self.store.unlock(service, env, user)
        held = await self.store.lock_info(service, env) if removed is None else None
        return Unlocked(removed, held)
