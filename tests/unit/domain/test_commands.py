"""The slash-command grammar, as tables: what parses to what, and what each mistake is told."""

from __future__ import annotations

import random

import pytest

from bot.domain.commands import (
    COMMANDS,
    SUBCOMMANDS,
    USAGE,
    Audit,
    Command,
    CommandError,
    Deploy,
    Freeze,
    Help,
    History,
    Lock,
    Promote,
    PromoteDeployment,
    Rollback,
    Schedule,
    Status,
    Unfreeze,
    Unlock,
    Vocabulary,
    Windows,
    help_text,
    parse,
)

VOCAB = Vocabulary(
    services=("web", "api"),
    environments=("staging", "production"),
    default_environment="staging",
    flags={"checkout-v2": ("on", "off"), "search-ranking": ("control", "treatment")},
    segments=("beta",),
)
NO_DEFAULT = Vocabulary(services=("web", "api"), environments=("staging", "production"))


def deploy(
    version: str | None = None,
    env: str = "staging",
    service: str = "web",
    strategy: str | None = None,
    dry_run: bool = False,
    reason: str | None = None,
    emergency: str | None = None,
    window: bool = False,
    at: str | None = None,
) -> Deploy:
    return Deploy(service, version, env, strategy, dry_run, reason, emergency, window, at)


PARSES = [
    # hubot-deploy forms people already type
    ("/deploy", "web/v2 to production", deploy("v2", "production")),
    ("/deploy", "web to staging", deploy(None, "staging")),
    ("/deploy", "web v2.3.1 to production", deploy("v2.3.1", "production")),
    ("/deploy", "deploy web/v2 to production", deploy("v2", "production")),
    ("/deploy", "deploy web", deploy()),
    ("/deploy", "web in production", deploy(None, "production")),
    ("/deploy", "web v2 on production", deploy("v2", "production")),
    # defaults, case and spelling
    ("/deploy", "web", deploy()),
    ("/deploy", "web v2", deploy("v2")),
    ("/deploy", "WEB/V2 TO Production", deploy("V2", "production")),
    ("/deploy", "  api   sha-1a2b3c_d  to   staging  ", deploy("sha-1a2b3c_d", service="api")),
    ("/deploy", "web " + "v" * 128 + " to staging", deploy("v" * 128)),
    # options anywhere after the service, both spellings
    ("/deploy", "web v2 to production --strategy canary", deploy("v2", "production", strategy="canary")),
    (
        "/deploy",
        "web v2 to production --strategy=blue-green",
        deploy("v2", "production", strategy="blue-green"),
    ),
    ("/deploy", "web --strategy ROLLING v2", deploy("v2", strategy="rolling")),
    ("/deploy", "web --dry-run v2 to production", deploy("v2", "production", dry_run=True)),
    ("/deploy", "--dry-run web v2", deploy("v2", dry_run=True)),
    ("/deploy", 'web v2 --reason "fix login redirect"', deploy("v2", reason="fix login redirect")),
    ("/deploy", "web v2 --reason=hotfix", deploy("v2", reason="hotfix")),
    ("/deploy", 'web v2 --reason "can\'t wait"', deploy("v2", reason="can't wait")),
    (
        "/deploy",
        'web v2 to production --emergency "checkout is down" --window',
        deploy("v2", "production", emergency="checkout is down", window=True),
    ),
    (
        "/deploy",
        'web v2 --at "2026-12-01 18:00 Europe/Berlin"',
        deploy("v2", at="2026-12-01 18:00 Europe/Berlin"),
    ),
    ("/deploy", "web v2 \u2014dry-run", deploy("v2", dry_run=True)),  # a phone turned -- into an em dash
    ("/deploy", "web v2 --reason \u201cphone quotes\u201d", deploy("v2", reason="phone quotes")),
    (
        "/deploy",
        'web/v2 to production --strategy canary --dry-run --reason "r" --emergency "e" --window --at 18:00',
        deploy("v2", "production", "web", "canary", True, "r", "e", True, "18:00"),
    ),
    # subcommands
    ("/deploy", "", Help()),
    ("/deploy", "   ", Help()),
    ("/deploy", "help", Help()),
    ("/deploy", "help lock", Help()),
    ("/deploy", "status", Status(None)),
    ("/deploy", "status Web", Status("web")),
    ("/deploy", "status 42", Status("42")),
    ("/deploy", "status #42", Status("#42")),
    ("/deploy", "history web", History("web", None)),
    ("/deploy", "history web in production", History("web", "production")),
    ("/deploy", "history web production", History("web", "production")),
    (
        "/deploy",
        "lock web production database migration running",
        Lock("web", "production", "database migration running"),
    ),
    ("/deploy", "lock web in production can't deploy now", Lock("web", "production", "can't deploy now")),
    ("/deploy", 'lock web production --reason "db migration"', Lock("web", "production", "db migration")),
    ("/deploy", "unlock web production", Unlock("web", "production")),
    ("/deploy", "audit 42", Audit(42)),
    ("/deploy", "audit #7", Audit(7)),
    ("/deploy", "schedule", Schedule()),
    ("/deploy", "windows web", Windows("web", None)),
    ("/deploy", "windows api in staging", Windows("api", "staging")),
    (
        "/deploy",
        'freeze production until "2026-12-01 09:00 Europe/Berlin" release week',
        Freeze("production", "2026-12-01 09:00 Europe/Berlin", "release week"),
    ),
    (
        "/deploy",
        "freeze production until 2026-12-01T09:00Z release week",
        Freeze("production", "2026-12-01T09:00Z", "release week"),
    ),
    (
        "/deploy",
        "freeze production until 2026-12-01 09:00 Europe/Berlin release week",
        Freeze("production", "2026-12-01 09:00 Europe/Berlin", "release week"),
    ),
    ("/deploy", "unfreeze production", Unfreeze("production")),
    # /promote
    ("/promote", "web from staging to production", Promote("web", "staging", "production")),
    ("/promote", "web to production from staging", Promote("web", "staging", "production")),
    ("/promote", "42", PromoteDeployment(42, False)),
    ("/promote", "#42 --full", PromoteDeployment(42, True)),
    ("/promote", "--full 42", PromoteDeployment(42, True)),
    ("/promote", "help", Help()),
    # /rollback
    ("/rollback", "web", Rollback("web", "staging", None, False, None)),
    ("/rollback", "web in production", Rollback("web", "production", None, False, None)),
    ("/rollback", "web on production to v2.3.0", Rollback("web", "production", "v2.3.0", False, None)),
    ("/rollback", "web to v2 in production --gradual", Rollback("web", "production", "v2", True, None)),
    (
        "/rollback",
        'web production --reason "errors after v2.3.1"',
        Rollback("web", "production", None, False, "errors after v2.3.1"),
    ),
    ("/rollback", "web to production", Rollback("web", "production", None, False, None)),
    ("/rollback", "rollback web/v1 in production", Rollback("web", "production", "v1", False, None)),
    ("rollback", "web", Rollback("web", "staging", None, False, None)),  # the slash is optional
]


@pytest.mark.parametrize(("command", "text", "expected"), PARSES)
def test_parses(command: str, text: str, expected: Command) -> None:
    assert parse(command, text, VOCAB) == expected


ERRORS = [
    # a typo in the connector: quote what was typed, suggest the fix
    ("/deploy", "web v2 tos taging", ['"tos taging"', '"to staging"', "`/deploy web v2 to staging`"]),
    ("/deploy", "web v2 tostaging", ['"tostaging"', '"to staging"']),
    ("/deploy", "web tos taging", ['"tos taging"', '"to staging"', "`/deploy web to staging`"]),
    ("/deploy", "web/v2 ot production", ['"ot production"', '"to production"']),
    ("/deploy", "web v2 prodution", ['"prodution"', '"to production"']),
    ("/deploy", "history web ni production", ['"ni production"', '"in production"']),
    ("/rollback", "web ni production", ['"ni production"', '"in production"']),
    ("/promote", "web form staging to production", ['"form staging"', '"from staging"']),
    # a bare environment could be a version: ask for "to", keep the options in the suggestion
    ("/deploy", "web v2 production", ['"production"', "`/deploy web v2 to production`"]),
    ("/deploy", "web production --dry-run", ["`/deploy web to production --dry-run`"]),
    # unknown words, with and without a close match
    ("/deploy", "wbe v2 to staging", ['Unknown service "wbe". Did you mean "web"? Services: api, web.']),
    ("/deploy", "xyzzy", ['Unknown service "xyzzy". Services: api, web.']),
    ("/deploy", "stauts", ['"stauts"', "`/deploy status`"]),
    ("/deploy", "web v2 to prodution", ['Unknown environment "prodution". Did you mean "production"?']),
    ("/deploy", "web v2 to mars", ['Unknown environment "mars". Environments: production, staging.']),
    ("/deploy", "web --strategy canery", ['Unknown strategy "canery". Did you mean "canary"?']),
    # options
    ("/deploy", "web v2 --dryrun", ['Unknown option "--dryrun". Did you mean "--dry-run"?']),
    ("/deploy", "web v2 -dry-run", ['"-dry-run"', '"--dry-run"']),
    ("/deploy", "web v2 --frobnicate", ['"--frobnicate"', "--strategy", "--dry-run"]),
    ("/deploy", "web v2 --reason", ['"--reason" needs a value']),
    ("/deploy", "web v2 --reason --dry-run", ['"--reason" needs a value']),
    ("/deploy", 'web v2 --reason ""', ['"--reason" needs a value']),
    ("/deploy", "web v2 --dry-run=yes", ['"--dry-run" takes no value']),
    ("/deploy", "web v2 --window --window", ['"--window" is given twice']),
    ("/deploy", "status --all", ['"--all"', "takes no options"]),
    ("/promote", "web from staging to production --full", ["--full works with a deployment ID"]),
    # quoting
    ("/deploy", 'web v2 --reason "fix login', ["Unclosed quote", '"']),
    ("/deploy", "web v2 --reason 'fix login", ["Unclosed quote", "double quotes"]),
    ("/deploy", "web v2 \\", ["backslash"]),
    # shape
    ("/deploy", "x" * 1001, ["command is too long (1001 characters; the limit is 1000)"]),
    ("/deploy", "web v2 to production now please", ['"now please"', '--reason "now please"']),
    ("/deploy", "web to staging v2", ['"v2"', "`/deploy web v2 to staging`"]),
    ("/deploy", "web v2 v3 to staging", ['"v3"']),
    ("/deploy", "web/v2 v3", ['"v2"', '"v3"', "Two versions"]),
    ("/deploy", "web v2!", ['Bad version "v2!"']),
    ("/deploy", "web/.hidden", ['Bad version ".hidden"']),
    ("/deploy", "web " + "v" * 129, ["Bad version"]),
    ("/deploy", "web/ to staging", ['Missing the version after "web/"']),
    ("/deploy", "web v2 to", ['Missing the environment after "to"']),
    ("/deploy", "--dry-run", ["Which service?"]),
    ("/deploy", "status web production", ['"production"']),
    ("/deploy", "schedule now", ['"now"']),
    # subcommand arguments
    ("/deploy", "lock web production", ["Why is it locked?"]),
    ("/deploy", "lock web prodution migration", ['Unknown environment "prodution"', '"production"']),
    ("/deploy", "lock web", ["Which environment?"]),
    ("/deploy", "unlock web production now", ['"now"']),
    ("/deploy", "audit", ["Which deployment?"]),
    ("/deploy", "audit abc", ['"abc" is not a deployment ID']),
    ("/deploy", "audit 1234567890123456789", ['"1234567890123456789" is not a deployment ID']),
    ("/deploy", "freeze production", ["Until when?"]),
    ("/deploy", "freeze production untill friday deploy party", ['"untill"', '"until"']),
    ("/deploy", "freeze production until friday", ["Why is it frozen?"]),
    ("/deploy", "freeze until friday", ["Which environment?"]),
    ("/deploy", "history", ["Which service?"]),
    # /promote
    ("/promote", "", ["Promote what?"]),
    ("/promote", "web to production", ['"from ENV"', "`/promote web from staging to production`"]),
    ("/promote", "web", ['"from ENV to ENV"']),
    ("/promote", "web from staging", ['"to ENV"', "`/promote web from staging to production`"]),
    ("/promote", "web staging production", ["`/promote web from staging to production`"]),
    ("/promote", "web from staging to staging", ['both "staging"']),
    ("/promote", "abc", ['Unknown service "abc"', "deployment ID"]),
    ("/promote", "42 web", ['"web"']),
    # /rollback
    ("/rollback", "", ["Roll back what?"]),
    ("/rollback", "web v2", ['"v2"', '"to v2"']),
    ("/rollback", "web in staging to production", ['"production" is an environment']),
    ("/rollback", "web to", ['Missing the version after "to"']),
    ("/rollback", "web --fast", ['Unknown option "--fast"', "--gradual", "--reason"]),
    # no default environment configured
]

NO_DEFAULT_ERRORS = [
    ("/deploy", "web v2", ["Which environment?", "`/deploy web v2 to staging`"]),
    ("/rollback", "web", ["Which environment?"]),
]


def _error(command: str, text: str, vocab: Vocabulary) -> CommandError:
    with pytest.raises(CommandError) as caught:
        parse(command, text, vocab)
    return caught.value


@pytest.mark.parametrize(("command", "text", "fragments"), ERRORS)
def test_errors(command: str, text: str, fragments: list[str]) -> None:
    error = _error(command, text, VOCAB)
    for fragment in fragments:
        assert fragment in error.message
    assert str(error) == error.message
    assert error.usage.startswith(command if command.startswith("/") else "/" + command)


@pytest.mark.parametrize(("command", "text", "fragments"), NO_DEFAULT_ERRORS)
def test_errors_without_default_environment(command: str, text: str, fragments: list[str]) -> None:
    error = _error(command, text, NO_DEFAULT)
    for fragment in fragments:
        assert fragment in error.message


def test_unknown_command() -> None:
    error = _error("/ship", "web", VOCAB)
    assert '"/ship"' in error.message and "/deploy" in error.message


def test_error_usage_is_the_line_of_the_form() -> None:
    assert _error("/deploy", "lock web", VOCAB).usage == "/deploy lock SERVICE ENV REASON..."
    assert _error("/promote", "#1 x", VOCAB).usage == "/promote ID [--full]"


def test_long_words_are_clipped_in_messages() -> None:
    error = _error("/deploy", "w" * 500, VOCAB)
    assert len(error.message) < 200


def test_subcommands_win_over_services_of_the_same_name() -> None:
    vocab = Vocabulary(services=("status", "web"), environments=("staging",), default_environment="staging")
    assert parse("/deploy", "status", vocab) == Status(None)


def test_help_lists_every_form_and_option() -> None:
    deploy_help = help_text("/deploy")
    for word in SUBCOMMANDS:
        assert f"/deploy {word}" in deploy_help
    for option in ("--strategy", "--dry-run", "--reason", "--emergency", "--window", "--at"):
        assert option in deploy_help
    assert "--full" in help_text("promote")
    for option in ("--gradual", "--reason"):
        assert option in help_text("/rollback")
    assert set(USAGE) == set(COMMANDS)


def test_every_usage_example_parses() -> None:
    for command in COMMANDS:
        for line in USAGE[command].splitlines():
            if "e.g. `" in line:
                example = line.split("`")[1]
                name, _, text = example.partition(" ")
                parse(name, text, VOCAB)


_ALPHABET = (
    list("abcdefghijklmnopqrstuvwxyz0123456789 /#-_.=\\'\"")
    + [
        "\u201c",
        "\u201d",
        "\u2014",
        "\u00e9",
        "\u00df",
        "\u4e2d",
        "\U0001f680",
        "\u0663",
        "\t",
        "\n",
        "\u00a0",
        "\x00",
    ]
    + [
        " web",
        " api",
        " to",
        " in",
        " on",
        " from",
        " until",
        " staging",
        " production",
        " --reason",
        " --dry-run",
        " checkout-v2",
        " 25%",
        " for",
        " region=eu",
        " kill",
        " list",
    ]
    + [
        " --strategy",
        " --full",
        " --gradual",
        " status",
        " lock",
        " freeze",
        " audit",
        " #",
        " 42",
        " v2.3.1",
    ]
)


def _garbage(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.05:
        return rng.choice(["x", "9", "web/", "\\", '"']) * rng.randint(200, 1200)  # very long tokens
    if kind < 0.15:
        return "".join(chr(rng.randint(0, 0x2FFFF)) for _ in range(rng.randint(0, 40)))  # any code points
    return "".join(rng.choice(_ALPHABET) for _ in range(rng.randint(0, 30)))


def test_any_text_is_a_command_or_a_command_error() -> None:
    rng = random.Random(20261201)
    vocabularies = (VOCAB, NO_DEFAULT, Vocabulary((), ()))
    outcomes = {"command": 0, "error": 0}
    for _ in range(300):
        text = _garbage(rng)
        for command in COMMANDS:
            for vocab in vocabularies:
                try:
                    result = parse(command, text, vocab)
                except CommandError as error:
                    assert error.message and error.usage, text
                    outcomes["error"] += 1
                else:
                    assert isinstance(result, Command), text
                    outcomes["command"] += 1
    assert outcomes["command"] > 0 and outcomes["error"] > 0
