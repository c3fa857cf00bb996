"""RDS snapshots before a migration, against moto's server: one CreateDBSnapshot per backup (a retry
makes no second one), a missing snapshot is None, a snapshot of another instance under the same name is
an error, and the way back restores to a new instance."""

from __future__ import annotations

import pytest

from bot.adapters.aws import Aws
from bot.adapters.backups.rds import RdsBackups
from bot.app.ports import PlatformError
from bot.clock import ManualClock
from bot.config.model import AwsSettings
from bot.sandbox.aws import AwsWorld


@pytest.fixture(scope="module")
def server():
    world = AwsWorld(ManualClock(), services=("web",), environments=("staging",))
    world.start()
    yield world
    world.stop()


@pytest.fixture
def rds(server, aws_env):
    server.reset(ManualClock())
    client = server.client("rds")
    for name in ("api-staging", "other"):
        client.create_db_instance(
            DBInstanceIdentifier=name, DBInstanceClass="db.t3.micro", Engine="postgres", AllocatedStorage=20
        )
    return client


@pytest.fixture
def backups(server):
    return RdsBackups(Aws(AwsSettings(endpoint_url=server.endpoint, max_attempts=2)))


async def test_a_snapshot_is_made_once_and_read_back(rds, backups):
    made = await backups.create_snapshot(None, "api-staging", "deploybot-staging-api-7")
    assert (made.id, made.instance) == ("deploybot-staging-api-7", "api-staging")
    again = await backups.create_snapshot(None, "api-staging", "deploybot-staging-api-7")
    assert again.id == made.id
    assert (
        len(
            rds.describe_db_snapshots(DBInstanceIdentifier="api-staging", SnapshotType="manual")[
                "DBSnapshots"
            ]
        )
        == 1
    )
    read = await backups.snapshot(None, "deploybot-staging-api-7")
    assert read is not None and read.available and read.created_at is not None
    assert await backups.snapshot(None, "deploybot-staging-api-8") is None


async def test_the_same_name_for_another_instance_is_refused(rds, backups):
    await backups.create_snapshot(None, "other", "deploybot-staging-api-9")
    with pytest.raises(PlatformError, match="DBSnapshotAlreadyExists"):
        await backups.create_snapshot(None, "api-staging", "deploybot-staging-api-9")


async def test_a_missing_instance_is_a_platform_error_and_restore_makes_a_new_instance(rds, backups):
    with pytest.raises(PlatformError, match="DBInstanceNotFound"):
        await backups.create_snapshot(None, "nope", "deploybot-staging-nope-1")
    await backups.create_snapshot(None, "api-staging", "deploybot-staging-api-10")
    where = await backups.restore(None, "deploybot-staging-api-10", "api-staging-restored-10")
    assert where
    names = [d["DBInstanceIdentifier"] for d in rds.describe_db_instances()["DBInstances"]]
    assert "api-staging-restored-10" in names and "api-staging" in names
