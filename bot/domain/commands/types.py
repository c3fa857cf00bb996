"""What a slash command parses to: one frozen dataclass per form, the `Command` union of them, the
`Vocabulary` a command may use, and `CommandError` with the message a person is shown."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TypeAlias

from bot.domain.flags import Condition
from bot.domain.strategies import Strategy

MAX_LENGTH = 1000
COMMANDS = ("/deploy", "/promote", "/rollback", "/flag")
SUBCOMMANDS = (
    "status",
    "history",
    "help",
    "lock",
    "unlock",
    "audit",
    "approve",
    "reject",
    "restore",
    "note",
    "schedule",
    "windows",
    "freeze",
    "unfreeze",
    "report",
)
READS = (
    "status",
    "history",
    "help",
    "audit",
    "schedule",
    "windows",
    "report",
)  # subcommands that change nothing
FLAG_ACTIONS = ("on", "off", "rollout", "kill", "variants")  # /flag KEY ACTION (and PERCENT%) change a flag
# Order matters: the first is the one suggested when a typo is equally close to several.
DEPLOY_CONNECTORS = ("to", "in", "on")
ENV_CONNECTORS = ("in", "on", "to")


@dataclass(frozen=True)
class Vocabulary:
    """The words a command may use: configured services and environments; for /flag, the declared flags
    (each with its variants) and segments."""

    services: tuple[str, ...]
    environments: tuple[str, ...]
    default_environment: str | None = None  # used when a command omits the env; None -> env required
    flags: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # flag key -> its variants
    segments: tuple[str, ...] = ()


@dataclass(frozen=True)
class Deploy:
    service: str
    version: str | None  # None: redeploy the version running now (hubot's `deploy web to staging`)
    env: str
    strategy: Strategy | None
    dry_run: bool
    reason: str | None
    emergency: str | None
    window: bool
    at: str | None
    pipeline: str | None = None  # --pipeline [NAME]: "" the service's one pipeline; env is then ""


@dataclass(frozen=True)
class Status:
    target: str | None  # a service (vocabulary spelling) or a deployment ID as typed ("42" or "#42")


@dataclass(frozen=True)
class History:
    service: str
    env: str | None


@dataclass(frozen=True)
class Help:
    pass


@dataclass(frozen=True)
class Report:
    """/deploy report [SERVICE] [in ENV]: the delivery report (None: every service / environment)."""

    service: str | None
    env: str | None


@dataclass(frozen=True)
class Lock:
    service: str
    env: str
    reason: str


@dataclass(frozen=True)
class Unlock:
    service: str
    env: str


@dataclass(frozen=True)
class Audit:
    deployment_id: int


@dataclass(frozen=True)
class Approve:
    deployment_id: int


@dataclass(frozen=True)
class Reject:
    deployment_id: int
    reason: str


@dataclass(frozen=True)
class Restore:
    """Break glass after a migration: the deployment's pre-migration snapshot to a new instance."""

    deployment_id: int
    reason: str


@dataclass(frozen=True)
class Note:
    """A person's note on any deployment (kept in its audit, shown in its thread)."""

    deployment_id: int
    text: str


@dataclass(frozen=True)
class Schedule:
    pass


@dataclass(frozen=True)
class Windows:
    service: str
    env: str | None


@dataclass(frozen=True)
class Freeze:
    env: str
    until: str  # as typed; the caller parses it (it may carry a time zone)
    reason: str


@dataclass(frozen=True)
class Unfreeze:
    env: str


@dataclass(frozen=True)
class Promote:
    service: str
    source_env: str
    target_env: str
    allow_downgrade: bool = False  # --allow-downgrade: promote even when it lowers the target's version


@dataclass(frozen=True)
class PromoteDeployment:
    deployment_id: int
    full: bool


@dataclass(frozen=True)
class Rollback:
    service: str
    env: str
    version: str | None  # None: the version before the current one
    gradual: bool
    reason: str | None
    emergency: str | None = None  # --emergency "why": break glass for a version not known to be good there


@dataclass(frozen=True)
class FlagList:
    env: str | None


@dataclass(frozen=True)
class FlagShow:
    key: str
    env: str | None


@dataclass(frozen=True)
class FlagChange:
    key: str
    env: str
    action: str  # on | off | percent | target | variants | rollout | kill
    percent: float | None = None
    conditions: tuple[Condition, ...] = ()
    segment: str | None = None
    weights: tuple[tuple[str, float], ...] = ()
    steps: tuple[int, ...] | None = None
    dry_run: bool = False
    reason: str | None = None


Command: TypeAlias = (
    Deploy
    | Status
    | History
    | Help
    | Lock
    | Unlock
    | Audit
    | Approve
    | Reject
    | Restore
    | Note
    | Schedule
    | Windows
    | Report
    | Freeze
    | Unfreeze
    | Promote
    | PromoteDeployment
    | Rollback
    | FlagList
    | FlagShow
    | FlagChange
)


class CommandError(Exception):
    """The text is not a valid command. `message` says what was wrong; `usage` is the form's usage line."""

    def __init__(self, message: str, usage: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.usage = usage

    def __str__(self) -> str:
        return self.message
