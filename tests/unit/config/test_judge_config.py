"""The judge settings of an analysis table (judge, false_rollback_rate, margins, min_bake_seconds), a
service's own judge in one environment, and the refusal of limits a bake can never exceed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bot.config.limits import measurements
from bot.config.load import load_settings, parse_settings
from tests.unit.config.edits import changed, config_error

SHIPPED = Path(__file__).resolve().parents[3] / "config" / "deploybot.toml"
BASE: dict[str, Any] = {
    "environments": {
        "production": {
            "load_balancer": "lb",
            "strategy": "canary",
            "step_bake_seconds": 60,
            "analysis": {"interval_seconds": 30},
        }
    },
    "services": {"web": {}, "api": {}},
}


def test_the_judge_and_its_settings_are_read_with_defaults():
    a = parse_settings(BASE).target("web", "production").analysis
    assert (a.judge, a.false_rollback_rate, a.error_rate_margin, a.latency_margin) == (
        "thresholds",
        0.01,
        0.005,
        0.1,
    )
    data = changed(
        BASE,
        "environments/production/analysis",
        {
            "judge": "sequential",
            "false_rollback_rate": 0.005,
            "error_rate_margin": 0.005,
            "latency_margin": False,
            "min_bake_seconds": 30,
        },
    )
    a = parse_settings(data).target("web", "production").analysis
    assert (a.judge, a.false_rollback_rate, a.error_rate_margin, a.latency_margin, a.min_bake_seconds) == (
        "sequential",
        0.005,
        0.005,
        None,
        30.0,
    )


def test_max_bake_seconds_is_read_off_by_default_and_never_shorter_than_the_bake():
    assert parse_settings(BASE).target("web", "production").analysis.max_bake_seconds == 0.0
    data = changed(BASE, "environments/production/analysis", {"judge": "sequential", "max_bake_seconds": 900})
    assert parse_settings(data).target("web", "production").analysis.max_bake_seconds == 900.0
    bad = changed(data, "environments/production/analysis/max_bake_seconds", -1)
    assert "environments.production.analysis.max_bake_seconds: expected seconds >= 0" in config_error(bad)
    short = changed(data, "environments/production/analysis/max_bake_seconds", 30)  # the bake is 60 s
    message = config_error(short)
    assert "analysis.max_bake_seconds: 30 is shorter than the bake (step_bake_seconds = 60)" in message
    # the thresholds judge never bakes on: the setting is not its business
    parse_settings(changed(short, "environments/production/analysis/judge", "thresholds"))


def test_a_service_may_use_another_judge_in_one_environment():
    data = changed(BASE, "services/api/environments/production", {"judge": "sequential"})
    s = parse_settings(data)
    assert s.target("api", "production").analysis.judge == "sequential"
    assert s.target("web", "production").analysis.judge == "thresholds"


def test_bad_judge_settings_name_the_key():
    bad = changed(BASE, "environments/production/analysis/judge", "bayes")
    assert (
        'environments.production.analysis.judge: expected one of "thresholds", "sequential"'
        in config_error(bad)
    )
    bad = changed(BASE, "services/api/environments/production", {"judge": "kayenta"})
    assert "services.api.environments.production.judge" in config_error(bad)
    bad = changed(BASE, "environments/production/analysis/false_rollback_rate", 0)
    assert "environments.production.analysis.false_rollback_rate" in config_error(bad)


def test_a_bake_takes_one_measurement_per_interval_at_least_one():
    assert [measurements(b, 30) for b in (10, 30, 31, 60, 300)] == [1, 1, 2, 2, 10]


def test_a_failure_limit_the_bake_can_never_exceed_is_refused():
    data = changed(BASE, "environments/production/step_bake_seconds", 30)
    data = changed(data, "environments/production/analysis/failure_limit", 2)
    message = config_error(data)
    assert "environments.production.analysis.failure_limit: 2 can never be exceeded" in message
    assert "takes 1 measurement" in message and "step_bake_seconds = 30" in message
    ok = changed(data, "environments/production/analysis/failure_limit", 0)
    parse_settings(ok)


def test_an_inconclusive_limit_too_and_a_services_shorter_bake():
    data = changed(BASE, "environments/production/analysis/inconclusive_limit", 2)  # 60 s: 2 measurements
    assert "analysis.inconclusive_limit: 2 can never be exceeded" in config_error(data)
    data = changed(BASE, "environments/production/analysis/failure_limit", 1)
    parse_settings(data)  # 2 measurements: one failure tolerated, the second fails it
    short = changed(data, "services/api/environments/production", {"step_bake_seconds": 30})
    message = config_error(short)
    assert (
        "failure_limit: 1 can never be exceeded" in message
        and "services.api.environments.production" in message
    )


def test_the_shipped_config_passes():
    load_settings(SHIPPED, env={})
