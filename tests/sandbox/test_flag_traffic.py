"""The sandbox's flag traffic (bot.sandbox.flag_traffic) against the real bot: 2,000 simulated users per
environment read every flag over OFREP's bulk route with the keys the ready line gives, their shares per
variant are reported, an injection shows in the per-variant CloudWatch metrics published to moto (read
back with boto3) for that variant only, the steady state is answered with 304s, and the bot killed and
started again is a gap, not a failure. One sandbox for the module (tests leave it as they found it)."""

from __future__ import annotations

import asyncio
import logging
import socket
from datetime import UTC, datetime, timedelta

import aiohttp
import boto3
import pytest
import pytest_asyncio
from openfeature import api as openfeature
from openfeature.contrib.provider.ofrep import OFREPProvider

from bot.adapters.aws import Aws
from bot.adapters.metrics.cloudwatch import CloudWatchMetrics
from bot.adapters.store.sqlite import Store
from bot.config.load import load_settings
from bot.config.model import AwsSettings
from bot.domain.analysis import GroupMetrics
from bot.domain.flags import Condition, FlagState, Rule, at_percent, on_for, turned_off
from bot.sandbox.client import SandboxClient, wait_for
from bot.sandbox.console import flag_lines
from bot.sandbox.flag_traffic import EnvKey, FlagTraffic, simulated_users
from bot.sandbox.run import Sandbox
from tests.conftest import CONFIG

# the simulated users are the suite's heaviest CPU load: one worker runs the flag-traffic modules in turn
# (`--dist loadgroup`), so they never starve each other's traffic under four workers on two cores
pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.xdist_group("flag-traffic")]
USERS = 2000
DIMENSIONS = ("Flag", "Variant", "Environment")
SETTINGS = load_settings(CONFIG, env={})


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def sb(tmp_path_factory):
    with pytest.MonkeyPatch.context() as env:  # boto3 here talks to moto only, with dummy credentials
        for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
            env.delenv(key, raising=False)
        env.setenv("AWS_ACCESS_KEY_ID", "testing")
        env.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        env.setenv("AWS_DEFAULT_REGION", "us-east-1")
        async with Sandbox(config=CONFIG, speed=60, workdir=tmp_path_factory.mktemp("flags")) as sandbox:
            yield sandbox


@pytest_asyncio.fixture(loop_scope="module")
async def client(sb):
    async with SandboxClient(sb.slack_url) as c:
        yield c


async def settled(client: SandboxClient, within: float = 30.0) -> dict:
    """The flags view once every simulated user of every environment has its answer and none waits."""

    async def probe():
        view = await client.flags()
        envs = view["environments"].values()
        done = all(e["evaluated"] == USERS and e["waiting"] == 0 for e in envs)
        return view if done and view["bot_answering"] else None

    return await wait_for(probe, within, what="every simulated user evaluated")


def published(sb: Sandbox, flag: str, variant: str, env: str, start: datetime, end: datetime) -> dict:
    """Requests and Errors (sums) and Latency (average, ms) of one variant as published to moto."""
    cw = boto3.client("cloudwatch", endpoint_url=sb.aws_url, region_name="us-east-1")
    dims = [{"Name": n, "Value": v} for n, v in zip(DIMENSIONS, (flag, variant, env), strict=True)]
    period = max(1, int((end - start).total_seconds()))
    queries = [
        {
            "Id": qid,
            "MetricStat": {
                "Metric": {"Namespace": "DeployBot/Flags", "MetricName": name, "Dimensions": dims},
                "Period": period,
                "Stat": stat,
            },
        }
        for qid, name, stat in (("requests", "Requests", "Sum"), ("errors", "Errors", "Sum"), ("latency", "Latency", "Average"))
    ]  # fmt: skip
    out = cw.get_metric_data(MetricDataQueries=queries, StartTime=start, EndTime=end)
    values = {r["Id"]: r["Values"] for r in out["MetricDataResults"]}
    return {
        "requests": sum(values["requests"]) if values["requests"] else None,
        "errors": sum(values["errors"]) if values["errors"] else None,
        "latency": sum(values["latency"]) / len(values["latency"]) if values["latency"] else None,
    }


def now(sb: Sandbox) -> datetime:
    return datetime.fromtimestamp(sb.clock.now(), UTC)


# --- shares ------------------------------------------------------------------------------------------------
async def test_a_flag_nobody_changed_is_off_for_every_simulated_user(sb, client):
    view = await settled(client)
    for env in ("staging", "production"):
        # every flag answers DISABLED, which OFREP defines as the same for any context: one user was asked
        # for everyone (a handful more by the probes since); the rest need not be
        assert view["environments"][env]["inferred"] > USERS - 50
        flags = view["environments"][env]["flags"]
        assert flags["checkout-v2"] == {"shares": {"off": 1.0}, "users": {"off": USERS}, "errors": {}}
        assert flags["search-ranking"]["shares"] == {"control": 1.0}  # its off variant
    only = await client.flags("staging")
    assert list(only["environments"]) == ["staging"]
    lines = flag_lines(view)  # the console's `flags`
    assert (
        lines[0].startswith("staging: 2000 of 2000 users evaluated (")
        and "  checkout-v2: off 100.0%" in lines
    )
    assert lines[-1].startswith("OFREP: ") and "answered 304" in lines[-1]


def change_flag(sb: Sandbox, env: str, key: str, change) -> None:
    """Change a flag's state as another process sharing the bot's database does (a replica, `deploybot`
    run by hand): the bot follows the store's flags revision each second. The simulator knows nothing of
    it but what OFREP answers."""
    flag = SETTINGS.flags[key]
    store = Store(sb.db)
    try:
        now = store.flag_state(env, key)
        store.set_flag(
            env, key, change(flag, now.state), expected_revision=now.revision, actor="test",
            action="flag_changed", details={},
        )  # fmt: skip
    finally:
        store.close()


async def shares_once(client: SandboxClient, env: str, key: str, check, what: str) -> dict:
    """The view once `env` has no user waiting and `check(shares of key)` holds."""

    async def probe():
        view = await client.flags()
        state = view["environments"][env]
        return view if state["waiting"] == 0 and check(state["flags"][key]) else None

    return await wait_for(probe, 30, what=what)


async def test_a_flag_change_reaches_every_simulated_user_and_only_in_its_environment(sb, client):
    await settled(client)
    before = (await client.flags())["stats"]["changes_seen"]
    change_flag(sb, "staging", "checkout-v2", lambda f, s: at_percent(f, s, 25))
    view = await shares_once(client, "staging", "checkout-v2", lambda f: "on" in f["users"], "25% seen")
    shares = view["environments"]["staging"]["flags"]["checkout-v2"]["shares"]
    assert shares["on"] == pytest.approx(0.25, abs=0.03) and shares["on"] + shares["off"] == 1.0
    assert view["environments"]["staging"]["inferred"] == 0  # a split: every user asked for its own answer
    assert view["environments"]["production"]["flags"]["checkout-v2"]["shares"] == {"off": 1.0}
    assert view["stats"]["changes_seen"] > before

    # a regional rollout: exactly the users whose region attribute is eu-west-1
    rule = Rule("on", (Condition("region", "in", ("eu-west-1",)),))
    change_flag(sb, "staging", "checkout-v2", lambda f, s: on_for(f, FlagState(), rule))
    eu_west = sum(u.region == "eu-west-1" for u in simulated_users(USERS))
    view = await shares_once(
        client, "staging", "checkout-v2", lambda f: f["users"].get("on") == eu_west, "eu-west-1 on"
    )
    assert view["environments"]["staging"]["flags"]["checkout-v2"]["users"] == {
        "off": USERS - eu_west, "on": eu_west
    }  # fmt: skip

    change_flag(sb, "staging", "checkout-v2", lambda f, s: turned_off(f, s))
    await shares_once(client, "staging", "checkout-v2", lambda f: f["shares"] == {"off": 1.0}, "off again")


# --- metrics -----------------------------------------------------------------------------------------------
async def test_an_injection_shows_in_the_published_metrics_of_that_variant_only(sb, client):
    await settled(client)
    start = now(sb)
    view = await client.inject_flag("checkout-v2", "off", error_rate=0.2, latency_ms=400, env="staging")
    assert view["ok"] and view["injections"] == [
        {"flag": "checkout-v2", "variant": "off", "env": "staging", "error_rate": 0.2, "latency_ms": 400.0}
    ]
    try:

        async def enough():
            got = published(sb, "checkout-v2", "off", "staging", start, now(sb) + timedelta(seconds=1))
            return got if (got["requests"] or 0) >= 1000 else None

        bad = await wait_for(enough, 30, what="1,000 requests published after the injection")
        end = now(sb) + timedelta(seconds=1)
        assert bad["errors"] / bad["requests"] == pytest.approx(0.2, abs=0.02)
        assert bad["latency"] == pytest.approx(400, rel=0.06)
        # the other environment, the other flag: the healthy baseline; the on variant has no users: no data
        for flag, variant, env in (
            ("checkout-v2", "off", "production"),
            ("search-ranking", "control", "staging"),
        ):
            healthy = published(sb, flag, variant, env, start, end)
            assert healthy["requests"] > 500, (flag, variant, env)
            assert healthy["errors"] / healthy["requests"] < 0.02 and healthy["latency"] == pytest.approx(
                80, rel=0.06
            )
        assert published(sb, "checkout-v2", "on", "staging", start, end) == {
            "requests": None, "errors": None, "latency": None
        }  # fmt: skip
        # the bot's own reader (what a flag rollout's analysis calls) sees the same series
        reader = CloudWatchMetrics(Aws(AwsSettings(endpoint_url=sb.aws_url, max_attempts=1)))
        env = SETTINGS.environments["staging"]
        read = await reader.flag_metrics(
            None, env.flags.metrics, "checkout-v2", "staging", ["on", "off"], start, end
        )
        assert read["on"] == GroupMetrics() and read["off"].requests >= bad["requests"]
        assert read["off"].errors / read["off"].requests == pytest.approx(0.2, abs=0.02)
    finally:
        cleared = await client.inject_flag("checkout-v2", clear=True)
    assert cleared["ok"] and cleared["injections"] == []


BAD_INJECTIONS = [
    ({"flag": "checkout-v3", "variant": "on", "error_rate": 0.2}, "flag must be a declared flag (checkout-v2, search-ranking), got 'checkout-v3'"),
    ({"flag": "checkout-v2", "variant": "maybe", "error_rate": 0.2}, "variant must be one of checkout-v2's variants (on, off), got 'maybe'"),
    ({"flag": "checkout-v2", "error_rate": 0.2}, "variant must be one of checkout-v2's variants (on, off), got None"),
    ({"flag": "checkout-v2", "variant": "on", "error_rate": 1.5}, "error_rate must be within 0..1, got 1.5"),
    ({"flag": "checkout-v2", "variant": "on", "error_rate": "lots"}, "error_rate must be a number, got 'lots'"),
    ({"flag": "checkout-v2", "variant": "on", "error_rate": True}, "error_rate must be a number, got True"),
    ({"flag": "checkout-v2", "variant": "on", "latency_ms": -1}, "latency_ms must be within 0..600000, got -1"),
    ({"flag": "checkout-v2", "variant": "on"}, "an injection sets error_rate (0..1), latency_ms (>= 0) or both"),
    ({"flag": "checkout-v2", "variant": "on", "error_rate": 0.2, "env": "qa"}, "env must be one of staging, production (omit it for all), got 'qa'"),
    ({"flag": "checkout-v2", "variant": "on", "errors": 0.2}, "unknown key 'errors'; a flag injection has flag, variant"),
    ({"flag": "checkout-v2", "clear": "yes"}, "clear must be true or false, got 'yes'"),
    ({"flag": "checkout-v2", "clear": True, "error_rate": 0.1}, "clear takes no error_rate or latency_ms"),
    ({"flag": ["checkout-v2"], "variant": "on"}, "flag must be a declared flag (checkout-v2, search-ranking), got ['checkout-v2']"),
]  # fmt: skip


async def test_bad_inject_bodies_get_400_saying_what_is_wrong(sb, client):
    async with aiohttp.ClientSession() as s:
        for body, message in BAD_INJECTIONS:
            async with s.post(sb.slack_url + "/_sandbox/inject", json=body) as r:
                answer = await r.json()
            assert r.status == 400 and answer["ok"] is False, body
            assert answer["error"].startswith("bad inject request: " + message), (body, answer["error"])
        async with s.post(sb.slack_url + "/_sandbox/inject", data=b"{not json") as r:
            assert r.status == 400 and "not JSON" in (await r.json())["error"]
        async with s.get(sb.slack_url + "/_sandbox/flags", params={"env": "qa"}) as r:
            assert r.status == 400 and "env must be one of staging, production" in (await r.json())["error"]
    assert (await client.flags())["injections"] == []


# --- the ready line's OFREP url and keys -------------------------------------------------------------------
async def test_the_ready_lines_ofrep_keys_answer_a_raw_request_and_a_wrong_key_gets_401(sb):
    ofrep = sb.info()["ofrep"]
    assert ofrep["url"] == sb.bot.url and set(ofrep["api_keys"]) == {"staging", "production"}
    assert ofrep["api_keys"]["staging"] != ofrep["api_keys"]["production"]
    url = ofrep["url"] + "/ofrep/v1/evaluate/flags"
    body = {"context": {"targetingKey": "user-0001", "region": "eu-west-1", "plan": "beta"}}
    async with aiohttp.ClientSession() as s:
        for env, key in ofrep["api_keys"].items():
            async with s.post(url, json=body, headers={"Authorization": f"Bearer {key}"}) as r:
                assert r.status == 200, env
                etag = r.headers["ETag"]
                flags = {f["key"]: f for f in (await r.json())["flags"]}
            assert flags["checkout-v2"]["value"] is False and flags["checkout-v2"]["variant"] == "off"
            headers = {"Authorization": f"Bearer {key}", "If-None-Match": etag}
            async with s.post(url, json=body, headers=headers) as r:
                assert r.status == 304
        for wrong in ("Bearer nope", "Bearer " + ofrep["api_keys"]["staging"][:-1], ""):
            async with s.post(url, json=body, headers={"Authorization": wrong} if wrong else {}) as r:
                assert r.status == 401, wrong
    # and an application's OpenFeature SDK with the OFREP provider, given the same url and key
    key = ofrep["api_keys"]["production"]
    provider = OFREPProvider(ofrep["url"], headers_factory=lambda: {"Authorization": f"Bearer {key}"})
    openfeature.set_provider(provider, "sandbox-ready-line")
    try:
        reader = openfeature.get_client("sandbox-ready-line")
        details = await asyncio.to_thread(reader.get_boolean_details, "checkout-v2", True)
        assert details.value is False and details.variant == "off"
    finally:
        openfeature.clear_providers()


# --- the steady state, and the bot going away --------------------------------------------------------------
async def test_the_steady_state_is_answered_with_304s(sb, client):
    first = (await settled(client))["stats"]

    async def five_more_ticks():
        stats = (await client.flags())["stats"]
        return stats if stats["ticks"] >= first["ticks"] + 5 else None

    later = await wait_for(five_more_ticks, 30, what="five more flag traffic ticks")
    asked = later["requests"] - first["requests"]
    assert asked > 0
    # nothing changed: every answer a 304 (`requests` counts a request when it is sent, so one still in
    # flight at either reading is in `asked` but not yet answered: count the answers, not the sends)
    assert 0 < later["not_modified"] - first["not_modified"] <= asked
    assert later["answered"] == first["answered"] and later["failed"] == first["failed"]
    assert later["refused"] == first["refused"]


async def test_a_bot_that_does_not_answer_skips_the_tick_and_is_logged_once(caplog):
    with socket.socket() as s:  # a port nothing listens on: connection refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    published_data: list = []
    traffic = FlagTraffic(
        lambda: f"http://127.0.0.1:{port}",
        {"staging": EnvKey("k")},
        {"checkout-v2": ["on", "off"]},
        lambda: 1_800_000_000.0,
        lambda namespace, data: published_data.append(data),
        users=50,
    )

    with caplog.at_level(logging.WARNING, logger="bot.sandbox.flag_traffic"):
        try:
            assert [await traffic.tick() for _ in range(3)] == [False, False, False]
        finally:
            await traffic.close()
    assert traffic.stats.unreachable_ticks == 3 and published_data == []
    said = [r.getMessage() for r in caplog.records if "skipping ticks" in r.getMessage()]
    assert len(said) == 1 and f"does not answer at http://127.0.0.1:{port}" in said[0]
    assert traffic.view()["bot_answering"] is False


async def test_simulated_users_are_stable_and_span_three_regions_and_the_beta_segment():
    users = simulated_users(USERS)
    assert users == simulated_users(USERS) and len({u.key for u in users}) == USERS
    assert {u.region for u in users} == {"us-east-1", "eu-west-1", "eu-central-1"}
    beta = sum(u.plan in ("beta", "staff") for u in users) / USERS  # the shipped segment beta
    assert 0.1 < beta < 0.2


async def test_the_bot_killed_and_started_again_is_a_gap_the_traffic_goes_on_after(sb, client, caplog):
    await settled(client)
    caplog.set_level(logging.WARNING, logger="bot.sandbox.flag_traffic")
    assert (await client.bot("kill"))["running"] is False

    async def gap():  # several ticks while it is down
        view = await client.flags()
        return view if not view["bot_answering"] and view["stats"]["unreachable_ticks"] >= 3 else None

    down = await wait_for(gap, 30, what="three flag traffic ticks without the bot")
    assert (await client.bot("start"))["running"] is True

    async def again():
        view = await client.flags()
        stats = view["stats"]
        later = stats["not_modified"] > down["stats"]["not_modified"]
        return view if view["bot_answering"] and later else None

    view = await wait_for(again, 60, what="304s from the restarted bot")  # same database: same ETags
    assert all(e["evaluated"] == USERS for e in view["environments"].values())
    said = [r for r in caplog.records if "skipping ticks" in r.getMessage()]
    assert len(said) == 1  # once per outage, however many ticks it lasted
