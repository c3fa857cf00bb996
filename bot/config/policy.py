"""Loading the policy sections of the config file — roles, checklists, approvals, access, alert routing — into frozen domain values, with errors naming the file, the key and the value."""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING, Any

from bot.config.tables import ConfigError, _Table
from bot.domain.alerts import (
    CRITICAL,
    INFO,
    PAGERDUTY_EVENTS_URL,
    WARNING,
    AlertConfig,
    PagerDutyConfig,
    Routes,
)
from bot.domain.suggest import did_you_mean

if TYPE_CHECKING:
    pass
from bot.domain.checklist import (
    ACTIONS,
    CHECKS,
    DEFAULT_ITEMS,
    ApprovalPolicy,
    Guards,
    Item,
    ItemKind,
    Policy,
    Roles,
)

_NUMBER = (int, float)
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _is_url(value: str) -> bool:
    return value.startswith(("http://", "https://"))


def _channels(t: _Table, name: str, default: tuple[str, ...] | None) -> tuple[str, ...] | None:
    value = t.get(
        name,
        list,
        None if default is None else list(default),
        lambda v: all(isinstance(c, str) and c.strip("# ") for c in v),
        "a list of channel names",
    )
    return None if value is None else tuple(c.strip().lstrip("#") for c in value)


def _optional_seconds(t: _Table, name: str, default: float) -> float | None:
    value = t.get(
        name, (int, float, bool), default, lambda v: v is not True and v >= 0, "seconds >= 0, or false"
    )
    return None if value is False or value == 0 else float(value)


# ------------------------------------------------------------------------------------------------ config


def parse_roles(raw: Any, path: str) -> Roles:
    t = _Table(path, "roles", raw if raw is not None else {})
    users: dict[str, tuple[str, ...]] = {}
    groups: dict[str, tuple[str, ...]] = {}
    for name in list(t.data):
        r = t.table(name, default_empty=False)
        users[name] = tuple(r.get("users", list, [], _strings, "a list of Slack user ids"))
        groups[name] = tuple(
            g.lstrip("@") for g in r.get("groups", list, [], _strings, "a list of Slack user group handles")
        )
        r.finish()
    t.finish()
    return Roles(users, groups)


def parse_policy(raw: Mapping[str, Any], path: str, prefix: str, env_name: str, roles: Roles) -> Policy:
    """[environments.X.checklist], .approvals, .access, .guards. Production gets the guards by default."""
    t = _Table(path, prefix, dict(raw))
    items = _items(t, path, roles)
    a = t.table("approvals")
    approvals = ApprovalPolicy(
        required=a.get("required", int, 0, lambda v: 0 <= v <= 10, "an integer 0..10"),
        roles=tuple(a.get("roles", list, [], _strings, "a list of role names")),
        expire_after_seconds=float(
            a.get("expire_after_seconds", (int, float), 3600, lambda v: v > 0, "seconds > 0")
        ),
    )
    for role in approvals.roles:
        _known_role(path, a.key("roles"), role, roles)
    if approvals.required and not approvals.roles:
        raise ConfigError(path, a.key("roles"), "approvals are required, so say who may approve (role names)")
    a.finish()
    has_access_table = "access" in t.data
    acc = t.table("access")
    access: dict[str, tuple[str, ...]] = {}
    for action in list(acc.data):
        if action not in ACTIONS:
            acc.get(action, list, [])  # mark seen; report below with a suggestion
            raise ConfigError(path, acc.key(action), f"unknown action (actions: {', '.join(ACTIONS)})")
        access[action] = tuple(acc.get(action, list, [], _strings, "a list of role names"))
        for role in access[action]:
            _known_role(path, acc.key(action), role, roles)
    acc.finish()
    production = env_name == "production"
    g = t.table("guards")
    guards = Guards(
        refuse_all_at_once=g.get("refuse_all_at_once", bool, production),
        require_rollback_target=g.get("require_rollback_target", bool, production),
        require_health_and_monitoring=g.get("require_health_and_monitoring", bool, production),
    )
    g.finish()
    t.finish()
    return Policy(items, approvals, access if has_access_table else None, guards)


def _items(t: _Table, path: str, roles: Roles) -> tuple[Item, ...]:
    t.seen.add("checklist")
    raw = t.data.get("checklist")
    if raw is None:
        return ()
    if raw == "default":
        return tuple(Item(i, label, kind, check) for i, label, kind, check in DEFAULT_ITEMS)
    if not isinstance(raw, list):
        raise ConfigError(path, t.key("checklist"), 'expected "default" or a list of item tables')
    items: list[Item] = []
    for n, entry in enumerate(raw):
        it = _Table(path, f"{t.key('checklist')}[{n}]", entry)
        kind: ItemKind = it.get(
            "kind", str, "manual", lambda v: v in ("manual", "automatic"), '"manual" or "automatic"'
        )
        check = it.get("check", str, None, lambda v: v in CHECKS, "one of " + ", ".join(CHECKS))
        if kind == "automatic" and check is None:
            raise ConfigError(path, it.key("check"), "an automatic item needs a check: " + ", ".join(CHECKS))
        params = {}
        for key in ("alarms", "source_env", "url", "expect_status", "expect_body"):
            if key in it.data:
                params[key] = it.get(key, (list, str, int), None)
        item = Item(
            id=it.get("id", str, ..., lambda v: v.replace("_", "").replace("-", "").isalnum(), "a short id"),
            label=it.get("label", str, ..., lambda v: 0 < len(v) <= 75, "1..75 characters (a Slack option)"),
            kind=kind,
            check=check,
            params=params,
            roles=tuple(it.get("roles", list, [], _strings, "a list of role names")),
        )
        for role in item.roles:
            _known_role(path, it.key("roles"), role, roles)
        it.finish()
        items.append(item)
    ids = [i.id for i in items]
    if len(set(ids)) != len(ids):
        raise ConfigError(path, t.key("checklist"), f"item ids must be unique: {ids}")
    if len([i for i in items if i.kind == "manual"]) > 10:
        raise ConfigError(
            path, t.key("checklist"), "at most 10 manual items (a Slack checkbox group's limit)"
        )
    return tuple(items)


def _strings(v: list) -> bool:
    return all(isinstance(x, str) and x.strip() for x in v)


def _known_role(path: str, key: str, role: str, roles: Roles) -> None:
    if role not in roles.users:
        known = ", ".join(sorted(roles.users)) or "none defined: add [roles.NAME]"
        raise ConfigError(path, key, f"unknown role {role!r} (roles: {known})")


# ------------------------------------------------------------------------------------------- [alerts]


def parse_alerts(
    raw: Mapping[str, Any],
    path: str = "<config>",
    deploy_channel: str = "deploys",
    environments: Collection[str] = (),
    prefix: str = "alerts",
) -> AlertConfig:
    """Read an [alerts] table on its own (tests, tools); unknown keys raise ConfigError."""
    t = _Table(path, prefix, dict(raw))
    config = alerts_from_table(t, deploy_channel, environments)
    t.finish()
    return config


def alerts_from_table(
    t: _Table, deploy_channel: str = "deploys", environments: Collection[str] = ()
) -> AlertConfig:
    """Read [alerts] from a config table (marking its keys; the caller calls t.finish())."""
    envs_t = t.table("environments")
    routes = {}
    for name in envs_t.data:
        if environments and name not in environments:
            hint = did_you_mean(name, environments)
            raise ConfigError(t.path, envs_t.key(name), f"no such environment{hint}")
        e = envs_t.table(name, default_empty=False)
        routes[name] = Routes(
            critical=_channels(e, CRITICAL, None),
            warning=_channels(e, WARNING, None),
            info=_channels(e, INFO, None),
        )
        e.finish()
    envs_t.finish()
    pd_t = t.table("pagerduty")
    pagerduty = PagerDutyConfig(
        enabled=pd_t.get("enabled", bool, False),
        url=pd_t.get("url", str, PAGERDUTY_EVENTS_URL, _is_url, "an http(s) URL"),
        routing_key_env=pd_t.get(
            "routing_key_env",
            str,
            "PAGERDUTY_ROUTING_KEY",
            _ENV_NAME.match,
            "an environment variable name",
        ),
        timeout_seconds=float(pd_t.get("timeout_seconds", _NUMBER, 10, lambda v: v > 0, "seconds > 0")),
    )
    pd_t.finish()
    oncall = t.get("oncall", (str, bool), "oncall", lambda v: v is not True, "a group handle, or false")
    return AlertConfig(
        critical=_channels(t, CRITICAL, ("incidents",)) or (),
        warning=_channels(t, WARNING, (deploy_channel,)) or (),
        info=_channels(t, INFO, ()) or (),
        environments=routes,
        oncall=(oncall.strip().lstrip("@") or None) if isinstance(oncall, str) else None,
        escalate_after_seconds=float(
            t.get("escalate_after_seconds", _NUMBER, 600, lambda v: v > 0, "a number of seconds > 0")
        ),
        escalation_rounds=t.get("escalation_rounds", int, 3, lambda v: 0 <= v <= 20, "an integer 0..20"),
        escalate_to=tuple(
            t.get(
                "escalate_to",
                list,
                [],
                lambda v: all(isinstance(x, str) and x.strip() for x in v),
                'a list of user groups or users, e.g. ["oncall-secondary", "@dave"]',
            )
        ),
        escalate_resolved=t.get("escalate_resolved", bool, True),
        approval_warning_seconds=_optional_seconds(t, "approval_warning_seconds", 1800),
        slow_rollout_seconds=_optional_seconds(t, "slow_rollout_seconds", 1800),
        pagerduty=pagerduty,
    )
