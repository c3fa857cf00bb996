"""The TOML loader: a file becomes a frozen Settings. A bad config raises ConfigError naming the file, the key and what is wrong with its value; unknown keys get a did-you-mean."""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bot.config.analysis import from_toml as analysis_from_toml
from bot.config.evidence import parse_evidence, parse_providers
from bot.config.flags import parse_env_flags, parse_flags, parse_segments
from bot.config.limits import check_limits
from bot.config.migrations import parse_integration_tests, parse_migrations
from bot.config.model import (
    AwsSettings,
    DeploymentConfiguration,
    Environment,
    Secrets,
    Service,
    Settings,
    SmokeCheck,
)
from bot.config.pipelines import parse_pipelines
from bot.config.policy import alerts_from_table, parse_policy, parse_roles
from bot.config.tables import ConfigError, _show, _Table
from bot.config.timing import parse_freezes, parse_windows
from bot.config.verification import verification_settings
from bot.domain.checklist import Roles
from bot.domain.judging import JUDGES
from bot.domain.strategies import STRATEGIES

DEFAULT_CONFIG = Path("config/deploybot.toml")


# ---------------------------------------------------------------------------------------------- reading


_NUMBER = (int, float)
_SECONDS: dict[str, Any] = {"check": lambda v: v >= 0, "expect": "a number of seconds >= 0"}


def _strategy(t: _Table, name: str, default: Any = ...) -> Any:
    return t.get(name, str, default, lambda v: v in STRATEGIES, "one of " + ", ".join(STRATEGIES))


def _canary_steps(t: _Table, name: str, default: Any = ...) -> tuple[int | str, ...]:
    def ok(v: list) -> bool:
        weights = [w for w in v if w != "pause"]
        return (
            bool(weights)
            and all(isinstance(w, int) and not isinstance(w, bool) and 0 < w <= 100 for w in weights)
            and weights == sorted(set(weights))
            and weights[-1] == 100
        )

    value = t.get(
        name,
        list,
        default,
        ok,
        'rising weights 1..100 ending at 100, with optional "pause" (e.g. [5, 25, "pause", 50, 100])',
    )
    return tuple(value)


def _smoke_checks(path: str, t: _Table, env: Mapping[str, str]) -> tuple[SmokeCheck, ...]:
    t.seen.add("smoke_checks")
    raw = t.data.get("smoke_checks", [])
    if not isinstance(raw, list):
        raise ConfigError(path, t.key("smoke_checks"), f"expected a list of tables, got {_show(raw)}")
    checks = []
    for i, item in enumerate(raw):
        c = _Table(path, f"{t.key('smoke_checks')}[{i}]", item)
        url = _expand(path, c.key("url"), c.get("url", str, ..., lambda v: bool(v.strip()), "a URL"), env)
        try:
            url.format(service="s", env="e", slot="x", version="v")
        except (KeyError, IndexError, ValueError):
            raise ConfigError(
                path,
                c.key("url"),
                f"bad template {url!r}: only {{service}}, {{env}}, {{slot}}, {{version}} may be used",
            ) from None
        checks.append(
            SmokeCheck(
                url=url,
                expect_status=c.get("expect_status", int, 200, lambda v: 100 <= v <= 599, "an HTTP status"),
                expect_body=c.get("expect_body", str, None),
                timeout_seconds=float(c.get("timeout_seconds", _NUMBER, 60, lambda v: v > 0, "seconds > 0")),
            )
        )
        c.finish()
    return tuple(checks)


def _expand(path: str, key: str, value: str, env: Mapping[str, str]) -> str:
    """${VAR} or ${VAR:-default} from the environment (where a URL differs per machine, like the sandbox's)."""

    def sub(m: re.Match) -> str:
        name, default = m.group(1), m.group(3)
        if name in env:
            return env[name]
        if default is not None:
            return default
        raise ConfigError(
            path, key, f"${{{name}}} is not set in the environment (or give ${{{name}:-default}})"
        )

    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:-([^}]*))?\}", sub, value)


def _environment(
    path: str, name: str, t: _Table, env: Mapping[str, str] | None = None, roles: Roles | None = None
) -> Environment:
    windows = parse_windows(t.data.get("windows"), path, t.key("windows"))
    t.seen.add("windows")
    policy_keys = [k for k in ("checklist", "approvals", "access", "guards") if k in t.data]
    t.seen.update(("checklist", "approvals", "access", "guards", "flags"))
    policy = parse_policy({k: t.data[k] for k in policy_keys}, path, t.prefix, name, roles or Roles())
    analysis = analysis_from_toml(t.table("analysis").data, path, t.key("analysis"))
    flags = parse_env_flags(t.data.get("flags"), path, t.key("flags"), name, analysis)
    dc = t.table("deployment_configuration")
    deployment_configuration = DeploymentConfiguration(
        maximum_percent=dc.get("maximum_percent", int, 200, lambda v: 100 <= v <= 200, "an integer 100..200"),
        minimum_healthy_percent=dc.get(
            "minimum_healthy_percent", int, 100, lambda v: 0 <= v <= 100, "an integer 0..100"
        ),
        circuit_breaker=dc.get("circuit_breaker", bool, True),
    )
    dc.finish()
    environment = Environment(
        name=name,
        cluster=t.get("cluster", str, name),
        load_balancer=t.get("load_balancer", str, ""),
        listener_port=t.get("listener_port", int, 80, lambda v: 0 < v < 65536, "a port 1..65535"),
        channel=t.get("channel", str, "").lstrip("#"),
        strategy=_strategy(t, "strategy", "rolling"),
        bake_seconds=float(t.get("bake_seconds", _NUMBER, 60, **_SECONDS)),
        rollout_timeout_seconds=float(
            t.get("rollout_timeout_seconds", _NUMBER, 900, lambda v: v > 0, "a number of seconds > 0")
        ),
        poll_seconds=float(t.get("poll_seconds", _NUMBER, 5, lambda v: v > 0, "a number of seconds > 0")),
        deployment_configuration=deployment_configuration,
        aws_role_arn=t.get("aws_role_arn", str, None),
        canary_steps=_canary_steps(t, "canary_steps", [5, 25, 50, 100]),
        step_bake_seconds=float(t.get("step_bake_seconds", _NUMBER, 60, **_SECONDS)),
        keep_warm_seconds=float(t.get("keep_warm_seconds", _NUMBER, 300, **_SECONDS)),
        analysis=analysis,
        smoke_checks=_smoke_checks(path, t, os.environ if env is None else env),
        policy=policy,
        windows=windows,
        flags=flags,
        rehearse_migrations=t.get("rehearse_migrations", bool, False),
        **verification_settings(t, name),
        image_check=t.get("image_check", bool, False),
        ci_poll_seconds=float(
            t.get("ci_poll_seconds", _NUMBER, 30, lambda v: v >= 1, "a number of seconds >= 1")
        ),
    )
    t.finish()
    return environment


def _judge_override(o: _Table) -> dict[str, str]:
    """A service's `judge` in one environment: that environment's analysis, judged another way."""
    if "judge" not in o.data:
        return {}
    return {"judge": o.get("judge", str, None, lambda v: v in JUDGES, 'one of "thresholds", "sequential"')}


def _service(path: str, name: str, t: _Table, environments: Mapping[str, Environment]) -> Service:
    overrides: dict[str, dict[str, Any]] = {}
    t.seen.update(("migrations", "integration_tests"))
    migrations = (
        parse_migrations(t.data["migrations"], path, t.key("migrations")) if "migrations" in t.data else None
    )
    tests = (
        parse_integration_tests(t.data["integration_tests"], path, t.key("integration_tests"))
        if "integration_tests" in t.data
        else None
    )
    envs = t.table("environments")
    for env_name in envs.data:
        if env_name not in environments:
            near = difflib.get_close_matches(env_name, list(environments), n=1, cutoff=0.5)
            hint = f' (did you mean "{near[0]}"?)' if near else ""
            raise ConfigError(path, envs.key(env_name), f"no such environment{hint}")
        o = envs.table(env_name, default_empty=False)
        values: dict[str, Any] = {}
        if "strategy" in o.data:
            values["strategy"] = _strategy(o, "strategy")
        for key in (
            "bake_seconds",
            "rollout_timeout_seconds",
            "poll_seconds",
            "step_bake_seconds",
            "keep_warm_seconds",
        ):
            if key in o.data:
                values[key] = float(o.get(key, _NUMBER, **_SECONDS))
        if "canary_steps" in o.data:
            values["canary_steps"] = _canary_steps(o, "canary_steps")
        values.update(_judge_override(o))
        if "windows" in o.data:
            values["windows"] = parse_windows(o.data["windows"], path, o.key("windows"))
            o.seen.add("windows")
        if "migrations" in o.data:
            values["migrations"] = parse_migrations(
                o.data["migrations"], path, o.key("migrations"), migrations
            )
            o.seen.add("migrations")
        if "integration_tests" in o.data:
            values["integration_tests"] = parse_integration_tests(
                o.data["integration_tests"], path, o.key("integration_tests")
            )
            o.seen.add("integration_tests")
        o.finish()
        overrides[env_name] = values
    envs.finish()

    def template(key: str, default: str) -> str:
        value = t.get(key, str, default)
        try:
            value.format(service="s", env="e", slot="x")
        except (KeyError, IndexError, ValueError) as exc:
            raise ConfigError(
                path,
                t.key(key),
                f"bad template {value!r}: only {{service}}, {{env}}, {{slot}} may be used ({exc})",
            ) from None
        return value

    svc = Service(
        name=name,
        container=t.get("container", str, name),
        image=t.get("image", str, name),
        ecs_service=template("ecs_service", "{service}-{slot}"),
        target_group=template("target_group", "{service}-{env}-{slot}"),
        task_family=template("task_family", "{service}-{env}"),
        overrides=overrides,
        migrations=migrations,
        integration_tests=tests,
        evidence=parse_evidence(t, path),
    )
    t.finish()
    return svc


def parse_settings(
    data: Mapping[str, Any], path: str = "<config>", env: Mapping[str, str] | None = None
) -> Settings:
    root = _Table(path, "", dict(data))
    bot = root.table("bot")
    aws_t = root.table("aws")
    alerts_t = root.table("alerts")
    envs_t = root.table("environments", default_empty=False) if "environments" in data else None
    if envs_t is None or not envs_t.data:
        raise ConfigError(path, "environments", "at least one [environments.NAME] table is required")
    roles = parse_roles(data.get("roles"), path)
    root.seen.add("roles")
    root.seen.add("freezes")
    environments = {
        n: _environment(path, n, envs_t.table(n, default_empty=False), env, roles) for n in envs_t.data
    }
    envs_t.finish()
    services_t = root.table("services", default_empty=False) if "services" in data else None
    if services_t is None or not services_t.data:
        raise ConfigError(path, "services", "at least one [services.NAME] table is required")
    services = {
        n: _service(path, n, services_t.table(n, default_empty=False), environments) for n in services_t.data
    }
    services_t.finish()
    freezes = parse_freezes(data.get("freezes"), path, environments=tuple(environments))
    root.seen.update(("flags", "segments", "pipelines", "providers"))
    providers = parse_providers(
        data.get("providers"), path, lambda key, v: _expand(path, key, v, os.environ if env is None else env)
    )
    pipelines = parse_pipelines(data.get("pipelines"), path, environments, services)
    flags = parse_flags(data.get("flags"), path, services)
    segments = parse_segments(data.get("segments"), path)

    default_env = bot.get("default_environment", str, None)
    if default_env is not None and default_env not in environments:
        raise ConfigError(
            path,
            "bot.default_environment",
            f"{default_env!r} is not one of the environments ({', '.join(environments)})",
        )
    deploy_channel = bot.get("deploy_channel", str, "deploys").lstrip("#")
    bot.finish()
    aws = AwsSettings(
        region=aws_t.get("region", str, "us-east-1"),
        endpoint_url=aws_t.get("endpoint_url", str, None),
        max_attempts=aws_t.get("max_attempts", int, 5, lambda v: 1 <= v <= 20, "an integer 1..20"),
        connect_timeout_seconds=float(
            aws_t.get("connect_timeout_seconds", _NUMBER, 5.0, lambda v: v > 0, "a number of seconds > 0")
        ),
        read_timeout_seconds=float(
            aws_t.get("read_timeout_seconds", _NUMBER, 30.0, lambda v: v > 0, "a number of seconds > 0")
        ),
        processes=aws_t.get("processes", int, 1, lambda v: 0 <= v <= 16, "an integer 0..16"),
    )
    aws_t.finish()
    alerts = alerts_from_table(alerts_t, deploy_channel, list(environments))
    alerts_t.finish()
    root.finish()
    environments = {
        n: e if e.channel else Environment(**{**e.__dict__, "channel": deploy_channel})
        for n, e in environments.items()
    }
    for name, environment in environments.items():
        if not environment.load_balancer:
            raise ConfigError(path, f"environments.{name}.load_balancer", "is required but missing")
    settings = Settings(
        path=path,
        default_environment=default_env,
        deploy_channel=deploy_channel,
        aws=aws,
        alerts=alerts,
        environments=environments,
        services=services,
        roles=roles,
        freezes=freezes,
        flags=flags,
        segments=segments,
        pipelines=pipelines,
        providers=providers,
    )
    check_limits(settings)
    return settings


def load_settings(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Read the config file (path, else $DEPLOYBOT_CONFIG, else config/deploybot.toml) and the secrets.

    $DEPLOYBOT_AWS_ENDPOINT overrides aws.endpoint_url (the sandbox points the bot at its moto server)."""
    env = os.environ if env is None else env
    path = Path(path or env.get("DEPLOYBOT_CONFIG") or DEFAULT_CONFIG)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(path, "", "file not found") from None
    except OSError as exc:
        raise ConfigError(path, "", f"cannot read: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(path, "", "is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, "", f"invalid TOML: {exc}") from None
    settings = parse_settings(data, str(path), env)
    if env.get("DEPLOYBOT_AWS_ENDPOINT"):
        settings = Settings(
            **{
                **settings.__dict__,
                "aws": AwsSettings(
                    **{**settings.aws.__dict__, "endpoint_url": env["DEPLOYBOT_AWS_ENDPOINT"]}
                ),
            }
        )
    key_envs = {name: e.flag_key_env for name, e in settings.environments.items()}
    return settings.with_secrets(Secrets.from_env(env, key_envs))
