"""Issue 9, part 2: rollbacks and promotions cannot go around the gate. The engine against the sandbox's
moto server, in-process (real engine, store and AWS emulation; only time runs faster), plus the pure
version ordering."""

from __future__ import annotations

import dataclasses

import pytest

from bot.domain import commands as cmds
from bot.domain.checklist import ApprovalPolicy, Item, Policy
from bot.domain.errors import Forbidden, Refused
from bot.domain.machine import State
from bot.domain.versions import compare_versions
from handlers.ui import blocks as slack_ui
from tests import test_engine
from tests.test_engine import EVERYONE, deploy, finished, make_engine

world, store = test_engine.world, test_engine.store  # the engine tests' fixtures: moto world, store

ENGINEER = frozenset({"engineers"})


def rollback(version: str | None = None, emergency: str | None = None) -> cmds.Rollback:
    extra = {"emergency": emergency} if emergency else {}
    return cmds.Rollback("web", "staging", version, False, None, **extra)


@pytest.mark.parametrize(
    ("a", "b", "order"),
    [
        ("v5", "v4", 1),
        ("v2.3.10", "v2.3.9", 1),
        ("v2.3", "v2.3.1", -1),
        ("2.0", "v2.0", 0),
        ("v2.3.0", "v2.3", 0),
        ("V10", "v9", 1),
        ("abc123", "v4", None),
        ("v2.3.1-rc1", "v2.3.1", None),
    ],
)
def test_versions_are_ordered_as_dotted_numbers_or_not_at_all(a, b, order):
    assert compare_versions(a, b) == order


def gated(world, store):
    """The engine with staging gated like production: a manual item and one approval from a release
    manager (staging's access table unchanged)."""
    settings_policy = Policy(
        items=(Item("tests", "Tests passing", "manual"),),
        approvals=ApprovalPolicy(required=1, roles=("release-managers",)),
        access={
            "deploy": ("engineers", "release-managers"),
            "approve": ("release-managers",),
            "rollback": ("engineers", "release-managers", "oncall"),
            "emergency": ("release-managers", "oncall"),
        },
    )
    return make_engine(world, store, policy=settings_policy)


async def through_the_gate(engine, store, d):
    await engine.tick(d.id, "U0ALICE", EVERYONE, {"tests"})
    await engine.approve(d.id, "U0BOB", EVERYONE)
    return await finished(store, d.id)


async def test_a_rollback_to_a_version_that_never_succeeded_there_is_refused_or_breaks_glass(world, store):
    engine, notices = gated(world, store)
    d = await engine.request(deploy("v2"), "U0ALICE", roles=EVERYONE)
    assert (await through_the_gate(engine, store, d)).state == State.SUCCEEDED

    with pytest.raises(Refused) as refused:
        await engine.request(rollback("v77"), "U0ALICE", roles=EVERYONE)
    assert str(refused.value).startswith(
        "v77 never succeeded in staging; known-good: v2 (#1), v1 (replaced by #1). Roll back to one of "
        "those, or deploy v77 through the whole gate (/deploy web v77 to staging), or add --emergency"
    )
    assert [x.id for x in await store.latest()] == [1]  # nothing was created

    with pytest.raises(Forbidden, match="release-managers or oncall role to roll back with --emergency"):
        await engine.request(rollback("v77", emergency="checkout is down"), "U0ALICE", roles=ENGINEER)

    glass = await engine.request(rollback("v77", emergency="checkout is down"), "U0CAROL", roles=EVERYONE)
    glass = await finished(store, glass.id)  # no approval, no tick: break glass skips them
    assert (glass.kind, glass.version, glass.state) == ("rollback", "v77", State.SUCCEEDED)
    assert glass.context["emergency"] == "checkout is down"
    assert [e.details for e in await store.events(glass.id) if e.action == "emergency"] == [
        {"reason": "checkout is down"}
    ]
    said = await notices.all()
    critical = [n.text for n in said if n.deployment_id == glass.id and n.level == "critical"]
    assert any("Emergency rollback by <@U0CAROL>: checkout is down" in t for t in critical), critical


async def test_a_rollback_to_a_known_good_version_skips_the_gate_and_says_why(world, store):
    engine, notices = gated(world, store)
    for version in ("v2", "v3"):
        d = await engine.request(deploy(version), "U0ALICE", roles=EVERYONE)
        assert (await through_the_gate(engine, store, d)).state == State.SUCCEEDED

    back = await engine.request(rollback(), "U0CAROL", roles=frozenset({"oncall"}))
    back = await finished(store, back.id)  # nobody ticked or approved it
    assert (back.version, back.state) == ("v2", State.SUCCEEDED)
    events = await store.events(back.id)
    assert [e.details for e in events if e.action == "gate_skipped"] == [
        {"skipped": "manual items and approvals", "why": "known-good: v2 succeeded in staging as #1"}
    ]
    assert not any(e.action == "emergency" for e in events) and "emergency" not in back.context
    assert not any(n.level == "critical" for n in await notices.all() if n.deployment_id == back.id)
    shown = str(slack_ui.gate_blocks(back, back.context["gate"], waiting=False))
    assert "skipped (rollback to a known-good version)" in shown and "mergency" not in shown
    assert "v2 succeeded in staging as #1" in shown


async def test_a_promotion_that_would_lower_production_needs_allow_downgrade(world, store):
    engine, _ = make_engine(world, store)
    for version in ("v4", "v5"):
        d = await engine.request(deploy(version), "U0ALICE", roles=EVERYONE)
        assert (await finished(store, d.id)).state == State.SUCCEEDED
    back = await finished(store, (await engine.request(rollback("v4"), "U0ALICE", roles=EVERYONE)).id)
    assert (back.id, back.version, back.state) == (3, "v4", State.SUCCEEDED)
    # production ran v5 (its history, as the store keeps it)
    prod = await store.create_deployment(
        service="web", env="production", version="v5", strategy="canary", kind="promote", requested_by="U0BOB"
    )
    for action in ("start", "succeed"):
        await store.transition(prod.id, action, "deploybot")

    promote = cmds.Promote("web", "staging", "production")
    with pytest.raises(Refused) as refused:
        await engine.request(promote, "U0BOB", roles=EVERYONE)
    assert str(refused.value) == (
        "production runs v5; staging's last success is v4 (#3, a rollback). Promoting would lower "
        "production to v4. Add --allow-downgrade to do it."
    )
    assert [x.id for x in await store.latest()] == [4, 3, 2, 1]  # nothing was created

    allowed = await engine.request(
        dataclasses.replace(promote, allow_downgrade=True), "U0BOB", roles=EVERYONE
    )
    assert (allowed.version, allowed.env, allowed.kind) == ("v4", "production", "promote")
    recorded = [(e.actor, e.details) for e in await store.events(allowed.id) if e.action == "allow_downgrade"]
    assert recorded == [("U0BOB", {"from": "v5", "to": "v4", "source": 3})]
    await engine.act(allowed.id, "cancel", "U0BOB")


async def test_unordered_versions_are_judged_by_production_history(world, store):
    engine, _ = make_engine(world, store)
    d = await engine.request(deploy("abc123"), "U0ALICE", roles=EVERYONE)
    assert (await finished(store, d.id)).state == State.SUCCEEDED
    for version in ("abc123", "def456"):  # production ran abc123, then def456
        prod = await store.create_deployment(
            service="web",
            env="production",
            version=version,
            strategy="canary",
            kind="deploy",
            requested_by="U0BOB",
        )
        for action in ("start", "succeed"):
            await store.transition(prod.id, action, "deploybot")
    with pytest.raises(Refused, match="production runs def456; staging's last success is abc123 \\(#1\\)"):
        await engine.request(cmds.Promote("web", "staging", "production"), "U0BOB", roles=EVERYONE)
    d = await engine.request(deploy("fed789"), "U0ALICE", roles=EVERYONE)  # never in production: not lower
    assert (await finished(store, d.id)).state == State.SUCCEEDED
    promoted = await engine.request(cmds.Promote("web", "staging", "production"), "U0BOB", roles=EVERYONE)
    assert promoted.version == "fed789" and "allow_downgrade" not in promoted.context
    await engine.act(promoted.id, "cancel", "U0BOB")


async def test_an_action_the_access_table_does_not_list_needs_the_deploy_role(world, store):
    access = {"deploy": ("engineers", "release-managers")}  # no rollback entry
    engine, _ = make_engine(world, store, policy=Policy(access=access))
    d = await engine.request(deploy("v2"), "U0ALICE", roles=ENGINEER)
    assert (await finished(store, d.id)).state == State.SUCCEEDED
    with pytest.raises(
        Forbidden, match="You need the engineers or release-managers role to roll back in staging"
    ):
        await engine.request(rollback(), "U0DAVE", roles=frozenset())
    refusals = [(e.actor, e.details["action"]) for e in await store.events() if e.action == "refused"]
    assert refusals == [("U0DAVE", "rollback")]
    back = await engine.request(rollback(), "U0ALICE", roles=ENGINEER)
    assert (await finished(store, back.id)).state == State.SUCCEEDED


def test_check_config_says_which_actions_the_deploy_role_covers(tmp_path):
    import subprocess
    import sys

    from bot.config.load import load_settings
    from bot.config.report import access_report
    from tests.conftest import CONFIG

    shipped = subprocess.run(
        [sys.executable, "-m", "bot", "check-config", "--config", str(CONFIG)], capture_output=True, text=True
    )
    assert shipped.returncode == 0
    assert "environments.staging.access: every action listed" in shipped.stdout
    assert "environments.production.access: every action listed" in shipped.stdout

    text = CONFIG.read_text()
    staging_rollback = (
        'rollback = ["engineers", "release-managers", "oncall"]   # /rollback, the Abort button\n'
    )
    trimmed = tmp_path / "trimmed.toml"
    trimmed.write_text(text.replace(staging_rollback, "", 1).replace('lock = ["release-managers"]\n', "", 1))
    assert access_report(load_settings(trimmed, env={})) == [
        "environments.staging.access: rollback not listed: covered by deploy (engineers or release-managers)",
        "environments.production.access: lock not listed: covered by deploy (engineers or release-managers)",
    ]
    start = text.index("[environments.production.access]")
    end = text.index("[environments.production.approvals]")
    open_prod = tmp_path / "open.toml"
    open_prod.write_text(text[:start] + text[end:])
    assert access_report(load_settings(open_prod, env={}))[1] == (
        "warning: environments.production has no access table: anyone may do anything there "
        "(add [environments.production.access] to restrict it)"
    )


def test_the_grammar_takes_emergency_on_rollback_and_allow_downgrade_on_promote():
    vocab = cmds.Vocabulary(("web", "api"), ("staging", "production"), "staging")
    assert cmds.parse("/rollback", 'web in production to v77 --emergency "checkout is down"', vocab) == (
        cmds.Rollback("web", "production", "v77", False, None, "checkout is down")
    )
    assert cmds.parse("/promote", "web from staging to production --allow-downgrade", vocab) == (
        cmds.Promote("web", "staging", "production", allow_downgrade=True)
    )
    with pytest.raises(
        cmds.CommandError, match="--allow-downgrade works with `/promote SERVICE from ENV to ENV`"
    ):
        cmds.parse("/promote", "42 --allow-downgrade", vocab)
    assert "--emergency" in cmds.help_text("/rollback") and "--allow-downgrade" in cmds.help_text("/promote")
