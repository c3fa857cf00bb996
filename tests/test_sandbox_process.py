"""The sandbox as people and scripts use it: `deploybot sandbox --headless` from the shell, and the bot
process killed with SIGKILL mid-deployment and started again on the same database."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time

import aiohttp

from bot.sandbox.client import SandboxClient, wait_for
from tests.conftest import (
    CONFIG,
    db_rows,
    service_image,
    stops_answering,
    through_gate,
    top_level,
    wait_terminal,
)


async def test_headless_sandbox_prints_ready_line_serves_and_shuts_down_cleanly(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "sandbox",
        "--headless",
        "--speed",
        "60",
        "--config",
        str(CONFIG),
        "--db",
        str(tmp_path / "kept.db"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        cwd=tmp_path,
    )
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 90)
        info = json.loads(line)
        assert info["ready"] is True
        assert set(info) >= {"bot", "slack", "aws", "db", "signing_secret", "users", "channels"}
        assert info["users"]["alice"] and info["channels"]["deploys"]
        assert info["db"] == str(tmp_path / "kept.db")
        # what an OpenFeature OFREP provider takes: the bot's base URL and a key per environment
        assert info["ofrep"]["url"] == info["bot"]
        assert set(info["ofrep"]["api_keys"]) == {"staging", "production"}
        async with SandboxClient(info["slack"]) as client:
            r = await client.slash("alice", "/deploy", "web v2 to staging")
            assert r["status"] == 200 and "#1" in r["body"]["text"]
            await wait_terminal(client, 1)
        async with aiohttp.ClientSession() as s, s.get(info["bot"] + "/healthz") as health:
            assert (await health.json())["ok"] is True
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
        stderr = (await proc.stderr.read()).decode()
        assert "Traceback" not in stderr
        assert not os.path.exists(info["workdir"])  # its temporary folder (bot log) is gone, the --db kept
        assert (tmp_path / "kept.db").exists()

        # the bot child went down with it
        assert await wait_for(lambda: stops_answering(info["bot"] + "/healthz"), 10, what="the bot to stop")
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_a_sandbox_killed_with_sigkill_takes_its_bot_down_too(tmp_path):
    """SIGKILL leaves the sandbox no chance to stop its child: the kernel's parent-death signal does."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "sandbox", "--headless", "--config", str(CONFIG),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, env=env, cwd=tmp_path,
    )  # fmt: skip
    try:
        info = json.loads(await asyncio.wait_for(proc.stdout.readline(), 90))
        async with aiohttp.ClientSession() as s, s.get(info["bot"] + "/healthz") as health:
            assert health.status == 200
        proc.kill()
        await proc.wait()

        assert await wait_for(
            lambda: stops_answering(info["bot"] + "/healthz"), 20, what="the orphaned bot to stop"
        )
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_bot_killed_mid_deploy_resumes_after_restart(sandbox, client):
    r = await client.slash("alice", "/deploy", "web v2 to production --strategy rolling")
    deployment_id = int(r["body"]["text"].split("#")[1].split()[0])
    await through_gate(client, sandbox, deployment_id)

    def step_index():
        return db_rows(sandbox, "SELECT step_index FROM deployments WHERE id = ?", (deployment_id,))[0][
            "step_index"
        ]

    async def mid_plan():
        return step_index() >= 3  # the ECS service has been updated; rollout under way

    await wait_for(mid_plan, 30, what="the rollout to start")
    killed = await client.bot("kill")
    assert killed["running"] is False
    assert db_rows(sandbox, "SELECT state FROM deployments")[0]["state"] == "running"
    started = time.monotonic()
    restarted = await client.bot("start")
    assert restarted["running"] is True and time.monotonic() - started < 60

    final = await wait_terminal(client, deployment_id, within=90)
    assert "succeeded" in final["text"]
    assert (
        len([m for m in top_level(await client.messages("deploys")) if f"#{deployment_id} " in m["text"]])
        == 1
    )
    _, image = service_image(sandbox, "production", "web-blue")
    assert image == "web:v2"
    assert db_rows(sandbox, "SELECT * FROM locks") == []
    actions = [
        r["action"]
        for r in db_rows(
            sandbox, "SELECT action FROM events WHERE deployment_id = ? ORDER BY id", (deployment_id,)
        )
    ]
    # resumed, then succeeded once; what follows a success (production's verification) comes after it
    assert "resume_after_restart" in actions and actions.count("succeed") == 1
    assert actions.index("succeed") > actions.index("resume_after_restart")
    assert all(a.startswith(("verif", "feedback")) for a in actions[actions.index("succeed") + 1 :]), actions
