"""The CommandErrors the parsers share: unexpected words, a missing environment, "did not understand X,
did you mean Y" with a whole corrected command to paste."""

from __future__ import annotations

import shlex

from bot.domain.commands.types import CommandError, Vocabulary
from bot.domain.commands.usage import line, quoted
from bot.domain.mrkdwn import BACKTICK_LOOKALIKE


def listing(label: str, choices: tuple[str, ...]) -> str:
    """'Environments: production, staging.' (sorted), or that none are configured."""
    return f"{label}: {', '.join(sorted(choices)) if choices else '(none configured)'}."


def suggestion(command: str, parts: list[str], raw_flags: list[str]) -> str:
    """A corrected command as a code span, with the options the person typed put back in."""
    # The options go back in, so pasting the suggestion never silently drops a --dry-run.
    text = " ".join([command, *parts]) + (f" {shlex.join(raw_flags)}" if raw_flags else "")
    return f"`{text.replace('`', BACKTICK_LOOKALIKE)}`"  # a typed backtick must not end the code span


def missing_env(after: str, vocab: Vocabulary, key: str) -> CommandError:
    return CommandError(
        f'Missing the environment after "{after}". {listing("Environments", vocab.environments)}', line(key)
    )


def did_not_understand(words: list[str], fix: str, suggested: str, key: str) -> CommandError:
    return CommandError(
        f'Did not understand {quoted(" ".join(words))}. Did you mean "{fix}", as in {suggested}?', line(key)
    )


def unexpected(words: list[str], after: str, key: str, hint: str = "") -> CommandError:
    noun = "word" if len(words) == 1 else "words"
    return CommandError(
        f"Unexpected {noun} {quoted(' '.join(words))} after {quoted(after)}.{hint}", line(key)
    )
