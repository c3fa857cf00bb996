"""Issue 2's acceptance, driven like a user would: signed slash commands and clicks through the sandbox's
control API to the real bot process, checked against moto's ECS, the local Slack and the bot's database."""

from __future__ import annotations

import asyncio
import json
import time

from bot.sandbox.client import wait_for
from tests.conftest import (
    db_rows,
    rehearsed,
    service_image,
    signed_post,
    slash_form,
    through_gate,
    top_level,
    wait_terminal,
)

ROLLING_STEPS = [
    "capture_current",
    "register_revision",
    "update_service",
    "wait_for_rollout",
    "wait_for_healthy_targets",
    "bake",
]


async def deploy(client, user: str, text: str) -> int:
    r = await client.slash(user, "/deploy", text)
    assert r["status"] == 200, r
    body = r["body"]
    assert "requested" in body["text"], body
    return int(body["text"].split("#", 1)[1].split()[0])


async def test_deploy_v2_to_staging_runs_end_to_end(sandbox, client):
    started = time.monotonic()
    r = await client.slash("alice", "/deploy", "web v2 to staging")
    ack_seconds = time.monotonic() - started
    assert r["status"] == 200
    assert r["body"]["response_type"] == "ephemeral"
    assert "Deployment #1 · web v2 → staging requested" in r["body"]["text"]
    assert ack_seconds < 2.5, f"ack took {ack_seconds:.2f}s"  # bolt's own budget is 3 s; AWS is never awaited

    final = await wait_terminal(client, 1)
    assert "succeeded" in final["text"] and final["edited"]
    assert "Checklist" not in json.dumps(final["blocks"])  # staging has no checklist: none is shown

    arn, image = service_image(sandbox, "staging", "web-blue")
    assert image == "web:v2" and arn.endswith("web-staging:2")

    messages = await client.messages("deploys")
    tops = [m for m in top_level(messages) if "#1 " in m["text"]]
    assert len(tops) == 1, "a deployment has exactly one top-level message"
    thread = [m["text"] for m in messages if m.get("thread_ts") == tops[0]["ts"]]
    assert any("Registered web-staging:2 with image web:v2" in t for t in thread)
    assert any("Rollout complete: 2/2" in t for t in thread)

    events = db_rows(
        sandbox,
        "SELECT action, from_state, to_state, details FROM events WHERE deployment_id = 1 ORDER BY id",
    )
    transitions = [(e["from_state"], e["to_state"]) for e in events if e["from_state"] != e["to_state"]]
    assert transitions == [(None, "requested"), ("requested", "running"), ("running", "succeeded")]
    started_steps = [json.loads(e["details"])["step"] for e in events if e["action"] == "step_started"]
    finished_steps = [json.loads(e["details"])["step"] for e in events if e["action"] == "step_finished"]
    assert started_steps == finished_steps == ROLLING_STEPS
    # each step is recorded as finished before the next one starts
    order = [
        (e["action"], json.loads(e["details"]).get("step"))
        for e in events
        if e["action"] in ("step_started", "step_finished")
    ]
    assert order == [(a, s) for s in ROLLING_STEPS for a in ("step_started", "step_finished")]
    row = db_rows(sandbox, "SELECT version, previous_version, state FROM deployments WHERE id = 1")[0]
    assert row == {"version": "v2", "previous_version": "v1", "state": "succeeded"}
    assert db_rows(sandbox, "SELECT * FROM locks") == []


async def test_unhealthy_version_is_rolled_back_to_the_previous_task_definition(sandbox, client):
    first = await deploy(client, "alice", "web v2 to staging")
    assert "succeeded" in (await wait_terminal(client, first))["text"]
    v2_arn, _ = service_image(sandbox, "staging", "web-blue")

    await client.inject("web", "v3", unhealthy=True)
    second = await deploy(client, "alice", "web v3 to staging")
    final = await wait_terminal(client, second, within=90)

    assert f"#{second} · web v3 → staging: rolled back" in final["text"]
    assert "ECS rollout failed" in final["text"]  # the message says why
    assert "unhealthy" in final["text"] or "circuit breaker" in final["text"]
    arn, image = service_image(sandbox, "staging", "web-blue")
    assert (arn, image) == (v2_arn, "web:v2")
    states = [
        r["to_state"]
        for r in db_rows(
            sandbox,
            "SELECT to_state FROM events WHERE deployment_id = ? AND from_state IS NOT to_state ORDER BY id",
            (second,),
        )
    ]
    assert states == ["requested", "running", "rolling_back", "rolled_back"]
    assert db_rows(sandbox, "SELECT * FROM locks") == []


async def test_two_deploys_at_the_same_moment_run_exactly_one(sandbox, client):
    a, b = await asyncio.gather(
        client.slash("alice", "/deploy", "web v2 to staging"),
        client.slash("bob", "/deploy", "web v5 to staging"),
    )
    texts = [a["body"]["text"], b["body"]["text"]]
    winners = [t for t in texts if t.startswith("Deployment #")]
    losers = [t for t in texts if t.startswith(":lock:")]
    assert len(winners) == 1 and len(losers) == 1, texts
    winner = db_rows(sandbox, "SELECT id, requested_by FROM deployments")
    assert len(winner) == 1
    assert f"locked by deployment #{winner[0]['id']}" in losers[0]
    assert f"started by <@{winner[0]['requested_by']}>" in losers[0]
    await wait_terminal(client, winner[0]["id"])


async def test_forged_or_stale_signature_gets_401_and_creates_nothing(sandbox, client):
    forged = await client.slash("alice", "/deploy", "web v2 to staging", forge=True)
    stale = await client.slash("alice", "/deploy", "web v2 to staging", timestamp=int(time.time()) - 600)
    assert forged["status"] == 401 and stale["status"] == 401
    status, _ = await signed_post(
        sandbox, slash_form(sandbox, "alice", "web v2 to staging", "t-1"), secret="not-the-secret"
    )
    assert status == 401
    assert db_rows(sandbox, "SELECT * FROM deployments") == []
    assert top_level(await client.messages("deploys")) == []


async def test_malformed_commands_get_a_usage_error_naming_the_problem(sandbox, client):
    cases = {
        "web v2 tos taging": 'did you mean "to staging"',
        "wbe v2 to staging": 'Did you mean "web"',
        "web v2 to prodution": 'Did you mean "production"',
        "web v2 to staging --strategy=yolo": "yolo",
        "x" * 1200: "too long",
    }
    for text, expected in cases.items():
        r = await client.slash("alice", "/deploy", text)
        assert r["status"] == 200
        body = r["body"]
        assert body["response_type"] == "ephemeral"
        assert expected.lower() in body["text"].lower(), (text, body["text"])
        assert "Traceback" not in body["text"]
    empty = await client.slash("alice", "/rollback", "")
    assert "Usage" in empty["body"]["text"] or "usage" in empty["body"]["text"]
    assert db_rows(sandbox, "SELECT * FROM deployments") == []


async def test_a_retried_request_creates_one_deployment(sandbox, client):
    form = slash_form(sandbox, "alice", "web v2 to staging", trigger_id="trigger-retried-1")
    first = await signed_post(sandbox, form)
    again = await signed_post(
        sandbox, form, headers={"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"}
    )
    assert first[0] == again[0] == 200
    assert "#1" in first[1] and "#1" in again[1]
    assert len(db_rows(sandbox, "SELECT * FROM deployments")) == 1
    await wait_terminal(client, 1)


async def test_dry_run_lists_the_plan_and_touches_nothing(sandbox, client):
    r = await client.slash("alice", "/deploy", "web v2 to staging --dry-run")
    text = r["body"]["text"]
    assert "Dry run" in text and "rolling" in text and "Bake for 30s" in text
    assert "Wait for ECS to roll out" in text
    assert db_rows(sandbox, "SELECT * FROM deployments") == []
    _, image = service_image(sandbox, "staging", "web-blue")
    assert image == "web:v1"


async def test_status_history_and_manual_locks(sandbox, client):
    lock = await client.slash("bob", "/deploy", "lock api production database migration in progress")
    assert "Locked api in production" in lock["body"]["text"]
    refused = await client.slash("alice", "/deploy", "api v2 to production")
    assert "locked by <@U0BOB>: database migration in progress" in refused["body"]["text"]
    assert "/deploy unlock api production" in refused["body"]["text"]
    status = await client.slash("alice", "/deploy", "status")
    assert "api in production locked by <@U0BOB>" in status["body"]["text"]
    unlock = await client.slash("bob", "/deploy", "unlock api production")
    assert "Unlocked" in unlock["body"]["text"]
    await rehearsed(client, sandbox, "api", "v2")  # production's evidence that its migration was tested
    d = await deploy(client, "alice", "api v2 to production")
    await through_gate(client, sandbox, d)
    await wait_terminal(client, d, within=90)
    history = await client.slash("alice", "/deploy", "history api in production")
    assert f"#{d} api v2 → production: *succeeded*" in history["body"]["text"]


async def test_pause_resume_and_abort_buttons_and_a_stale_click(sandbox, client):
    d = await deploy(client, "alice", "web v2 to production --strategy rolling")
    await through_gate(client, sandbox, d)

    async def message():
        tops = [m for m in top_level(await client.messages("deploys")) if f"#{d} " in m["text"]]
        return tops[0] if tops and ": running" in tops[0]["text"] else None

    m = await wait_for(message, 30, what="running message")
    await client.click("dave", "deploys", m["ts"], label="Pause")  # no role in production: refused

    async def told_dave():
        return [
            x
            for x in await client.messages("deploys")
            if x.get("ephemeral_for") == "U0DAVE"
            and "You need the engineers or release-managers role to deploy in production" in x["text"]
        ]

    assert await wait_for(told_dave, 10, what="dave's refusal")
    assert await _state(sandbox, d, "running")
    paused = await client.click("bob", "deploys", m["ts"], label="Pause")
    assert paused["status"] == 200
    state = await wait_for(lambda: _state(sandbox, d, "paused"), 10, what="paused")
    assert state
    # the paused message offers Resume and Abort, not Pause
    m = await wait_for(lambda: _with_buttons(client, d, {"Resume", "Abort"}), 10, what="resume button")
    # a click from a stale client on Pause again: nothing changes, the clicker is told the state
    payload = {
        "type": "block_actions",
        "user": {"id": "U0CAROL", "username": "carol", "team_id": "T0SANDBOX"},
        "api_app_id": "A0DEPLOYBOT",
        "token": "x",
        "team": {"id": "T0SANDBOX", "domain": "d"},
        "container": {"type": "message", "message_ts": m["ts"], "channel_id": "C0DEPLOYS"},
        "channel": {"id": "C0DEPLOYS", "name": "deploys"},
        "trigger_id": "stale-1",
        "response_url": sandbox.slack_url + "/_sandbox/response/none",
        "actions": [
            {
                "action_id": "deployment:pause",
                "block_id": f"deployment-{d}",
                "value": str(d),
                "type": "button",
                "action_ts": "1",
            }
        ],
    }
    status, _ = await signed_post(sandbox, {"payload": payload})
    assert status == 200
    assert await _state(sandbox, d, "paused")
    events = db_rows(
        sandbox, "SELECT action, actor FROM events WHERE deployment_id = ? AND action = 'pause'", (d,)
    )
    assert events == [{"action": "pause", "actor": "U0BOB"}]

    await client.click("bob", "deploys", m["ts"], label="Abort")
    final = await wait_terminal(client, d, within=90)
    assert "rolled back" in final["text"] and "aborted by <@U0BOB>" in final["text"]
    _, image = service_image(sandbox, "production", "web-blue")
    assert image == "web:v1"


async def _state(sandbox, d: int, state: str) -> bool:
    return db_rows(sandbox, "SELECT state FROM deployments WHERE id = ?", (d,))[0]["state"] == state


async def _with_buttons(client, d: int, labels: set[str]):
    for m in top_level(await client.messages("deploys")):
        if f"#{d} " in m["text"]:
            found = {
                e["text"]["text"]
                for b in m.get("blocks") or []
                if b["type"] == "actions"
                for e in b["elements"]
            }
            return m if found == labels else None
    return None


async def test_every_message_was_valid_block_kit_and_no_secret_leaked(sandbox, client):
    d = await deploy(client, "alice", "web v2 to staging")
    await wait_terminal(client, d)
    await client.slash("alice", "/deploy", "help")
    await client.slash("alice", "/deploy", "nonsense words here")
    calls = await client.calls()
    assert calls["rejected"] == 0, [c for c in calls["calls"] if not c["ok"]]
    everything = (
        json.dumps(await client.messages("deploys")) + sandbox.workdir.joinpath("bot.log").read_text()
    )
    for secret in (sandbox.bot_token, sandbox.signing_secret):
        assert secret not in everything
