"""Issue 11's paging acceptance, through the sandbox against the real bot process (speed 60): the sandbox's
local PagerDuty fails (HTTP 500, an HTML body) for 10 minutes of sandbox time while a canary fails, rolls
back and carol acknowledges its alert; then PagerDuty is healthy again. Every event is delivered, once, in
order (trigger, acknowledge, resolve), and the deployment's thread said paging was failing — and then that
it works again."""

from __future__ import annotations

import json

from bot.domain.alerts import pagerduty_dedup_key
from bot.sandbox.client import SandboxClient, wait_for
from bot.sandbox.run import Sandbox
from tests.conftest import top_level, wait_terminal
from tests.test_alert_scenarios import SPEED, config, deploy, the_alert, thread

OUTAGE = 600  # sandbox seconds: 10 s on the wall


async def test_pagerduty_failing_for_ten_minutes_then_every_event_delivered_in_order(tmp_path, aws_env):
    async with (
        Sandbox(config=config(tmp_path, delay=3600), speed=SPEED, workdir=tmp_path, pagerduty=True) as sb,
        SandboxClient(sb.slack_url) as client,
    ):
        r = await client._post("/_sandbox/pagerduty", {"fail": "500"})  # down until told otherwise...
        assert r["ok"] and r["fail"] == "500", r
        await client.inject("web", "v2", error_rate=0.2)
        d = await deploy(client)
        key = pagerduty_dedup_key(d)

        async def first_page():
            state = await client._get("/_sandbox/pagerduty")
            return [f for f in state["failures"] if f["dedup_key"] == key]

        await wait_for(first_page, 90, what="the first page to fail")
        # ...then for 10 minutes of sandbox time from the first page PagerDuty could not take
        r = await client._post("/_sandbox/pagerduty", {"fail": "500", "seconds": OUTAGE})
        assert r["ok"] and OUTAGE - 10 < r["seconds_left"] <= OUTAGE, r
        assert sb.pagerduty is not None and sb.pagerduty.fail_until is not None
        outage_ends = sb.pagerduty.fail_until
        alert = await the_alert(client, d)
        r = await client.click("carol", "incidents", alert["ts"], label="Acknowledge")
        assert r["status"] == 200
        final = await wait_terminal(client, d, within=90)
        assert "rolled back" in final["text"]
        (message,) = [m for m in top_level(await client.messages("deploys")) if f"#{d} " in m["text"]]

        async def warned():
            lines = [
                m for m in await thread(client, "deploys", message["ts"]) if "paging is failing" in m["text"]
            ]
            return lines

        (warning,) = await wait_for(warned, 60, what="the thread to say paging is failing")
        assert "HTTP 500: &lt;html&gt;" in warning["text"] and "Still trying" in warning["text"]
        assert float(warning["ts"]) < outage_ends  # said during the outage, after 5 minutes of it

        async def delivered():
            state = await client._get("/_sandbox/pagerduty")
            mine = [e for e in state["events"] if e["dedup_key"] == key]
            return len(mine) >= 3 and state

        state = await wait_for(delivered, 60, what="every PagerDuty event once PagerDuty is back")
        mine = [e for e in state["events"] if e["dedup_key"] == key]
        assert [e["event_action"] for e in mine] == ["trigger", "acknowledge", "resolve"]
        assert all(e["at"] >= outage_ends for e in mine)
        failed = [f for f in state["failures"] if f["dedup_key"] == key]
        assert len(failed) >= 3 and all(f["at"] < outage_ends for f in failed)  # retried through it
        assert mine[0]["payload"]["summary"].startswith(f"Automatic rollback: Deployment #{d} · web v2")

        async def works():
            lines = [
                m for m in await thread(client, "deploys", message["ts"]) if "paging works again" in m["text"]
            ]
            return lines

        (back,) = await wait_for(works, 30, what="the thread to say paging works again")
        assert "delivered trigger, acknowledgement, resolution" in back["text"]
        lines = await thread(client, "deploys", message["ts"])
        assert len([m for m in lines if "paging is failing" in m["text"]]) == 1
        log = sb.workdir.joinpath("bot.log").read_text()
        assert "HTTP 500: <html>" in log and "JSONDecodeError" not in log
        everything = log + json.dumps(await client.messages("deploys")) + json.dumps(state)
        assert sb.pagerduty is not None and sb.pagerduty.routing_key not in everything
