"""The frozen config values: environments, services, targets (a service in an environment), AWS settings and secrets."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

from bot.config.evidence import Evidence, Provider
from bot.config.flags import EnvFlags, default_key_env
from bot.config.migrations import IntegrationTests, Migrations
from bot.config.pipelines import PipelineSpec
from bot.domain.alerts import AlertConfig
from bot.domain.analysis import AnalysisConfig
from bot.domain.checklist import ApprovalPolicy, Guards, Policy, Roles
from bot.domain.flags import FlagDef, Segment, flag_key
from bot.domain.windows import Freeze, Window


@dataclass(frozen=True)
class Secrets:
    """Tokens from the environment. repr() never shows them, so they cannot reach a log by accident."""

    bot_token: str = field(default="", repr=False)
    signing_secret: str = field(default="", repr=False)
    app_token: str = field(default="", repr=False)
    ofrep_keys: Mapping[str, str] = field(default_factory=dict, repr=False)  # environment -> OFREP API key

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, key_envs: Mapping[str, str] | None = None
    ) -> Secrets:
        """`key_envs`: environment -> the variable holding its OFREP API key (unset: that environment's
        flags are not served)."""
        env = os.environ if env is None else env
        return cls(
            bot_token=env.get("SLACK_BOT_TOKEN", ""),
            signing_secret=env.get("SLACK_SIGNING_SECRET", ""),
            app_token=env.get("SLACK_APP_TOKEN", ""),
            ofrep_keys={e: env[v] for e, v in (key_envs or {}).items() if env.get(v)},
        )

    def values(self) -> list[str]:
        return [
            v for v in (self.bot_token, self.signing_secret, self.app_token, *self.ofrep_keys.values()) if v
        ]


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
class SmokeCheck:
    """An HTTP request the new slot must answer as expected before it gets traffic (blue-green)."""

    url: str  # may use {service}, {env}, {slot}, {version}, and ${ENV_VAR}
    expect_status: int = 200
    expect_body: str | None = None  # a substring the body must contain
    timeout_seconds: float = 60.0  # keep trying until then

    def resolve(self, service: str, env: str, slot: str, version: str) -> tuple[str, str | None]:
        """The URL and the expected body text for this slot and version."""
        values = {"service": service, "env": env, "slot": slot, "version": version}
        return self.url.format(**values), self.expect_body.format(**values) if self.expect_body else None


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
    canary_steps: tuple[int | str, ...] = (5, 25, 50, 100)  # weights toward the new slot; "pause" waits
    step_bake_seconds: float = 60.0  # analysis time at each canary weight
    keep_warm_seconds: float = 300.0  # the old slot stays up this long after the switch (instant rollback)
    analysis: AnalysisConfig = AnalysisConfig()
    smoke_checks: tuple[SmokeCheck, ...] = ()
    policy: Policy = Policy()  # checklist, approvals, access, guards
    windows: tuple[Window, ...] = ()  # when scheduled deploys may run; none: any time
    flags: EnvFlags = field(default_factory=lambda: EnvFlags(api_key_env=""))  # [environments.NAME.flags]
    rehearse_migrations: bool = False  # a deploy here runs up, down, up: the version's migration is tested
    verify_seconds: float = 0.0  # after success the live version is watched this long (bot.app.verification)
    rollback_during_verify: bool = False  # a regression then rolls back by itself (the old slot kept warm)
    image_check: bool = False  # a version's image must exist in the registry (ECR) before anything changes
    ci_poll_seconds: float = 30.0  # a pending CI result is asked again this often

    @property
    def flag_key_env(self) -> str:
        return self.flags.api_key_env or default_key_env(self.name)


@dataclass(frozen=True)
class Service:
    name: str
    container: str
    image: str  # repository; a version is its tag
    ecs_service: str = "{service}-{slot}"
    target_group: str = "{service}-{env}-{slot}"
    task_family: str = "{service}-{env}"
    overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # env -> Environment fields
    migrations: Migrations | None = None  # [services.NAME.migrations]
    integration_tests: IntegrationTests | None = None  # [services.NAME.integration_tests]
    evidence: Evidence = Evidence()  # [services.NAME.source] and [[services.NAME.ci]]


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
    canary_steps: tuple[int | str, ...] = (5, 25, 50, 100)
    step_bake_seconds: float = 60.0
    keep_warm_seconds: float = 300.0
    windows: tuple[Window, ...] = ()
    migrations: Migrations | None = None  # the service's, or its environment override's
    integration_tests: IntegrationTests | None = None

    judge: str | None = None  # the service's own judge for this environment's analysis (None: the env's)

    @property
    def analysis(self) -> AnalysisConfig:
        a = self.env.analysis
        return a if self.judge is None or self.judge == a.judge else replace(a, judge=self.judge)

    @property
    def smoke_checks(self) -> tuple[SmokeCheck, ...]:
        return self.env.smoke_checks

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
    connect_timeout_seconds: float = 5.0
    read_timeout_seconds: float = 30.0  # an answer slower than this is a ReadTimeoutError (then retried)
    # worker processes making the calls (0: threads of this process); the config loader's default is 1
    processes: int = 0


# The [alerts] table: channels per level (per environment, with a default), on-call, escalation and
# PagerDuty. Parsed in bot.config.policy, documented in bot.domain.alerts; `.critical`, `.warning`, `.info` are the default channels.
AlertRouting = AlertConfig


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
    roles: Roles = Roles()
    freezes: tuple[
        Freeze, ...
    ] = ()  # configured freeze periods (more come from /deploy freeze, in the store)
    flags: Mapping[str, FlagDef] = field(default_factory=dict)  # [flags.KEY]
    segments: Mapping[str, Segment] = field(default_factory=dict)  # [segments.NAME]
    pipelines: Mapping[str, PipelineSpec] = field(default_factory=dict)  # [pipelines.NAME]
    providers: Mapping[str, Provider] = field(default_factory=dict)  # [providers.NAME]: CI and source APIs

    def target(self, service: str, env: str) -> Target:
        """The service in the environment, its overrides applied; built once per Settings."""
        found = self._targets.get((service, env))
        return found if found is not None else self._target(service, env)  # unknown: KeyError names it

    @cached_property
    def _targets(self) -> dict[tuple[str, str], Target]:
        return {
            (s, e): self._target(s, e)
            for s in [*self.services, *(f"flag:{k}" for k in self.flags)]
            for e in self.environments
        }

    def _target(self, service: str, env: str) -> Target:
        key = flag_key(service)
        if key is not None:
            return self._flag_target(key, env)
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
            canary_steps=o.get("canary_steps", environment.canary_steps),
            step_bake_seconds=o.get("step_bake_seconds", environment.step_bake_seconds),
            keep_warm_seconds=o.get("keep_warm_seconds", environment.keep_warm_seconds),
            windows=o.get("windows", environment.windows),
            judge=o.get("judge"),
            migrations=o.get("migrations", svc.migrations),
            integration_tests=o.get("integration_tests", svc.integration_tests),
        )

    def _flag_target(self, key: str, env: str) -> Target:
        """A flag rollout's target ("service" flag:KEY): the environment's channel, access and freezes;
        its flags table's approvals, rollout steps, bake and analysis; no checklist, guards or windows
        (those are about shipping code; a flag rollout ships none)."""
        if key not in self.flags:
            raise KeyError(f"flag:{key}")
        environment, flags = self.environments[env], self.environments[env].flags
        approvals = ApprovalPolicy(
            required=flags.approvals,
            roles=environment.policy.approvals.roles,
            expire_after_seconds=environment.policy.approvals.expire_after_seconds,
        )
        policy = Policy(items=(), approvals=approvals, access=environment.policy.access, guards=Guards())
        flag_env = replace(environment, policy=policy, smoke_checks=(), analysis=flags.analysis, windows=())
        return Target(
            service=Service(name=f"flag:{key}", container="", image="", ecs_service="", target_group=""),
            env=flag_env,
            strategy="flag",
            bake_seconds=0.0,
            rollout_timeout_seconds=environment.rollout_timeout_seconds,
            poll_seconds=environment.poll_seconds,
            deployment_configuration=environment.deployment_configuration,
            canary_steps=flags.rollout_steps,
            step_bake_seconds=flags.step_bake_seconds,
            keep_warm_seconds=0.0,
        )

    def with_secrets(self, secrets: Secrets) -> Settings:
        return Settings(**{**self.__dict__, "secrets": secrets})
