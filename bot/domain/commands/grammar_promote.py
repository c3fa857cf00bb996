"""/promote SERVICE from ENV to ENV [--allow-downgrade] and /promote ID [--full]. /promote never guesses
the source: a missing end is an error whose example names the neighbouring environment."""

from __future__ import annotations

from bot.domain.commands import words as w
from bot.domain.commands.lexer import Flags, split_flags
from bot.domain.commands.messages import did_not_understand, missing_env, suggestion, unexpected
from bot.domain.commands.suggestions import phrase_hint
from bot.domain.commands.types import CommandError, Promote, PromoteDeployment, Vocabulary
from bot.domain.commands.usage import example, line

KEY = "promote"
ID_KEY = "promote-id"
_ENDS = ("from", "to")


def parse_promote(tokens: list[str], vocab: Vocabulary) -> Promote | PromoteDeployment:
    if not tokens:
        raise CommandError(
            f"Promote what? e.g. `{example(KEY)}`, or a deployment: `{example(ID_KEY)}`.", line(KEY)
        )
    words, flags, raw_flags = split_flags(tokens, KEY)
    if not words:
        raise CommandError(f"Promote what? Give a deployment ID, e.g. `{example(ID_KEY)}`.", line(ID_KEY))
    head, rest = words[0], words[1:]
    if w.ID_LIKE.fullmatch(head):
        return _promote_deployment(head, rest, flags)
    service = w.service(head, vocab, KEY, ids=True)
    if flags.get("full"):
        raise CommandError(f"--full works with a deployment ID only, e.g. `{example(ID_KEY)}`.", line(ID_KEY))
    ends = _ends(service, rest, vocab, raw_flags)
    source, target = _both_ends(service, ends, vocab)
    return Promote(service, source, target, bool(flags.get("allow-downgrade")))


def _promote_deployment(head: str, rest: list[str], flags: Flags) -> PromoteDeployment:
    deployment_id = w.deployment_id(head, ID_KEY)
    if rest:
        raise unexpected(rest, head, ID_KEY)
    if flags.get("allow-downgrade"):
        raise CommandError(
            f"--allow-downgrade works with `{line(KEY).split(' [')[0]}` only, e.g. "
            f"`{example(KEY)} --allow-downgrade`.",
            line(KEY),
        )
    return PromoteDeployment(deployment_id, bool(flags.get("full")))


def _ends(service: str, rest: list[str], vocab: Vocabulary, raw_flags: list[str]) -> dict[str, str]:
    """{"from": ENV, "to": ENV} as given; anything else in `rest` is an error with a suggested fix."""
    ends: dict[str, str] = {}
    i = 0
    while i < len(rest):
        word = rest[i].lower()
        if word not in _ENDS:
            raise _not_understood(service, rest, i, ends, vocab, raw_flags)
        if i + 1 >= len(rest):
            raise missing_env(word, vocab, KEY)
        if word in ends:
            raise CommandError(f'"{word}" is given twice.', line(KEY))
        ends[word] = w.env(rest[i + 1], vocab, KEY)
        i += 2
    return ends


def _not_understood(
    service: str, rest: list[str], i: int, ends: dict[str, str], vocab: Vocabulary, raw_flags: list[str]
) -> CommandError:
    """rest[i] is not "from"/"to": a misspelt "from ENV"/"to ENV", or an environment that lost its word."""
    fixed = _phrase_fix(rest, i, vocab) or _bare_env_fix(rest, i, ends, vocab)
    if fixed is None:
        return unexpected(rest[i:], rest[i - 1] if i else service, KEY)
    n, fix = fixed
    suggested = suggestion("/promote", [service, *rest[:i], fix, *rest[i + n :]], raw_flags)
    return did_not_understand(rest[i : i + n], fix, suggested, KEY)


def _phrase_fix(rest: list[str], i: int, vocab: Vocabulary) -> tuple[int, str] | None:
    """(words replaced, the phrase) for "fromstaging", "ot production" and the like."""
    for n in (2, 1):
        fix = phrase_hint(rest[i : i + n], vocab, _ENDS) if i + n <= len(rest) else None
        if fix:
            return n, fix
    return None


def _bare_env_fix(rest: list[str], i: int, ends: dict[str, str], vocab: Vocabulary) -> tuple[int, str] | None:
    """(words replaced, the phrase) for an environment typed without "from"/"to"."""
    env = w.lookup(rest[i], vocab.environments)
    if not env:
        return None
    if "from" not in ends:
        next_env = w.lookup(rest[i + 1], vocab.environments) if i + 1 < len(rest) else None
        if next_env and "to" not in ends:  # "staging production": the order says which is which
            return 2, f"from {env} to {next_env}"
        return 1, f"from {env}"
    if "to" not in ends:
        return 1, f"to {env}"
    return None


def _both_ends(service: str, ends: dict[str, str], vocab: Vocabulary) -> tuple[str, str]:
    """(source, target), or an error saying which end is missing, with an example that has it."""
    target = ends.get("to")
    if "from" not in ends:
        source = _neighbour(target, vocab, -1) if target else None
        shown = (
            f"`/promote {service} from {source} to {target}`" if source and target else f"`{example(KEY)}`"
        )
        what = (
            'Say where to promote from with "from ENV"'
            if target
            else 'Say where from and to with "from ENV to ENV"'
        )
        raise CommandError(f"{what}; /promote does not guess the source. e.g. {shown}.", line(KEY))
    source = ends["from"]
    if target is None:
        after = _neighbour(source, vocab, +1)
        shown = f"`/promote {service} from {source} to {after}`" if after else f"`{example(KEY)}`"
        raise CommandError(f'Say where to promote to with "to ENV", e.g. {shown}.', line(KEY))
    if source == target:
        raise CommandError(
            f'"from" and "to" are both "{target}"; promote between two environments.', line(KEY)
        )
    return source, target


def _neighbour(env: str, vocab: Vocabulary, step: int) -> str | None:
    envs = vocab.environments
    if env not in envs:
        return None
    i = envs.index(env) + step
    return envs[i] if 0 <= i < len(envs) else None
