"""check-config on feature flags: what it says about the declared flags, segments and each environment's
flag policy (the API key's variable and whether it is set, never the key), and a bad [flags] /
[segments] / [environments.X.flags] table reported like every other config error: one line naming the
file and the key, exit code 2, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot.__main__ import main
from bot.config.load import load_settings, parse_settings
from bot.config.report import flags_report

ROOT = Path(__file__).resolve().parents[3]
SHIPPED = ROOT / "config" / "deploybot.toml"  # not from tests.conftest: that one loads moto
SECRET = "k-staging-5ecret-value"


def check_config(path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DEPLOYBOT_")}
    return subprocess.run(
        [sys.executable, "-m", "bot", "check-config", "--config", str(path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**clean, **env},
        timeout=60,
    )


def test_the_report_lists_flags_segments_and_each_environment_s_flag_policy():
    s = load_settings(SHIPPED, env={"DEPLOYBOT_OFREP_KEY_STAGING": SECRET})
    assert flags_report(s) == [
        "flags.checkout-v2: boolean; variants on, off (default: off, when off: off, turned on: on); "
        "services web; owner payments",
        "flags.search-ranking: string; variants control, treatment (default: control, when off: control, "
        "turned on: treatment); services web; owner search",
        "segments.beta: plan=beta,staff",
        "environments.staging.flags: changed by engineers or release-managers, killed by engineers or "
        "release-managers or oncall; changes and rollouts apply at once (no approvals); "
        "rollout 5% → 25% → 50% → 100%, 30s per step; OFREP API key from $DEPLOYBOT_OFREP_KEY_STAGING (set)",
        "environments.production.flags: changed by engineers or release-managers, killed by engineers or "
        "release-managers or oncall; rollouts and changes giving more than 10% the on variant wait for "
        "1 approval (release-managers, never the requester); turning off never waits; "
        "rollout 5% → 25% → 50% → 100%, 60s per step; "
        "OFREP API key from $DEPLOYBOT_OFREP_KEY_PRODUCTION (not set: its flags are not served)",
    ]


def test_no_flags_no_access_table_and_rollout_only_approvals_read_plainly():
    s = parse_settings(
        {
            "environments": {"dev": {"load_balancer": "lb", "flags": {"approvals": 2, "rollout_steps": [50, 100],
                                                                      "api_key_env": "DEV_FLAGS_KEY"}}},
            "services": {"web": {}},
        },
        "deploybot.toml",
        env={},
    )  # fmt: skip
    assert flags_report(s) == [
        "flags: none declared",
        "segments: none declared",
        "environments.dev.flags: changed by anyone, killed by anyone; rollouts wait for 2 approvals "
        "(anyone else, never the requester); turning off never waits; rollout 50% → 100%, 60s per step; "
        "OFREP API key from $DEV_FLAGS_KEY (not set: its flags are not served)",
    ]


def test_config_text_cannot_drive_the_terminal():
    s = parse_settings(
        {
            "environments": {"dev": {"load_balancer": "lb"}},
            "services": {"web": {}},
            "flags": {"x": {"owner": "team\x1b[2J\nrm -rf"}},
        },
        "deploybot.toml",
        env={},
    )
    assert flags_report(s)[0].endswith("owner team [2J rm -rf")


def test_check_config_prints_the_flags_and_never_the_key():
    out = check_config(SHIPPED, DEPLOYBOT_OFREP_KEY_STAGING=SECRET)
    assert out.returncode == 0, out.stderr
    assert "flags.checkout-v2: boolean" in out.stdout and "segments.beta: plan=beta,staff" in out.stdout
    assert "$DEPLOYBOT_OFREP_KEY_STAGING (set)" in out.stdout
    assert "$DEPLOYBOT_OFREP_KEY_PRODUCTION (not set: its flags are not served)" in out.stdout
    assert SECRET not in out.stdout + out.stderr
    assert "environments.staging.access: every action listed" in out.stdout  # the access report still runs


BAD = [
    ('type = "boolean"', 'type = "bool"', "flags.checkout-v2.type: expected one of boolean, string, number, object, got 'bool'"),
    ('[flags.search-ranking]', '[flags."Search Ranking"]', "flags.Search Ranking: a flag key is lower-case letters"),
    ('variants = { control = "classic", treatment = "learned" }', 'variants = { control = "classic" }',
     "flags.search-ranking.variants: expected a table of at least two variants"),
    ('default_variant = "control"', 'default_variant = "contrl"', "flags.search-ranking.default_variant: expected one of the variants"),
    ('services = ["web"]\n# variants', 'services = ["wbe"]\n# variants', "flags.checkout-v2.services: 'wbe' is not a service"),
    ('owner = "payments"', 'owner = "payments"\ncolour = "red"', "flags.checkout-v2.colour: unknown key"),
    ('op = "in"', 'op = "regex"', "segments.beta.rules[0].op: expected one of equals, in, not_in, starts_with, semver_gte"),
    ('values = ["beta", "staff"]', 'values = "beta"', "segments.beta.rules[0].values: expected a non-empty list"),
    ('rules = [{ attribute', 'rules = [5]\nx = [{ attribute', "segments.beta.rules[0]: expected a table, got 5"),
    ("rollout_steps = [5, 25, 50, 100]   # /flag", "rollout_steps = [50, 25, 100]   # /flag",
     "environments.staging.flags.rollout_steps: expected a rising list of percentages 1..100 ending at 100"),
    ("approve_above_percent = 10", "approve_above_percent = 150", "environments.production.flags.approve_above_percent"),
    ("approvals = 1                      # a rollout", "approvals = 9                      # a rollout",
     "environments.production.flags.approvals: expected an integer 0..5"),
    ("# api_key_env", 'api_key_env = "not a name"\n# api_key_env', "environments.staging.flags.api_key_env: expected an environment variable's name"),
]  # fmt: skip


@pytest.mark.parametrize(("find", "replace", "expected"), BAD)
def test_a_bad_flag_table_is_one_config_error_line_naming_file_and_key(
    tmp_path, capsys, find, replace, expected
):
    text = SHIPPED.read_text()
    assert find in text, find
    bad = tmp_path / "deploybot.toml"
    bad.write_text(text.replace(find, replace, 1))
    assert main(["check-config", "--config", str(bad)]) == 2  # the CLI's own entry, in this process
    out = capsys.readouterr()
    assert out.err.startswith(f"config error: {bad}: "), out.err
    assert expected in out.err, out.err
    assert out.err.count("\n") == 1 and out.out == ""


def test_the_process_exits_2_with_no_traceback(tmp_path):
    bad = tmp_path / "deploybot.toml"
    bad.write_text(SHIPPED.read_text().replace('op = "in"', 'op = "regex"', 1))
    out = check_config(bad)
    assert out.returncode == 2 and out.stdout == ""
    assert (
        out.stderr == f"config error: {bad}: segments.beta.rules[0].op: expected one of equals, in, not_in, "
        "starts_with, semver_gte, got 'regex'\n"
    )
