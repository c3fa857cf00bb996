"""Checklist, approvals and access as pure judgement: expiry, four eyes, roles, emergencies, config errors."""

import pytest

from bot.config.policy import parse_policy, parse_roles
from bot.config.tables import ConfigError
from bot.domain.checklist import Approval, Item, ItemState, Policy, Roles, readiness
from bot.domain.checklist import ApprovalPolicy as AP

ROLES = Roles(
    users={"rm": ("U_LEAD",), "eng": ()}, groups={"rm": ("release-managers",), "eng": ("engineers",)}
)
POLICY = Policy(
    items=(Item("tests", "Tests passing", "manual"), Item("mon", "Monitoring", "automatic", "no_alarms")),
    approvals=AP(required=1, roles=("rm",), expire_after_seconds=3600),
)
NOW = 1_800_000_000.0
DONE = {"tests": ItemState("tests", True, "U_ALICE"), "mon": ItemState("mon", True, "deploybot")}


@pytest.mark.parametrize(
    ("approvals", "states", "emergency", "ready", "waiting"),
    [
        ([Approval("U_BOB", NOW - 60)], DONE, False, True, ""),
        ([], DONE, False, False, "1 approval"),
        (
            [Approval("U_ALICE", NOW - 60)],
            DONE,
            False,
            False,
            "1 approval",
        ),  # the requester's own never counts
        ([Approval("U_BOB", NOW - 3601)], DONE, False, False, "1 approval"),  # expired
        ([Approval("U_BOB", NOW - 60, voided=True)], DONE, False, False, "1 approval"),  # version changed
        ([Approval("U_BOB", NOW - 60)], {"mon": DONE["mon"]}, False, False, "Tests passing"),
        ([], {"mon": DONE["mon"]}, True, True, ""),  # emergency: manual items and approvals skipped
        ([], {"tests": DONE["tests"]}, True, False, "Monitoring"),  # ... but never automatic ones
    ],
)
def test_readiness(approvals, states, emergency, ready, waiting):
    r = readiness(POLICY, states, approvals, "U_ALICE", NOW, emergency)
    assert r.ready is ready
    assert r.waiting_for() == waiting or waiting in r.waiting_for()


def test_two_approvals_must_come_from_two_people():
    policy = Policy(approvals=AP(required=2, roles=("rm",)))
    same_twice = [Approval("U_BOB", NOW - 10), Approval("U_BOB", NOW - 5)]
    assert readiness(policy, {}, same_twice, "U_ALICE", NOW).approvals_needed == 1
    assert readiness(policy, {}, [*same_twice, Approval("U_CAROL", NOW)], "U_ALICE", NOW).ready


def test_roles_come_from_users_and_groups():
    members = {"release-managers": ["U_BOB"], "engineers": ["U_ALICE", "U_BOB"]}
    assert ROLES.of("U_BOB", members) == {"rm", "eng"}
    assert ROLES.of("U_LEAD", members) == {"rm"}
    assert ROLES.of("U_DAVE", members) == set()
    policy = Policy(access={"approve": ("rm",)})
    assert policy.allowed("approve", {"rm"}) and not policy.allowed("approve", {"eng"})
    assert not policy.allowed("deploy", set())  # an action not listed is closed (issue 9)


def test_an_unlisted_action_needs_the_deploy_roles_and_no_access_table_is_open():
    policy = Policy(access={"deploy": ("eng",), "approve": ("rm",)})
    assert policy.allowed("rollback", {"eng"}) and not policy.allowed("rollback", set())
    assert not policy.allowed("rollback", {"rm"})  # approve's roles do not cover other actions
    assert policy.needed_roles("emergency") == ("eng",)
    assert policy.implicit_actions() == (
        "promote",
        "rollback",
        "lock",
        "override_freeze",
        "emergency",
        "flag",
        "kill_flag",
    )
    # the kill switch is a rollback: unlisted, it needs rollback's roles when those are listed
    assert Policy(access={"deploy": ("eng",), "rollback": ("oncall",)}).needed_roles("kill_flag") == (
        "oncall",
    )
    assert policy.needed_roles("kill_flag") == ("eng",)
    nobody = Policy(access={"approve": ("rm",)})  # a table without deploy: unlisted actions are closed to all
    assert not nobody.allowed("rollback", {"eng", "rm"}) and nobody.needed_roles("rollback") == ()
    assert Policy().allowed("rollback", set()) and Policy().implicit_actions() == ()  # no table: open
    parsed = parse_policy({"access": {"deploy": ["eng"]}}, "c.toml", "environments.staging", "staging", ROLES)
    assert not parsed.allowed("rollback", set()) and parsed.allowed("rollback", {"eng"})
    assert parse_policy({}, "c.toml", "environments.dev", "dev", ROLES).access is None


def test_production_gets_guards_by_default_and_staging_does_not():
    assert parse_policy(
        {}, "c.toml", "environments.production", "production", ROLES
    ).guards.refuse_all_at_once
    assert not parse_policy({}, "c.toml", "environments.staging", "staging", ROLES).guards.refuse_all_at_once


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            {"approvals": {"required": 1, "roles": ["admins"]}},
            "approvals.roles: unknown role 'admins' (roles: eng, rm)",
        ),
        ({"approvals": {"required": 1}}, "approvals.roles: approvals are required, so say who may approve"),
        ({"access": {"deploi": ["eng"]}}, "access.deploi: unknown action"),
        (
            {"checklist": [{"id": "x", "label": "X", "kind": "automatic"}]},
            "checklist[0].check: an automatic item needs",
        ),
        (
            {"checklist": [{"id": "x", "label": "X", "kind": "sometimes"}]},
            'checklist[0].kind: expected "manual" or',
        ),
        ({"checklist": [{"id": f"i{n}", "label": f"I{n}"} for n in range(11)]}, "at most 10 manual items"),
        ({"checklist": [{"id": "a", "label": "A"}, {"id": "a", "label": "B"}]}, "item ids must be unique"),
    ],
)
def test_bad_policy_config_names_the_key(raw, message):
    with pytest.raises(ConfigError) as err:
        parse_policy(raw, "c.toml", "environments.production", "production", ROLES)
    assert message in str(err.value) and str(err.value).startswith("c.toml: environments.production.")


def test_roles_config():
    roles = parse_roles({"rm": {"groups": ["@release-managers"], "users": ["U1"]}}, "c.toml")
    assert roles.groups["rm"] == ("release-managers",) and roles.users["rm"] == ("U1",)
    with pytest.raises(ConfigError, match="roles.rm.grups: unknown key"):
        parse_roles({"rm": {"grups": []}}, "c.toml")
