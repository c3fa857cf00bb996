"""Breaking glass after a migration went wrong: `/deploy restore ID REASON` restores the deployment's
pre-migration snapshot to a NEW database instance (the old one is left as it is, so nothing is lost if
the restore was the mistake), records who and why, and raises a critical alert that says how to cut over.
Who may: the environment's `rollback` roles."""

from __future__ import annotations

import re
from dataclasses import dataclass

from bot.app.access import Access
from bot.app.ports import Backups
from bot.app.storage import Storage
from bot.config.model import Settings
from bot.domain.errors import Refused
from bot.domain.events import SnapshotRestored


@dataclass(frozen=True)
class Restored:
    deployment_id: int
    snapshot: str
    instance: str
    endpoint: str


def restored_name(instance: str, deployment_id: int) -> str:
    """The new instance's name: RDS allows letters, digits and single hyphens, 63 characters at most."""
    suffix = f"-restore-{deployment_id}"
    base = re.sub(r"-+", "-", re.sub(r"[^A-Za-z0-9-]", "-", instance)).strip("-")
    return (base[: 63 - len(suffix)] + suffix).strip("-")


class Restores:
    def __init__(self, settings: Settings, store: Storage, access: Access, backups: Backups | None):
        self.settings, self.store, self.access, self.backups = settings, store, access, backups

    async def restore(
        self, deployment_id: int, user: str, roles: frozenset[str] | set[str], reason: str
    ) -> Restored:
        d = await self.store.find(deployment_id)
        if d is None:
            raise Refused(f"There is no deployment #{deployment_id}.")
        await self.access.check("rollback", d.env, user, roles, deployment=d)
        snapshot = d.context.get("snapshot")
        if not snapshot:
            raise Refused(
                f'{d.ref} made no backup (it ran no migration, or its service backs up with "none").'
            )
        done = d.context.get("restored")
        if done:
            raise Refused(
                f"Snapshot {snapshot} of {d.ref} was restored already, to {done['instance']} by <@{done['by']}>."
            )
        migrations = self.settings.target(d.service, d.env).migrations
        instance = migrations.instance(d.service, d.env) if migrations else None
        if self.backups is None or instance is None:
            raise Refused(f"{d.service} in {d.env} has no database backups configured to restore from.")
        new = restored_name(instance, d.id)
        account = self.settings.environments[d.env].aws_role_arn
        endpoint = await self.backups.restore(account, snapshot, new)  # PlatformError: said as it is
        details = {"snapshot": snapshot, "instance": new, "endpoint": endpoint, "by": user, "reason": reason}
        await self.store.save_progress(
            d.id,
            context={**d.context, "restored": details},
            audit=[(user, "restore", details)],
            events=[SnapshotRestored(user, snapshot, new, endpoint, reason)],
        )
        return Restored(d.id, snapshot, new, endpoint)
