"""Issue 11's game day, against the real bot process: AWS-shaped faults injected into the bot's AWS calls
by the sandbox (POST /_sandbox/faults, parsed by the real botocore), and at the end of every deployment
the record, the message and AWS agree — traffic whole on one slot, that slot running what the message
says, nothing left rolling back.

The config is the test's own: a canary web and a blue-green api in production and a rolling web in
staging (the demo world's resources), all without a gate, bakes of a minute of sandbox time."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

from bot.sandbox.client import SandboxClient, wait_for
from bot.sandbox.run import Sandbox
from tests.conftest import db_rows, message_of, top_level

SPEED = 60  # sandbox seconds per wall second

CONFIG = """
[bot]
default_environment = "production"
deploy_channel = "deploys"

[alerts]
critical = ["incidents"]
warning = ["deploys"]
oncall = false

[aws]
max_attempts = 3

[environments.production]
cluster = "production"
load_balancer = "deploybot-production"
strategy = "canary"
bake_seconds = 30
poll_seconds = 5
canary_steps = [10, 50, 100]
step_bake_seconds = 60
keep_warm_seconds = 0

[environments.production.guards]   # the test's own production: no gate, no guards
refuse_all_at_once = false
require_rollback_target = false
require_health_and_monitoring = false

[environments.production.analysis]
interval_seconds = 30
window_seconds = 60
min_requests = 50
max_error_rate = 0.05

[environments.staging]
cluster = "staging"
load_balancer = "deploybot-staging"
strategy = "rolling"
bake_seconds = 30
poll_seconds = 5

[services.web]
[services.api]

[services.api.environments.production]
strategy = "blue-green"
"""

TERMINAL = ("succeeded", "rolled_back", "failed", "cancelled")


def config(tmp_path) -> str:
    path = tmp_path / "faults.toml"
    path.write_text(CONFIG)
    return str(path)


async def faults(sb: Sandbox, method: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as s,
        s.request(method, sb.slack_url + "/_sandbox/faults", json=body) as r,
    ):
        answer = await r.json()
        assert r.status == 200, answer
        return answer


async def deploy(client: SandboxClient, text: str, user: str = "alice") -> int:
    r = await client.slash(user, "/deploy", text)
    assert r["status"] == 200 and r["body"]["text"].startswith("Deployment #"), r
    return int(r["body"]["text"].split("#", 1)[1].split()[0])


def row(sb: Sandbox, deployment_id: int) -> dict[str, Any]:
    (found,) = db_rows(sb, "SELECT * FROM deployments WHERE id = ?", (deployment_id,))
    return found


async def ended(sb: Sandbox, deployment_id: int, within: float = 120.0) -> dict[str, Any]:
    async def probe():
        r = row(sb, deployment_id)
        return r if r["state"] in TERMINAL else None

    return await wait_for(probe, within, what=f"deployment #{deployment_id} to end")


async def its_message(client: SandboxClient, deployment_id: int, state_word: str) -> dict:
    """Deployment #id's top-level message once it shows `state_word` (the message follows the record)."""

    async def probe():
        for m in top_level(await client.messages("deploys")):
            if f"#{deployment_id} " in m["text"] and f": {state_word}" in m["text"]:
                return m
        return None

    return await wait_for(probe, 30, what=f"#{deployment_id}'s message to say {state_word}")


async def assert_true_and_whole(sb: Sandbox, client: SandboxClient, deployment_id: int) -> str:
    """The deployment ended, AWS shows all traffic on one slot running the version the record and the
    message claim; returns the state."""
    d = await ended(sb, deployment_id)
    state = d["state"]
    untouched = state == "failed" and "(nothing was changed)" in (d["outcome"] or "")
    assert state in ("succeeded", "rolled_back") or untouched, (deployment_id, state, d["outcome"])
    world = (await client.aws())[d["env"]][d["service"]]
    live = [slot for slot, w in world["weights"].items() if w > 0]
    assert len(live) == 1, (deployment_id, world["weights"])  # whole, on one slot
    running = world["slots"][live[0]]["image"].rsplit(":", 1)[-1]
    if untouched:  # it failed before it changed anything, and says so: the old version still serves
        assert running != d["version"], (deployment_id, running, d["outcome"])
        await its_message(client, deployment_id, "failed")
        return state
    context = json.loads(d["context"] or "{}")
    claimed = d["version"] if state == "succeeded" else context.get("previous_version")
    assert running == claimed, (deployment_id, state, running, claimed, d["outcome"])
    message = await its_message(client, deployment_id, state.replace("_", " "))
    said = f"{d['version']} is live in {d['env']}" if state == "succeeded" else f"back on {claimed}"
    assert said in message["text"], (deployment_id, message["text"])  # the message names what runs
    return state


async def canary_at(client: SandboxClient, weight: int) -> None:
    """Wait until the production web canary (the green slot) has `weight`% of the traffic."""

    async def there():
        return (await client.aws())["production"]["web"]["weights"]["green"] == weight

    await wait_for(there, 60, what=f"the canary to take {weight}%")


async def rollback_tried(sb: Sandbox, deployment_id: int) -> bool:
    """A rollback step of the deployment has failed at least once (it is on the record)."""
    rows = db_rows(
        sb,
        "SELECT 1 FROM events WHERE deployment_id = ? AND action = 'rollback_step_failed'",
        (deployment_id,),
    )
    return bool(rows)


async def test_elbv2_failing_while_a_bad_canary_sits_at_50_ends_whole_with_a_critical_alert(
    tmp_path, aws_env
):
    async with (
        Sandbox(config=config(tmp_path), speed=SPEED, workdir=tmp_path) as sb,
        SandboxClient(sb.slack_url) as client,
    ):
        d = await deploy(client, "web v2 to production")

        await canary_at(client, 50)
        await client.inject("web", "v2", error_rate=0.3)  # it goes bad at 50% ...
        # ... and ELBv2 fails for 6 s of wall time, every call, as the rollback starts
        await faults(sb, "POST", {"service": "elbv2", "rate": 1.0, "error": "503", "seconds": 6 * SPEED})

        await wait_for(lambda: rollback_tried(sb, d), 30, what="a rollback try to fail on ELBv2")
        assert row(sb, d)["state"] == "rolling_back"  # it does not give up, or claim anything

        assert await assert_true_and_whole(sb, client, d) == "rolled_back"
        weights = (await client.aws())["production"]["web"]["weights"]
        assert weights == {"blue": 100, "green": 0}

        async def critical():
            found = [m for m in top_level(await client.messages("incidents")) if f"#{d} " in m["text"]]
            return found or None

        (alert,) = await wait_for(critical, 30, what="the critical alert")
        assert "CRITICAL" in alert["text"]
        everything = json.dumps(await client.messages("incidents")) + json.dumps(
            await client.messages("deploys")
        )
        assert "rollback failing" in everything  # what fails was said, in the alert's thread or its own
        assert "503" in everything or "ServiceUnavailable" in everything


async def test_twenty_percent_faults_on_every_aws_call_ten_deploys_end_whole_and_true(tmp_path, aws_env):
    async with (
        Sandbox(config=config(tmp_path), speed=SPEED, workdir=tmp_path) as sb,
        SandboxClient(sb.slack_url) as client,
    ):
        await faults(sb, "POST", {"service": "*", "rate": 0.2, "error": "500", "seed": 11})
        await client.inject("web", "v4", error_rate=0.3)  # one canary goes bad on purpose

        async def stream(texts: list[str]) -> list[str]:
            states = []
            for text in texts:
                d = await deploy(client, text)
                states.append(await assert_true_and_whole(sb, client, d))
            return states

        results = await asyncio.gather(
            stream([f"web v{n} to production" for n in (2, 3, 4, 5)]),
            stream([f"api v{n} to production" for n in (2, 3, 4)]),
            stream([f"web v{n} to staging" for n in (2, 3, 4)]),
        )
        states = [s for r in results for s in r]
        assert len(states) == 10 and "rolled_back" in states and "succeeded" in states
        shown = await faults(sb, "GET")
        failed = sum(rule["failed"] for rule in shown["faults"])
        passed = sum(rule["passed"] for rule in shown["faults"])
        print(f"\n20% faults: {failed} AWS attempts failed, {passed} passed; states {states}")
        assert failed > 0  # the faults really hit the bot
        assert not db_rows(sb, "SELECT id FROM deployments WHERE state NOT IN ('succeeded', 'rolled_back')")


async def test_sixty_percent_faults_for_30_s_then_none_leave_nothing_split_false_or_stuck(tmp_path, aws_env):
    async with (
        Sandbox(config=config(tmp_path), speed=SPEED, workdir=tmp_path) as sb,
        SandboxClient(sb.slack_url) as client,
    ):
        await faults(
            sb, "POST", {"service": "*", "rate": 0.6, "error": "throttle", "seconds": 30 * SPEED, "seed": 5}
        )

        async def stream(texts: list[str]) -> list[str]:
            return [await assert_true_and_whole(sb, client, await deploy(client, t)) for t in texts]

        results = await asyncio.gather(
            stream(["web v2 to production", "web v3 to production"]),
            stream(["api v2 to production", "api v3 to production"]),
            stream(["web v2 to staging", "web v3 to staging"]),
        )
        assert len([s for r in results for s in r]) == 6
        print(f"\n60% faults for 30 s: states {[s for r in results for s in r]}")
        assert not db_rows(sb, "SELECT * FROM locks")  # nothing holds a lock: nothing stuck


async def test_a_stuck_rollback_offers_retry_now_and_all_traffic_to_stable_and_tells_the_truth(
    tmp_path, aws_env
):
    async with (
        Sandbox(config=config(tmp_path), speed=SPEED, workdir=tmp_path) as sb,
        SandboxClient(sb.slack_url) as client,
    ):
        d = await deploy(client, "web v2 to production")

        await canary_at(client, 10)
        # every weight change fails until the faults are cleared: the rollback sticks at its traffic move
        await faults(
            sb, "POST", {"service": "elbv2", "operations": ["ModifyRule"], "rate": 1.0, "error": "500"}
        )
        await client.inject("web", "v2", error_rate=0.3)  # then the canary goes bad: roll it back

        await wait_for(lambda: rollback_tried(sb, d), 60, what="a rollback try to fail on ModifyRule")
        # its message offers help; a person's move while ELBv2 is down is refused with what AWS said
        m = await message_of(client, d, "All traffic to stable", "Retry now")
        r = await client.click("bob", "deploys", m["ts"], label="All traffic to stable")
        assert r["status"] == 200

        async def told():
            said = [
                x for x in await client.messages("deploys") if x.get("ephemeral_for") == sb.slack.users["bob"]
            ]
            return said or None

        (answer,) = await wait_for(told, 30, what="bob to be told")
        assert (
            "AWS did not move the traffic" in answer["text"]
            and "ModifyRule" in answer["text"]
            and "nothing changed" in answer["text"]
        )
        assert row(sb, d)["state"] == "rolling_back"
        assert (await client.aws())["production"]["web"]["weights"]["green"] == 10  # nothing claimed
        await faults(sb, "DELETE")
        r = await client.click("carol", "deploys", m["ts"], label="Retry now")
        assert r["status"] == 200

        async def retried():
            return db_rows(
                sb, "SELECT actor FROM events WHERE deployment_id = ? AND action = 'retry_rollback'", (d,)
            )

        assert (await wait_for(retried, 30, what="carol's retry on the record"))[0][
            "actor"
        ] == sb.slack.users["carol"]
        assert await assert_true_and_whole(sb, client, d) == "rolled_back"
        assert (await client.aws())["production"]["web"]["weights"] == {"blue": 100, "green": 0}
