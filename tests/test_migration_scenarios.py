"""Database migrations end to end in the sandbox: the bot backs up (an RDS snapshot on moto), runs the
migration as a one-off task of the new image (the sandbox runs the demo application's real SQL against
a SQLite file per environment), rehearses it in staging, undoes it on a rollback after traffic, and
production's checklist reads the rehearsal as evidence. Users: alice and carol engineers, bob a release
manager."""

from __future__ import annotations

import json

import boto3

from bot.sandbox.client import SandboxClient, wait_for
from bot.sandbox.run import Sandbox
from tests.conftest import (
    CONFIG,
    db_rows,
    listener_weights,
    request,
    service_image,
    top_level,
    wait_state,
    wait_terminal,
)


def snapshots(sb: Sandbox, deployment_id: int) -> list[dict]:
    rds = boto3.client("rds", endpoint_url=sb.aws_url, region_name="us-east-1")
    found = rds.describe_db_snapshots(SnapshotType="manual")["DBSnapshots"]
    return [s for s in found if s["DBSnapshotIdentifier"].endswith(f"-{deployment_id}")]


def audit(sb: Sandbox, deployment_id: int) -> list[tuple[str, dict]]:
    rows = db_rows(
        sb, "SELECT action, details FROM events WHERE deployment_id = ? ORDER BY id", (deployment_id,)
    )
    return [(r["action"], json.loads(r["details"] or "{}")) for r in rows]


def tasks_of(sb: Sandbox, deployment_id: int) -> list:
    return [
        t for t in sb.world.tasks.tasks.values() if t.started_by.startswith(f"deploybot-{deployment_id}-")
    ]


async def test_a_deploy_backs_up_then_migrates_rehearses_and_rolls_out(sandbox, client):
    db = sandbox.world.tasks.appdb("staging")
    assert db.version() == 1
    d = await request(client, "alice", "api v2 to staging")
    final = await wait_terminal(client, d, within=90)
    assert "succeeded" in final["text"], final["text"]

    (snap,) = snapshots(sandbox, d)
    assert (
        snap["DBSnapshotIdentifier"] == f"deploybot-staging-api-{d}"
        and snap["DBInstanceIdentifier"] == "api-staging"
    )
    tasks = tasks_of(sandbox, d)
    assert [t.started_by for t in tasks] == [
        f"deploybot-{d}-up-1",
        f"deploybot-{d}-down-1",
        f"deploybot-{d}-up-2",
    ]
    assert all(t.tag == "v2" and t.exit_code == 0 for t in tasks)  # the NEW image, every time
    assert snap["SnapshotCreateTime"].timestamp() <= tasks[0].created_wall  # the backup came first
    assert db.version() == 2 and db.tables() == ["accounts", "orders"]
    seen = await client.appdb("staging")  # the control API shows the same
    assert seen["version"] == 2 and list(seen["tables"]) == ["accounts", "orders"]
    assert (await client.appdb("nowhere"))["ok"] is False

    trail = audit(sandbox, d)
    actions = [a for a, _ in trail]
    assert actions.index("backup") < actions.index("migration")
    first_slot_change = next(
        i for i, (a, det) in enumerate(trail) if a == "step_started" and det.get("step") == "update_service"
    )
    assert max(i for i, (a, _) in enumerate(trail) if a == "migration") < first_slot_change
    assert ("backup", {"snapshot": f"deploybot-staging-api-{d}", "instance": "api-staging"}) in trail
    assert {det["task"] for a, det in trail if a == "migration"} == {t.arn for t in tasks}
    assert [det["version"] for a, det in trail if a == "migration_rehearsed"] == ["v2"]


async def test_a_failed_migration_changes_nothing_else_and_raises_a_critical_alert(sandbox, client):
    await client.inject("api", "v3", migration="fails")
    db = sandbox.world.tasks.appdb("staging")
    before = service_image(sandbox, "staging", "api-blue")
    d = await request(client, "alice", "api v3 to staging")
    final = await wait_terminal(client, d, within=90)
    assert "failed" in final["text"], final["text"]
    assert service_image(sandbox, "staging", "api-blue") == before  # no slot started
    assert listener_weights(sandbox, "api", "staging") == {"blue": 100, "green": 0}
    assert db.version() == 1
    assert db_rows(sandbox, "SELECT * FROM locks") == []
    (task,) = tasks_of(sandbox, d)

    async def alert():
        for m in top_level(await client.messages("incidents")):
            if f"#{d} " in m["text"]:
                return m
        return None

    raised = await wait_for(alert, 30, what="the critical alert for the failed migration")
    text = raised["text"] + json.dumps(raised.get("blocks"))
    assert "exited with code 1" in text and task.arn.rsplit("/", 1)[-1] in text
    assert "nothing was applied" in text  # the task's last log line, read back from CloudWatch Logs


async def test_a_rollback_moves_traffic_back_first_then_runs_down(sandbox, client):
    await client.inject("api", "v2", unhealthy=True)  # migrates fine, then its tasks fail their checks
    db = sandbox.world.tasks.appdb("staging")
    d = await request(client, "alice", "api v2 to staging")
    final = await wait_terminal(client, d, within=120)
    assert "rolled back" in final["text"], final["text"]
    trail = audit(sandbox, d)
    back = [det.get("step") for a, det in trail if a == "rollback_step_finished"]
    assert "migrate_back" in back and back.index("update_service") < back.index("migrate_back"), back
    assert all(step in ("verify_rolled_back",) for step in back[back.index("migrate_back") + 1 :]), back
    downs = [t for t in tasks_of(sandbox, d) if "down" in t.command]
    assert [t.started_by for t in downs] == [f"deploybot-{d}-down-1", f"deploybot-{d}-down-0"]
    assert db.version() == 1 and db.tables() == ["accounts"]
    assert service_image(sandbox, "staging", "api-blue")[1] == "api:v1"


async def test_production_reads_a_staging_rehearsal_as_migrations_tested(sandbox, client):
    def item(d: int) -> dict:
        return db_rows(
            sandbox,
            "SELECT done, evidence FROM checklist WHERE deployment_id = ? AND item_id = 'migrations'",
            (d,),
        )[0]

    untested = await request(client, "alice", "api v4 to production")
    await wait_state(sandbox, untested, "awaiting_approval")

    async def checked():
        rows = db_rows(
            sandbox, "SELECT * FROM checklist WHERE deployment_id = ? AND item_id = 'migrations'", (untested,)
        )
        return rows or None

    await wait_for(checked, 30, what="the automatic item checked")
    assert item(untested) == {
        "done": 0,
        "evidence": "the migration of v4 was never rehearsed in staging: deploy it there first (it runs up, down, up)",
    }
    staging = await request(client, "alice", "api v2 to staging")
    assert "succeeded" in (await wait_terminal(client, staging, within=90))["text"]
    amended = await client.slash("alice", "/deploy", "api v2 to production")  # her request, now for v2
    assert amended["status"] == 200, amended

    async def done():
        return item(untested)["done"] == 1

    await wait_for(done, 30, what="the rehearsal seen as evidence")
    evidence = item(untested)["evidence"]
    assert evidence.startswith(f"rehearsed in staging by #{staging} at "), evidence
    assert evidence.endswith("up, down, up all exited 0"), evidence


async def test_a_bot_killed_during_the_migration_finds_its_task_and_runs_no_second_one(tmp_path, aws_env):
    async with Sandbox(config=CONFIG, speed=60, workdir=tmp_path) as sb, SandboxClient(sb.slack_url) as c:
        await c.inject("api", "v2", migration="slow")
        d = await request(c, "alice", "api v2 to staging")

        async def running():
            return any(t.status == "RUNNING" for t in tasks_of(sb, d))

        await wait_for(running, 30, what="the migration task running")
        assert (await c.bot("kill"))["running"] is False
        assert (await c.bot("start"))["running"] is True
        assert "succeeded" in (await wait_terminal(c, d, within=120))["text"]
        keys = [t.started_by for t in tasks_of(sb, d)]
        assert keys == [f"deploybot-{d}-up-1", f"deploybot-{d}-down-1", f"deploybot-{d}-up-2"], keys
        assert len(snapshots(sb, d)) == 1
        assert sb.world.tasks.appdb("staging").version() == 2


async def test_restore_breaks_glass_to_a_new_instance_with_a_critical_alert(sandbox, client):
    d = await request(client, "alice", "api v2 to staging")
    assert "succeeded" in (await wait_terminal(client, d, within=90))["text"]
    refused = await client.slash("dave", "/deploy", f"restore {d} the refunds table is gone")
    assert refused["body"].get("response_type") != "in_channel" and "role" in refused["body"]["text"], refused
    r = await client.slash("carol", "/deploy", f"restore {d} <!channel> the refunds table is gone")
    body = r["body"]
    assert body.get("response_type") == "in_channel", body
    assert f"api-staging-restore-{d}" in body["text"] and "<!channel>" not in body["text"]
    rds = boto3.client("rds", endpoint_url=sandbox.aws_url, region_name="us-east-1")

    async def restored():  # RDS is asked after the answer
        names = [i["DBInstanceIdentifier"] for i in rds.describe_db_instances()["DBInstances"]]
        return names if f"api-staging-restore-{d}" in names else None

    names = await wait_for(restored, 30, what="the new instance")
    assert "api-staging" in names  # the old one is untouched

    async def told():  # how it went, and how to cut over, in the deployment's thread
        lines = [m["text"] for m in await client.messages("deploys")]
        return any(f"restored to the new instance api-staging-restore-{d}" in t for t in lines)

    await wait_for(told, 30, what="the restore's outcome in the thread")

    async def alert():
        for m in top_level(await client.messages("incidents")):
            if f"#{d} " in m["text"] and "restore" in (m["text"] + json.dumps(m.get("blocks"))).lower():
                return m
        return None

    await wait_for(alert, 30, what="the critical alert about the restore")
    again = await client.slash("carol", "/deploy", f"restore {d} once more")
    assert "restored already" in again["body"]["text"], again
