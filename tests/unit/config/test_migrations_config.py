"""[services.NAME.migrations] and [services.NAME.integration_tests], with per-environment overrides: what a
good table gives, and a bad one's error naming the file, the key and what is expected."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from bot.config.load import parse_settings
from tests.unit.config.edits import changed, config_error

UP = ["python", "-m", "app.migrate", "up"]
DOWN = ["python", "-m", "app.migrate", "down", "1"]
BASE: dict[str, Any] = {
    "environments": {
        "staging": {"load_balancer": "lb", "rehearse_migrations": True},
        "production": {"load_balancer": "lb2"},
    },
    "services": {
        "api": {
            "migrations": {
                "up": UP,
                "down": DOWN,
                "backup": "rds-snapshot",
                "db_instance": "{service}-{env}",
                "reversible": True,
                "down_on_rollback": True,
                "timeout_seconds": 300,
            }
        },
        "web": {
            "integration_tests": {"http": [{"url": "http://{env}.example/{service}", "expect_body": "ok"}]}
        },
    },
}


def with_(path: str, value: Any) -> dict[str, Any]:
    return changed(BASE, path, value)


error = config_error


def test_a_service_migrations_reach_every_target_of_it():
    s = parse_settings(BASE)
    m = s.target("api", "production").migrations
    assert m is not None
    assert (m.up, m.down, m.backup, m.timeout_seconds, m.reversible, m.down_on_rollback) == (
        tuple(UP),
        tuple(DOWN),
        "rds-snapshot",
        300.0,
        True,
        True,
    )
    assert m.instance("api", "production") == "api-production"
    assert s.target("web", "production").migrations is None
    assert (
        s.environments["staging"].rehearse_migrations and not s.environments["production"].rehearse_migrations
    )
    tests = s.target("web", "staging").integration_tests
    assert tests is not None and tests.command == () and tests.http[0].expect_body == "ok"


def test_an_environment_overrides_only_the_keys_it_gives_or_turns_them_off():
    data = with_("services/api/environments", {"staging": {"migrations": {"backup": "none"}}})
    data["services"]["api"]["environments"]["production"] = {"migrations": False}
    s = parse_settings(data)
    staging = s.target("api", "staging").migrations
    assert staging is not None and staging.backup == "none" and staging.up == tuple(UP)
    assert s.target("api", "production").migrations is None


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        ("services/api/migrations/up", [], "services.api.migrations.up: expected a non-empty list of words"),
        (
            "services/api/migrations/up",
            "python migrate",
            "services.api.migrations.up: expected a non-empty list",
        ),
        (
            "services/api/migrations/backup",
            "tar",
            "services.api.migrations.backup: expected rds-snapshot or none",
        ),
        ("services/api/migrations/db_instance", "{nope}", "bad template '{nope}'"),
        ("services/api/migrations/timeout_seconds", 0, "expected a number of seconds > 0"),
        ("services/api/migrations/rollback", True, 'unknown key (did you mean "down_on_rollback"?)'),
        ("services/web/integration_tests", {}, "give a command or http checks"),
        (
            "services/web/integration_tests/http",
            [{"url": "x", "expect_status": 42}],
            "expected an HTTP status",
        ),
        ("environments/staging/rehearse_migrations", "yes", "expected true or false"),
    ],
)
def test_a_bad_table_is_named_with_what_is_expected(path, value, expected):
    message = error(with_(path, value))
    assert message.startswith("deploybot.toml: ") and expected in message, message


def test_the_way_back_must_exist_before_it_is_promised():
    no_down = copy.deepcopy(BASE)
    del no_down["services"]["api"]["migrations"]["down"]
    assert "services.api.migrations.down: reversible = true needs a down command" in error(no_down)
    not_reversible = with_("services/api/migrations/reversible", False)
    assert "down_on_rollback: needs reversible = true" in error(not_reversible)
    no_instance = copy.deepcopy(BASE)
    del no_instance["services"]["api"]["migrations"]["db_instance"]
    assert 'db_instance: backup = "rds-snapshot" needs the RDS instance' in error(no_instance)
    no_up = with_("services/api/migrations", {"down": DOWN})
    assert "services.api.migrations.up: is required but missing" in error(no_up)
