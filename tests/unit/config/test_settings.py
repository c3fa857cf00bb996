"""Config: the shipped example loads; every kind of bad config names file, key and what is wrong."""

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from bot.config.load import load_settings, parse_settings
from bot.config.model import Secrets
from bot.config.tables import ConfigError

EXAMPLE = Path(__file__).parents[3] / "config" / "deploybot.toml"


def example() -> dict:
    return tomllib.loads(EXAMPLE.read_text())


def test_example_config_loads_and_resolves_targets():
    s = load_settings(EXAMPLE, env={})
    assert set(s.services) == {"web", "api"} and set(s.environments) == {"staging", "production"}
    t = s.target("web", "production")
    assert t.bake_seconds == 180  # per-service override beats the environment's 120
    assert s.target("api", "production").bake_seconds == 120
    assert (t.ecs_service("green"), t.target_group("blue"), t.task_family) == (
        "web-green",
        "web-production-blue",
        "web-production",
    )
    assert t.image("v2.3.1") == "web:v2.3.1"
    assert t.deployment_configuration.maximum_percent == 150


def test_endpoint_and_secrets_come_from_the_environment():
    env = {"DEPLOYBOT_AWS_ENDPOINT": "http://127.0.0.1:1", "SLACK_BOT_TOKEN": "xoxb-secret-value"}
    s = load_settings(EXAMPLE, env=env)
    assert s.aws.endpoint_url == "http://127.0.0.1:1"
    assert s.secrets.bot_token == "xoxb-secret-value"
    assert "xoxb-secret-value" not in repr(s) and "xoxb-secret-value" not in repr(Secrets.from_env(env))


def mutate(path: list[str], value, delete: bool = False) -> dict:
    data = example()
    node = data
    for key in path[:-1]:
        node = node[key]
    if delete:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return data


@pytest.mark.parametrize(
    ("path", "value", "delete", "expected"),
    [
        (
            ["environments", "staging", "bake_seconds"],
            "ten",
            False,
            "environments.staging.bake_seconds: expected a number of seconds >= 0, got 'ten'",
        ),
        (["environments", "staging", "bake_seconds"], -5, False, "environments.staging.bake_seconds"),
        (
            ["environments", "production", "strategy"],
            "yolo",
            False,
            "environments.production.strategy: expected one of rolling, blue-green, canary, got 'yolo'",
        ),
        (
            ["environments", "production", "load_balancer"],
            None,
            True,
            "environments.production.load_balancer: is required but missing",
        ),
        (
            ["environments", "staging", "bake_secnds"],
            3,
            False,
            'environments.staging.bake_secnds: unknown key (did you mean "bake_seconds"?)',
        ),
        (
            ["environments", "staging", "deployment_configuration", "maximum_percent"],
            300,
            False,
            "maximum_percent: expected an integer 100..200, got 300",
        ),
        (
            ["services", "web", "environments", "prod"],
            {"bake_seconds": 1},
            False,
            'services.web.environments.prod: no such environment (did you mean "production"?)',
        ),
        (
            ["services", "web", "ecs_service"],
            "{service}-{colour}",
            False,
            "services.web.ecs_service: bad template",
        ),
        (
            ["bot", "default_environment"],
            "qa",
            False,
            "bot.default_environment: 'qa' is not one of the environments",
        ),
        (["aws", "max_attempts"], True, False, "aws.max_attempts: expected an integer 1..20, got True"),
        (["alerts", "critical"], "incidents", False, "alerts.critical: expected a list of channel names"),
        (["services"], {}, False, "services: at least one"),
    ],
)
def test_bad_config_names_key_and_value(path, value, delete, expected):
    with pytest.raises(ConfigError) as err:
        parse_settings(mutate(path, value, delete), "conf.toml")
    assert str(err.value).startswith("conf.toml: ")
    assert expected in str(err.value)


def test_check_config_cli_exit_codes(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(EXAMPLE.read_text().replace('strategy = "rolling"', 'strategy = "big-bang"', 1))
    run = [sys.executable, "-m", "bot", "check-config", "--config"]
    ok = subprocess.run(run + [str(EXAMPLE)], capture_output=True, text=True)
    assert ok.returncode == 0 and "OK" in ok.stdout
    out = subprocess.run(run + [str(bad)], capture_output=True, text=True)
    assert out.returncode != 0
    assert f"{bad}: environments.staging.strategy: expected one of rolling" in out.stderr
    assert "Traceback" not in out.stderr
    broken = tmp_path / "broken.toml"
    broken.write_text("[bot\n")
    out = subprocess.run(run + [str(broken)], capture_output=True, text=True)
    assert out.returncode != 0 and "invalid TOML" in out.stderr and "Traceback" not in out.stderr
