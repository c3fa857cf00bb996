"""Issue 11's kill game: the bot process is killed with SIGKILL at 50 instants spread over canary,
blue-green, rolling and rollback deployments — right as a revision is registered, 0-150 ms after an
automatic rollback starts, mid-step and at random — and started again on the same database each time.

Afterwards nothing is stuck, every automatic rollback's critical alert was posted exactly once, every
deployment has exactly one top-level message, no task definition revision was registered twice for one
deployment, traffic is whole everywhere, and every deployment's audit walks its states without a gap."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter
from typing import Any

import boto3

from bot.sandbox.client import SandboxClient, wait_for
from bot.sandbox.run import Sandbox
from tests.conftest import db_rows, top_level
from tests.test_fault_scenarios import SPEED, TERMINAL, config, deploy, ended, row

KILLS = 50


def audit(sb: Sandbox, deployment_id: int) -> list[dict[str, Any]]:
    return db_rows(sb, "SELECT * FROM events WHERE deployment_id = ? ORDER BY id", (deployment_id,))


def started(sb: Sandbox, deployment_id: int, kinds: tuple[str, ...]) -> bool:
    return any(
        e["action"] == "step_started" and json.loads(e["details"] or "{}").get("step") in kinds
        for e in audit(sb, deployment_id)
    )


async def alert_shown(client: SandboxClient, deployment_id: int) -> bool:
    return any(f"#{deployment_id} " in m["text"] for m in top_level(await client.messages("incidents")))


class Killer:
    """Kills the bot at an instant, starts it again at once, and counts."""

    def __init__(self, sb: Sandbox, client: SandboxClient, rng: random.Random):
        self.sb, self.client, self.rng, self.kills = sb, client, rng, []
        self.restarted = time.monotonic()

    async def at(self, deployment_id: int, what: str, probe, delay_ms: tuple[int, int]) -> bool:
        """When `probe()` first holds (or the deployment ends first: no kill), wait a random delay
        within `delay_ms` — the instant chosen, not a synchronisation — and kill."""

        async def ready():
            return probe() or row(self.sb, deployment_id)["state"] in TERMINAL

        await wait_for(ready, 60, interval=0.005, what=f"#{deployment_id} to reach {what}")
        if row(self.sb, deployment_id)["state"] in TERMINAL:
            return False
        await asyncio.sleep(self.rng.uniform(*delay_ms) / 1000)
        assert (await self.client.bot("kill"))["running"] is False
        self.kills.append((deployment_id, what))
        assert (await self.client.bot("start"))["running"] is True
        self.restarted = time.monotonic()
        return True


async def test_sigkill_at_50_instants_loses_nothing_and_repeats_nothing(tmp_path, aws_env):
    rng = random.Random(20261202)
    async with (
        Sandbox(config=config(tmp_path), speed=SPEED, workdir=tmp_path) as sb,
        SandboxClient(sb.slack_url) as client,
    ):
        killer = Killer(sb, client, rng)
        alert_after: list[float] = []
        ecs = boto3.client("ecs", endpoint_url=sb.aws_url, region_name="us-east-1")
        families = ("web-production", "api-production", "web-staging")
        before = {f: len(ecs.list_task_definitions(familyPrefix=f)["taskDefinitionArns"]) for f in families}
        plans = [
            ("web v{n} to production", False),  # canary
            ("api v{n} to production", False),  # blue-green
            ("web v{n} to staging", False),  # rolling
            ("web v{n} to production", True),  # canary that goes bad: an automatic rollback
            ("api v{n} to production", True),  # blue-green that goes bad after the switch
        ]
        ids: list[int] = []
        n = 1
        while len(killer.kills) < KILLS:
            text, bad = plans[len(ids) % len(plans)]
            n += 1
            service = text.split()[0]
            if bad:
                await client.inject(service, f"v{n}", error_rate=0.3)
            d = await deploy(client, text.format(n=n))
            ids.append(d)
            await killer.at(
                d,
                "register_revision",
                lambda d=d: started(sb, d, ("register_revision", "use_revision")),
                (0, 30),
            )
            await killer.at(d, "step 3", lambda d=d: row(sb, d)["step_index"] >= 3, (0, 400))
            if bad:

                def rolling_back(d: int = d) -> bool:
                    return row(sb, d)["state"] == "rolling_back"

                if await killer.at(d, "rolling_back", rolling_back, (0, 150)):
                    # the critical alert is out within 30 s of the restart, however the kill fell
                    await wait_for(
                        lambda d=d: alert_shown(client, d), 30, what=f"#{d}'s alert after the restart"
                    )
                    alert_after.append(time.monotonic() - killer.restarted)
                await killer.at(d, "rolling_back again", rolling_back, (0, 150))
            await killer.at(d, "anywhere", lambda: True, (100, 1500))
            await ended(sb, d)

        # --- 0 stuck
        rows = {d: row(sb, d) for d in ids}
        assert all(r["state"] in ("succeeded", "rolled_back") for r in rows.values()), {
            d: (r["state"], r["outcome"]) for d, r in rows.items()
        }
        assert not db_rows(sb, "SELECT * FROM locks")

        # --- traffic whole everywhere, on what the last deployment of each claims
        world = await client.aws()
        for env in ("production", "staging"):
            for service in ("web", "api"):
                weights = world[env][service]["weights"]
                assert sorted(weights.values()) == [0, 100], (env, service, weights)

        # --- one top-level message per deployment; each automatic rollback alerted exactly once
        async def all_shown():
            top = top_level(await client.messages("deploys"))
            return all(any(f"#{d} " in m["text"] for m in top) for d in ids) and top

        top = await wait_for(all_shown, 30, what="every deployment's message")
        for d in ids:
            assert len([m for m in top if f"#{d} " in m["text"]]) == 1, d
        rolled = [d for d in ids if any(e["action"] == "rollback" for e in audit(sb, d))]
        assert rolled, "no automatic rollback happened: the kill game did not cover them"

        async def alerted():
            incidents = top_level(await client.messages("incidents"))
            return all(any(f"#{d} " in m["text"] for m in incidents) for d in rolled) and incidents

        incidents = await wait_for(alerted, 30, what="every automatic rollback's alert")
        for d in rolled:
            assert len([m for m in incidents if f"#{d} " in m["text"]]) == 1, d
            raised = db_rows(sb, "SELECT id FROM alerts WHERE deployment_id = ? AND level = 'critical'", (d,))
            assert len(raised) == 1, d

        # --- no deployment registered two revisions (each new one is tagged with its deployment)
        made: dict[str, list[str]] = {}
        for family in families:
            for arn in ecs.list_task_definitions(familyPrefix=family)["taskDefinitionArns"]:
                tags = ecs.describe_task_definition(taskDefinition=arn, include=["TAGS"]).get("tags", [])
                for tag in tags:
                    if tag["key"] == "deploybot:deployment":
                        made.setdefault(tag["value"], []).append(arn)
        assert made, "no revision carries its deployment's tag"
        assert {d: arns for d, arns in made.items() if len(arns) > 1} == {}  # no orphan revisions
        total = sum(len(ecs.list_task_definitions(familyPrefix=f)["taskDefinitionArns"]) for f in families)
        assert total - sum(before.values()) == len(made)  # and none registered untagged

        # --- every audit walks its states without a gap
        for d in ids:
            changes = [e for e in audit(sb, d) if e["to_state"]]
            for earlier, later in zip(changes, changes[1:], strict=False):
                assert later["from_state"] == earlier["to_state"], (d, earlier["action"], later["action"])
            assert changes[-1]["to_state"] == rows[d]["state"]
        print(
            f"\nkill game: {len(killer.kills)} kills over {len(ids)} deployments "
            f"({dict(Counter(what for _, what in killer.kills))}); states "
            f"{dict(Counter(r['state'] for r in rows.values()))}; {len(rolled)} automatic rollbacks, "
            f"each alerted once; critical alert out {max(alert_after, default=0):.2f} s at most after a "
            f"restart ({len(alert_after)} such kills); revisions {len(made)} for {len(made)} deployments"
        )
        assert len(killer.kills) >= KILLS
        kinds = {what for _, what in killer.kills}
        assert {"register_revision", "rolling_back"} <= kinds, kinds
