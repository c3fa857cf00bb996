"""RDS snapshots, implementing bot.app.ports.Backups: one CreateDBSnapshot per backup (an existing
snapshot of the same name is the same backup: a retry after a lost answer makes no second one),
DescribeDBSnapshots to wait for it, RestoreDBInstanceFromDBSnapshot to a new instance for the way back."""

from __future__ import annotations

from typing import Any

from bot.adapters.aws import Caller
from bot.app.ports import PlatformError, Snapshot


def _snapshot(raw: dict[str, Any]) -> Snapshot:
    return Snapshot(
        id=raw["DBSnapshotIdentifier"],
        instance=raw.get("DBInstanceIdentifier", ""),
        status=raw.get("Status", ""),
        created_at=raw.get("SnapshotCreateTime"),
    )


class RdsBackups:
    def __init__(self, aws: Caller):
        self.aws = aws

    async def create_snapshot(self, account: str | None, instance: str, snapshot_id: str) -> Snapshot:
        try:
            out = await self.aws.call(
                "rds",
                "create_db_snapshot",
                account,
                DBInstanceIdentifier=instance,
                DBSnapshotIdentifier=snapshot_id,
                Tags=[{"Key": "deploybot", "Value": "pre-migration"}],
            )
        except PlatformError as exc:
            if exc.code != "DBSnapshotAlreadyExists":
                raise
            found = await self.snapshot(account, snapshot_id)
            if found is None or found.instance != instance:
                raise
            return found
        return _snapshot(out["DBSnapshot"])

    async def snapshot(self, account: str | None, snapshot_id: str) -> Snapshot | None:
        try:
            out = await self.aws.call(
                "rds", "describe_db_snapshots", account, DBSnapshotIdentifier=snapshot_id
            )
        except PlatformError as exc:
            if exc.code == "DBSnapshotNotFound":
                return None
            raise
        found = out.get("DBSnapshots") or []
        return _snapshot(found[0]) if found else None

    async def restore(self, account: str | None, snapshot_id: str, instance: str) -> str:
        out = await self.aws.call(
            "rds",
            "restore_db_instance_from_db_snapshot",
            account,
            DBInstanceIdentifier=instance,
            DBSnapshotIdentifier=snapshot_id,
        )
        db = out.get("DBInstance") or {}
        return str((db.get("Endpoint") or {}).get("Address") or db.get("DBInstanceIdentifier") or instance)
