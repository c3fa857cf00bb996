"""Loading a service's one-off tasks: `[services.NAME.migrations]` (the schema change a version brings,
its way back and the backup before it) and `[services.NAME.integration_tests]` (what proves an
environment works after a deploy), each overridable per environment under
`[services.NAME.environments.ENV.*]`; errors name the file, the key and what is expected."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bot.config.tables import ConfigError, _show, _Table

BACKUPS = ("rds-snapshot", "none")
_NUMBER = (int, float)


@dataclass(frozen=True)
class Migrations:
    """`up` runs with the NEW image before any slot starts; `down` (the new image knows how to undo its
    own change) runs after traffic went back, where `reversible` and `down_on_rollback`; `backup` comes
    first ("rds-snapshot" of `db_instance`, a template of {service} and {env})."""

    up: tuple[str, ...]
    down: tuple[str, ...] = ()
    backup: str = "none"
    db_instance: str | None = None
    timeout_seconds: float = 900.0
    reversible: bool = False
    down_on_rollback: bool = False

    def instance(self, service: str, env: str) -> str | None:
        return self.db_instance.format(service=service, env=env) if self.db_instance else None


@dataclass(frozen=True)
class HttpCheck:
    """A request the environment must answer as expected (url may use {service}, {env}, {version})."""

    url: str
    expect_status: int = 200
    expect_body: str | None = None
    timeout_seconds: float = 60.0


@dataclass(frozen=True)
class IntegrationTests:
    """`command`: a one-off task of the deployed image in the environment, given DEPLOYBOT_SERVICE,
    DEPLOYBOT_ENV, DEPLOYBOT_VERSION and (with `url`, a template of {service}, {env}, {version})
    DEPLOYBOT_ENV_URL in its environment; `http`: requests checked from the bot. Either or both."""

    command: tuple[str, ...] = ()
    http: tuple[HttpCheck, ...] = ()
    timeout_seconds: float = 600.0
    url: str | None = None

    def environment(self, service: str, env: str, version: str) -> dict[str, str]:
        """What the task is told about where it runs."""
        told = {"DEPLOYBOT_SERVICE": service, "DEPLOYBOT_ENV": env, "DEPLOYBOT_VERSION": version}
        if self.url:
            told["DEPLOYBOT_ENV_URL"] = self.url.format(service=service, env=env, version=version)
        return told


def _command(t: _Table, name: str, default: Any = ...) -> tuple[str, ...]:
    value = t.get(
        name,
        list,
        default,
        lambda v: bool(v) and all(isinstance(a, str) and a for a in v),
        'a non-empty list of words, e.g. ["python", "-m", "app.migrate", "up"]',
    )
    return tuple(value) if value is not None else ()


def _template(t: _Table, name: str, value: str | None, keys: str) -> str | None:
    if value is None:
        return None
    try:
        value.format(service="s", env="e", version="v")
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError(
            t.path, t.key(name), f"bad template {value!r}: only {keys} may be used ({exc})"
        ) from None
    return value


def parse_migrations(raw: Any, path: str, prefix: str, base: Migrations | None = None) -> Migrations | None:
    """A `migrations` table (or `false`: none here). Over `base` (the service's own, for an environment's
    override) only the keys given change."""
    if raw is False:
        return None
    t = _Table(path, prefix, raw)
    given = {k for k in t.data}
    up = _command(t, "up", None if base is not None else ...)
    down = _command(t, "down", None)
    found = Migrations(
        up=up or (base.up if base else ()),
        down=down or (base.down if base else ()),
        backup=t.get(
            "backup", str, base.backup if base else "none", lambda v: v in BACKUPS, " or ".join(BACKUPS)
        ),
        db_instance=_template(
            t,
            "db_instance",
            t.get("db_instance", str, base.db_instance if base else None),
            "{service}, {env}",
        ),
        timeout_seconds=float(
            t.get(
                "timeout_seconds",
                _NUMBER,
                base.timeout_seconds if base else 900,
                lambda v: v > 0,
                "a number of seconds > 0",
            )
        ),
        reversible=t.get("reversible", bool, base.reversible if base else False),
        down_on_rollback=t.get("down_on_rollback", bool, base.down_on_rollback if base else False),
    )
    t.finish()
    if found.reversible and not found.down:
        raise ConfigError(path, t.key("down"), "reversible = true needs a down command")
    if found.down_on_rollback and not found.reversible:
        raise ConfigError(path, t.key("down_on_rollback"), "needs reversible = true (and a down command)")
    if found.backup == "rds-snapshot" and not found.db_instance:
        raise ConfigError(
            path, t.key("db_instance"), 'backup = "rds-snapshot" needs the RDS instance to snapshot'
        )
    if base is not None and not given:
        return base
    return found


def parse_integration_tests(raw: Any, path: str, prefix: str) -> IntegrationTests | None:
    """An `integration_tests` table (or `false`: none here)."""
    if raw is False:
        return None
    t = _Table(path, prefix, raw)
    command = _command(t, "command", None)
    checks = []
    raw_http = t.get("http", list, [])
    for i, item in enumerate(raw_http):
        c = _Table(path, f"{t.key('http')}[{i}]", item)
        checks.append(
            HttpCheck(
                url=_template(c, "url", c.get("url", str), "{service}, {env}, {version}") or "",
                expect_status=c.get("expect_status", int, 200, lambda v: 100 <= v <= 599, "an HTTP status"),
                expect_body=c.get("expect_body", str, None),
                timeout_seconds=float(
                    c.get("timeout_seconds", _NUMBER, 60, lambda v: v > 0, "a number of seconds > 0")
                ),
            )
        )
        c.finish()
    found = IntegrationTests(
        command=command,
        http=tuple(checks),
        timeout_seconds=float(
            t.get("timeout_seconds", _NUMBER, 600, lambda v: v > 0, "a number of seconds > 0")
        ),
        url=_template(t, "url", t.get("url", str, None), "{service}, {env}, {version}"),
    )
    t.finish()
    if not found.command and not found.http:
        raise ConfigError(
            path, prefix, f"give a command or http checks (or false for none), got {_show(raw)}"
        )
    return found
