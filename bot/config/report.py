"""What check-config says about a valid config beyond "OK": access per environment, and the feature
flags (declarations, segments, each environment's flag policy)."""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping

from bot.config.model import Environment, Settings
from bot.domain.flags import FlagDef, Segment


def access_report(s: Settings) -> list[str]:
    """What check-config says about access, per environment: the actions its access table does not list
    (they need the roles of deploy), and warnings for an environment open to anyone or closed to all."""
    lines = []
    for name, environment in s.environments.items():
        policy = environment.policy
        if policy.access is None:
            lines.append(
                f"warning: environments.{name} has no access table: anyone may do anything there "
                f"(add [environments.{name}.access] to restrict it)"
            )
            continue
        implicit = policy.implicit_actions()
        if "deploy" not in policy.access:
            lines.append(
                f"warning: environments.{name}.access lists no deploy roles: nobody may deploy there, nor "
                f"{', '.join(implicit) or 'anything else'} (unlisted actions need deploy's roles)"
            )
        elif implicit:
            roles = " or ".join(policy.access["deploy"]) or "nobody"
            lines.append(
                f"environments.{name}.access: {', '.join(implicit)} not listed: covered by deploy ({roles})"
            )
        else:
            lines.append(f"environments.{name}.access: every action listed")
    return lines


def flags_report(s: Settings) -> list[str]:
    """What check-config says about feature flags: each declared flag and segment, and each environment's
    flag policy (who may change and kill, approvals, rollout steps, and the variable its OFREP API key is
    read from: only whether it is set, never its value)."""
    lines = [_flag_line(f) for f in s.flags.values()] or ["flags: none declared"]
    lines += [_segment_line(seg) for seg in s.segments.values()] or ["segments: none declared"]
    for name, environment in s.environments.items():
        lines.append(_env_flags_line(name, environment, name in s.secrets.ofrep_keys))
    return lines


def _flag_line(f: FlagDef) -> str:
    variants = ", ".join(f.variants)
    answers = f"default: {f.default_variant}, when off: {f.off_variant}, turned on: {f.on_variant}"
    where = f"; services {', '.join(f.services)}" if f.services else ""
    owner = f"; owner {_one_line(f.owner)}" if f.owner else ""
    return f"flags.{f.key}: {f.type}; variants {variants} ({answers}){where}{owner}"


def _segment_line(seg: Segment) -> str:
    return f"segments.{seg.name}: {' and '.join(_one_line(c.describe()) for c in seg.conditions)}"


def _env_flags_line(name: str, environment: Environment, key_set: bool) -> str:
    flags = environment.flags
    policy = environment.policy
    who = _roles(policy.roles_for("flag"))
    kill = _roles(policy.roles_for("kill_flag"))
    if flags.approvals <= 0:
        waits = "changes and rollouts apply at once (no approvals)"
    else:
        n = f"{flags.approvals} approval{'s' if flags.approvals != 1 else ''}"
        approvers = " or ".join(policy.approvals.roles) or "anyone else"
        above = flags.approve_above_percent
        what = (
            "rollouts"
            if above is None
            else f"rollouts and changes giving more than {above:g}% the on variant"
        )
        waits = f"{what} wait for {n} ({approvers}, never the requester); turning off never waits"
    steps = " → ".join(f"{step}%" for step in flags.rollout_steps)
    key_env = environment.flag_key_env
    served = "set" if key_set else "not set: its flags are not served"
    return (
        f"environments.{name}.flags: changed by {who}, killed by {kill}; {waits}; rollout {steps}, "
        f"{flags.step_bake_seconds:g}s per step; OFREP API key from ${key_env} ({served})"
    )


def _roles(roles: tuple[str, ...] | None) -> str:
    if roles is None:
        return "anyone"
    return " or ".join(roles) if roles else "nobody"


def _one_line(value: str) -> str:
    """Config text for a terminal: control characters (an escape sequence, a newline) become spaces."""
    return "".join(" " if unicodedata.category(c) == "Cc" else c for c in value).strip()


def pipeline_report(s: Settings) -> list[str]:
    """What check-config says about each pipeline: its environments in order, per service what runs
    between them (integration tests, or a warning where a service has none to stop a bad version)."""
    lines = []
    for name, p in s.pipelines.items():
        lines.append(
            f"pipelines.{name}: {' → '.join(p.environments)} for {', '.join(p.services)}"
            + (" (later environments wait for their window)" if p.windows else "")
        )
        for service in p.services:
            tested = [
                env for env in p.environments[:-1] if s.target(service, env).integration_tests is not None
            ]
            if tested:
                lines.append(f"pipelines.{name}: {service}: integration tests after {', '.join(tested)}")
            else:
                lines.append(
                    f"warning: pipelines.{name}: {service} has no integration tests before "
                    f"{p.environments[-1]}: only its deployments' own checks stop a bad version "
                    f"(add [services.{service}.integration_tests])"
                )
    return lines


def evidence_report(s: Settings, env: Mapping[str, str]) -> list[str]:
    """What check-config says about CI evidence: per service where its commits and CI results come from and
    whether each token's variable is set (never its value); a warning for a service a checklist asks CI of
    that has none configured."""
    lines = []
    for name, svc in s.services.items():
        src, ci = svc.evidence.source, svc.evidence.ci
        asked = [
            e
            for e in s.environments
            if any(i.check == "ci_passed" for i in s.target(name, e).env.policy.items)
        ]
        if src is not None:
            lines.append(
                f"services.{name}.source: {src.provider} {src.repo}, a version's commit from {src.commit_from}"
            )
        for spec in ci:
            p = s.providers[spec.provider]
            what = spec.job or spec.repo
            counted = (
                f" (required: {', '.join(spec.required)})" if spec.required else " (every check reported)"
            )
            state = "set" if env.get(p.token_env) else "NOT set"
            lines.append(
                f"services.{name}.ci: {spec.provider} {what}{counted} at {p.url}; ${p.token_env} {state}"
            )
        if asked and not ci:
            lines.append(
                f"warning: services.{name} has no [[services.{name}.ci]] but {', '.join(asked)} "
                "checks ci_passed: its deploys there are refused until one is added"
            )
    return lines
