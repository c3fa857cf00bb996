"""Settings: secrets from the environment, everything else from one TOML file, as frozen dataclasses.

A bad config raises ConfigError naming the file, the key and what is wrong with its value; unknown keys
are errors too (with the nearest known key), because a typo in a deploy tool's config must not pass."""

from __future__ import annotations

import difflib
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

STRATEGIES = ("rolling", "blue-green", "canary")
DEFAULT_CONFIG = Path("config/deploybot.toml")


class ConfigError(Exception):
    """A config file that cannot be used: `str()` says file, key, value and what is expected."""

    def __init__(self, path: str | Path, key: str, problem: str):
        self.path, self.key, self.problem = str(path), key, problem
        super().__init__(f"{path}: {key}: {problem}" if key else f"{path}: {problem}")


@dataclass(frozen=True)
class Secrets:
    """Tokens from the environment. repr() never shows them, so they cannot reach a log by accident."""

    bot_token: str = field(default="", repr=False)
    signing_secret: str = field(default="", repr=False)
    app_token: str = field(default="", repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Secrets:
        env = os.environ if env is None else env
        return cls(
            bot_token=env.get("SLACK_BOT_TOKEN", ""),
            signing_secret=env.get("SLACK_SIGNING_SECRET", ""),
            app_token=env.get("SLACK_APP_TOKEN", ""),
        )

    def values(self) -> list[str]:
        return [v for v in (self.bot_token, self.signing_secret, self.app_token) if v]


@dataclass(frozen=True)
class DeploymentConfiguration:
    """ECS deploymentConfiguration for rolling updates."""

    maximum_percent: int = 200
    minimum_healthy_percent: int = 100
    circuit_breaker: bool = True

    def to_ecs(self) -> dict[str, Any]:
        return {
            "maximumPercent": self.maximum_percent,
            "minimumHealthyPercent": self.minimum_healthy_percent,
            "deploymentCircuitBreaker": {"enable": self.circuit_breaker, "rollback": False},
        }


@dataclass(frozen=True)
class Environment:
    name: str
    cluster: str
    load_balancer: str
    listener_port: int = 80
    channel: str = "deploys"
    strategy: str = "rolling"
    bake_seconds: float = 60.0
    rollout_timeout_seconds: float = 900.0
    poll_seconds: float = 5.0
    deployment_configuration: DeploymentConfiguration = DeploymentConfiguration()
    aws_role_arn: str | None = None


@dataclass(frozen=True)
class Service:
    name: str
    container: str
    image: str  # repository; a version is its tag
    ecs_service: str = "{service}-{slot}"
    target_group: str = "{service}-{env}-{slot}"
    task_family: str = "{service}-{env}"
    overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # env -> Environment fields


@dataclass(frozen=True)
class Target:
    """One service in one environment, everything resolved: what a strategy needs to act on AWS."""

    service: Service
    env: Environment
    strategy: str
    bake_seconds: float
    rollout_timeout_seconds: float
    poll_seconds: float
    deployment_configuration: DeploymentConfiguration

    @property
    def cluster(self) -> str:
        return self.env.cluster

    @property
    def slots(self) -> tuple[str, ...]:
        return ("blue", "green") if "{slot}" in self.service.ecs_service else ("main",)

    def ecs_service(self, slot: str) -> str:
        return self.service.ecs_service.format(service=self.service.name, env=self.env.name, slot=slot)

    def target_group(self, slot: str) -> str:
        return self.service.target_group.format(service=self.service.name, env=self.env.name, slot=slot)

    @property
    def task_family(self) -> str:
        return self.service.task_family.format(service=self.service.name, env=self.env.name)

    def image(self, version: str) -> str:
        return f"{self.service.image}:{version}"


@dataclass(frozen=True)
class AwsSettings:
    region: str = "us-east-1"
    endpoint_url: str | None = None
    max_attempts: int = 5


@dataclass(frozen=True)
class AlertRouting:
    critical: tuple[str, ...] = ("incidents",)
    warning: tuple[str, ...] = ("deploys",)
    info: tuple[str, ...] = ()


@dataclass(frozen=True)
class Settings:
    path: str
    default_environment: str | None
    deploy_channel: str
    aws: AwsSettings
    alerts: AlertRouting
    environments: Mapping[str, Environment]
    services: Mapping[str, Service]
    secrets: Secrets = Secrets()

    def target(self, service: str, env: str) -> Target:
        svc, environment = self.services[service], self.environments[env]
        o = dict(svc.overrides.get(env, {}))
        return Target(
            service=svc,
            env=environment,
            strategy=o.get("strategy", environment.strategy),
            bake_seconds=o.get("bake_seconds", environment.bake_seconds),
            rollout_timeout_seconds=o.get("rollout_timeout_seconds", environment.rollout_timeout_seconds),
            poll_seconds=o.get("poll_seconds", environment.poll_seconds),
            deployment_configuration=environment.deployment_configuration,
        )

    def with_secrets(self, secrets: Secrets) -> Settings:
        return Settings(**{**self.__dict__, "secrets": secrets})


# ---------------------------------------------------------------------------------------------- reading


class _Table:
    """A TOML table being read: every key read is marked, so leftovers are reported as unknown keys."""

    def __init__(self, path: str, prefix: str, data: Any):
        self.path, self.prefix = path, prefix
        if not isinstance(data, dict):
            raise ConfigError(path, prefix, f"expected a table, got {_show(data)}")
        self.data = data
        self.seen: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name

    def get(
        self,
        name: str,
        kind: type | tuple[type, ...],
        default: Any = ...,
        check: Callable | None = None,
        expect: str = "",
    ) -> Any:
        self.seen.add(name)
        if name not in self.data:
            if default is ...:
                raise ConfigError(self.path, self.key(name), "is required but missing")
            return default
        value = self.data[name]
        ok = isinstance(value, kind) and not (isinstance(value, bool) and bool not in _as_tuple(kind))
        if not ok or (check is not None and not check(value)):
            raise ConfigError(
                self.path, self.key(name), f"expected {expect or _kind_name(kind)}, got {_show(value)}"
            )
        return value

    def table(self, name: str, default_empty: bool = True) -> _Table:
        self.seen.add(name)
        if name not in self.data and default_empty:
            return _Table(self.path, self.key(name), {})
        return _Table(self.path, self.key(name), self.data.get(name))

    def finish(self) -> None:
        for extra in self.data.keys() - self.seen:
            near = difflib.get_close_matches(extra, sorted(self.seen), n=1, cutoff=0.5)
            hint = (
                f' (did you mean "{near[0]}"?)' if near else f" (known keys: {', '.join(sorted(self.seen))})"
            )
            raise ConfigError(self.path, self.key(extra), f"unknown key{hint}")


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _kind_name(kind: type | tuple[type, ...]) -> str:
    names = {str: "a string", int: "an integer", float: "a number", bool: "true or false", list: "a list"}
    return " or ".join(names.get(k, k.__name__) for k in _as_tuple(kind))


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


_NUMBER = (int, float)
_SECONDS = {"check": lambda v: v >= 0, "expect": "a number of seconds >= 0"}


def _strategy(t: _Table, name: str, default: Any = ...) -> Any:
    return t.get(name, str, default, lambda v: v in STRATEGIES, "one of " + ", ".join(STRATEGIES))


def _channels(t: _Table, name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    value = t.get(
        name,
        list,
        list(default),
        lambda v: all(isinstance(c, str) and c for c in v),
        "a list of channel names",
    )
    return tuple(c.lstrip("#") for c in value)


def _environment(path: str, name: str, t: _Table) -> Environment:
    dc = t.table("deployment_configuration")
    deployment_configuration = DeploymentConfiguration(
        maximum_percent=dc.get("maximum_percent", int, 200, lambda v: 100 <= v <= 200, "an integer 100..200"),
        minimum_healthy_percent=dc.get(
            "minimum_healthy_percent", int, 100, lambda v: 0 <= v <= 100, "an integer 0..100"
        ),
        circuit_breaker=dc.get("circuit_breaker", bool, True),
    )
    dc.finish()
    env = Environment(
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
    )
    t.finish()
    return env


def _service(path: str, name: str, t: _Table, environments: Mapping[str, Environment]) -> Service:
    overrides: dict[str, dict[str, Any]] = {}
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
        for key in ("bake_seconds", "rollout_timeout_seconds", "poll_seconds"):
            if key in o.data:
                values[key] = float(o.get(key, _NUMBER, **_SECONDS))
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
    )
    t.finish()
    return svc


def parse_settings(data: Mapping[str, Any], path: str = "<config>") -> Settings:
    root = _Table(path, "", dict(data))
    bot = root.table("bot")
    aws_t = root.table("aws")
    alerts_t = root.table("alerts")
    envs_t = root.table("environments", default_empty=False) if "environments" in data else None
    if envs_t is None or not envs_t.data:
        raise ConfigError(path, "environments", "at least one [environments.NAME] table is required")
    environments = {n: _environment(path, n, envs_t.table(n, default_empty=False)) for n in envs_t.data}
    envs_t.finish()
    services_t = root.table("services", default_empty=False) if "services" in data else None
    if services_t is None or not services_t.data:
        raise ConfigError(path, "services", "at least one [services.NAME] table is required")
    services = {
        n: _service(path, n, services_t.table(n, default_empty=False), environments) for n in services_t.data
    }
    services_t.finish()

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
    )
    aws_t.finish()
    alerts = AlertRouting(
        critical=_channels(alerts_t, "critical", ("incidents",)),
        warning=_channels(alerts_t, "warning", (deploy_channel,)),
        info=_channels(alerts_t, "info", ()),
    )
    alerts_t.finish()
    root.finish()
    environments = {
        n: e if e.channel else Environment(**{**e.__dict__, "channel": deploy_channel})
        for n, e in environments.items()
    }
    for name, env in environments.items():
        if not env.load_balancer:
            raise ConfigError(path, f"environments.{name}.load_balancer", "is required but missing")
    return Settings(
        path=path,
        default_environment=default_env,
        deploy_channel=deploy_channel,
        aws=aws,
        alerts=alerts,
        environments=environments,
        services=services,
    )


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
    settings = parse_settings(data, str(path))
    if env.get("DEPLOYBOT_AWS_ENDPOINT"):
        settings = Settings(
            **{
                **settings.__dict__,
                "aws": AwsSettings(
                    **{**settings.aws.__dict__, "endpoint_url": env["DEPLOYBOT_AWS_ENDPOINT"]}
                ),
            }
        )
    return settings.with_secrets(Secrets.from_env(env))
