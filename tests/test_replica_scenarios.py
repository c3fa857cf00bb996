"""Several replicas (issue 15): two `deploybot serve --replica` processes on ONE SQLite file (WAL), the
local Slack sending requests to each in turn. A canary whose runner is SIGKILLed is finished or rolled
back by the other within the lease time and a step; a runner SIGSTOPped past its lease is fenced when it
wakes (its next change refused, said in its log); 100 simultaneous /deploy make one deployment."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from typing import Any

import aiohttp

from bot.sandbox.client import SandboxClient, wait_for
from bot.sandbox.replicas import log_path
from bot.sandbox.run import Sandbox
from tests.conftest import db_rows, recorder, top_level
from tests.test_fault_scenarios import SPEED, assert_true_and_whole, config, deploy, row

LEASE = 15.0  # clock seconds (0.25 s of wall time at SPEED 60)


async def bot(sb: Sandbox, action: str, replica: int) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as s,
        s.post(sb.slack_url + "/_sandbox/bot", json={"action": action, "replica": replica}) as r,
    ):
        answer = await r.json()
        assert r.status == 200, answer
        return answer


def holder(sb: Sandbox, deployment_id: int) -> str | None:
    rows = db_rows(sb, "SELECT owner, expires FROM leases WHERE name = ?", (f"deployment:{deployment_id}",))
    return rows[0]["owner"] if rows and rows[0]["expires"] > sb.clock.now() else None


def modify_rules(sb: Sandbox) -> list[str]:
    """The weights of every ModifyRule moto recorded (one string per call)."""
    import base64
    from urllib.parse import parse_qs

    out = []
    for line in recorder(sb, "download-recording").splitlines():
        r = json.loads(line)
        body = r.get("body") or ""
        if r.get("body_encoded"):
            body = base64.b64decode(body).decode(errors="replace")
        form = parse_qs(body)
        if form.get("Action", [""])[0] != "ModifyRule":
            continue
        weights = sorted(v[0] for k, v in form.items() if k.endswith(".Weight"))
        rule = form.get("RuleArn", [""])[0]
        out.append(f"{rule} {','.join(weights)}")
    return out


async def test_100_simultaneous_deploys_over_two_replicas_make_one_deployment(tmp_path, aws_env):
    async with (
        Sandbox(config=config(tmp_path), speed=SPEED, workdir=tmp_path, replicas=2) as sb,
        SandboxClient(sb.slack_url) as client,
    ):
        assert len(sb.info()["bots"]) == 2
        users = ["alice", "bob", "carol"]
        answers = await asyncio.gather(
            *(
                client.slash(users[i % 3], "/deploy", f"api v{i + 2} to production")
                for i in range(100)
            )
        )
        texts = [a["body"]["text"] if isinstance(a["body"], dict) else a["body"] for a in answers]
        assert all(a["status"] == 200 for a in answers), [a for a in answers if a["status"] != 200][:3]
        created = db_rows(sb, "SELECT id, requested_by FROM deployments")
        print(Counter(t.split(" ", 3)[0:2].__str__() for t in texts))
        assert len(created) == 1, created
        print(texts[:3])
