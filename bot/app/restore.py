"""Breaking glass after a migration went wrong: `/deploy restore ID REASON` restores the deployment's
pre-migration snapshot to a NEW database instance (the old one is left as it is, so nothing is lost if
the restore was the mistake). Who may: the environment's `rollback` roles.

The answer never waits on AWS: the request is recorded first (who, why, which snapshot, the new
instance's name) with its critical alert, and RDS is asked after, in the background; how it went is
written to the deployment's thread and audit. A restore that failed, or that a restart cut short before
RDS answered, may be asked for again; one done, or under way in this process, may not."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

from bot.app.access import Access
from bot.app.ports import Backups, PlatformError
from bot.app.storage import Storage
from bot.config.model import Settings
from bot.domain.errors import Refused
from bot.domain.events import Detail, SnapshotRestoring
from bot.tasks import TaskGroup

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Restoring:
    deployment_id: int
    snapshot: str
    instance: str


def restored_name(instance: str, deployment_id: int) -> str:
    """The new instance's name: RDS allows letters, digits and single hyphens, 63 characters at most."""
    suffix = f"-restore-{deployment_id}"
    base = re.sub(r"-+", "-", re.sub(r"[^A-Za-z0-9-]", "-", instance)).strip("-")
    return (base[: 63 - len(suffix)] + suffix).strip("-")


class Restores:
    def __init__(self, settings: Settings, store: Storage, access: Access, backups: Backups | None):
        self.settings, self.store, self.access, self.backups = settings, store, access, backups
        self._running: set[int] = set()
        self._after = TaskGroup("restores")

    async def shutdown(self) -> None:
        await self._after.aclose()

    async def restore(
        self, deployment_id: int, user: str, roles: frozenset[str] | set[str], reason: str
    ) -> Restoring:
        d = await self.store.find(deployment_id)
        if d is None:
            raise Refused(f"There is no deployment #{deployment_id}.")
        await self.access.check("rollback", d.env, user, roles, deployment=d)
        snapshot = d.context.get("snapshot")
        if not snapshot:
            raise Refused(
                f'{d.ref} made no backup (it ran no migration, or its service backs up with "none").'
            )
        before: dict[str, Any] = d.context.get("restore") or {}
        if before.get("state") == "restored" or d.id in self._running:
            raise Refused(
                f"Snapshot {snapshot} of {d.ref} was {'restored' if before.get('state') == 'restored' else 'being restored'}"
                f" already, to {before.get('instance')} by <@{before.get('by')}>."
            )
        migrations = self.settings.target(d.service, d.env).migrations
        instance = migrations.instance(d.service, d.env) if migrations else None
        if self.backups is None or instance is None:
            raise Refused(f"{d.service} in {d.env} has no database backups configured to restore from.")
        new = restored_name(instance, d.id)
        details = {"snapshot": snapshot, "instance": new, "by": user, "reason": reason, "state": "restoring"}
        self._running.add(d.id)
        try:
            await self.store.save_progress(
                d.id,
                context={**d.context, "restore": details},
                audit=[(user, "restore", details)],
                events=[SnapshotRestoring(user, snapshot, new, reason)],
            )
        except BaseException:
            self._running.discard(d.id)
            raise
        self._after.spawn(self._carry_out(d.id, snapshot, new), name=f"restore-{d.id}")
        return Restoring(d.id, snapshot, new)

    async def _carry_out(self, deployment_id: int, snapshot: str, instance: str) -> None:
        """RDS's restore, then its outcome on the record: the endpoint and how to cut over, or the error."""
        try:
            d = await self.store.get(deployment_id)
            account = self.settings.environments[d.env].aws_role_arn
            assert self.backups is not None
            try:
                endpoint = await self.backups.restore(account, snapshot, instance)
            except PlatformError as exc:
                outcome = {"state": "failed", "error": str(exc)}
                line = f"Restoring snapshot {snapshot} to {instance} failed: {exc}. Ask again with /deploy restore."
            else:
                outcome = {"state": "restored", "endpoint": endpoint}
                line = (
                    f"Snapshot {snapshot} restored to the new instance {instance} ({endpoint}); the old instance "
                    f"is untouched. To cut over, point {d.service}'s database at the new one, then check it."
                )
            d = await self.store.get(deployment_id)
            details = {**(d.context.get("restore") or {}), **outcome}
            action = "restore_done" if outcome["state"] == "restored" else "restore_failed"
            await self.store.save_progress(
                deployment_id,
                context={**d.context, "restore": details},
                audit=[("deploybot", action, details)],
                events=[Detail(line)],
            )
        except Exception:
            log.exception("restoring snapshot %s for deployment #%s", snapshot, deployment_id)
        finally:
            self._running.discard(deployment_id)
