"""The pre-deployment checklist, approvals (four eyes, expiry) and role-based access, per environment.

Config and pure judgement only: who may do what, which items are done, whether approvals count. The
automatic items' checks (AWS, HTTP, the store) run in the engine; Slack group membership is resolved by
handlers and handed in as a set of role names."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

ACTIONS = (
    "deploy",
    "approve",
    "promote",
    "rollback",
    "lock",
    "override_freeze",
    "emergency",
    "flag",
    "kill_flag",
)
# An action the access table does not list needs these roles (fail closed): the kill switch is a
# rollback, so it falls back to rollback's roles; everything else to deploy's.
FALLBACK = {"kill_flag": "rollback"}
CHECKS = (
    "no_alarms",
    "promoted_from",
    "rollback_target",
    "targets_healthy",
    "http_status",
    "migrations_rehearsed",
    "ci_passed",
)
ItemKind = Literal["manual", "automatic"]
DEFAULT_ITEMS: tuple[tuple[str, str, ItemKind, str | None], ...] = (
    # The six items every production deploy answers for; automatic where the bot can see the answer.
    ("tests", "Tests passing", "manual", None),
    ("review", "Code review approved", "manual", None),
    ("migrations", "Database migrations tested", "automatic", "migrations_rehearsed"),
    ("rollback_plan", "Rollback plan ready", "automatic", "rollback_target"),
    ("monitoring", "Monitoring in place", "automatic", "no_alarms"),
    ("team", "Team notified", "manual", None),
)


@dataclass(frozen=True)
class Item:
    id: str
    label: str
    kind: ItemKind
    check: str | None = None  # for automatic items: one of CHECKS
    params: Mapping[str, Any] = field(default_factory=dict)  # alarms, source_env, url, expect_...
    roles: tuple[str, ...] = ()  # who may tick a manual item (empty: anyone who may deploy)


@dataclass(frozen=True)
class ApprovalPolicy:
    required: int = 0
    roles: tuple[str, ...] = ()  # approvers must hold one of these
    expire_after_seconds: float = 3600.0


@dataclass(frozen=True)
class Guards:
    """Anti-patterns refused before anything starts (on by default in production)."""

    refuse_all_at_once: bool = False
    require_rollback_target: bool = False
    require_health_and_monitoring: bool = False


@dataclass(frozen=True)
class Policy:
    """An environment's checklist, approvals, access and guards."""

    items: tuple[Item, ...] = ()
    approvals: ApprovalPolicy = ApprovalPolicy()
    # action -> roles. Fail closed: an action the table does not list needs the roles of `deploy` (and, when
    # `deploy` is not listed either, nobody may). None: the environment has no access table at all, an
    # explicit choice for a sandbox or dev environment, where anyone may do anything (check-config warns).
    access: Mapping[str, tuple[str, ...]] | None = None
    guards: Guards = Guards()

    def roles_for(self, action: str) -> tuple[str, ...] | None:
        """The roles that may do `action`; None: anyone (no access table)."""
        if self.access is None:
            return None
        if action in self.access:
            return self.access[action]
        if action in FALLBACK and FALLBACK[action] in self.access:
            return self.access[FALLBACK[action]]
        return self.access.get("deploy", ())

    def allowed(self, action: str, roles: Iterable[str]) -> bool:
        needed = self.roles_for(action)
        return needed is None or bool(set(needed) & set(roles))

    def needed_roles(self, action: str) -> tuple[str, ...]:
        return self.roles_for(action) or ()

    def implicit_actions(self) -> tuple[str, ...]:
        """The actions the access table does not list: covered by `deploy`'s roles."""
        if self.access is None:
            return ()
        return tuple(a for a in ACTIONS if a != "deploy" and a not in self.access)

    @property
    def manual_items(self) -> tuple[Item, ...]:
        return tuple(i for i in self.items if i.kind == "manual")

    @property
    def automatic_items(self) -> tuple[Item, ...]:
        return tuple(i for i in self.items if i.kind == "automatic")


@dataclass(frozen=True)
class Roles:
    """Role name -> members: Slack user ids and user group handles."""

    users: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    groups: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def of(self, user: str, group_members: Mapping[str, Iterable[str]]) -> set[str]:
        """The roles `user` holds, given the members of each user group (handle -> user ids)."""
        held = {role for role, users in self.users.items() if user in users}
        for role, handles in self.groups.items():
            if any(user in group_members.get(h, ()) for h in handles):
                held.add(role)
        return held

    @property
    def handles(self) -> set[str]:
        return {h for hs in self.groups.values() for h in hs}


# --------------------------------------------------------------------------------------------- judgement


@dataclass(frozen=True)
class ItemState:
    item_id: str
    done: bool
    by: str | None = None  # who ticked it (manual), or "deploybot" (automatic)
    at: str | None = None
    evidence: str | None = None  # what an automatic check saw


@dataclass(frozen=True)
class Approval:
    user: str
    at: float  # epoch seconds
    voided: bool = False


@dataclass(frozen=True)
class Readiness:
    ready: bool
    missing_items: tuple[Item, ...]
    valid_approvals: tuple[Approval, ...]
    approvals_needed: int

    def waiting_for(self) -> str:
        parts = []
        if self.approvals_needed:
            parts.append(f"{self.approvals_needed} approval{'s' if self.approvals_needed > 1 else ''}")
        if self.missing_items:
            parts.append(", ".join(i.label for i in self.missing_items))
        return " and ".join(parts)


def valid_approvals(
    policy: Policy, approvals: Iterable[Approval], requester: str, now: float
) -> list[Approval]:
    """Approvals that count: not voided, not expired, not the requester's own, one per person."""
    seen: dict[str, Approval] = {}
    for a in approvals:
        if a.voided or a.user == requester or now - a.at > policy.approvals.expire_after_seconds:
            continue
        seen.setdefault(a.user, a)
    return list(seen.values())


def readiness(
    policy: Policy,
    states: Mapping[str, ItemState],
    approvals: Iterable[Approval],
    requester: str,
    now: float,
    emergency: bool = False,
) -> Readiness:
    """Whether a deployment may start. An emergency skips manual items and approvals, never automatic ones."""
    missing = tuple(
        i
        for i in policy.items
        if not (emergency and i.kind == "manual") and not states.get(i.id, ItemState(i.id, False)).done
    )
    valid = tuple(valid_approvals(policy, approvals, requester, now))
    needed = 0 if emergency else max(0, policy.approvals.required - len(valid))
    return Readiness(not missing and needed == 0, missing, valid, needed)
