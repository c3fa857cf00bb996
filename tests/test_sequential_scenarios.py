"""Issue 16 in the sandbox: issue 3's canary scenarios again with the shipped config, which judges them
with the sequential judge (`judge = "sequential"` in production's analysis): a healthy canary walks to 100%, a bad
one is rolled back before 50% with the evidence in words, no traffic pauses it as inconclusive. The real
bot process reads per-minute metrics of both slots from moto."""

from __future__ import annotations

import pytest

from bot.config.load import load_settings
from bot.sandbox.client import SandboxClient
from bot.sandbox.run import Sandbox
from tests.conftest import CONFIG, listener_weights, wait_state, wait_terminal
from tests.test_progressive import deploy, measurements, thread_of


@pytest.fixture
async def sequential(tmp_path, aws_env):
    """The shipped config, which judges production's canaries with the sequential judge."""
    assert load_settings(CONFIG).environments["production"].analysis.judge == "sequential"
    async with Sandbox(config=CONFIG, speed=60, workdir=tmp_path) as sb:
        yield sb


@pytest.fixture
async def client(sequential):
    async with SandboxClient(sequential.slack_url) as c:
        yield c


async def test_canary_scenarios_judged_by_the_sequential_judge(sequential: Sandbox, client):
    """One sandbox, three deployments of web in turn (the suite's time is counted): healthy v2 walks to
    100% on evidence; v3 with 20% errors is rolled back before 50% with the evidence in words; v4 with
    no traffic at all pauses as inconclusive, held at 5%."""
    d = await deploy(client, "web v2 to production", sb=sequential)
    final = await wait_terminal(client, d, within=90)
    assert "succeeded" in final["text"]
    thread = thread_of(await client.messages("deploys"), d)
    shifts = [t for t in thread if t.startswith("Traffic: ")]
    assert shifts == [f"Traffic: green {w}% / blue {100 - w}%" for w in (5, 25, 50, 100)]
    looks = [m for m in measurements(sequential, d) if (m.get("evidence") or {}).get("judge") == "sequential"]
    assert looks and {m["label"] for m in looks} == {"canary 5%", "canary 25%", "canary 50%"}
    assert all(m["verdict"] != "fail" for m in looks)
    assert any("error rate" in t and "canary requests" in t for t in thread)
    assert listener_weights(sequential, "web", "production") == {"blue": 0, "green": 100}

    await client.inject("web", "v3", error_rate=0.2)
    d = await deploy(client, "web v3 to production", sb=sequential)
    final = await wait_terminal(client, d, within=90)
    assert "rolled back" in final["text"] and "error rate" in final["text"]
    thread = thread_of(await client.messages("deploys"), d)
    reached = [int(t.split("blue ")[1].split("%")[0]) for t in thread if t.startswith("Traffic: ")]
    assert max(reached) < 50 and reached[-1] == 0, reached  # v3 went to blue, the idle slot
    failed = [m for m in measurements(sequential, d) if m["verdict"] == "fail"]
    assert failed and failed[0]["evidence"]["decision"] == "fail"
    alerts = [m for m in await client.messages("incidents") if f"#{d} " in m["text"]]
    assert len(alerts) == 1 and "regression of at least" in alerts[0]["text"], alerts
    assert "99% confidence" in alerts[0]["text"]
    assert listener_weights(sequential, "web", "production") == {"blue": 0, "green": 100}

    await client.inject("web", requests_per_minute=0)
    d = await deploy(client, "web v4 to production", sb=sequential)
    await wait_state(sequential, d, "paused", within=60)
    verdicts = {m["verdict"] for m in measurements(sequential, d)}
    assert verdicts == {"inconclusive"}
    assert listener_weights(sequential, "web", "production") == {"blue": 5, "green": 95}  # held at 5%
