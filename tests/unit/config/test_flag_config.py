"""[flags.KEY], [segments.NAME] and [environments.X.flags]: what a good table gives, and a bad one's error
naming the file, the key and what is expected."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bot.config.load import load_settings, parse_settings
from tests.unit.config.edits import changed, config_error

SHIPPED = Path(__file__).resolve().parents[3] / "config" / "deploybot.toml"

BASE: dict[str, Any] = {
    "environments": {"staging": {"load_balancer": "lb"}, "production": {"load_balancer": "lb2"}},
    "services": {"web": {}},
    "flags": {"checkout-v2": {"services": ["web"]}},
}


def with_(path: str, value: Any) -> dict[str, Any]:
    return changed(BASE, path, value)


error = config_error


def test_a_boolean_flag_needs_nothing_but_its_key():
    s = parse_settings(BASE)
    f = s.flags["checkout-v2"]
    assert (f.type, dict(f.variants), f.default_variant, f.off_variant, f.on_variant) == (
        "boolean",
        {"on": True, "off": False},
        "off",
        "off",
        "on",
    )
    env = s.environments["production"].flags
    assert (env.api_key_env, env.approvals, env.rollout_steps) == (
        "DEPLOYBOT_OFREP_KEY_PRODUCTION",
        0,
        (5, 25, 50, 100),
    )
    assert s.target("flag:checkout-v2", "production").strategy == "flag"
    with pytest.raises(KeyError):
        s.target("flag:nope", "production")


def test_the_shipped_config_declares_the_demo_flags_and_the_keys_come_from_the_environment():
    s = load_settings(SHIPPED, env={"DEPLOYBOT_OFREP_KEY_STAGING": "k-staging-secret"})
    assert set(s.flags) == {"checkout-v2", "search-ranking"}
    assert s.flags["search-ranking"].on_variant == "treatment"
    assert dict(s.secrets.ofrep_keys) == {"staging": "k-staging-secret"}  # production: not served
    assert "k-staging-secret" in s.secrets.values()  # so the log filter hides it
    assert "k-staging-secret" not in repr(s.secrets)
    prod = s.environments["production"].flags
    assert prod.approvals == 1 and prod.approve_above_percent == 10
    # a flag rollout's target has the environment's access, its flags' approvals, and no checklist
    t = s.target("flag:checkout-v2", "production")
    assert t.env.policy.items == () and t.env.policy.approvals.required == 1
    assert t.env.policy.access == s.environments["production"].policy.access
    assert not t.env.policy.guards.require_rollback_target and t.canary_steps == (5, 25, 50, 100)


@pytest.mark.parametrize(
    ("path", "value", "words"),
    [
        ("flags/checkout-v2/type", "bool", "flags.checkout-v2.type: expected one of boolean, string"),
        ("flags/checkout-v2/services", ["wbe"], "'wbe' is not a service"),
        ("flags/checkout-v2/variants", {"on": True, "off": True}, "one true and one false"),
        ("flags/checkout-v2/owners", "x", 'unknown key (did you mean "owner"?)'),
        ("flags/Bad Key", {}, "a flag key is lower-case"),
        (
            "flags/s",
            {"type": "string", "variants": {"a": "x", "b": 2}},
            "flags.s.variants.b: expected a string",
        ),
        (
            "flags/s",
            {"type": "string", "variants": {"a": "x", "b": "y"}},
            "flags.s.default_variant: is required",
        ),
        (
            "flags/s",
            {"type": "string", "variants": {"a": "x", "b": "y", "c": "z"}, "default_variant": "a"},
            "flags.s.on_variant: is required",
        ),
        (
            "flags/s",
            {"type": "number", "variants": {"a": 1, "b": 2}, "default_variant": "c"},
            "one of the variants (a, b)",
        ),
        (
            "segments/beta",
            {"rules": [{"attribute": "plan", "op": "like", "values": ["x"]}]},
            "segments.beta.rules[0].op",
        ),
        (
            "segments/beta",
            {"rules": [{"attribute": "v", "op": "semver_gte", "values": ["1", "2"]}]},
            "takes exactly one value",
        ),
        ("segments/beta", {"rules": []}, "a non-empty list of rules"),
        ("environments/production/flags", {"rollout_steps": [50, 5, 100]}, "a rising list of percentages"),
        ("environments/production/flags", {"rollout_steps": [5, 50]}, "ending at 100"),
        ("environments/production/flags", {"api_key_env": "sk-live-123 abc"}, "never goes in this file"),
        ("environments/production/flags", {"approve_above_percent": 100}, "a percentage 0..99"),
        (
            "environments/production/flags",
            {"analysis": {"min_requests": -1}},
            "environments.production.flags.analysis",
        ),
        ("environments/production/flags", {"metrics": {"namespac": "x"}}, 'did you mean "namespace"'),
    ],
)
def test_a_bad_flag_table_names_file_key_and_what_is_expected(path, value, words):
    message = error(with_(path, value))
    assert message.startswith("deploybot.toml: ") and words in message, message
