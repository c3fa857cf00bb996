"""Issue 9, part 2, through the sandbox's control API against the real bot process: access fails closed
(an action the access table does not list needs the deploy role), and a button acts only on the deployment
whose message it is on."""

from __future__ import annotations

import json
import time
from pathlib import Path

from bot.sandbox.client import SandboxClient, wait_for
from bot.sandbox.run import Sandbox
from tests.conftest import (
    CONFIG,
    button_label,
    db_rows,
    message_of,
    rehearsed,
    signed_post,
    through_gate,
    top_level,
    wait_state,
    wait_terminal,
)

NOT_ITS_MESSAGE = "That button belongs to another deployment's message; nothing was changed."


async def requested(client: SandboxClient, user: str, command: str, text: str) -> int:
    r = await client.slash(user, command, text)
    assert r["status"] == 200 and "requested" in r["body"]["text"], r
    return int(r["body"]["text"].split("#", 1)[1].split()[0])


async def told(client: SandboxClient, user_id: str, text: str, times: int = 1) -> list[dict]:
    """The messages only `user_id` sees that say `text`, once there are `times` of them."""

    async def probe():
        found = [
            m
            for m in await client.messages("deploys")
            if m.get("ephemeral_for") == user_id and text in m["text"]
        ]
        return found if len(found) >= times else None

    return await wait_for(probe, 10, what=f"{user_id} to be told {text!r}")


def state(sb: Sandbox, d: int) -> str:
    return db_rows(sb, "SELECT state FROM deployments WHERE id = ?", (d,))[0]["state"]


def refusals(sb: Sandbox, d: int | None = None) -> list[dict]:
    rows = db_rows(
        sb,
        "SELECT deployment_id, actor, details FROM events WHERE action = 'refused' ORDER BY id",
    )
    return [{**r, "details": json.loads(r["details"])} for r in rows if d is None or r["deployment_id"] == d]


async def test_access_fails_closed_an_unlisted_action_needs_the_deploy_role(tmp_path, aws_env):
    text = Path(CONFIG).read_text()
    staging_rollback = (
        'rollback = ["engineers", "release-managers", "oncall"]   # /rollback, the Abort button\n'
    )
    assert staging_rollback in text
    text = text.replace(staging_rollback, "", 1)  # staging's access table no longer lists rollback
    text += "\n[services.api.environments.staging]\nbake_seconds = 3600\n"  # api stays running while we click
    config = tmp_path / "no-rollback.toml"
    config.write_text(text)
    async with (
        Sandbox(config=config, speed=60, workdir=tmp_path) as sb,
        SandboxClient(sb.slack_url) as client,
    ):
        web = await requested(client, "alice", "/deploy", "web v2 to staging")
        assert "succeeded" in (await wait_terminal(client, web))["text"]

        r = await client.slash("dave", "/rollback", "web in staging")
        assert "You need the engineers or release-managers role to roll back in staging" in r["body"]["text"]
        assert len(db_rows(sb, "SELECT id FROM deployments")) == 1  # nothing was created

        api = await requested(client, "alice", "/deploy", "api v2 to staging")
        await wait_state(sb, api, "running")
        m = await message_of(client, api, button_label("Abort"))
        await client.click("dave", "deploys", m["ts"], label="Abort")
        await told(
            client,
            "U0DAVE",
            "You need the engineers or release-managers role to roll back in staging",
            times=2,  # the /rollback's answer, then the click's
        )
        assert state(sb, api) == "running"
        assert [(r["actor"], r["details"]["action"]) for r in refusals(sb)] == [
            ("U0DAVE", "rollback"),
            ("U0DAVE", "rollback"),
        ]

        await client.click(
            "bob", "deploys", m["ts"], label="Abort"
        )  # a deployer may: deploy's roles cover it
        assert "rolled back" in (await wait_terminal(client, api, within=60))["text"]
        back = await requested(client, "alice", "/rollback", "web in staging")
        final = await wait_terminal(client, back)
        assert "succeeded" in final["text"] and "web v1" in final["text"]


async def test_a_button_acts_only_on_the_deployment_whose_message_it_is_on(sandbox, client):
    first = await requested(client, "alice", "/deploy", "web v2 to production")
    second = await requested(client, "alice", "/deploy", "api v2 to production")
    for d in (first, second):
        await wait_state(sandbox, d, "awaiting_approval")
    m1 = await message_of(client, first, button_label("Approve"), button_label("Cancel"))
    m2 = await message_of(client, second, button_label("Approve"), button_label("Cancel"))

    # #1's message, a button whose value names #2 (the "#10 is paused from #9's message")
    for label in ("Cancel", "Approve"):
        r = await client.click("bob", "deploys", m1["ts"], label=label, value=str(second))
        assert r["status"] == 200, r
    assert len(await told(client, "U0BOB", NOT_ITS_MESSAGE)) >= 1

    async def both_recorded():
        return len(refusals(sandbox, second)) == 2 or None

    await wait_for(both_recorded, 10, what="both refusals recorded on #2")
    recorded = refusals(sandbox, second)
    assert [r["details"]["action"] for r in recorded] == ["cancel", "approve"]
    assert all(r["actor"] == "U0BOB" and r["details"]["message_ts"] == m1["ts"] for r in recorded)

    # the Home tab shows no deployment controls: a click from a view naming #2 changes nothing either
    payload = {
        "type": "block_actions",
        "user": {"id": "U0BOB", "username": "bob", "team_id": "T0SANDBOX"},
        "api_app_id": "A0DEPLOYBOT",
        "token": "x",
        "team": {"id": "T0SANDBOX", "domain": "d"},
        "container": {"type": "view", "view_id": "V0HOME"},
        "view": {"id": "V0HOME", "type": "home"},
        "trigger_id": "home-1",
        "actions": [
            {
                "action_id": "deployment:cancel",
                "block_id": f"deployment-{second}",
                "value": str(second),
                "type": "button",
                "action_ts": str(time.time()),
            }
        ],
    }
    status, _ = await signed_post(sandbox, {"payload": payload})
    assert status == 200

    async def view_recorded():
        return [r for r in refusals(sandbox, second) if r["details"]["container"] == "view"] or None

    await wait_for(view_recorded, 10, what="the Home-tab click's refusal")
    assert state(sandbox, first) == state(sandbox, second) == "awaiting_approval"
    assert db_rows(sandbox, "SELECT * FROM approvals") == []

    r = await client.click("bob", "deploys", m2["ts"], label="Cancel")  # its own message: it works
    assert r["status"] == 200
    await wait_state(sandbox, second, "cancelled")
    assert state(sandbox, first) == "awaiting_approval"


async def test_a_production_rollback_to_a_version_that_never_succeeded_there_is_refused_or_breaks_glass(
    sandbox, client
):
    await rehearsed(client, sandbox, "api", "v2")  # its migration, in staging: production's evidence
    d = await requested(client, "alice", "/deploy", "api v2 to production")  # blue-green
    await through_gate(client, sandbox, d)
    assert "succeeded" in (await wait_terminal(client, d, within=90))["text"]

    r = await client.slash("alice", "/rollback", "api in production to v77")
    assert r["body"]["text"] == (
        f":no_entry: v77 never succeeded in production; known-good: v2 (#{d}), v1 (replaced by #{d}). Roll back "
        "to one of those, or deploy v77 through the whole gate (/deploy api v77 to production), or add "
        '--emergency "reason".'
    )
    emergency = 'api in production to v77 --emergency "checkout is down"'
    r = await client.slash("alice", "/rollback", emergency)  # alice is an engineer only
    assert (
        "You need the release-managers or oncall role to roll back with --emergency in production"
        in (r["body"]["text"])
    )
    assert len(db_rows(sandbox, "SELECT id FROM deployments")) == 2  # nothing was created

    glass = await requested(client, "carol", "/rollback", emergency)
    final = await wait_terminal(client, glass, within=90)  # nobody ticked or approved anything
    assert "succeeded" in final["text"] and "api v77" in final["text"]
    actions = [
        r["action"] for r in db_rows(sandbox, "SELECT action FROM events WHERE deployment_id = ?", (glass,))
    ]
    assert "emergency" in actions and "await_approval" not in actions

    async def alert():
        found = [m for m in top_level(await client.messages("incidents")) if f"#{glass} " in m["text"]]
        return found[0] if found else None

    raised = await wait_for(alert, 30, what="the critical alert about the emergency rollback")
    assert "CRITICAL" in raised["text"] and "Emergency" in raised["text"]
