"""The grammar of /deploy, /promote and /rollback: turns the text Slack sends into a typed Command, or raises
CommandError with a message that quotes the offending word and suggests a fix. Pure (no I/O, no Slack);
the usage and help strings people see live here too."""

from __future__ import annotations

import difflib
import re
import shlex
from dataclasses import dataclass

from bot.domain.mrkdwn import BACKTICK_LOOKALIKE

MAX_LENGTH = 1000
COMMANDS = ("/deploy", "/promote", "/rollback")
SUBCOMMANDS = (
    "status",
    "history",
    "help",
    "lock",
    "unlock",
    "audit",
    "approve",
    "reject",
    "schedule",
    "windows",
    "freeze",
    "unfreeze",
)
READS = ("status", "history", "help", "audit", "schedule", "windows")  # subcommands that change nothing
STRATEGIES = ("rolling", "blue-green", "canary")
# Order matters: the first is the one suggested when a typo is equally close to several.
DEPLOY_CONNECTORS = ("to", "in", "on")
ENV_CONNECTORS = ("in", "on", "to")

_VERSION = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_ID_LIKE = re.compile(r"#?[0-9]+")
_MAX_ID_DIGITS = 18  # sqlite INTEGER is 64-bit
_WHITESPACE = re.compile(r"\s")
# Phone keyboards turn "..." into curly quotes and "--" into a dash; undo both so flags and quoting work.
_CURLY_DOUBLE_QUOTES = str.maketrans({"\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"'})
_DASHES = ("\u2014", "\u2013")  # em dash, en dash
# Words that continue a freeze TIME after its first token: a clock time, am/pm, or a time zone.
_TIME_PART = re.compile(
    r"(?i)[0-9]{1,2}(:[0-9]{2}){1,2}(am|pm)?|[0-9]{1,2}(am|pm)|am|pm|utc|gmt|z|[+-][0-9]{2}:?[0-9]{2}"
    r"|[a-z]+/[a-z_]+(/[a-z_]+)?"
)


@dataclass(frozen=True)
class Vocabulary:
    """The words a command may use: configured services and environments."""

    services: tuple[str, ...]
    environments: tuple[str, ...]
    default_environment: str | None = None  # used when a command omits the env; None -> env required


@dataclass(frozen=True)
class Deploy:
    service: str
    version: str | None  # None: redeploy the version running now (hubot's `deploy web to staging`)
    env: str
    strategy: str | None
    dry_run: bool
    reason: str | None
    emergency: str | None
    window: bool
    at: str | None


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


Command = (
    Deploy
    | Status
    | History
    | Help
    | Lock
    | Unlock
    | Audit
    | Approve
    | Reject
    | Schedule
    | Windows
    | Freeze
    | Unfreeze
    | Promote
    | PromoteDeployment
    | Rollback
)


class CommandError(Exception):
    """The text is not a valid command. `message` says what was wrong; `usage` is the form's usage line."""

    def __init__(self, message: str, usage: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.usage = usage

    def __str__(self) -> str:
        return self.message


# Every form: key -> (usage line, example). Errors carry the line of the form being parsed.
_FORMS: dict[str, tuple[str, str]] = {
    "deploy": (
        "/deploy SERVICE[/VERSION] [VERSION] [to ENV] [--strategy rolling|blue-green|canary] [--dry-run]"
        ' [--reason "..."] [--emergency "..."] [--window] [--at "TIME"]',
        '/deploy web v2.3.1 to production --strategy canary --reason "fix login redirect"',
    ),
    "status": ("/deploy status [SERVICE|ID]", "/deploy status web"),
    "history": ("/deploy history SERVICE [in ENV]", "/deploy history web in production"),
    "help": ("/deploy help", "/deploy help"),
    "lock": ("/deploy lock SERVICE ENV REASON...", "/deploy lock web production database migration running"),
    "unlock": ("/deploy unlock SERVICE ENV", "/deploy unlock web production"),
    "audit": ("/deploy audit ID", "/deploy audit 42"),
    "approve": ("/deploy approve ID", "/deploy approve 42"),
    "reject": ("/deploy reject ID REASON...", "/deploy reject 42 migration not tested on a copy of prod"),
    "schedule": ("/deploy schedule", "/deploy schedule"),
    "windows": ("/deploy windows SERVICE [in ENV]", "/deploy windows web in production"),
    "freeze": (
        "/deploy freeze ENV until TIME REASON...",
        '/deploy freeze production until "2026-12-24 18:00 Europe/Berlin" holiday freeze',
    ),
    "unfreeze": ("/deploy unfreeze ENV", "/deploy unfreeze production"),
    "promote": (
        "/promote SERVICE from ENV to ENV [--allow-downgrade]",
        "/promote web from staging to production",
    ),
    "promote-id": ("/promote ID [--full]", "/promote 42 --full"),
    "rollback": (
        '/rollback SERVICE [in ENV] [to VERSION] [--gradual] [--reason "..."] [--emergency "..."]',
        '/rollback web in production to v2.3.0 --reason "errors after v2.3.1"',
    ),
}

# Options per form: name -> metavar shown in errors (None: a switch that takes no value).
_FLAGS: dict[str, dict[str, str | None]] = {
    "deploy": {
        "strategy": "canary",
        "dry-run": None,
        "reason": '"fix login redirect"',
        "emergency": '"checkout is down"',
        "window": None,
        "at": '"2026-12-01 18:00 Europe/Berlin"',
    },
    "rollback": {"gradual": None, "reason": '"errors after v2.3.1"', "emergency": '"checkout is down"'},
    "promote": {"full": None, "allow-downgrade": None},
    "lock": {"reason": '"database migration running"'},
    "freeze": {"reason": '"holiday freeze"'},
}

_DEPLOY_OPTIONS = """\
Options for /deploy (anywhere after the service):
  --strategy rolling|blue-green|canary   how to roll out (also --strategy=canary)
  --dry-run              show the plan, change nothing
  --reason "..."         why, kept with the deployment
  --emergency "..."      an emergency deploy, with its justification
  --window               wait for the service's deploy window
  --at "TIME"            start at TIME
Without a version, the version running now is redeployed. Without an environment, the default is used \
(when one is configured). hubot forms work too: `deploy web/v2 to production`."""


def _usage_text(keys: tuple[str, ...], footer: str = "") -> str:
    lines = ["Usage:"]
    for key in keys:
        line, example = _FORMS[key]
        lines.append(f"  {line}")
        lines.append(f"      e.g. `{example}`")
    return "\n".join(lines) + (f"\n{footer}" if footer else "")


USAGE: dict[str, str] = {
    "/deploy": _usage_text(("deploy", *SUBCOMMANDS), _DEPLOY_OPTIONS),
    "/promote": _usage_text(
        ("promote", "promote-id"),
        "/promote ID moves on a deployment that is waiting (a canary, say); --full promotes it all the way."
        " A promotion that would lower the target's version is refused unless you add --allow-downgrade.",
    ),
    "/rollback": _usage_text(
        ("rollback",),
        "Without `to VERSION`, rolls back to the version before the current one. --gradual shifts traffic"
        " back step by step instead of at once. Without an environment, the default is used. A rollback to"
        " a version that succeeded there skips manual items and approvals; any other version is refused"
        ' (deploy it instead), unless an allowed role breaks glass with --emergency "reason".',
    ),
}


def help_text(command: str) -> str:
    """The help for "/deploy", "/promote" or "/rollback" (the slash is optional). /deploy's help is the
    whole tool: it ends with the other two commands."""
    name = _command_name(command)
    if name != "/deploy":
        return USAGE[name]
    others = _usage_text(("promote", "promote-id", "rollback")).replace(
        "Usage:", "The other two commands:", 1
    )
    return f"{USAGE[name]}\n{others}"


def parse(command: str, text: str, vocab: Vocabulary) -> Command:
    """Parse the text of a slash command. Raises CommandError for anything that is not a valid command."""
    name = _command_name(command)
    text = text or ""
    key = {"/deploy": "deploy", "/promote": "promote", "/rollback": "rollback"}[name]
    if len(text) > MAX_LENGTH:
        raise CommandError(
            f"That command is too long ({len(text)} characters; the limit is {MAX_LENGTH}).", _line(key)
        )
    tokens = _tokenize(text, key)
    # People paste hubot-style "deploy web/v2 to production" after typing /deploy.
    if len(tokens) > 0 and tokens[0].lower() == name[1:] and not _lookup(tokens[0], vocab.services):
        tokens = tokens[1:]
    if name == "/deploy":
        if not tokens:
            return Help()
        word = tokens[0].lower()
        if word in SUBCOMMANDS:
            return _SUBCOMMAND_PARSERS[word](tokens[1:], vocab)
        return _parse_deploy(tokens, vocab)
    if len(tokens) == 1 and tokens[0].lower() == "help" and not _lookup("help", vocab.services):
        return Help()
    if name == "/promote":
        return _parse_promote(tokens, vocab)
    return _parse_rollback(tokens, vocab)


def reads_only(name: str, text: str) -> bool:
    """Whether `/deploy TEXT` only reads (status, history, help, audit, schedule, windows): answering it
    twice is harmless, so a replay of it need not be remembered."""
    words = text.split(maxsplit=1)
    return name == "/deploy" and (not words or words[0].lower() in READS)


# --- /deploy --------------------------------------------------------------------------------------------


def _parse_deploy(tokens: list[str], vocab: Vocabulary) -> Deploy:
    key = "deploy"
    words, flags, raw_flags = _split_flags(tokens, key)
    if not words:
        raise CommandError(f"Which service? Start with its name, e.g. `{_FORMS[key][1]}`.", _line(key))
    head, rest = words[0], words[1:]
    if head.lower() in SUBCOMMANDS:
        raise CommandError(
            f'"{head.lower()}" is a command of its own; put it first: `{_line(head.lower())}`.', _line(key)
        )
    service_word, slash, slash_version = head.partition("/")
    service = _service(service_word, vocab, key)
    version = None
    if slash:
        if not slash_version:
            raise CommandError(
                f'Missing the version after "{service}/": write `/deploy {service}/v2.3.1 ...`,'
                ' or leave out the "/" to redeploy the current version.',
                _line(key),
            )
        version = _version(slash_version, key)
    shown_head = f"{service}/{slash_version}" if slash else service

    def suggest(parts: list[str]) -> str:
        return _suggestion("/deploy", [shown_head, *parts], raw_flags)

    connector_at = next((i for i, w in enumerate(rest) if w.lower() in DEPLOY_CONNECTORS), None)
    env_word: str | None = None
    trailing: list[str] = []
    if connector_at is None:
        _diagnose_missing_connector(rest, 0 if slash else 1, vocab, suggest)
        before = rest
    else:
        before, connector, after = rest[:connector_at], rest[connector_at], rest[connector_at + 1 :]
        if not after:
            raise _missing_env(connector, vocab, key)
        env_word, trailing = after[0], after[1:]

    last = shown_head
    if version is None and before:
        version = _version(before[0], key)
        last, before = before[0], before[1:]
    if before:
        if slash and len(before) == 1 and _VERSION.fullmatch(before[0]):
            raise CommandError(
                f'Two versions: "{slash_version}" (after the "/") and {_q(before[0])}. Give one.', _line(key)
            )
        raise _unexpected(before, last, key)

    if env_word is not None:
        env = _env(env_word, vocab, key)
    elif vocab.default_environment is not None:
        env = vocab.default_environment
    else:
        example = vocab.environments[0] if vocab.environments else "ENV"
        raise CommandError(
            f'Which environment? Add it with "to", e.g. {suggest([*rest, "to", example])}. '
            f"{_listing('Environments', vocab.environments)}",
            _line(key),
        )
    if trailing:
        if version is None and len(trailing) == 1 and _VERSION.fullmatch(trailing[0]):
            hint = f' Put the version before "to": {suggest([trailing[0], "to", env])}.'
        else:
            hint = f' To give a reason, use --reason "{_clip(" ".join(trailing))}".'
        raise _unexpected(trailing, env_word or env, key, hint)

    strategy = flags.get("strategy")
    if strategy is not None:
        strategy = _pick(strategy, STRATEGIES, "strategy", "Strategies", key)
    return Deploy(
        service=service,
        version=version,
        env=env,
        strategy=strategy,
        dry_run=bool(flags.get("dry-run")),
        reason=_str_flag(flags, "reason"),
        emergency=_str_flag(flags, "emergency"),
        window=bool(flags.get("window")),
        at=_str_flag(flags, "at"),
    )


def _diagnose_missing_connector(rest: list[str], versions_allowed: int, vocab: Vocabulary, suggest) -> None:
    """No to/in/on was typed. Raise if the words look like an environment that lost or misspelt it."""
    if not rest:
        return
    key = "deploy"
    env_at = [i for i, w in enumerate(rest) if _lookup(w, vocab.environments)]
    if len(env_at) == 1 and len(rest) - 1 <= versions_allowed:
        i = env_at[0]
        env = _lookup(rest[i], vocab.environments)
        others = rest[:i] + rest[i + 1 :]
        raise CommandError(
            f'{_q(rest[i])} needs "to" before it (a bare word after the service is read as a version). '
            f"Did you mean {suggest([*others, 'to', env])}?",
            _line(key),
        )
    for n in (2, 1):
        if n <= len(rest) and len(rest) - n <= versions_allowed:
            fix = _phrase_hint(rest[-n:], vocab, DEPLOY_CONNECTORS)
            if fix:
                raise _did_not_understand(rest[-n:], fix, suggest([*rest[:-n], fix]), key)
    # The last word is past the version slot, so it can only have been meant as an environment.
    if len(rest) == versions_allowed + 1:
        env = _closest(rest[-1], vocab.environments)
        if env:
            fix = f"to {env}"
            raise _did_not_understand(rest[-1:], fix, suggest([*rest[:-1], fix]), key)


# --- /deploy subcommands --------------------------------------------------------------------------------


def _parse_status(args: list[str], vocab: Vocabulary) -> Status:
    key = "status"
    words, _, _ = _split_flags(args, key)
    if not words:
        return Status(None)
    if len(words) > 1:
        raise _unexpected(words[1:], words[0], key)
    target = words[0]
    if _ID_LIKE.fullmatch(target):
        _deployment_id(target, key)
        return Status(target)
    return Status(_service(target, vocab, key, ids=True))


def _parse_history(args: list[str], vocab: Vocabulary) -> History:
    service, env = _service_and_optional_env("history", args, vocab)
    return History(service, env)


def _parse_windows(args: list[str], vocab: Vocabulary) -> Windows:
    service, env = _service_and_optional_env("windows", args, vocab)
    return Windows(service, env)


def _parse_help(args: list[str], vocab: Vocabulary) -> Help:
    return Help()  # "/deploy help lock" still deserves help, not an error


def _parse_lock(args: list[str], vocab: Vocabulary) -> Lock:
    key = "lock"
    service, env, words, flags = _service_and_required_env(key, args, vocab)
    reason = _reason(
        words,
        flags,
        key,
        f"Why is it locked? Add a reason: `/deploy lock {service} {env} database migration running`.",
    )
    return Lock(service, env, reason)


def _parse_unlock(args: list[str], vocab: Vocabulary) -> Unlock:
    key = "unlock"
    service, env, words, _ = _service_and_required_env(key, args, vocab)
    if words:
        raise _unexpected(words, env, key)
    return Unlock(service, env)


def _parse_audit(args: list[str], vocab: Vocabulary) -> Audit:
    key = "audit"
    words, _, _ = _split_flags(args, key)
    if not words:
        raise CommandError(f"Which deployment? Give its ID, e.g. `{_FORMS[key][1]}`.", _line(key))
    if len(words) > 1:
        raise _unexpected(words[1:], words[0], key)
    return Audit(_deployment_id(words[0], key))


def _parse_approve(args: list[str], vocab: Vocabulary) -> Approve:
    key = "approve"
    words, _, _ = _split_flags(args, key)
    if not words:
        raise CommandError(f"Which deployment? Give its ID, e.g. `{_FORMS[key][1]}`.", _line(key))
    if len(words) > 1:
        raise _unexpected(words[1:], words[0], key)
    return Approve(_deployment_id(words[0], key))


def _parse_reject(args: list[str], vocab: Vocabulary) -> Reject:
    key = "reject"
    words, flags, _ = _split_flags(args, key)
    if not words:
        raise CommandError(f"Which deployment, and why? e.g. `{_FORMS[key][1]}`.", _line(key))
    deployment_id = _deployment_id(words[0], key)
    reason = _reason(words[1:], flags, key, f"Say why you reject it, e.g. `{_FORMS[key][1]}`.")
    return Reject(deployment_id, reason)


def _parse_schedule(args: list[str], vocab: Vocabulary) -> Schedule:
    key = "schedule"
    words, _, _ = _split_flags(args, key)
    if words:
        raise _unexpected(words, "schedule", key)
    return Schedule()


def _parse_freeze(args: list[str], vocab: Vocabulary) -> Freeze:
    key = "freeze"
    example = _FORMS[key][1]
    words, flags, _ = _split_flags(args, key)
    if not words or words[0].lower() == "until":
        raise CommandError(f"Which environment? e.g. `{example}`.", _line(key))
    env = _env(words[0], vocab, key)
    rest = words[1:]
    if not rest or rest[0].lower() != "until":
        if rest and _closest(rest[0], ("until",)):
            raise CommandError(f'Did not understand {_q(rest[0])}. Did you mean "until"?', _line(key))
        raise CommandError(f'Until when? Add "until TIME", e.g. `{example}`.', _line(key))
    if len(rest) < 2 or not rest[1].strip():
        raise CommandError(f'Missing the time after "until", e.g. `{example}`.', _line(key))
    end = 2
    while end < len(rest) and _TIME_PART.fullmatch(rest[end]):
        end += 1
    until = " ".join(rest[1:end])
    reason = _reason(
        rest[end:], flags, key, f"Why is it frozen? Add a reason after the time, e.g. `{example}`."
    )
    return Freeze(env, until, reason)


def _parse_unfreeze(args: list[str], vocab: Vocabulary) -> Unfreeze:
    key = "unfreeze"
    words, _, _ = _split_flags(args, key)
    if not words:
        raise CommandError(f"Which environment? e.g. `{_FORMS[key][1]}`.", _line(key))
    env = _env(words[0], vocab, key)
    if len(words) > 1:
        raise _unexpected(words[1:], words[0], key)
    return Unfreeze(env)


_SUBCOMMAND_PARSERS = {
    "status": _parse_status,
    "history": _parse_history,
    "help": _parse_help,
    "lock": _parse_lock,
    "unlock": _parse_unlock,
    "audit": _parse_audit,
    "approve": _parse_approve,
    "reject": _parse_reject,
    "schedule": _parse_schedule,
    "windows": _parse_windows,
    "freeze": _parse_freeze,
    "unfreeze": _parse_unfreeze,
}


def _service_and_optional_env(key: str, args: list[str], vocab: Vocabulary) -> tuple[str, str | None]:
    """SERVICE [in ENV]; a bare ENV is fine here because no version can stand in its place."""
    words, _, _ = _split_flags(args, key)
    if not words:
        raise CommandError(f"Which service? e.g. `{_FORMS[key][1]}`.", _line(key))
    service = _service(words[0], vocab, key)
    rest = words[1:]
    if not rest:
        return service, None
    if rest[0].lower() in ENV_CONNECTORS:
        if len(rest) == 1:
            raise _missing_env(rest[0], vocab, key)
        env = _env(rest[1], vocab, key)
        if len(rest) > 2:
            raise _unexpected(rest[2:], rest[1], key)
        return service, env
    env = _lookup(rest[0], vocab.environments)
    if env:
        if len(rest) > 1:
            raise _unexpected(rest[1:], rest[0], key)
        return service, env
    for n in (2, 1):
        if len(rest) == n:
            fix = _phrase_hint(rest, vocab, ENV_CONNECTORS)
            if fix:
                raise _did_not_understand(rest, fix, _suggestion(f"/deploy {key}", [service, fix], []), key)
    if len(rest) == 1 and _closest(rest[0], vocab.environments):
        return service, _env(rest[0], vocab, key)  # raises, with the suggestion
    raise _unexpected(rest, words[0], key)


def _service_and_required_env(
    key: str, args: list[str], vocab: Vocabulary
) -> tuple[str, str, list[str], dict[str, str | bool]]:
    """SERVICE [in] ENV WORDS...: the environment is never defaulted, so a typo in it is caught."""
    words, flags, _ = _split_flags(args, key)
    if not words:
        raise CommandError(f"Which service? e.g. `{_FORMS[key][1]}`.", _line(key))
    service = _service(words[0], vocab, key)
    rest = words[1:]
    if rest and rest[0].lower() in ("in", "on"):
        rest = rest[1:]
    if not rest:
        example = vocab.environments[0] if vocab.environments else "ENV"
        raise CommandError(
            f"Which environment? e.g. `/deploy {key} {service} {example}`. "
            f"{_listing('Environments', vocab.environments)}",
            _line(key),
        )
    return service, _env(rest[0], vocab, key), rest[1:], flags


def _reason(words: list[str], flags: dict[str, str | bool], key: str, missing: str) -> str:
    flagged = _str_flag(flags, "reason")
    if flagged and words:
        raise CommandError(
            f"Two reasons: {_q(' '.join(words))} and --reason {_q(flagged)}. Give one.", _line(key)
        )
    reason = flagged or " ".join(words).strip()
    if not reason:
        raise CommandError(missing, _line(key))
    return reason


# --- /promote -------------------------------------------------------------------------------------------


def _parse_promote(tokens: list[str], vocab: Vocabulary) -> Promote | PromoteDeployment:
    key = "promote"
    if not tokens:
        raise CommandError(
            f"Promote what? e.g. `{_FORMS['promote'][1]}`, or a deployment: `{_FORMS['promote-id'][1]}`.",
            _line(key),
        )
    words, flags, raw_flags = _split_flags(tokens, key)
    if not words:
        raise CommandError(
            f"Promote what? Give a deployment ID, e.g. `{_FORMS['promote-id'][1]}`.", _line("promote-id")
        )
    head, rest = words[0], words[1:]
    if _ID_LIKE.fullmatch(head):
        deployment_id = _deployment_id(head, "promote-id")
        if rest:
            raise _unexpected(rest, head, "promote-id")
        if flags.get("allow-downgrade"):
            raise CommandError(
                f"--allow-downgrade works with `{_line(key).split(' [')[0]}` only, e.g. "
                f"`{_FORMS[key][1]} --allow-downgrade`.",
                _line(key),
            )
        return PromoteDeployment(deployment_id, bool(flags.get("full")))
    service = _service(head, vocab, key, ids=True)
    if flags.get("full"):
        raise CommandError(
            f"--full works with a deployment ID only, e.g. `{_FORMS['promote-id'][1]}`.", _line("promote-id")
        )
    ends: dict[str, str] = {}
    i = 0
    while i < len(rest):
        word = rest[i].lower()
        if word in ("from", "to"):
            if i + 1 >= len(rest):
                raise _missing_env(word, vocab, key)
            if word in ends:
                raise CommandError(f'"{word}" is given twice.', _line(key))
            ends[word] = _env(rest[i + 1], vocab, key)
            i += 2
            continue
        for n in (2, 1):
            fix = _phrase_hint(rest[i : i + n], vocab, ("from", "to")) if i + n <= len(rest) else None
            if fix:
                suggestion = _suggestion("/promote", [service, *rest[:i], fix, *rest[i + n :]], raw_flags)
                raise _did_not_understand(rest[i : i + n], fix, suggestion, key)
        env = _lookup(rest[i], vocab.environments)
        if env and "from" not in ends:
            next_env = _lookup(rest[i + 1], vocab.environments) if i + 1 < len(rest) else None
            if next_env and "to" not in ends:  # "staging production": the order says which is which
                n, fix = 2, f"from {env} to {next_env}"
            else:
                n, fix = 1, f"from {env}"
        elif env and "to" not in ends:
            n, fix = 1, f"to {env}"
        else:
            raise _unexpected(rest[i:], rest[i - 1] if i else service, key)
        suggestion = _suggestion("/promote", [service, *rest[:i], fix, *rest[i + n :]], raw_flags)
        raise _did_not_understand(rest[i : i + n], fix, suggestion, key)
    if "from" not in ends:
        target = ends.get("to")
        source = _neighbour(target, vocab, -1) if target else None
        example = (
            f"`/promote {service} from {source} to {target}`" if source and target else f"`{_FORMS[key][1]}`"
        )
        what = (
            'Say where to promote from with "from ENV"'
            if target
            else 'Say where from and to with "from ENV to ENV"'
        )
        raise CommandError(f"{what}; /promote does not guess the source. e.g. {example}.", _line(key))
    if "to" not in ends:
        target = _neighbour(ends["from"], vocab, +1)
        example = f"`/promote {service} from {ends['from']} to {target}`" if target else f"`{_FORMS[key][1]}`"
        raise CommandError(f'Say where to promote to with "to ENV", e.g. {example}.', _line(key))
    if ends["from"] == ends["to"]:
        raise CommandError(
            f'"from" and "to" are both "{ends["to"]}"; promote between two environments.', _line(key)
        )
    return Promote(service, ends["from"], ends["to"], bool(flags.get("allow-downgrade")))


def _neighbour(env: str, vocab: Vocabulary, step: int) -> str | None:
    envs = vocab.environments
    if env not in envs:
        return None
    i = envs.index(env) + step
    return envs[i] if 0 <= i < len(envs) else None


# --- /rollback ------------------------------------------------------------------------------------------


def _parse_rollback(tokens: list[str], vocab: Vocabulary) -> Rollback:
    key = "rollback"
    if not tokens:
        raise CommandError(f"Roll back what? e.g. `{_FORMS[key][1]}`.", _line(key))
    words, flags, raw_flags = _split_flags(tokens, key)
    if not words:
        raise CommandError(f"Which service? e.g. `{_FORMS[key][1]}`.", _line(key))
    head, rest = words[0], words[1:]
    service_word, slash, slash_version = head.partition("/")
    service = _service(service_word, vocab, key)
    version = None
    if slash:
        if not slash_version:
            raise CommandError(f'Missing the version after "{service}/".', _line(key))
        version = _version(slash_version, key)
    env: str | None = None
    i = 0
    while i < len(rest):
        word = rest[i]
        low = word.lower()
        if low in ("in", "on", "to"):
            if i + 1 >= len(rest):
                what = "version" if low == "to" else "environment"
                raise CommandError(f'Missing the {what} after "{word}".', _line(key))
            arg = rest[i + 1]
            arg_env = _lookup(arg, vocab.environments)
            if low == "to" and arg_env and env is not None:
                raise CommandError(
                    f'"{arg_env}" is an environment, and the environment is already "{env}". '
                    'To roll back to a version, write "to VERSION".',
                    _line(key),
                )
            if low == "to" and not arg_env:
                if version is not None:
                    raise CommandError(f'Two versions: "{version}" and {_q(arg)}. Give one.', _line(key))
                version = _version(arg, key)
            else:  # "in ENV", "on ENV", and "to production" meaning the environment
                if env is not None:
                    raise CommandError(f'Two environments: "{env}" and {_q(arg)}. Give one.', _line(key))
                env = _env(arg, vocab, key)
            i += 2
            continue
        bare_env = _lookup(word, vocab.environments)
        if bare_env and env is None:
            env = bare_env
            i += 1
            continue
        shown = [f"{service}/{slash_version}" if slash else service]
        for n in (2, 1):
            fix = _phrase_hint(rest[i : i + n], vocab, ("in", "on")) if i + n <= len(rest) else None
            if fix:
                suggestion = _suggestion("/rollback", [*shown, *rest[:i], fix, *rest[i + n :]], raw_flags)
                raise _did_not_understand(rest[i : i + n], fix, suggestion, key)
        if version is None and _VERSION.fullmatch(word):
            fix = f"to {word}"
            suggestion = _suggestion("/rollback", [*shown, *rest[:i], fix, *rest[i + 1 :]], raw_flags)
            raise _did_not_understand([word], fix, suggestion, key)
        raise _unexpected(rest[i:], rest[i - 1] if i else head, key)
    if env is None:
        if vocab.default_environment is None:
            raise CommandError(
                f'Which environment? Add it with "in", e.g. `{_FORMS[key][1]}`. '
                f"{_listing('Environments', vocab.environments)}",
                _line(key),
            )
        env = vocab.default_environment
    return Rollback(
        service,
        env,
        version,
        bool(flags.get("gradual")),
        _str_flag(flags, "reason"),
        _str_flag(flags, "emergency"),
    )


# --- words ----------------------------------------------------------------------------------------------


def _command_name(command: str) -> str:
    name = str(command or "").strip().lower()
    if not name.startswith("/"):
        name = "/" + name
    if name not in COMMANDS:
        raise CommandError(
            f"Unknown command {_q(name)}. Commands: {', '.join(COMMANDS)}.",
            "\n".join(_line(key) for key in ("deploy", "promote", "rollback")),
        )
    return name


def _tokenize(text: str, key: str) -> list[str]:
    text = _escape_apostrophes(_WHITESPACE.sub(" ", text.translate(_CURLY_DOUBLE_QUOTES)))
    try:
        return shlex.split(text)
    except ValueError:
        pass
    quote = _unclosed_quote(text)
    if quote is None:
        raise CommandError(
            "The command ends with a backslash (\\) that escapes nothing; remove it.", _line(key)
        ) from None
    char, at = quote
    message = f"Unclosed quote: the {char} in {_q(text[max(0, at - 10) : at + 20])} is never closed."
    if char == "'":
        message += ' If it is an apostrophe, put the text in double quotes, e.g. --reason "can\'t wait".'
    raise CommandError(message, _line(key)) from None


def _escape_apostrophes(text: str) -> str:
    """A ' between two letters outside quotes is an apostrophe (can't), not a quote: escape it for shlex."""
    out: list[str] = []
    quote, i = "", 0
    while i < len(text):
        char = text[i]
        if char == "\\" and quote != "'":  # an escape: copy it with the character it escapes
            out.append(text[i : i + 2])
            i += 2
            continue
        if (
            not quote
            and char == "'"
            and 0 < i < len(text) - 1
            and text[i - 1].isalpha()
            and text[i + 1].isalpha()
        ):
            out.append("\\'")
        else:
            out.append(char)
            if not quote and char in "'\"":
                quote = char
            elif char == quote:
                quote = ""
        i += 1
    return "".join(out)


def _unclosed_quote(text: str) -> tuple[str, int] | None:
    """Where shlex's "No closing quotation" starts: the quote character and its index."""
    quote, start, i = "", 0, 0
    while i < len(text):
        char = text[i]
        if not quote:
            if char == "\\":
                i += 1
            elif char in "'\"":
                quote, start = char, i
        elif char == quote:
            quote = ""
        elif quote == '"' and char == "\\":
            i += 1
        i += 1
    return (quote, start) if quote else None


def _is_flag(token: str) -> bool:
    return (token.startswith("-") and len(token) > 1) or token.startswith(_DASHES)


def _split_flags(tokens: list[str], key: str) -> tuple[list[str], dict[str, str | bool], list[str]]:
    """Pull options out from anywhere in the tokens: (other words, {name: value}, the option tokens)."""
    allowed = _FLAGS.get(key, {})
    words: list[str] = []
    values: dict[str, str | bool] = {}
    raw: list[str] = []
    i = 0
    while i < len(tokens):
        token = tokens[i]
        i += 1
        if not _is_flag(token):
            words.append(token)
            continue
        if token.startswith(_DASHES):
            token = "--" + token[1:]
        spelled, equals, value = token.partition("=")
        name = spelled[2:].lower() if spelled.startswith("--") else ""
        if name not in allowed:
            raise _unknown_flag(spelled, allowed, key)
        if name in values:
            raise CommandError(f'The option "--{name}" is given twice.', _line(key))
        metavar = allowed[name]
        if metavar is None:
            if equals:
                raise CommandError(f'The option "--{name}" takes no value (got {_q(value)}).', _line(key))
            values[name] = True
            raw.append(f"--{name}")
            continue
        if not equals:
            if i >= len(tokens) or tokens[i].startswith(("--", *_DASHES)):
                raise CommandError(
                    f'The option "--{name}" needs a value, e.g. --{name} {metavar}.', _line(key)
                )
            value = tokens[i]
            i += 1
        if not value.strip():
            raise CommandError(f'The option "--{name}" needs a value, e.g. --{name} {metavar}.', _line(key))
        values[name] = value
        raw.extend([f"--{name}", value])
    return words, values, raw


def _unknown_flag(spelled: str, allowed: dict[str, str | None], key: str) -> CommandError:
    where = f"`{_line(key).split(' [')[0]}`" if key in _FORMS else "this command"
    if not allowed:
        return CommandError(f"Unknown option {_q(spelled)}: {where} takes no options.", _line(key))
    close = difflib.get_close_matches(spelled.lstrip("-").lower(), list(allowed), n=1, cutoff=0.5)
    message = f"Unknown option {_q(spelled)}."
    if close:
        message += f' Did you mean "--{close[0]}"?'
    else:
        message += f" Options: {', '.join('--' + name for name in allowed)}."
    return CommandError(message, _line(key))


def _str_flag(flags: dict[str, str | bool], name: str) -> str | None:
    value = flags.get(name)
    return value if isinstance(value, str) else None


def _service(word: str, vocab: Vocabulary, key: str, ids: bool = False) -> str:
    extra = " (Or give a deployment ID, like 42.)" if ids else ""
    return _pick(word, vocab.services, "service", "Services", key, extra)


def _env(word: str, vocab: Vocabulary, key: str) -> str:
    return _pick(word, vocab.environments, "environment", "Environments", key)


def _pick(word: str, choices: tuple[str, ...], kind: str, label: str, key: str, extra: str = "") -> str:
    """The vocabulary's spelling of `word`, or a CommandError naming the nearest valid word."""
    found = _lookup(word, choices)
    if found:
        return found
    message = f"Unknown {kind} {_q(word)}."
    close = _closest(word, choices)
    if close:
        message += f' Did you mean "{close}"?'
    elif key == "deploy" and kind == "service" and (command := _closest(word, SUBCOMMANDS)):
        message += f" Did you mean `/deploy {command}`?"
    raise CommandError(f"{message} {_listing(label, choices)}{extra}", _line(key))


def _lookup(word: str, choices: tuple[str, ...]) -> str | None:
    low = word.lower()
    return next((choice for choice in choices if choice.lower() == low), None)


def _closest(word: str, choices: tuple[str, ...], cutoff: float = 0.6) -> str | None:
    by_lower = {choice.lower(): choice for choice in choices}
    close = difflib.get_close_matches(word.lower(), list(by_lower), n=1, cutoff=cutoff)
    return by_lower[close[0]] if close else None


def _listing(label: str, choices: tuple[str, ...]) -> str:
    return f"{label}: {', '.join(sorted(choices)) if choices else '(none configured)'}."


def _version(word: str, key: str) -> str:
    if _VERSION.fullmatch(word):
        return word
    raise CommandError(
        f"Bad version {_q(word)}: a version is an image tag of letters, digits, _ . and -,"
        " up to 128 characters, not starting with . or -.",
        _line(key),
    )


def _deployment_id(word: str, key: str) -> int:
    digits = word.removeprefix("#")
    if digits.isascii() and digits.isdigit() and len(digits) <= _MAX_ID_DIGITS:
        return int(digits)
    raise CommandError(f"{_q(word)} is not a deployment ID; IDs are numbers, like 42 or #42.", _line(key))


def _edits(a: str, b: str) -> int:
    """Edit distance counting a swap of neighbours as one edit (so "ot" is one edit from "to")."""
    if abs(len(a) - len(b)) > 1:
        return 2  # callers only care whether it is <= 1
    before: list[int] = []
    previous = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        current = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] != b[j - 1]))
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                current[j] = min(current[j], before[j - 2] + 1)
        before, previous = previous, current
    return previous[-1]


def _fix_connector(word: str, connectors: tuple[str, ...]) -> str | None:
    low = word.lower()
    scored = [(_edits(low, connector), connector) for connector in connectors]
    best = min(scored, key=lambda pair: pair[0])  # min keeps the first of equals: connector order decides
    return best[1] if best[0] <= 1 else None


def _phrase_hint(words: list[str], vocab: Vocabulary, connectors: tuple[str, ...]) -> str | None:
    """If `words` look like a misspelt "CONNECTOR ENV" ("tos taging", "tostaging"), the fixed phrase."""
    if len(words) == 2:
        connector = _fix_connector(words[0], connectors)
        env = _lookup(words[1], vocab.environments) or _closest(words[1], vocab.environments)
        if connector and env:
            return f"{connector} {env}"
    if len(words) == 1:
        low = words[0].lower()
        for connector in connectors:
            if low.startswith(connector) and len(low) > len(connector):
                env = _lookup(low[len(connector) :], vocab.environments) or _closest(
                    low[len(connector) :], vocab.environments, cutoff=0.75
                )
                if env:
                    return f"{connector} {env}"
    return None


# --- messages -------------------------------------------------------------------------------------------


def _line(key: str) -> str:
    return _FORMS[key][0]


def _clip(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _q(word: str) -> str:
    return f'"{_clip(word)}"'


def _suggestion(command: str, parts: list[str], raw_flags: list[str]) -> str:
    # The options go back in, so pasting the suggestion never silently drops a --dry-run.
    text = " ".join([command, *parts]) + (f" {shlex.join(raw_flags)}" if raw_flags else "")
    return f"`{text.replace('`', BACKTICK_LOOKALIKE)}`"  # a typed backtick must not end the code span


def _missing_env(after: str, vocab: Vocabulary, key: str) -> CommandError:
    return CommandError(
        f'Missing the environment after "{after}". {_listing("Environments", vocab.environments)}', _line(key)
    )


def _did_not_understand(words: list[str], fix: str, suggestion: str, key: str) -> CommandError:
    return CommandError(
        f'Did not understand {_q(" ".join(words))}. Did you mean "{fix}", as in {suggestion}?', _line(key)
    )


def _unexpected(words: list[str], after: str, key: str, hint: str = "") -> CommandError:
    noun = "word" if len(words) == 1 else "words"
    return CommandError(f"Unexpected {noun} {_q(' '.join(words))} after {_q(after)}.{hint}", _line(key))
