"""In-memory Backups (bot.app.ports.Backups) for unit tests: snapshots in a dict, available after a
number of reads; injected failures per operation; every call recorded in order."""

from __future__ import annotations

from datetime import UTC, datetime

from bot.app.ports import PlatformError, Snapshot


class MemoryBackups:
    def __init__(self, *, polls: int = 1, instances: tuple[str, ...] | None = None):
        self.polls = polls  # snapshot() reads before a new snapshot is available
        self.instances = instances  # None: any instance exists
        self.snapshots: dict[str, Snapshot] = {}
        self.restored: dict[str, str] = {}  # new instance -> snapshot
        self.calls: list[str] = []
        self._left: dict[str, int] = {}
        self._faults: dict[str, list[PlatformError]] = {}

    def fail(self, operation: str, *errors: PlatformError) -> None:
        self._faults.setdefault(operation, []).extend(errors)

    def _enter(self, operation: str) -> None:
        self.calls.append(operation)
        pending = self._faults.get(operation)
        if pending:
            raise pending.pop(0)

    async def create_snapshot(self, account: str | None, instance: str, snapshot_id: str) -> Snapshot:
        self._enter("create_snapshot")
        if self.instances is not None and instance not in self.instances:
            raise PlatformError(
                "RDS CreateDBSnapshot", f"DBInstanceNotFound: {instance}", "DBInstanceNotFound"
            )
        if snapshot_id in self.snapshots:
            return self.snapshots[snapshot_id]
        self.snapshots[snapshot_id] = Snapshot(snapshot_id, instance, "creating", datetime.now(UTC))
        self._left[snapshot_id] = self.polls
        return self.snapshots[snapshot_id]

    async def snapshot(self, account: str | None, snapshot_id: str) -> Snapshot | None:
        self._enter("snapshot")
        found = self.snapshots.get(snapshot_id)
        if found is not None and found.status == "creating":
            self._left[snapshot_id] -= 1
            if self._left[snapshot_id] <= 0:
                found = self.snapshots[snapshot_id] = Snapshot(
                    found.id, found.instance, "available", found.created_at
                )
        return found

    async def restore(self, account: str | None, snapshot_id: str, instance: str) -> str:
        self._enter("restore")
        if snapshot_id not in self.snapshots:
            raise PlatformError("RDS RestoreDBInstanceFromDBSnapshot", f"DBSnapshotNotFound: {snapshot_id}")
        self.restored[instance] = snapshot_id
        return instance
