"""The grammar's parts that were restructured when it became a package: options, the "did you mean" for
options and words (now bot.domain.suggest), connector slips, and the exact messages of the three forms'
reworked parsers. Each message is the one the single-module grammar gave, word for word."""

from __future__ import annotations

from typing import get_args

import pytest

from bot.domain import commands as cmds
from bot.domain.commands.lexer import split_flags, tokenize
from bot.domain.commands.suggestions import edits, fix_connector, phrase_hint
from bot.domain.strategies import STRATEGIES, Strategy, strategy_named

VOCAB = cmds.Vocabulary(("web", "api"), ("staging", "production"), "staging")


def message(command: str, text: str) -> str:
    with pytest.raises(cmds.CommandError) as caught:
        cmds.parse(command, text, VOCAB)
    return caught.value.message


# --- options --------------------------------------------------------------------------------------------


def test_split_flags_pulls_options_from_anywhere_and_keeps_their_tokens() -> None:
    words, flags, raw = split_flags(["--dry-run", "web", "--reason=why", "v2", "--at", "18:00"], "deploy")
    assert words == ["web", "v2"]
    assert flags == {"dry-run": True, "reason": "why", "at": "18:00"}
    assert raw == ["--dry-run", "--reason", "why", "--at", "18:00"]


def test_dashes_from_a_phone_are_read_as_two_hyphens() -> None:
    words, flags, raw = split_flags(["web", "\u2013reason=why", "\u2014window"], "deploy")
    assert (words, flags, raw) == (
        ["web"],
        {"reason": "why", "window": True},
        ["--reason", "why", "--window"],
    )


def test_tokenize_reads_apostrophes_and_phone_quotes() -> None:
    assert tokenize("lock web can't \u201cstop now\u201d", "lock") == ["lock", "web", "can't", "stop now"]


def test_tokenize_splits_exactly_as_shlex_does_with_quotes_or_without() -> None:
    """The short way (no quote, no backslash: split at the spaces) gives what shlex gives, on random texts
    of every kind of space, punctuation shlex could treat specially in other modes, non-ASCII letters, and
    now and then a quote or a backslash (the long way, or an error where shlex fails)."""
    import random
    import re
    import shlex

    from bot.domain.commands.lexer import _escape_apostrophes

    common = list("abcXYZ019-_=.,:;#!$&|()<>*?@~%+/") + [
        " ",
        "  ",
        "\t",
        "\n",
        "\u00a0",
        "\u2003",
        "\u00e9",
        "\x1c",
    ]
    rng = random.Random(10)
    for _ in range(4000):
        text = "".join(
            rng.choice("'\"\\") if rng.random() < 0.03 else rng.choice(common)
            for _ in range(rng.randint(0, 24))
        )
        try:
            expected = shlex.split(_escape_apostrophes(re.sub(r"\s", " ", text)))
        except ValueError:
            with pytest.raises(cmds.CommandError):
                tokenize(text, "deploy")
            continue
        assert tokenize(text, "deploy") == expected, repr(text)


OPTION_ERRORS = [
    ("web v2 --strategi canary", 'Unknown option "--strategi". Did you mean "--strategy"?'),
    ("web v2 --DRYRUN", 'Unknown option "--DRYRUN". Did you mean "--dry-run"?'),
    (
        "web v2 --zzzz",
        'Unknown option "--zzzz". Options: --strategy, --dry-run, --reason, --emergency, --window, --at, --pipeline.',
    ),
    ("status --all", 'Unknown option "--all": `/deploy status` takes no options.'),
    (
        "reject 42 bad --reason worse",
        'Unknown option "--reason": `/deploy reject ID REASON...` takes no options.',
    ),
    # "given twice" is told before anything about the second one's value
    ("web v2 --dry-run --dry-run=x", 'The option "--dry-run" is given twice.'),
    ("web v2 --reason=a --reason b", 'The option "--reason" is given twice.'),
    ("web v2 --reason=", 'The option "--reason" needs a value, e.g. --reason "fix login redirect".'),
    ("web v2 --window=", 'The option "--window" takes no value (got "").'),
    (
        "web --strategy CANERY",
        'Unknown strategy "CANERY". Did you mean "canary"? Strategies: blue-green, canary, rolling.',
    ),
]


@pytest.mark.parametrize(("text", "expected"), OPTION_ERRORS)
def test_option_errors(text: str, expected: str) -> None:
    assert message("/deploy", text) == expected


# --- strategies -----------------------------------------------------------------------------------------


def test_strategy_names_are_the_literal_type_and_the_grammar_spells_them_so() -> None:
    assert get_args(Strategy) == STRATEGIES
    assert strategy_named("canary") == "canary" and strategy_named("Canary") is None
    for name in STRATEGIES:
        parsed = cmds.parse("/deploy", f"web --strategy {name.upper()}", VOCAB)
        assert isinstance(parsed, cmds.Deploy) and parsed.strategy == name


# --- connector slips ------------------------------------------------------------------------------------


def test_edits_counts_a_swap_of_neighbours_as_one() -> None:
    assert edits("ot", "to") == 1 and edits("to", "to") == 0 and edits("tx", "to") == 1
    assert edits("xy", "to") == 2 and edits("frmo", "from") == 1 and edits("a", "abc") == 2


def test_fix_connector_prefers_the_first_of_equally_close_connectors() -> None:
    assert fix_connector("ot", cmds.DEPLOY_CONNECTORS) == "to"
    assert fix_connector("o", cmds.DEPLOY_CONNECTORS) == "to"  # "to" and "on" are both one edit away
    assert fix_connector("o", cmds.ENV_CONNECTORS) == "on"  # "in" is two edits away
    assert fix_connector("xyz", cmds.DEPLOY_CONNECTORS) is None


@pytest.mark.parametrize(
    ("words", "connectors", "expected"),
    [
        (["tos", "taging"], cmds.DEPLOY_CONNECTORS, "to staging"),  # the space slipped one letter right
        (["tos", "mars"], cmds.DEPLOY_CONNECTORS, None),  # no environment near "mars"
        (["ot", "production"], cmds.DEPLOY_CONNECTORS, "to production"),
        (["ni", "prodution"], cmds.ENV_CONNECTORS, "in production"),
        (["tostaging"], cmds.DEPLOY_CONNECTORS, "to staging"),
        (["inprodution"], cmds.ENV_CONNECTORS, "in production"),
        (["fromstaging"], ("from", "to"), "from staging"),
        (["to"], cmds.DEPLOY_CONNECTORS, None),  # a connector alone is not a phrase
        (["toxyz"], cmds.DEPLOY_CONNECTORS, None),
        (["to", "staging", "now"], cmds.DEPLOY_CONNECTORS, None),
    ],
)
def test_phrase_hint(words: list[str], connectors: tuple[str, ...], expected: str | None) -> None:
    assert phrase_hint(words, VOCAB, connectors) == expected


# --- the reworked parsers, message for message ----------------------------------------------------------

MESSAGES = [
    (
        "/deploy",
        "web v2 tostaging --dry-run",
        'Did not understand "tostaging". Did you mean "to staging", as in `/deploy web v2 to staging --dry-run`?',
    ),
    (
        "/deploy",
        "web/v2 production",
        '"production" needs "to" before it (a bare word after the service is read as a version).'
        " Did you mean `/deploy web/v2 to production`?",
    ),
    (
        "/deploy",
        "web v2 prodution --window",
        'Did not understand "prodution". Did you mean "to production", as in'
        " `/deploy web v2 to production --window`?",
    ),
    (
        "/deploy",
        "web to staging now please",
        'Unexpected words "now please" after "staging". To give a reason, use --reason "now please".',
    ),
    (
        "/deploy",
        "history web prodution",
        'Unknown environment "prodution". Did you mean "production"? Environments: production, staging.',
    ),
    (
        "/deploy",
        "history web tostaging",
        'Did not understand "tostaging". Did you mean "to staging", as in `/deploy history web to staging`?',
    ),
    ("/deploy", "history web in", 'Missing the environment after "in". Environments: production, staging.'),
    ("/deploy", "history web in staging now", 'Unexpected word "now" after "staging".'),
    (
        "/rollback",
        "web ni production --gradual",
        'Did not understand "ni production". Did you mean "in production", as in'
        " `/rollback web in production --gradual`?",
    ),
    (
        "/rollback",
        "web v2 --gradual",
        'Did not understand "v2". Did you mean "to v2", as in `/rollback web to v2 --gradual`?',
    ),
    ("/rollback", "web in staging in production", 'Two environments: "staging" and "production". Give one.'),
    ("/rollback", "web to v1 to v2", 'Two versions: "v1" and "v2". Give one.'),
    ("/rollback", "web/v1 to v2", 'Two versions: "v1" and "v2". Give one.'),
    ("/rollback", "web/ in staging", 'Missing the version after "web/".'),
    ("/rollback", "web in", 'Missing the environment after "in".'),
    ("/rollback", "web in staging v!", 'Unexpected word "v!" after "staging".'),
    (
        "/promote",
        "web staging production --allow-downgrade",
        'Did not understand "staging production". Did you mean "from staging to production", as in'
        " `/promote web from staging to production --allow-downgrade`?",
    ),
    (
        "/promote",
        "web from staging production",
        'Did not understand "production". Did you mean "to production", as in'
        " `/promote web from staging to production`?",
    ),
    (
        "/promote",
        "web to production staging",
        'Did not understand "staging". Did you mean "from staging", as in'
        " `/promote web to production from staging`?",
    ),
    ("/promote", "web from staging to production staging", 'Unexpected word "staging" after "production".'),
    ("/promote", "web from staging from production", '"from" is given twice.'),
    (
        "/promote",
        "42 --allow-downgrade",
        "--allow-downgrade works with `/promote SERVICE from ENV to ENV` only, e.g."
        " `/promote web from staging to production --allow-downgrade`.",
    ),
    (
        "/promote",
        "web fromstaging to production",
        'Did not understand "fromstaging". Did you mean "from staging", as in'
        " `/promote web from staging to production`?",
    ),
]


@pytest.mark.parametrize(("command", "text", "expected"), MESSAGES)
def test_messages(command: str, text: str, expected: str) -> None:
    assert message(command, text) == expected


def test_a_promotion_names_the_neighbouring_environment_in_its_example() -> None:
    vocab = cmds.Vocabulary(("web",), ("dev", "staging", "production"))
    with pytest.raises(cmds.CommandError) as caught:
        cmds.parse("/promote", "web to staging", vocab)
    assert "`/promote web from dev to staging`" in caught.value.message
    with pytest.raises(cmds.CommandError) as caught:
        cmds.parse("/promote", "web from production", vocab)
    assert (
        caught.value.message
        == 'Say where to promote to with "to ENV", e.g. `/promote web from staging to production`.'
    )


def test_the_package_keeps_the_public_names_callers_use() -> None:
    for name in (
        "parse",
        "reads_only",
        "help_text",
        "USAGE",
        "Command",
        "CommandError",
        "Vocabulary",
        "Deploy",
    ):
        assert hasattr(cmds, name), name
    assert cmds.reads_only("/deploy", "status web") and not cmds.reads_only("/deploy", "lock web prod x")
