"""Issue 5's acceptance, through the sandbox's control API against the real bot process (speed 60):
an automatic rollback raises a critical alert in #incidents that escalates until carol acknowledges it,
a restart between the alert and its escalation escalates exactly once and on time, and 30 status changes
in a few seconds still make at most one new message per second in the channel.

The config is the test's own (an environment "live" on the demo world's production resources), so the
scenarios do not depend on the example config's checklists and approvals."""

from __future__ import annotations

import json
import time
from datetime import datetime

from bot.sandbox.client import SandboxClient, wait_for
from bot.sandbox.run import Sandbox
from handlers.ui.alert_blocks import ACK_ALERT
from handlers.ui.blocks import hhmm
from tests.conftest import db_rows, signed_post, top_level, wait_terminal

SPEED = 60

CONFIG = """
[bot]
default_environment = "live"
deploy_channel = "deploys"

[alerts]
critical = ["incidents"]
warning = ["deploys"]
oncall = "oncall"
escalate_after_seconds = {delay}
escalation_rounds = 3
escalate_to = ["@dave", "release-managers"]

[environments.live]
cluster = "production"
load_balancer = "deploybot-production"
strategy = "canary"
bake_seconds = 60
poll_seconds = 5
canary_steps = {steps}
step_bake_seconds = {bake}
keep_warm_seconds = 0

[environments.live.analysis]
interval_seconds = {bake}
window_seconds = 60
min_requests = {min_requests}
max_error_rate = 0.05

[services.web]
container = "web"
image = "web"
target_group = "{{service}}-production-{{slot}}"
task_family = "{{service}}-production"
"""


def config(
    tmp_path, *, delay: float = 300, steps: list = (5, 25, 50, 100), bake: float = 60, min_requests=50
):
    path = tmp_path / "alerts.toml"
    path.write_text(CONFIG.format(delay=delay, steps=list(steps), bake=bake, min_requests=min_requests))
    return path


async def deploy(client: SandboxClient, text: str = "web v2 to live") -> int:
    r = await client.slash("alice", "/deploy", text)
    assert r["status"] == 200 and "requested" in r["body"]["text"], r
    return int(r["body"]["text"].split("#", 1)[1].split()[0])


def alert_row(sb: Sandbox, deployment_id: int) -> dict:
    (row,) = db_rows(
        sb, "SELECT * FROM alerts WHERE deployment_id = ? AND level = 'critical'", (deployment_id,)
    )
    return row


async def the_alert(client: SandboxClient, deployment_id: int) -> dict:
    async def probe():
        found = [
            m for m in top_level(await client.messages("incidents")) if f"#{deployment_id} " in m["text"]
        ]
        return found[0] if found else None

    return await wait_for(probe, 60, what=f"the critical alert about #{deployment_id}")


async def thread(client: SandboxClient, channel: str, ts: str) -> list[dict]:
    return [
        m for m in await client.messages(channel) if m.get("thread_ts") == ts and not m.get("ephemeral_for")
    ]


def no_secrets(sb: Sandbox, *texts: str) -> None:
    everything = "".join(texts) + sb.workdir.joinpath("bot.log").read_text()
    for secret in (sb.bot_token, sb.signing_secret):
        assert secret not in everything


async def test_automatic_rollback_alert_escalates_until_carol_acknowledges(tmp_path, aws_env):
    delay = 240  # 4 minutes of sandbox time: 4 s on the wall
    async with (
        Sandbox(config=config(tmp_path, delay=delay), speed=SPEED, workdir=tmp_path) as sb,
        SandboxClient(sb.slack_url) as client,
    ):
        await client.inject("web", "v2", error_rate=0.2)
        d = await deploy(client)
        alert = await the_alert(client, d)
        assert "CRITICAL · Automatic rollback" in alert["text"] and "error rate" in alert["text"]
        assert "<!subteam^S0ONCALL>" in alert["text"]  # on-call is notified
        (message,) = [m for m in top_level(await client.messages("deploys")) if f"#{d} " in m["text"]]
        assert f"/archives/C0DEPLOYS/p{message['ts'].replace('.', '')}" in json.dumps(alert["blocks"])
        (button,) = [e for b in alert["blocks"] if b["type"] == "actions" for e in b["elements"]]
        assert button["action_id"] == ACK_ALERT and button["text"]["text"] == "Acknowledge"

        async def escalated():
            return await thread(client, "incidents", alert["ts"])

        (escalation,) = await wait_for(escalated, 30, what="the escalation")
        assert "Escalation 1/3" in escalation["text"] and "<@U0DAVE> please take a look" in escalation["text"]
        raised = alert_row(sb, d)["raised_ts"]
        assert float(escalation["ts"]) - raised >= delay  # not before the delay...
        assert float(escalation["ts"]) - raised < delay + 2 * SPEED  # ...and close to it

        r = await client.click("carol", "incidents", alert["ts"], label="Acknowledge")
        assert r["status"] == 200

        async def acknowledged():
            m = next(m for m in await client.messages("incidents") if m["ts"] == alert["ts"])
            return "acknowledged by <@U0CAROL>" in m["text"] and m

        shown = await wait_for(acknowledged, 10, what="the alert to show carol's acknowledgement")
        row = alert_row(sb, d)
        assert row["acked_by"] == "U0CAROL" and row["next_escalation_at"] is None
        assert f"acknowledged by <@U0CAROL> at {hhmm(row['acked_ts'])} UTC" in shown["text"]
        assert "Acknowledged by <@U0CAROL> at <!date^" in json.dumps(shown["blocks"])
        assert not [b for b in shown["blocks"] if b["type"] == "actions"]  # nothing left to click

        # dave clicks Acknowledge on the copy his Slack client still shows: nothing changes, he is told so
        await signed_post(sb, {"payload": stale_click(sb, "dave", alert, button)})

        async def told():
            return [
                m
                for m in await client.messages("incidents")
                if m.get("ephemeral_for") == sb.slack.users["dave"]
            ]

        (answer,) = await wait_for(told, 10, what="dave to be told")
        assert (
            "<@U0CAROL> acknowledged this alert at" in answer["text"]
            and "nothing was changed" in answer["text"]
        )
        assert alert_row(sb, d)["acked_by"] == "U0CAROL"

        final = await wait_terminal(client, d, within=90)
        assert "rolled back" in final["text"]

        # no further escalation: let the sandbox clock pass the next two rounds' times
        await wait_for(lambda: _past(sb, raised + 3 * delay + SPEED), 30, what="three delays to pass")
        assert len(await thread(client, "incidents", alert["ts"])) == 1
        assert db_rows(sb, "SELECT rounds_sent FROM alerts WHERE id = ?", (row["id"],))[0]["rounds_sent"] == 1
        actions = [
            r["action"]
            for r in db_rows(sb, "SELECT action FROM events WHERE deployment_id = ? ORDER BY id", (d,))
        ]
        assert actions.count("alert_raised") == 1 and actions.count("alert_escalated") == 1
        assert (
            actions.count("alert_acknowledged") == 1 and "alert_resolved" in actions
        )  # recovered: rolled back
        assert "Resolved at" in json.dumps(shown["blocks"]) or "Resolved at" in json.dumps(
            (await the_alert(client, d))["blocks"]
        )

        calls = await client.calls()
        assert calls["rejected"] == 0, [c for c in calls["calls"] if not c["ok"]]
        no_secrets(
            sb, json.dumps(await client.messages("incidents")), json.dumps(await client.messages("deploys"))
        )


async def _past(sb: Sandbox, moment: float) -> bool:
    return sb.clock.now() > moment


def stale_click(sb: Sandbox, user: str, message: dict, button: dict) -> dict:
    """The block_actions payload Slack sends for a click on a message as a client still showed it."""
    uid, cid = sb.slack.users[user], sb.slack.channels["incidents"]
    block = next(b for b in message["blocks"] if b["type"] == "actions")
    return {
        "type": "block_actions",
        "user": {"id": uid, "username": user, "name": user, "team_id": "T0SANDBOX"},
        "api_app_id": "A0DEPLOYBOT",
        "token": "x",
        "container": {
            "type": "message",
            "message_ts": message["ts"],
            "channel_id": cid,
            "is_ephemeral": False,
        },
        "trigger_id": f"{int(time.time())}.1.stale",
        "team": {"id": "T0SANDBOX", "domain": "deploybot-sandbox"},
        "channel": {"id": cid, "name": "incidents"},
        "message": {
            "type": "message",
            "ts": message["ts"],
            "text": message["text"],
            "blocks": message["blocks"],
        },
        "response_url": sb.slack._new_response_url("block_actions", uid, cid, message["ts"]),
        "actions": [
            {
                "action_id": button["action_id"],
                "block_id": block["block_id"],
                "value": button["value"],
                "type": "button",
                "text": button["text"],
                "action_ts": f"{time.time():.6f}",
            }
        ],
    }


async def test_a_restart_between_alert_and_escalation_escalates_exactly_once_on_time(tmp_path, aws_env):
    delay = 480  # 8 s on the wall: time for a kill and a restart before it falls due
    async with (
        Sandbox(config=config(tmp_path, delay=delay), speed=SPEED, workdir=tmp_path) as sb,
        SandboxClient(sb.slack_url) as client,
    ):
        await client.inject("web", "v2", error_rate=0.2)
        d = await deploy(client)
        alert = await the_alert(client, d)

        async def recorded():
            rows = db_rows(sb, "SELECT messages FROM alerts WHERE deployment_id = ?", (d,))
            return rows and json.loads(rows[0]["messages"])

        await wait_for(recorded, 10, what="the alert's message to be recorded")
        raised = alert_row(sb, d)["raised_ts"]
        assert (await client.bot("kill"))["running"] is False  # a crash: nothing gets to clean up
        assert sb.clock.now() < raised + delay
        assert (await client.bot("start"))["running"] is True
        assert sb.clock.now() < raised + delay, "the restart took longer than the escalation delay"

        async def escalated():
            return await thread(client, "incidents", alert["ts"])

        (escalation,) = await wait_for(escalated, 30, what="the escalation after the restart")
        assert "Escalation 1/3" in escalation["text"]
        assert abs(float(escalation["ts"]) - (raised + delay)) < 1.5 * SPEED  # on time, give or take a second
        await wait_for(lambda: _past(sb, raised + delay + 2 * SPEED), 30, what="a little more time")
        assert len(await thread(client, "incidents", alert["ts"])) == 1  # exactly once
        escalations = db_rows(
            sb, "SELECT details FROM events WHERE deployment_id = ? AND action = 'alert_escalated'", (d,)
        )
        assert [json.loads(e["details"])["round"] for e in escalations] == [1]
        await wait_terminal(client, d, within=60)  # and the deployment itself carried on after the restart
        assert (await client.calls())["rejected"] == 0


async def test_30_status_changes_in_seconds_make_at_most_one_new_message_per_second(tmp_path, aws_env):
    weights = [*range(3, 91, 3), 100]  # 31 traffic shifts, each a status change of the deployment
    path = config(tmp_path, steps=weights, bake=10, min_requests=1)
    async with (
        Sandbox(config=path, speed=SPEED, workdir=tmp_path) as sb,
        SandboxClient(sb.slack_url) as client,
    ):
        sb.slack.rate_limit_per_channel_per_s = 1.0  # the local Slack now answers 429 to anything faster
        d = await deploy(client)
        final = await wait_terminal(client, d, within=90)
        assert "succeeded" in final["text"]

        shifts = db_rows(
            sb,
            "SELECT at FROM events WHERE deployment_id = ? AND action = 'step_started' "
            "AND json_extract(details, '$.step') = 'set_weights' ORDER BY id",
            (d,),
        )
        assert len(shifts) == 31
        span = (
            datetime.fromisoformat(shifts[-1]["at"]) - datetime.fromisoformat(shifts[0]["at"])
        ).total_seconds()
        assert span / SPEED < 31, "the status changes came slower than one a second: nothing to pace"

        calls = (await client.calls())["calls"]
        assert [c for c in calls if c["error"] == "ratelimited"] == []
        posts = [
            c["wall"] for c in calls if c["method"] == "chat.postMessage" and c["channel"] == "C0DEPLOYS"
        ]
        gaps = [b - a for a, b in zip(posts, posts[1:], strict=False)]
        assert gaps and min(gaps) >= 0.99, gaps
        messages = await client.messages("deploys")
        assert len([m for m in top_level(messages) if f"#{d} " in m["text"]]) == 1
        lines = "\n".join(m["text"] for m in messages if m.get("thread_ts") == final["ts"]).split("\n")
        traffic = [line for line in lines if line.startswith("Traffic: ")]
        assert traffic == [f"Traffic: green {w}% / blue {100 - w}%" for w in weights]  # every one, in order
        assert (await client.calls())["rejected"] == 0
