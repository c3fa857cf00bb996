"""The real bot's /metrics after a real deploy in the sandbox, parsed with prometheus-client's text parser:
its AWS calls by operation match what moto's recorder saw the bot send (by the bot's own access key), its
Slack calls by method match what the local Slack recorded, its deployment and step counters match the
audit trail; /readyz says it is serving."""

from __future__ import annotations

import base64
import json
from collections import Counter
from urllib.parse import parse_qs

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from bot.sandbox.aws import BOT_ACCESS_KEY
from bot.sandbox.client import wait_for
from tests.conftest import db_rows, recorded, recorder, wait_terminal


def bot_actions(sb) -> Counter:
    """The AWS actions moto's recorder saw signed with the bot's key (not the sandbox's own)."""
    seen: Counter = Counter()
    for r in recorded(sb):
        headers = r.get("headers", {})
        if f"Credential={BOT_ACCESS_KEY}/" not in headers.get("Authorization", ""):
            continue
        target = headers.get("X-Amz-Target")
        if target:
            seen[target.rsplit(".", 1)[-1]] += 1
            continue
        body = r.get("body") or ""
        if r.get("body_encoded"):
            body = base64.b64decode(body).decode(errors="replace")
        seen[parse_qs(body).get("Action", ["?"])[0]] += 1
    return seen


async def test_metrics_after_a_sandbox_deploy_match_aws_slack_and_the_audit(sandbox, client):
    recorder(sandbox, "start-recording")
    r = await client.slash("alice", "/deploy", "web v2 to staging")
    assert r["status"] == 200
    assert "succeeded" in (await wait_terminal(client, 1))["text"]
    async with aiohttp.ClientSession() as s:
        async with s.get(sandbox.bot.url + "/readyz") as ready:
            assert ready.status == 200

        seen: dict = {}

        async def agree() -> list | None:
            """The figures, once AWS and Slack calls seen on both sides agree (the notifier may still be
            posting the thread's last lines when the state reads terminal)."""
            async with s.get(sandbox.bot.url + "/metrics") as resp:
                text = await resp.text()
            figures = [x for family in text_string_to_metric_families(text) for x in family.samples]
            aws, slack = Counter(), Counter()
            for x in figures:
                if x.name == "deploybot_aws_calls_total":
                    aws[x.labels["operation"].split(" ", 1)[1]] += int(x.value)
                if x.name == "deploybot_slack_calls_total":
                    slack[x.labels["method"]] += int(x.value)
            # the Web API calls the local Slack answered (not its own slash acks, nor response_url posts)
            calls = (await client.calls())["calls"]
            seen_slack = Counter(
                c["method"] for c in calls if c["method"] not in ("slash.ack", "response_url")
            )
            seen.update(aws=aws, moto=bot_actions(sandbox), slack=slack, local_slack=seen_slack)
            return figures if aws and aws == seen["moto"] and slack == seen_slack else None

        try:
            figures = await wait_for(agree, 20, what="/metrics to count what AWS and Slack saw")
        except TimeoutError:
            assert seen["aws"] == seen["moto"]
            assert seen["slack"] == seen["local_slack"]
            raise
    recorder(sandbox, "stop-recording")

    def value(name: str, **labels: str) -> float:
        return sum(
            x.value
            for x in figures
            if x.name == name and all(x.labels.get(k) == v for k, v in labels.items())
        )

    steps = [
        json.loads(e["details"])["step"]
        for e in db_rows(sandbox, "SELECT details FROM events WHERE action = 'step_started'")
    ]
    assert value("deploybot_steps_started_total") == len(steps) == 6
    assert value("deploybot_deployments_finished_total", strategy="rolling", outcome="succeeded") == 1
    assert value("deploybot_deployments_active") == 0
    assert value("deploybot_event_loop_lag_seconds_count") > 0
