"""[pipelines.NAME]: what a good table gives, what check-config reports about it, and a bad one's error
naming the file, the key and what is expected; the integration tests' `url` and what a task is told."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bot.config.load import load_settings, parse_settings
from bot.config.report import pipeline_report
from tests.unit.config.edits import changed, config_error

SHIPPED = Path(__file__).resolve().parents[3] / "config" / "deploybot.toml"
BASE: dict[str, Any] = {
    "environments": {
        "dev": {"load_balancer": "lb0"},
        "staging": {"load_balancer": "lb1"},
        "production": {"load_balancer": "lb2"},
    },
    "services": {
        "web": {
            "integration_tests": {"command": ["pytest", "-m", "integration"], "url": "https://{env}.example"}
        },
        "api": {},
    },
    "pipelines": {"release": {"environments": ["dev", "staging", "production"], "services": ["web"]}},
}


def with_(path: str, value: Any) -> dict[str, Any]:
    return changed(BASE, path, value)


error = config_error


def test_a_pipeline_keeps_its_environments_in_order_and_its_services():
    s = parse_settings(BASE)
    p = s.pipelines["release"]
    assert (p.environments, p.services, p.windows) == (("dev", "staging", "production"), ("web",), False)
    assert p.covers("web") and not p.covers("api")
    every = parse_settings(with_("pipelines/release", {"environments": ["staging", "production"]}))
    assert every.pipelines["release"].services == ("web", "api")  # none named: every service
    assert parse_settings({k: v for k, v in BASE.items() if k != "pipelines"}).pipelines == {}


def test_the_task_is_told_where_it_runs():
    tests = parse_settings(BASE).target("web", "staging").integration_tests
    assert tests is not None and tests.environment("web", "staging", "v2") == {
        "DEPLOYBOT_SERVICE": "web",
        "DEPLOYBOT_ENV": "staging",
        "DEPLOYBOT_VERSION": "v2",
        "DEPLOYBOT_ENV_URL": "https://staging.example",
    }


def test_check_config_reports_what_runs_between_the_environments_and_warns_of_nothing():
    s = parse_settings(with_("pipelines/all", {"environments": ["staging", "production"], "windows": True}))
    assert pipeline_report(s) == [
        "pipelines.release: dev → staging → production for web",
        "pipelines.release: web: integration tests after dev, staging",
        "pipelines.all: staging → production for web, api (later environments wait for their window)",
        "pipelines.all: web: integration tests after staging",
        "warning: pipelines.all: api has no integration tests before production: only its deployments' "
        "own checks stop a bad version (add [services.api.integration_tests])",
    ]


def test_the_shipped_config_takes_web_through_staging_to_production():
    s = load_settings(SHIPPED, env={})
    assert s.pipelines["release"].environments == ("staging", "production")
    tests = s.target("web", "staging").integration_tests
    assert tests is not None and tests.command == ("python", "-m", "app.integration")


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        ("pipelines/release/environments", ["staging"], "pipelines.release.environments: expected at least two"),
        ("pipelines/release/environments", ["staging", "prod"], 'pipelines.release.environments[1]: no environment \'prod\' (did you mean "production"?)'),
        ("pipelines/release/environments", ["staging", "staging"], "pipelines.release.environments[1]: 'staging' is named twice"),
        ("pipelines/release/environments", "staging", "pipelines.release.environments: expected at least two"),
        ("pipelines/release/services", ["wbe"], 'pipelines.release.services[0]: no service \'wbe\' (did you mean "web"?)'),
        ("pipelines/release/services", [], "pipelines.release.services: expected a non-empty list of services"),
        ("pipelines/release/windows", "yes", "pipelines.release.windows: expected true or false"),
        ("pipelines/release/enviroments", 2, 'pipelines.release.enviroments: unknown key (did you mean "environments"?)'),
        ("pipelines/bad name", {"environments": ["dev", "staging"]}, "pipelines.bad name: a pipeline's name is one word"),
        ("pipelines", ["release"], "pipelines: expected a table"),
        ("services/web/integration_tests/url", "https://{region}.example", "services.web.integration_tests.url: bad template"),
    ],
)  # fmt: skip
def test_a_bad_pipeline_is_refused_naming_the_file_and_the_key(path, value, expected):
    message = error(with_(path, value))
    assert message.startswith("deploybot.toml: ") and expected in message, message
