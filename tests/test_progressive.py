"""Issue 3's acceptance: canary and blue-green over the ALB's weighted rule, analysis with automatic
rollback, inconclusive pauses, promote, /rollback, and the lock under 20 concurrent requests.
Driven through the control API against the real bot process and moto."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from bot.sandbox.client import SandboxClient, wait_for
from bot.sandbox.run import Sandbox
from tests.conftest import (
    CONFIG,
    db_rows,
    desired_count,
    listener_weights,
    recorded_actions,
    recorder,
    rehearsed,
    service_image,
    through_gate,
    top_level,
    wait_state,
    wait_terminal,
)


async def deploy(client, text: str, user: str = "alice", command: str = "/deploy", sb=None) -> int:
    """Request it; a production deployment is then walked through its checklist and approval by people."""
    if sb is not None and "production" in text and command == "/deploy":
        await rehearsed(client, sb, text.split()[0], text.split()[1], user)
    r = await client.slash(user, command, text)
    assert r["status"] == 200 and "requested" in r["body"]["text"], r
    deployment_id = int(r["body"]["text"].split("#", 1)[1].split()[0])
    if sb is not None and "production" in text:
        await through_gate(client, sb, deployment_id, approver="carol" if user == "bob" else "bob")
    return deployment_id


def thread_of(messages: list[dict], deployment_id: int) -> list[str]:
    """The lines of a deployment's thread (lines queued together arrive joined in one message)."""
    top = next(m for m in top_level(messages) if f"#{deployment_id} " in m["text"])
    return [line for m in messages if m.get("thread_ts") == top["ts"] for line in m["text"].split("\n")]


def measurements(sb, deployment_id: int) -> list[dict]:
    rows = db_rows(
        sb,
        "SELECT details FROM events WHERE deployment_id = ? AND action = 'measurement' ORDER BY id",
        (deployment_id,),
    )
    return [json.loads(r["details"]) for r in rows]


@pytest.fixture
async def thresholds(tmp_path, aws_env):
    """The shipped config with production's canaries judged by thresholds alone (Argo Rollouts'
    semantics: a measurement at every step, 100% included, each against the limits), as issue 3 built
    them; the shipped sequential judge has its own run of these scenarios (test_sequential_scenarios)."""
    text = CONFIG.read_text()
    shipped = '\njudge = "sequential"'
    assert text.count(shipped) == 1
    path = tmp_path / "thresholds.toml"
    path.write_text(text.replace(shipped, '\njudge = "thresholds"'))
    async with Sandbox(config=str(path), speed=60, workdir=tmp_path) as sb:
        yield sb


@pytest.fixture
async def thresholds_client(thresholds):
    async with SandboxClient(thresholds.slack_url) as c:
        yield c


async def test_healthy_canary_walks_5_25_50_100_reading_metrics_at_every_step(thresholds, thresholds_client):
    sandbox, client = thresholds, thresholds_client
    d = await deploy(client, "web v2 to production", sb=sandbox)
    final = await wait_terminal(client, d, within=90)
    assert "succeeded" in final["text"]

    thread = thread_of(await client.messages("deploys"), d)
    shifts = [t for t in thread if t.startswith("Traffic: ")]
    assert shifts == [f"Traffic: green {w}% / blue {100 - w}%" for w in (5, 25, 50, 100)]
    labels = [m["label"] for m in measurements(sandbox, d)]
    assert {"canary 5%", "canary 25%", "canary 50%", "canary 100%"} <= set(labels)
    assert all(m["verdict"] == "pass" for m in measurements(sandbox, d))
    assert listener_weights(sandbox, "web", "production") == {"blue": 0, "green": 100}
    assert desired_count(sandbox, "production", "web-blue") == 0
    assert service_image(sandbox, "production", "web-green")[1] == "web:v2"
    assert db_rows(sandbox, "SELECT * FROM locks") == []


async def test_canary_with_20_percent_errors_rolls_back_before_50_and_raises_a_critical_alert(
    thresholds, thresholds_client
):
    sandbox, client = thresholds, thresholds_client
    await client.inject("web", "v2", error_rate=0.2)
    d = await deploy(client, "web v2 to production", sb=sandbox)
    final = await wait_terminal(client, d, within=90)
    assert "rolled back" in final["text"] and "error rate" in final["text"]

    thread = thread_of(await client.messages("deploys"), d)
    reached = [int(t.split("green ")[1].split("%")[0]) for t in thread if t.startswith("Traffic: ")]
    assert max(reached) < 50 and reached[-1] == 0, reached
    assert listener_weights(sandbox, "web", "production") == {"blue": 100, "green": 0}
    assert desired_count(sandbox, "production", "web-green") == 0
    assert desired_count(sandbox, "production", "web-blue") == 2
    failed = [m for m in measurements(sandbox, d) if m["verdict"] == "fail"]
    assert failed and failed[0]["canary"]["error_rate"] > 0.15

    alerts = [m for m in await client.messages("incidents") if f"#{d} " in m["text"]]
    assert len(alerts) == 1
    text = alerts[0]["text"]
    assert "CRITICAL" in text
    assert (
        "error rate" in text and "> 5.0% threshold" in text and "(stable: " in text
    )  # metric, value, baseline


async def test_no_data_pauses_the_canary_as_inconclusive_instead_of_passing(thresholds, thresholds_client):
    sandbox, client = thresholds, thresholds_client
    await client.inject("web", requests_per_minute=0)
    d = await deploy(client, "web v2 to production", sb=sandbox)
    await wait_state(sandbox, d, "paused", within=60)
    verdicts = [m["verdict"] for m in measurements(sandbox, d)]
    assert verdicts and set(verdicts) == {"inconclusive"}

    async def paused_message():  # the message follows the state a moment later
        top = next(m for m in top_level(await client.messages("deploys")) if f"#{d} " in m["text"])
        buttons = {e["text"]["text"] for b in top["blocks"] if b["type"] == "actions" for e in b["elements"]}
        return top if buttons == {"Promote", "Resume", "Abort"} else None

    top = await wait_for(paused_message, 15, what="the paused message with Promote / Resume / Abort")

    async def asked():  # the thread follows at most one new message a second per channel
        return any(
            "inconclusive" in t and "not enough traffic" in t
            for t in thread_of(await client.messages("deploys"), d)
        )

    assert await wait_for(asked, 30, what="the inconclusive question in the thread")
    assert listener_weights(sandbox, "web", "production") == {"blue": 95, "green": 5}  # held, not advanced
    # a warning, not a pass: the deployment stays paused until a person decides
    assert db_rows(sandbox, "SELECT state FROM deployments WHERE id = ?", (d,))[0]["state"] == "paused"
    await client.click("bob", "deploys", top["ts"], label="Abort")
    final = await wait_terminal(client, d, within=60)
    assert "rolled back" in final["text"]
    assert listener_weights(sandbox, "web", "production") == {"blue": 100, "green": 0}


async def test_blue_green_switches_traffic_in_exactly_one_rule_modification(sandbox, client):
    recorder(sandbox, "reset-recording")
    recorder(sandbox, "start-recording")
    d = await deploy(client, "api v2 to production", sb=sandbox)  # api's production strategy is blue-green
    final = await wait_terminal(client, d, within=90)
    assert "succeeded" in final["text"]
    actions = recorded_actions(sandbox)
    assert actions.count("ModifyRule") + actions.count("ModifyListener") == 1, actions
    assert listener_weights(sandbox, "api", "production") == {"blue": 0, "green": 100}
    assert desired_count(sandbox, "production", "api-blue") == 0  # the old slot, after keep-warm


async def test_rollback_after_a_completed_deploy_restores_the_previous_version(sandbox, client):
    d = await deploy(client, "api v2 to production", sb=sandbox)
    assert "succeeded" in (await wait_terminal(client, d, within=90))["text"]
    assert listener_weights(sandbox, "api", "production") == {"blue": 0, "green": 100}

    r = await client.slash("bob", "/rollback", "api in production")
    assert f"Rollback #{d + 1} · api v1 → production requested" in r["body"]["text"]
    final = await wait_terminal(client, d + 1, within=90)
    assert "succeeded" in final["text"]
    assert listener_weights(sandbox, "api", "production") == {"blue": 100, "green": 0}
    assert service_image(sandbox, "production", "api-blue")[1] == "api:v1"
    tops = [m for m in top_level(await client.messages("deploys"))]
    assert (
        len([m for m in tops if f"#{d} " in m["text"]])
        == len([m for m in tops if f"#{d + 1} " in m["text"]])
        == 1
    )
    kinds = db_rows(sandbox, "SELECT id, kind, version FROM deployments WHERE env = 'production' ORDER BY id")
    assert kinds == [
        {"id": d, "kind": "deploy", "version": "v2"},
        {"id": d + 1, "kind": "rollback", "version": "v1"},
    ]


async def test_twenty_concurrent_deploys_make_exactly_one_deployment(sandbox, client):
    users = ["alice", "bob", "carol"]
    results = await asyncio.gather(
        *[
            client.slash(users[i % 3], "/deploy", f"web v{i + 2} to production --strategy rolling")
            for i in range(20)
        ]
    )
    texts = [r["body"]["text"] for r in results]
    winners = [t for t in texts if t.startswith("Deployment #")]
    assert len(winners) == 1, texts
    rows = db_rows(sandbox, "SELECT id, requested_by FROM deployments")
    assert len(rows) == 1
    holder = f"locked by deployment #{rows[0]['id']}"
    requester = next(u for u in users if f"U0{u.upper()}" == rows[0]["requested_by"])
    for user, text in zip([users[i % 3] for i in range(20)], texts, strict=True):
        if text in winners:
            continue
        if user == requester and text.startswith(
            ":pencil2:"
        ):  # their own pending request, changed, and told so
            assert text.startswith(f":pencil2: Your request #{rows[0]['id']} now deploys"), text
        else:
            assert holder in text and f"<@{rows[0]['requested_by']}>" in text, text
    await wait_state(sandbox, rows[0]["id"], "awaiting_approval")  # the one request goes on to its checklist


async def test_dry_run_shows_weights_bakes_analysis_and_eta(sandbox, client):
    r = await client.slash("alice", "/deploy", "web v2 to production --dry-run")
    text = r["body"]["text"]
    for expected in (
        "canary",
        "Shift traffic: 5% to the new version",
        "Analyse canary 25% for 60s",
        "Shift traffic: 100%",
        "keep it warm 2m",
        "At least 6m",
    ):
        assert expected in text, (expected, text)
    assert db_rows(sandbox, "SELECT * FROM deployments") == []
    assert listener_weights(sandbox, "web", "production") == {"blue": 100, "green": 0}


async def test_planned_pause_waits_for_promote_and_promote_full_skips_to_100(tmp_path, aws_env):
    config = tmp_path / "paused.toml"
    config.write_text(
        Path(CONFIG)
        .read_text()
        .replace("canary_steps = [5, 25, 50, 100]", 'canary_steps = [5, "pause", 25, 50, 100]')
    )
    async with (
        Sandbox(config=config, speed=60, workdir=tmp_path) as sb,
        SandboxClient(sb.slack_url) as client,
    ):
        d = await deploy(client, "web v2 to production", sb=sb)
        await wait_state(sb, d, "paused")
        assert listener_weights(sb, "web", "production") == {"blue": 95, "green": 5}
        early = await client.slash("dave", "/promote", "999")
        assert "no deployment #999" in early["body"]["text"]
        r = await client.slash("bob", "/promote", f"{d} --full")
        assert "straight to 100%" in r["body"]["text"]
        final = await wait_terminal(client, d, within=90)
        assert "succeeded" in final["text"]
        thread = thread_of(await client.messages("deploys"), d)
        assert [t for t in thread if t.startswith("Traffic: ")] == [
            "Traffic: green 5% / blue 95%",
            "Traffic: green 100% / blue 0%",
        ]
        assert listener_weights(sb, "web", "production") == {"blue": 0, "green": 100}
        promotes = db_rows(
            sb, "SELECT actor FROM events WHERE deployment_id = ? AND action = 'promote'", (d,)
        )
        assert promotes == [{"actor": "U0BOB"}]


async def test_a_failed_smoke_check_rolls_back_before_any_traffic_moves(tmp_path, aws_env):
    config = tmp_path / "smoke.toml"
    config.write_text(
        Path(CONFIG)
        .read_text()
        .replace('expect_body = "{version}"', 'expect_body = "{version}-ready"')
        .replace("timeout_seconds = 60", "timeout_seconds = 20")
    )
    async with (
        Sandbox(config=config, speed=60, workdir=tmp_path) as sb,
        SandboxClient(sb.slack_url) as client,
    ):
        d = await deploy(client, "api v2 to production", sb=sb)
        final = await wait_terminal(client, d, within=90)
        assert "rolled back" in final["text"]
        assert "smoke check failed" in final["text"] and "v2-ready" in final["text"]
        assert listener_weights(sb, "api", "production") == {"blue": 100, "green": 0}
        assert desired_count(sb, "production", "api-green") == 0
        recorded = db_rows(
            sb, "SELECT details FROM events WHERE deployment_id = ? AND action = 'step_started'", (d,)
        )
        assert "set_weights" not in [json.loads(r["details"])["step"] for r in recorded]


async def test_gradual_rollback_walks_the_weights_back_with_analysis(sandbox, client):
    d = await deploy(client, "api v2 to production", sb=sandbox)
    assert "succeeded" in (await wait_terminal(client, d, within=90))["text"]
    r = await client.slash("bob", "/rollback", "api in production --gradual")
    back = d + 1
    assert f"Rollback #{back} · api v1 → production requested (canary)" in r["body"]["text"]
    final = await wait_terminal(client, back, within=120)
    assert "succeeded" in final["text"]
    thread = thread_of(await client.messages("deploys"), back)
    assert [t for t in thread if t.startswith("Traffic: ")] == [
        f"Traffic: blue {w}% / green {100 - w}%" for w in (25, 50, 75, 100)
    ]
    assert {m["label"] for m in measurements(sandbox, back)} >= {"canary 25%", "canary 50%", "canary 75%"}
    assert listener_weights(sandbox, "api", "production") == {"blue": 100, "green": 0}
    assert service_image(sandbox, "production", "api-blue")[1] == "api:v1"
