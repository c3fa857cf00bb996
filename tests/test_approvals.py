"""Issue 4's acceptance: checklist, four-eyes approvals, roles, break glass, guards and the audit trail,
driven through the control API against the real bot process with the shipped config."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import boto3

from bot.sandbox.client import SandboxClient, wait_for
from bot.sandbox.run import Sandbox
from tests.conftest import (
    CONFIG,
    MANUAL_ITEMS,
    db_rows,
    message_of,
    request,
    through_gate,
    top_level,
    wait_state,
    wait_terminal,
)


def blocks_text(m: dict) -> str:
    return json.dumps(m["blocks"])


async def ephemeral_to(client, user_id: str, containing: str) -> dict:
    async def probe():
        return next(
            (
                m
                for m in await client.messages("deploys")
                if m.get("ephemeral_for") == user_id and containing in m["text"]
            ),
            None,
        )

    return await wait_for(probe, 10, what=f"an answer to {user_id} containing {containing!r}")


async def test_checklist_and_four_eyes_approval_then_the_deploy_runs(sandbox, client):
    d = await request(client, "alice", "web v2 to production")
    await wait_state(sandbox, d, "awaiting_approval")
    m = await message_of(client, d, "*Checklist*")
    shown = blocks_text(m)
    for label in (
        *MANUAL_ITEMS,
        "Tests passing",
        "Rollback plan ready",
        "Monitoring in place",
        "Database migrations tested",
    ):
        assert label in shown
    assert "Waiting for 1 approval" in shown and "web-production-5xx" in shown  # automatic evidence shown

    await client.click("alice", "deploys", m["ts"], label="Approve")
    await ephemeral_to(client, "U0ALICE", "someone else has to approve it (four eyes)")
    await client.click("dave", "deploys", m["ts"], label="Approve")
    await ephemeral_to(
        client, "U0DAVE", "You need the release-managers role to approve deployments in production"
    )
    assert db_rows(sandbox, "SELECT * FROM approvals") == []

    await through_gate(client, sandbox, d, approver="bob", ticker="alice")
    final = await wait_terminal(client, d, within=90)
    assert "succeeded" in final["text"]

    audit = db_rows(
        sandbox, "SELECT actor, action, at, details FROM events WHERE deployment_id = ? ORDER BY id", (d,)
    )
    ticks = [
        (e["actor"], json.loads(e["details"])["item"])
        for e in audit
        if e["action"] == "checklist" and e["actor"] != "deploybot"
    ]
    assert ticks == [("U0ALICE", i) for i in ("review", "team")]  # tests passing: the CI's evidence
    assert [(e["actor"], e["action"]) for e in audit if e["action"] in ("approve", "refused")] == [
        ("U0ALICE", "refused"),
        ("U0DAVE", "refused"),  # a refusal naming the deployment is in its audit trail
        ("U0BOB", "approve"),
    ]
    assert all(e["at"] for e in audit)
    order = [e["action"] for e in audit]
    assert order.index("approve") < order.index("start")  # nothing ran before it was approved
    r = await client.slash("carol", "/deploy", f"audit {d}")
    text = "\n".join(b["text"]["text"] for b in r["body"]["blocks"] if b["type"] == "section")
    assert "<@U0BOB> *approve*" in text and "awaiting_approval → running" in text
    assert "<@U0ALICE> *checklist*\n      done: yes\n      item: review" in text


async def test_a_changed_version_voids_the_approvals(sandbox, client):
    d = await request(client, "alice", "web v2 to production")
    await wait_state(sandbox, d, "awaiting_approval")
    assert "You approved" in (await client.slash("bob", "/deploy", f"approve {d}"))["body"]["text"]
    again = await client.slash("alice", "/deploy", "web v3 to production")
    assert again["body"]["text"] == (
        f":pencil2: Your request #{d} now deploys web v3 to production with canary (it was v2); "
        "approvals given before no longer count."
    )
    rows = db_rows(sandbox, "SELECT id, version FROM deployments")
    assert rows == [{"id": d, "version": "v3"}]
    assert db_rows(sandbox, "SELECT voided FROM approvals") == [{"voided": 1}]
    amend = db_rows(sandbox, "SELECT details FROM events WHERE action = 'amend'")
    assert json.loads(amend[0]["details"])["approvals_voided"] == 1

    async def shows_none():
        m = await message_of(client, d, "*Checklist*")
        return "Approvals* 0/1" in blocks_text(m) and "web v3" in m["text"]

    assert await wait_for(shows_none, 10, what="the message to show no valid approval")


async def test_dave_may_not_deploy_to_production_and_a_warning_is_posted(sandbox, client):
    r = await client.slash("dave", "/deploy", "web v2 to production")
    assert "You need the engineers or release-managers role to deploy in production" in r["body"]["text"]
    assert db_rows(sandbox, "SELECT * FROM deployments") == []
    refused = db_rows(sandbox, "SELECT actor, details FROM events WHERE action = 'refused'")
    assert refused[0]["actor"] == "U0DAVE" and json.loads(refused[0]["details"])["action"] == "deploy"

    async def warning():
        return [
            m for m in top_level(await client.messages("deploys")) if "<@U0DAVE> tried to deploy" in m["text"]
        ]

    assert await wait_for(warning, 10, what="the production warning")


async def test_emergency_by_an_allowed_role_skips_approval_and_leaves_an_alert_and_an_audit_flag(
    sandbox, client
):
    refused = await client.slash("alice", "/deploy", 'web v2 to production --emergency "login is down"')
    assert (
        "You need the release-managers or oncall role to deploy with --emergency" in refused["body"]["text"]
    )

    d = await request(client, "carol", 'web v2 to production --emergency "login is down"')
    final = await wait_terminal(client, d, within=90)
    assert "succeeded" in final["text"]
    assert db_rows(sandbox, "SELECT * FROM approvals") == []
    alerts = [m for m in await client.messages("incidents") if "Emergency deploy by <@U0CAROL>" in m["text"]]
    assert alerts and "CRITICAL" in alerts[0]["text"] and "login is down" in alerts[0]["text"]
    flagged = db_rows(sandbox, "SELECT actor, details FROM events WHERE action = 'emergency'")
    assert flagged == [{"actor": "U0CAROL", "details": json.dumps({"reason": "login is down"})}]

    out = subprocess.run(
        [sys.executable, "-m", "bot", "audit", "--db", sandbox.db, "--format", "json"],
        capture_output=True,
        text=True,
        check=True,
    )
    checked = subprocess.run(
        [sys.executable, "-m", "json.tool"], input=out.stdout, capture_output=True, text=True
    )
    assert checked.returncode == 0
    rows = json.loads(out.stdout)
    assert {"request", "emergency", "start", "succeed"} <= {r["action"] for r in rows}
    assert all(r["emergency"] for r in rows if r["deployment_id"] == d)
    csv = subprocess.run(
        [sys.executable, "-m", "bot", "audit", "--db", sandbox.db, "--format", "csv", "--service", "web"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    web_rows = [r for r in rows if r["service"] == "web"]  # --service web: the refusal named no service
    assert csv.splitlines()[0].startswith("event_id,at,deployment_id")
    assert len(csv.splitlines()) == len(web_rows) + 1


async def test_guards_refuse_without_monitoring_and_say_how_to_fix(sandbox, client):
    cloudwatch = boto3.client("cloudwatch", endpoint_url=sandbox.aws_url, region_name="us-east-1")
    cloudwatch.set_alarm_state(AlarmName="web-production-5xx", StateValue="ALARM", StateReason="5XX spike")
    d = await request(client, "alice", "web v2 to production")
    await wait_state(sandbox, d, "cancelled")
    outcome = db_rows(sandbox, "SELECT outcome FROM deployments WHERE id = ?", (d,))[0]["outcome"]
    assert outcome.startswith("Refused: monitoring is not satisfied") and "web-production-5xx" in outcome
    assert "Fix it, then deploy again" in outcome
    assert db_rows(sandbox, "SELECT * FROM locks") == []


async def test_an_all_at_once_rolling_deploy_is_refused_in_production(tmp_path, aws_env):
    config = tmp_path / "all-at-once.toml"
    config.write_text(
        Path(CONFIG)
        .read_text()
        .replace(
            "maximum_percent = 150\nminimum_healthy_percent = 100",
            "maximum_percent = 100\nminimum_healthy_percent = 0",
        )
    )
    async with (
        Sandbox(config=config, speed=60, workdir=tmp_path) as sb,
        SandboxClient(sb.slack_url) as client,
    ):
        r = await client.slash("bob", "/deploy", "web v2 to production --strategy rolling")
        assert "stops every task of web at once" in r["body"]["text"]
        assert "minimum_healthy_percent above 0" in r["body"]["text"]
        assert db_rows(sb, "SELECT * FROM deployments") == []
