"""/deploy status|history|help|lock|unlock|audit|approve|reject|schedule|windows|freeze|unfreeze|report: the
subcommands of /deploy, one small parser each, found through SUBCOMMAND_PARSERS."""

from __future__ import annotations

import re
from collections.abc import Callable

from bot.domain.commands import words as w
from bot.domain.commands.lexer import Flags, split_flags, str_flag
from bot.domain.commands.messages import did_not_understand, listing, missing_env, suggestion, unexpected
from bot.domain.commands.suggestions import phrase_hint
from bot.domain.commands.types import (
    ENV_CONNECTORS,
    Approve,
    Audit,
    Command,
    CommandError,
    Freeze,
    Help,
    History,
    Lock,
    Note,
    Reject,
    Report,
    Restore,
    Schedule,
    Status,
    Unfreeze,
    Unlock,
    Vocabulary,
    Windows,
)
from bot.domain.commands.usage import example, line, quoted
from bot.domain.suggest import closest

# Words that continue a freeze TIME after its first token: a clock time, am/pm, or a time zone.
_TIME_PART = re.compile(
    r"(?i)[0-9]{1,2}(:[0-9]{2}){1,2}(am|pm)?|[0-9]{1,2}(am|pm)|am|pm|utc|gmt|z|[+-][0-9]{2}:?[0-9]{2}"
    r"|[a-z]+/[a-z_]+(/[a-z_]+)?"
)


def _parse_status(args: list[str], vocab: Vocabulary) -> Status:
    key = "status"
    words, _, _ = split_flags(args, key)
    if not words:
        return Status(None)
    if len(words) > 1:
        raise unexpected(words[1:], words[0], key)
    target = words[0]
    if w.ID_LIKE.fullmatch(target):
        w.deployment_id(target, key)
        return Status(target)
    return Status(w.service(target, vocab, key, ids=True))


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
        raise unexpected(words, env, key)
    return Unlock(service, env)


def _one_deployment_id(key: str, args: list[str]) -> int:
    words, _, _ = split_flags(args, key)
    if not words:
        raise CommandError(f"Which deployment? Give its ID, e.g. `{example(key)}`.", line(key))
    if len(words) > 1:
        raise unexpected(words[1:], words[0], key)
    return w.deployment_id(words[0], key)


def _parse_audit(args: list[str], vocab: Vocabulary) -> Audit:
    return Audit(_one_deployment_id("audit", args))


def _parse_approve(args: list[str], vocab: Vocabulary) -> Approve:
    return Approve(_one_deployment_id("approve", args))


def _parse_reject(args: list[str], vocab: Vocabulary) -> Reject:
    key = "reject"
    words, flags, _ = split_flags(args, key)
    if not words:
        raise CommandError(f"Which deployment, and why? e.g. `{example(key)}`.", line(key))
    deployment_id = w.deployment_id(words[0], key)
    reason = _reason(words[1:], flags, key, f"Say why you reject it, e.g. `{example(key)}`.")
    return Reject(deployment_id, reason)


def _parse_restore(args: list[str], vocab: Vocabulary) -> Restore:
    key = "restore"
    words, flags, _ = split_flags(args, key)
    if not words:
        raise CommandError(f"Which deployment's backup, and why? e.g. `{example(key)}`.", line(key))
    deployment_id = w.deployment_id(words[0], key)
    reason = _reason(
        words[1:], flags, key, f"Say why you restore it (it breaks glass), e.g. `{example(key)}`."
    )
    return Restore(deployment_id, reason)


def _parse_note(args: list[str], vocab: Vocabulary) -> Note:
    """ID TEXT...: the words as typed (no options: a note may say anything)."""
    key = "note"
    if not args:
        raise CommandError(f"Which deployment, and what happened? e.g. `{example(key)}`.", line(key))
    deployment_id = w.deployment_id(args[0], key)
    words = " ".join(args[1:]).strip()
    if not words:
        raise CommandError(f"Write the note after the ID, e.g. `{example(key)}`.", line(key))
    return Note(deployment_id, words)


def _parse_schedule(args: list[str], vocab: Vocabulary) -> Schedule:
    key = "schedule"
    words, _, _ = split_flags(args, key)
    if words:
        raise unexpected(words, "schedule", key)
    return Schedule()


def _parse_freeze(args: list[str], vocab: Vocabulary) -> Freeze:
    key = "freeze"
    shown = example(key)
    words, flags, _ = split_flags(args, key)
    if not words or words[0].lower() == "until":
        raise CommandError(f"Which environment? e.g. `{shown}`.", line(key))
    env = w.env(words[0], vocab, key)
    rest = words[1:]
    if not rest or rest[0].lower() != "until":
        if rest and closest(rest[0], ("until",)):
            raise CommandError(f'Did not understand {quoted(rest[0])}. Did you mean "until"?', line(key))
        raise CommandError(f'Until when? Add "until TIME", e.g. `{shown}`.', line(key))
    if len(rest) < 2 or not rest[1].strip():
        raise CommandError(f'Missing the time after "until", e.g. `{shown}`.', line(key))
    end = 2
    while end < len(rest) and _TIME_PART.fullmatch(rest[end]):
        end += 1
    until = " ".join(rest[1:end])
    reason = _reason(
        rest[end:], flags, key, f"Why is it frozen? Add a reason after the time, e.g. `{shown}`."
    )
    return Freeze(env, until, reason)


def _parse_unfreeze(args: list[str], vocab: Vocabulary) -> Unfreeze:
    key = "unfreeze"
    words, _, _ = split_flags(args, key)
    if not words:
        raise CommandError(f"Which environment? e.g. `{example(key)}`.", line(key))
    env = w.env(words[0], vocab, key)
    if len(words) > 1:
        raise unexpected(words[1:], words[0], key)
    return Unfreeze(env)


def _parse_report(args: list[str], vocab: Vocabulary) -> Report:
    """[SERVICE] [in ENV]: every service without one, every environment without one."""
    key = "report"
    words, _, _ = split_flags(args, key)
    if not words:
        return Report(None, None)
    if words[0].lower() in ENV_CONNECTORS:
        return Report(None, _connected_env(key, words, vocab))
    env = w.lookup(words[0], vocab.environments)
    if env and not w.lookup(words[0], vocab.services):  # a bare environment: no service is called that
        if len(words) > 1:
            raise unexpected(words[1:], words[0], key)
        return Report(None, env)
    service, env = _service_and_optional_env(key, words, vocab)
    return Report(service, env)


SUBCOMMAND_PARSERS: dict[str, Callable[[list[str], Vocabulary], Command]] = {
    "status": _parse_status,
    "history": _parse_history,
    "help": _parse_help,
    "lock": _parse_lock,
    "unlock": _parse_unlock,
    "audit": _parse_audit,
    "approve": _parse_approve,
    "reject": _parse_reject,
    "restore": _parse_restore,
    "note": _parse_note,
    "schedule": _parse_schedule,
    "windows": _parse_windows,
    "freeze": _parse_freeze,
    "unfreeze": _parse_unfreeze,
    "report": _parse_report,
}


def _service_and_optional_env(key: str, args: list[str], vocab: Vocabulary) -> tuple[str, str | None]:
    """SERVICE [in ENV]; a bare ENV is fine here because no version can stand in its place."""
    words, _, _ = split_flags(args, key)
    if not words:
        raise CommandError(f"Which service? e.g. `{example(key)}`.", line(key))
    service = w.service(words[0], vocab, key)
    rest = words[1:]
    if not rest:
        return service, None
    if rest[0].lower() in ENV_CONNECTORS:
        return service, _connected_env(key, rest, vocab)
    env = w.lookup(rest[0], vocab.environments)
    if env:
        if len(rest) > 1:
            raise unexpected(rest[1:], rest[0], key)
        return service, env
    fix = phrase_hint(rest, vocab, ENV_CONNECTORS) if len(rest) <= 2 else None
    if fix:
        raise did_not_understand(rest, fix, suggestion(f"/deploy {key}", [service, fix], []), key)
    if len(rest) == 1 and closest(rest[0], vocab.environments):
        return service, w.env(rest[0], vocab, key)  # raises, with the suggestion
    raise unexpected(rest, words[0], key)


def _connected_env(key: str, rest: list[str], vocab: Vocabulary) -> str:
    """`in ENV` and nothing after it."""
    if len(rest) == 1:
        raise missing_env(rest[0], vocab, key)
    env = w.env(rest[1], vocab, key)
    if len(rest) > 2:
        raise unexpected(rest[2:], rest[1], key)
    return env


def _service_and_required_env(
    key: str, args: list[str], vocab: Vocabulary
) -> tuple[str, str, list[str], Flags]:
    """SERVICE [in] ENV WORDS...: the environment is never defaulted, so a typo in it is caught."""
    words, flags, _ = split_flags(args, key)
    if not words:
        raise CommandError(f"Which service? e.g. `{example(key)}`.", line(key))
    service = w.service(words[0], vocab, key)
    rest = words[1:]
    if rest and rest[0].lower() in ("in", "on"):
        rest = rest[1:]
    if not rest:
        shown = vocab.environments[0] if vocab.environments else "ENV"
        raise CommandError(
            f"Which environment? e.g. `/deploy {key} {service} {shown}`. "
            f"{listing('Environments', vocab.environments)}",
            line(key),
        )
    return service, w.env(rest[0], vocab, key), rest[1:], flags


def _reason(words: list[str], flags: Flags, key: str, missing: str) -> str:
    flagged = str_flag(flags, "reason")
    if flagged and words:
        raise CommandError(
            f"Two reasons: {quoted(' '.join(words))} and --reason {quoted(flagged)}. Give one.", line(key)
        )
    reason = flagged or " ".join(words).strip()
    if not reason:
        raise CommandError(missing, line(key))
    return reason
