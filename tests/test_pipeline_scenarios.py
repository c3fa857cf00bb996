"""The pipeline end to end in the sandbox, as people use it: `/deploy web v4 --pipeline` as alice deploys
to staging, runs web's integration tests there (a one-off task of the deployed image, run by the
sandbox's task emulator), and requests v4 in production, which waits for its checklist and for bob's
approval (four eyes: alice asked), then runs; the pipeline's one message shows the stages and links each
deployment. With the tests injected to fail, production is never requested and the message says why.
Users: alice and carol engineers, bob a release manager."""

from __future__ import annotations

import json
import time

from bot.sandbox.client import SandboxClient, wait_for
from bot.sandbox.run import Sandbox
from tests.conftest import db_rows, through_gate, top_level, wait_state, wait_terminal


def pipeline(sb: Sandbox, pipeline_id: int) -> dict:
    (row,) = db_rows(sb, "SELECT * FROM pipelines WHERE id = ?", (pipeline_id,))
    return {**row, "stages": json.loads(row["stages"])}


async def pipeline_message(client: SandboxClient, pipeline_id: int, *marks: str, within: float = 60) -> dict:
    """The pipeline's top-level message once it shows every one of `marks` (its text and blocks)."""

    async def probe():
        for m in top_level(await client.messages("deploys")):
            shown = m["text"] + json.dumps(m.get("blocks"), ensure_ascii=False)
            if m["text"].startswith(f"Pipeline #{pipeline_id} ") and all(mark in shown for mark in marks):
                return m
        return None

    return await wait_for(probe, within, what=f"pipeline #{pipeline_id}'s message showing {marks}")


async def start(client: SandboxClient, text: str) -> int:
    r = await client.slash("alice", "/deploy", text)
    said = r["body"]["text"]
    assert r["status"] == 200 and said.startswith("Pipeline #"), r
    return int(said.split("#", 1)[1].split()[0])


def task_of(sb: Sandbox, pipeline_id: int) -> list:
    return [t for t in sb.world.tasks.tasks.values() if t.started_by.startswith(f"deploybot-p{pipeline_id}-")]


async def test_staging_tests_and_production_after_bobs_approval(sandbox, client):
    began = time.monotonic()
    p = await start(client, 'web v4 --pipeline --reason "new checkout"')
    staging = pipeline(sandbox, p)["stages"][0]["deployment_id"]
    assert "succeeded" in (await wait_terminal(client, staging, within=60))["text"]

    async def requested():
        return pipeline(sandbox, p)["stages"][2]["deployment_id"]

    prod = await wait_for(requested, 60, what="production's deployment to be requested")
    await pipeline_message(  # each deployment linked to its own message
        client, p, "✓ staging", "✓ integration tests", "⏳ production", "waiting for 1 approval",
        f"|#{staging}>) · ✓ integration tests · ⏳ production (<", f"|#{prod}>)",
    )  # fmt: skip
    (task,) = task_of(sandbox, p)  # one task, of the image staging runs: v4, and it passed
    assert (task.tag, task.exit_code, task.started_by) == ("v4", 0, f"deploybot-p{p}-tests-1")
    assert task.command == ["python", "-m", "app.integration"]
    assert task.environment["DEPLOYBOT_ENV_URL"] == "https://web.staging.example.com"
    assert task.environment["DEPLOYBOT_VERSION"] == "v4"
    (row,) = db_rows(sandbox, "SELECT * FROM deployments WHERE id = ?", (prod,))
    assert (row["env"], row["version"], row["requested_by"]) == (
        "production",
        "v4",
        sandbox.slack.users["alice"],
    )
    assert json.loads(row["context"])["pipeline"]["id"] == p

    mine = await client.slash("alice", "/deploy", f"approve {prod}")
    assert "someone else has to approve it (four eyes)" in mine["body"]["text"], mine
    status = await client.slash("carol", "/deploy", "status")
    assert f"Pipeline #{p} · web v4 · staging → production" in status["body"]["text"], status

    await through_gate(client, sandbox, prod, approver="bob", ticker="alice")
    assert "succeeded" in (await wait_terminal(client, prod, within=90))["text"]
    done = await pipeline_message(client, p, "✓ production", "*Done:* web v4 is live in production.")
    assert "succeeded" in done["text"]
    assert pipeline(sandbox, p)["state"] == "succeeded"
    actions = [r["action"] for r in db_rows(sandbox, "SELECT action FROM events WHERE json_extract(details, '$.pipeline') = ? ORDER BY id", (p,))]  # fmt: skip
    assert actions[0] == "pipeline_requested" and actions[-1] == "pipeline_succeeded"
    print(f"\npipeline staging → tests → production: {time.monotonic() - began:.1f}s wall")


async def test_failing_integration_tests_stop_it_and_production_is_never_requested(sandbox, client):
    await client.inject("web", "v5", integration_tests="fail")
    p = await start(client, "web v5 --pipeline")
    staging = pipeline(sandbox, p)["stages"][0]["deployment_id"]
    assert "succeeded" in (await wait_terminal(client, staging, within=60))["text"]
    stopped = await pipeline_message(client, p, "✗ integration tests", "*Stopped:*")
    (task,) = task_of(sandbox, p)
    shown = json.dumps(stopped["blocks"], ensure_ascii=False)
    assert f"task {task.arn.rsplit('/', 1)[-1]} exited with code 1" in shown
    assert "test_checkout ... FAILED (injected)" in shown  # its last log line, read back from CloudWatch Logs
    assert "Nothing after it is requested." in shown and "○ production" in shown
    assert pipeline(sandbox, p)["state"] == "failed"
    assert db_rows(sandbox, "SELECT id FROM deployments WHERE env = 'production'") == []

    async def thread_says_why():
        replies = [m for m in await client.messages("deploys") if m.get("thread_ts") == stopped["ts"]]
        return any(
            "✗ integration tests: the integration tests in staging failed" in m["text"] for m in replies
        )

    await wait_for(thread_says_why, 30, what="the pipeline's thread to say why it stopped")


async def test_a_bot_killed_mid_pipeline_carries_it_on_with_nothing_twice(sandbox, client):
    p = await start(client, "web v4 --pipeline")

    async def requested():
        return pipeline(sandbox, p)["stages"][2]["deployment_id"]

    prod = await wait_for(requested, 60, what="production's deployment to be requested")
    await through_gate(client, sandbox, prod, approver="bob", ticker="alice")
    await wait_state(sandbox, prod, "running")
    assert (await client.bot("kill"))["running"] is False  # SIGKILL while production's canary runs
    assert (await client.bot("start"))["running"] is True
    assert "succeeded" in (await wait_terminal(client, prod, within=90))["text"]
    await pipeline_message(client, p, "*Done:* web v4 is live in production.")
    assert pipeline(sandbox, p)["state"] == "succeeded"
    assert len(task_of(sandbox, p)) == 1  # the tests ran once
    envs = [r["env"] for r in db_rows(sandbox, "SELECT env FROM deployments ORDER BY id")]
    assert envs == ["staging", "production"]  # one deployment per environment
    posted = [
        m for m in top_level(await client.messages("deploys")) if m["text"].startswith(f"Pipeline #{p} ")
    ]
    assert len(posted) == 1  # one message, updated in place across the restart
