"""Feature flags end to end, as people and applications meet them: /flag typed in the local Slack, the real
bot serving, and an application reading the flags with the real OpenFeature SDK and its OFREP provider
(no custom client code). Users: alice, bob and carol are engineers, bob a release manager, carol on call,
dave has no role."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections import Counter

import pytest
from openfeature import api
from openfeature.contrib.provider.ofrep import OFREPProvider
from openfeature.evaluation_context import EvaluationContext

from bot.sandbox.client import SandboxClient, wait_for
from bot.sandbox.run import Sandbox
from tests.conftest import CONFIG, button_label, db_rows, top_level, wait_state

# the simulated flag users are heavy: these run on one worker in turn (`--dist loadgroup`)
pytestmark = pytest.mark.xdist_group("flag-traffic")

USERS = [f"user-{i}" for i in range(2000)]
_domains = itertools.count()


class App:
    """An application of one environment reading deploybot's flags through the OpenFeature SDK."""

    def __init__(self, sb: Sandbox, env: str):
        ofrep = sb.info()["ofrep"]
        key = ofrep["api_keys"][env]
        self.domain = f"{env}-{next(_domains)}"
        api.set_provider(
            OFREPProvider(ofrep["url"], headers_factory=lambda: {"Authorization": f"Bearer {key}"}),
            domain=self.domain,
        )
        self.client = api.get_client(domain=self.domain)

    def details(self, flag: str, key: str | None, default=False, **attributes):
        context = EvaluationContext(targeting_key=key, attributes=attributes)
        if isinstance(default, bool):
            return self.client.get_boolean_details(flag, default, context)
        return self.client.get_string_details(flag, default, context)

    async def values(self, flag: str, keys=USERS, default=False, **attributes) -> dict[str, object]:
        """Every key's value (the SDK is synchronous: it runs on threads, four at a time)."""

        def some(part):
            return {k: self.details(flag, k, default, **attributes).value for k in part}

        parts = [keys[i::4] for i in range(4)]
        results = await asyncio.gather(*(asyncio.to_thread(some, p) for p in parts))
        return {k: v for r in results for k, v in r.items()}


@pytest.fixture(autouse=True)
def _providers():
    yield
    api.clear_providers()


async def flag(client: SandboxClient, user: str, text: str) -> dict:
    r = await client.slash(user, "/flag", text)
    assert r["status"] == 200, r
    return r["body"]


def share(values: dict[str, object], value: object = True) -> float:
    return sum(1 for v in values.values() if v == value) / len(values)


async def test_a_percentage_is_stable_for_a_user_and_monotonic(sandbox, client):
    app = App(sandbox, "staging")
    assert share(await app.values("checkout-v2")) == 0.0  # declared, never changed: off

    body = await flag(client, "alice", "checkout-v2 25% in staging")
    assert body.get("response_type") == "in_channel" and "25%" in body["text"], body
    first = await app.values("checkout-v2")
    assert 0.22 <= share(first) <= 0.28, share(first)
    assert await app.values("checkout-v2") == first  # each key gives the same answer twice

    await flag(client, "alice", "checkout-v2 50% in staging")
    second = await app.values("checkout-v2")
    assert 0.47 <= share(second) <= 0.53, share(second)
    assert all(second[k] for k, on in first.items() if on)  # in at 25%: still in at 50%

    d = app.details("checkout-v2", "user-1")
    assert d.reason == "SPLIT" and d.variant in ("on", "off")
    missing = app.details("checkout-v2", None)  # a split needs the key it hashes
    assert missing.error_code == "TARGETING_KEY_MISSING" and missing.value is False


async def test_a_regional_rule_and_an_ab_split(sandbox, client):
    app = App(sandbox, "staging")
    body = await flag(client, "alice", "checkout-v2 on for region=eu-west-1 in staging")
    assert "eu-west-1" in body["text"], body
    keys = USERS[:300]
    for region, expected in (("eu-west-1", True), ("us-east-1", False), ("eu-central-1", False)):
        values = await app.values("checkout-v2", keys, region=region)
        assert set(values.values()) == {expected}, region
    assert app.details("checkout-v2", "user-1", region="eu-west-1").reason == "TARGETING_MATCH"

    await flag(client, "bob", "search-ranking variants control=50,treatment=50 in staging")
    details = {k: app.details("search-ranking", k, "none") for k in USERS}
    variants = Counter(d.variant for d in details.values())
    assert set(variants) == {"control", "treatment"}, variants
    assert all(0.47 <= n / len(USERS) <= 0.53 for n in variants.values()), variants
    values = {"control": "classic", "treatment": "learned"}
    assert all(d.value == values[d.variant] and d.reason == "SPLIT" for d in details.values())


async def rollout_of(client: SandboxClient, body: dict) -> int:
    assert "rollout #" in body["text"], body
    return int(body["text"].split("rollout #", 1)[1].split()[0])


def flag_changes(sb: Sandbox, key: str, env: str) -> list[dict]:
    """The flag's audited changes in `env`, oldest first: action, and the on variant's share after it."""
    rows = db_rows(
        sb,
        "SELECT action, details FROM events WHERE json_extract(details, '$.flag') = ? "
        "AND json_extract(details, '$.env') = ? ORDER BY id",
        (key, env),
    )
    found = []
    for r in rows:
        after = json.loads(r["details"])["after"]
        split = dict(after["split"])
        percent = split.get("on") if split else (100 if after["enabled"] and not after["rules"] else 0)
        found.append({"action": r["action"], "percent": percent if after["enabled"] else 0})
    return found


SLOWER = 15  # rollouts judge traffic the simulator makes over HTTP in wall time: a slower clock gives it time


@pytest.fixture
async def slower(tmp_path, aws_env):
    async with Sandbox(config=CONFIG, speed=SLOWER, workdir=tmp_path) as sb, SandboxClient(sb.slack_url) as c:
        yield sb, c


async def test_a_failing_rollout_is_turned_off_at_its_first_step_with_a_critical_alert(slower):
    sandbox, client = slower
    app = App(sandbox, "staging")
    await client.inject_flag("checkout-v2", "on", error_rate=0.2, env="staging")
    d = await rollout_of(client, await flag(client, "alice", "checkout-v2 rollout in staging"))
    assert await wait_state(sandbox, d, "rolled_back", within=90)
    assert share(await app.values("checkout-v2")) == 0.0  # off for everyone

    percents = [c["percent"] for c in flag_changes(sandbox, "checkout-v2", "staging")]
    assert [p for p, _ in itertools.groupby(percents)] == [5, 0], percents  # never past the first step

    async def alert():
        for m in top_level(await client.messages("incidents")):
            if f"#{d}" in m["text"] and "error rate" in m["text"].lower():
                return m
        return None

    await wait_for(alert, 30, what="the critical alert naming the error rate")


async def test_a_healthy_rollout_walks_every_step_to_everyone(slower):
    sandbox, client = slower
    app = App(sandbox, "staging")
    d = await rollout_of(
        client, await flag(client, "alice", "checkout-v2 rollout in staging --steps 10,50,100")
    )
    assert await wait_state(sandbox, d, "succeeded", within=120)
    percents = [c["percent"] for c in flag_changes(sandbox, "checkout-v2", "staging")]
    assert [p for p, _ in itertools.groupby(percents)] == [10, 50, 100], percents
    assert share(await app.values("checkout-v2", USERS[:500])) == 1.0


async def test_kill_turns_every_evaluation_off_by_the_time_it_is_acknowledged(sandbox, client):
    app = App(sandbox, "staging")
    await flag(client, "alice", "checkout-v2 on in staging")
    assert share(await app.values("checkout-v2", USERS[:500])) == 1.0

    body = await flag(client, "carol", 'checkout-v2 kill in staging --reason "checkout errors"')
    assert body.get("response_type") == "in_channel" and "killed" in body["text"], body
    # the first evaluation after the ack already answers off: the snapshot changed before the answer
    assert share(await app.values("checkout-v2", USERS[:500])) == 0.0
    assert app.details("checkout-v2", "user-1").reason == "DISABLED"

    async def warning():
        for m in await client.messages("deploys"):
            if "checkout-v2" in m["text"] and "kill" in m["text"].lower():
                return m
        return None

    await wait_for(warning, 30, what="the kill's warning")
    assert any(c["action"] == "flag_killed" for c in flag_changes(sandbox, "checkout-v2", "staging"))


async def test_dave_cannot_change_or_kill_a_production_flag(sandbox, client):
    app = App(sandbox, "production")
    for text in (
        "checkout-v2 on in production",
        "checkout-v2 5% in production",
        "checkout-v2 kill in production",
    ):
        body = await flag(client, "dave", text)
        assert body.get("response_type") != "in_channel", body
        assert "You need the" in body["text"] and "role" in body["text"], body
    assert db_rows(sandbox, "SELECT * FROM flag_states") == []
    assert share(await app.values("checkout-v2", USERS[:200])) == 0.0


async def test_a_production_rollout_waits_for_someone_else_to_approve(sandbox, client):
    app = App(sandbox, "production")
    d = await rollout_of(client, await flag(client, "alice", "checkout-v2 rollout in production"))
    assert await wait_state(sandbox, d, "awaiting_approval")
    assert share(await app.values("checkout-v2", USERS[:200])) == 0.0  # nothing served before approval

    own = await client.slash("alice", "/deploy", f"approve {d}")
    assert "You approved" not in own["body"]["text"], own
    r = await client.slash("bob", "/deploy", f"approve {d}")
    assert "You approved" in r["body"]["text"], r

    async def serving():
        return share(await app.values("checkout-v2", USERS[:400])) > 0

    await wait_for(serving, 60, what="the rollout's first step to be served")

    # its one message carries the state machine's buttons; on-call's Kill turns every evaluation off
    # (Pause while it runs; Resume if a thin step paused it for too little traffic on a busy machine)
    async def running_message():
        for m in top_level(await client.messages("deploys")):
            shown = json.dumps(m.get("blocks"))
            if (
                f"#{d} " in m["text"]
                and button_label("Kill") in shown
                and (button_label("Pause") in shown or button_label("Resume") in shown)
            ):
                return m
        return None

    m = await wait_for(running_message, 30, what=f"#{d}'s message with Kill and Pause (or Resume)")
    r = await client.click("carol", "deploys", m["ts"], label="Kill")
    assert r["status"] == 200, r

    async def all_off():
        return share(await app.values("checkout-v2", USERS[:400])) == 0.0

    await wait_for(all_off, 30, what="the Kill button to turn the flag off")

    async def ended():
        state = db_rows(sandbox, "SELECT state FROM deployments WHERE id = ?", (d,))[0]["state"]
        return state if state in ("rolled_back", "cancelled", "failed") else None

    assert await wait_for(ended, 60, what="the killed rollout to end") == "rolled_back"
    killed = [c for c in flag_changes(sandbox, "checkout-v2", "production") if c["action"] == "flag_killed"]
    assert len(killed) == 1


async def test_a_rollout_killed_with_its_host_resumes_where_it_was(tmp_path, aws_env):
    """SIGKILL mid-rollout: the restarted bot carries the same rollout on, never back to a lower step and
    never a second rollout; the flag serves the last step's share meanwhile."""
    async with Sandbox(config=CONFIG, speed=SLOWER, workdir=tmp_path) as sb, SandboxClient(sb.slack_url) as c:
        body = await flag(c, "alice", "checkout-v2 rollout in staging --steps 10,50,100")
        d = await rollout_of(c, body)

        async def first_step():
            return flag_changes(sb, "checkout-v2", "staging")

        await wait_for(first_step, 30, what="the rollout's first step")
        assert (await c.bot("kill"))["running"] is False
        served = flag_changes(sb, "checkout-v2", "staging")[-1]["percent"]
        killed_in = db_rows(sb, "SELECT state FROM deployments WHERE id = ?", (d,))[0]["state"]
        assert (await c.bot("start"))["running"] is True
        app = App(sb, "staging")
        assert share(await app.values("checkout-v2", USERS[:500])) > 0  # never turned off meanwhile
        assert await wait_state(sb, d, "succeeded", within=120)
        percents = [
            p
            for p, _ in itertools.groupby(c_["percent"] for c_ in flag_changes(sb, "checkout-v2", "staging"))
        ]
        assert percents == [10, 50, 100], percents
        assert killed_in == "running" or served == 100, killed_in
        assert len(db_rows(sb, "SELECT id FROM deployments WHERE service = 'flag:checkout-v2'")) == 1
