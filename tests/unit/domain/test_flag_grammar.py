"""/flag's grammar, as tables: every form and what it parses to, every mistake and what it is told
(quoting the word, naming the nearest valid one), hostile text, and which /flag texts only read."""

from __future__ import annotations

import random

import pytest

from bot.domain import commands as cmds
from bot.domain.commands import CommandError, FlagChange, FlagList, FlagShow, Help, Vocabulary, parse
from bot.domain.commands.types import FLAG_ACTIONS
from bot.domain.flags import Condition

VOCAB = Vocabulary(
    services=("web", "api"),
    environments=("staging", "production"),
    default_environment="staging",  # never used by a /flag change
    flags={"checkout-v2": ("on", "off"), "search-ranking": ("control", "treatment")},
    segments=("beta", "staff"),
)
KEY = "checkout-v2"


def change(action: str, env: str = "staging", key: str = KEY, **kw: object) -> FlagChange:
    return FlagChange(key, env, action, **kw)  # type: ignore[arg-type]


def c(attribute: str, op: str, *values: str) -> Condition:
    return Condition(attribute, op, values)


PARSES = [
    # help and reads
    ("", Help()),
    ("help", Help()),
    ("help on", Help()),
    ("list", FlagList(None)),
    ("LIST", FlagList(None)),
    ("list in production", FlagList("production")),
    ("list production", FlagList("production")),
    ("checkout-v2", FlagShow(KEY, None)),
    ("Checkout-V2", FlagShow(KEY, None)),
    ("checkout-v2 in production", FlagShow(KEY, "production")),
    ("checkout-v2 production", FlagShow(KEY, "production")),
    ("flag checkout-v2", FlagShow(KEY, None)),  # hubot habit: the command's name typed again
    # on / off / kill
    ("checkout-v2 on in staging", change("on")),
    ("checkout-v2 ON in Production", change("on", "production")),
    ("checkout-v2 in staging on", change("on")),
    ("checkout-v2 off in production", change("off", "production")),
    ("checkout-v2 kill in production", change("kill", "production")),
    ('checkout-v2 kill in production --reason "checkout errors"', change("kill", "production", reason="checkout errors")),
    ("flag checkout-v2 on in staging", change("on")),
    # percentages
    ("checkout-v2 25% in staging", change("percent", percent=25.0)),
    ("checkout-v2 0% in staging", change("percent", percent=0.0)),
    ("checkout-v2 100% in staging", change("percent", percent=100.0)),
    ("checkout-v2 0.5% in staging", change("percent", percent=0.5)),
    ("checkout-v2 12.25% in staging", change("percent", percent=12.25)),
    ("checkout-v2 25 % in staging", change("percent", percent=25.0)),
    # targeting rules
    ("checkout-v2 on for region=eu-west-1 in staging", change("target", conditions=(c("region", "equals", "eu-west-1"),))),
    ("checkout-v2 on for region=eu-west-1,eu-central-1 in staging",
     change("target", conditions=(c("region", "in", "eu-west-1", "eu-central-1"),))),
    ("checkout-v2 on for region = eu-west-1, eu-central-1 in staging",
     change("target", conditions=(c("region", "in", "eu-west-1", "eu-central-1"),))),
    ("checkout-v2 on for region==eu-west-1 in staging", change("target", conditions=(c("region", "equals", "eu-west-1"),))),
    ("checkout-v2 on for region!=us-east-1 in staging", change("target", conditions=(c("region", "not_in", "us-east-1"),))),
    ("checkout-v2 on for region!=us-east-1,us-west-2 in staging",
     change("target", conditions=(c("region", "not_in", "us-east-1", "us-west-2"),))),
    ("checkout-v2 on for email^=qa-,test- in staging", change("target", conditions=(c("email", "starts_with", "qa-", "test-"),))),
    ("checkout-v2 on for version>=2.3.0 in staging", change("target", conditions=(c("version", "semver_gte", "2.3.0"),))),
    ("checkout-v2 on for version>=v2.3 in staging", change("target", conditions=(c("version", "semver_gte", "v2.3"),))),
    ("checkout-v2 on for segment beta in staging", change("target", segment="beta")),
    ("checkout-v2 on for segment=beta in staging", change("target", segment="beta")),
    ("checkout-v2 on for beta in staging", change("target", segment="beta")),
    ("checkout-v2 on for BETA in staging", change("target", segment="beta")),
    ("checkout-v2 on for segment beta and region=eu-west-1 in production",
     change("target", "production", segment="beta", conditions=(c("region", "equals", "eu-west-1"),))),
    ("checkout-v2 on for region=eu-west-1 plan=pro in staging",
     change("target", conditions=(c("region", "equals", "eu-west-1"), c("plan", "equals", "pro")))),
    ('checkout-v2 on for "email^=@example.com" in staging', change("target", conditions=(c("email", "starts_with", "@example.com"),))),
    ("checkout-v2 on for region=eu-west-1,eu-west-1 in staging", change("target", conditions=(c("region", "equals", "eu-west-1"),))),
    # variants
    ("search-ranking variants control=50,treatment=50 in staging",
     change("variants", key="search-ranking", weights=(("control", 50.0), ("treatment", 50.0)))),
    ("search-ranking variants treatment=10, control=90 in staging",
     change("variants", key="search-ranking", weights=(("treatment", 10.0), ("control", 90.0)))),
    ("search-ranking variants control=50 treatment=50 in staging",
     change("variants", key="search-ranking", weights=(("control", 50.0), ("treatment", 50.0)))),
    ("search-ranking variants Control:33.33%,treatment:66.67% in staging",
     change("variants", key="search-ranking", weights=(("control", 33.33), ("treatment", 66.67)))),
    ("search-ranking variants control=100 in staging", change("variants", key="search-ranking", weights=(("control", 100.0),))),
    ("checkout-v2 variants on=20,off=80 in staging", change("variants", weights=(("on", 20.0), ("off", 80.0)))),
    # rollout
    ("checkout-v2 rollout in production", change("rollout", "production")),
    ("checkout-v2 rollout in production --steps 5,25,50,100", change("rollout", "production", steps=(5, 25, 50, 100))),
    ("checkout-v2 rollout in production --steps=10,100", change("rollout", "production", steps=(10, 100))),
    ('checkout-v2 rollout in production --steps "5, 25, 100"', change("rollout", "production", steps=(5, 25, 100))),
    ("checkout-v2 rollout in production --steps 5%,50%,100%", change("rollout", "production", steps=(5, 50, 100))),
    ("checkout-v2 rollout in production --steps 100", change("rollout", "production", steps=(100,))),
    # options anywhere
    ("checkout-v2 --dry-run 25% in staging", change("percent", percent=25.0, dry_run=True)),
    ("--dry-run checkout-v2 on in staging", change("on", dry_run=True)),
    ("checkout-v2 on in staging --dry-run --reason 'try it'", change("on", dry_run=True, reason="try it")),
    ("checkout-v2 on in staging \u2014dry-run", change("on", dry_run=True)),  # a phone's em dash
    ("checkout-v2 off in production --reason \u201ccan't wait\u201d", change("off", "production", reason="can't wait")),
]  # fmt: skip


@pytest.mark.parametrize(("text", "expected"), PARSES)
def test_every_form_parses(text: str, expected: cmds.Command) -> None:
    assert parse("/flag", text, VOCAB) == expected


def _error(text: str, vocab: Vocabulary = VOCAB) -> CommandError:
    with pytest.raises(CommandError) as caught:
        parse("/flag", text, vocab)
    assert caught.value.message and caught.value.usage.startswith("/flag")
    return caught.value


ERRORS = [
    # the flag
    ("chekout-v2 on in staging", 'Unknown flag "chekout-v2". Did you mean "checkout-v2"? Flags: checkout-v2, search-ranking.', "/flag list|KEY"),
    ("nosuchthing", 'Unknown flag "nosuchthing". Flags: checkout-v2, search-ranking.', "/flag list|KEY"),
    ("lsit", 'Unknown flag "lsit". Did you mean `/flag list`?', "/flag list|KEY"),
    ("on checkout-v2 in staging", "Which flag? Start with its key, e.g. `/flag checkout-v2 on in ENV`.", "/flag list|KEY"),
    ("25% in staging", "Which flag? Start with its key, e.g. `/flag checkout-v2 25% in ENV`.", "/flag list|KEY"),
    ("--dry-run", "Which flag? Start with its key", "/flag list|KEY"),
    # the environment
    ("checkout-v2 on", 'In which environment? A change names it with "in ENV" (it never falls back to a default), '
     "e.g. `/flag checkout-v2 on in staging`. Environments: production, staging.", "/flag KEY on|off in ENV"),
    ("checkout-v2 25%", 'In which environment? A change names it with "in ENV"', "/flag KEY PERCENT% in ENV"),
    ("checkout-v2 kill --reason boom", "e.g. `/flag checkout-v2 kill in staging --reason boom`", "/flag KEY kill in ENV"),
    ("checkout-v2 on staging", 'A change names its environment with "in": did you mean `/flag checkout-v2 on in staging`?', "/flag list|KEY"),
    ("checkout-v2 on ni staging", 'Did not understand "ni staging". Did you mean "in staging", as in `/flag checkout-v2 on in staging`?', "/flag list|KEY"),
    ("checkout-v2 on instaging", 'Did not understand "instaging". Did you mean "in staging"', "/flag list|KEY"),
    ("checkout-v2 on in stagin", 'Unknown environment "stagin". Did you mean "staging"?', "/flag list|KEY"),
    ("checkout-v2 stagng", 'Unknown environment "stagng". Did you mean "staging"?', "/flag list|KEY"),
    ("checkout-v2 on in", 'Missing the environment after "in". Environments: production, staging.', "/flag list|KEY"),
    ("checkout-v2 on in staging in production", 'Two environments: "staging" and "production". Give one.', "/flag list|KEY"),
    ("list in", 'Missing the environment after "in".', "/flag list [in ENV]"),
    ("list in prod", 'Unknown environment "prod".', "/flag list [in ENV]"),
    ("list ni production", 'Did you mean "in production", as in `/flag list in production`?', "/flag list [in ENV]"),
    ("list stagin", 'Unknown environment "stagin". Did you mean "staging"?', "/flag list [in ENV]"),
    ("list everything", 'Unexpected word "everything" after "list".', "/flag list [in ENV]"),
    # the action words
    ("checkout-v2 of in staging", 'Did not understand "of". Did you mean "off", as in `/flag checkout-v2 off in staging`?', "/flag KEY on|off in ENV"),
    ("checkout-v2 onn in staging", 'Did you mean "on", as in `/flag checkout-v2 on in staging`?', "/flag KEY on|off in ENV"),
    ("checkout-v2 kil in production", 'Did you mean "kill", as in `/flag checkout-v2 kill in production`?', "/flag KEY kill in ENV"),
    ("checkout-v2 rolout in production", 'Did you mean "rollout", as in `/flag checkout-v2 rollout in production`?', "/flag KEY rollout in ENV"),
    ("search-ranking varients control=50,treatment=50 in staging",
     'Did you mean "variants", as in `/flag search-ranking variants control=50,treatment=50 in staging`?', "/flag KEY variants"),
    ("checkout-v2 enable in staging", 'Did not understand "enable". Did you mean "on"', "/flag KEY on|off in ENV"),
    ("checkout-v2 disable in staging", 'Did you mean "off"', "/flag KEY on|off in ENV"),
    ("search-ranking split control=50,treatment=50 in staging", 'Did you mean "variants"', "/flag KEY variants"),
    ("checkout-v2 frobnicate in staging", 'Did not understand "frobnicate". A change is on, off, PERCENT%', "/flag list|KEY"),
    ("checkout-v2 on now in staging", 'Unexpected word "now" after "on".', "/flag KEY on|off in ENV"),
    ("checkout-v2 kill kill in staging", 'Unexpected word "kill" after "kill".', "/flag KEY kill in ENV"),
    ("checkout-v2 off now in staging", 'Unexpected word "now" after "off".', "/flag KEY on|off in ENV"),
    ("checkout-v2 off for region=eu-west-1 in staging",
     '"off" is for everyone: to give some contexts the on variant and the others off, write '
     "`/flag checkout-v2 on for region=eu-west-1 in staging`", "/flag KEY on|off in ENV"),
    ("checkout-v2 for region=eu-west-1 in staging",
     'Did not understand "for". Did you mean "on for", as in `/flag checkout-v2 on for region=eu-west-1 in staging`?', "/flag KEY on for"),
    ("checkout-v2 on region=eu-west-1 in staging",
     'Did you mean "for region=eu-west-1", as in `/flag checkout-v2 on for region=eu-west-1 in staging`?', "/flag KEY on for"),
    ("checkout-v2 region=eu-west-1 in staging", 'Did you mean "on for region=eu-west-1"', "/flag KEY on for"),
    # percentages
    ("checkout-v2 25 in staging", 'Did not understand "25". Did you mean "25%", as in `/flag checkout-v2 25% in staging`?', "/flag KEY PERCENT% in ENV"),
    ("checkout-v2 101% in staging", 'Bad percentage "101%": a percentage is a number from 0 to 100 with at most two '
     "decimals, then %, like 25% or 0.5%.", "/flag KEY PERCENT% in ENV"),
    ("checkout-v2 -5% in staging", 'Bad percentage "-5%"', "/flag KEY PERCENT% in ENV"),
    ("checkout-v2 1000% in staging", 'Bad percentage "1000%"', "/flag KEY PERCENT% in ENV"),
    ("checkout-v2 12.345% in staging", 'Bad percentage "12.345%"', "/flag KEY PERCENT% in ENV"),
    ("checkout-v2 .5% in staging", 'Bad percentage ".5%"', "/flag KEY PERCENT% in ENV"),
    ("checkout-v2 2,5% in staging", 'Bad percentage "2,5%"', "/flag KEY PERCENT% in ENV"),
    ("checkout-v2 1e2% in staging", 'Bad percentage "1e2%"', "/flag KEY PERCENT% in ENV"),
    ("checkout-v2 25% now in staging", 'Unexpected word "now" after "25%".', "/flag KEY PERCENT% in ENV"),
    # targeting
    ("checkout-v2 on for in staging", 'On for whom? Add conditions or a segment after "for"', "/flag KEY on for"),
    ("checkout-v2 on for segment in staging", 'Missing the segment after "segment". Segments: beta, staff.', "/flag KEY on for"),
    ("checkout-v2 on for segment bta in staging", 'Unknown segment "bta". Did you mean "beta"? Segments: beta, staff.', "/flag KEY on for"),
    ("checkout-v2 on for segment=bta in staging", 'Unknown segment "bta". Did you mean "beta"?', "/flag KEY on for"),
    ("checkout-v2 on for bta in staging", 'Unknown segment "bta". Did you mean "beta"?', "/flag KEY on for"),
    ("checkout-v2 on for beta staff in staging", 'Two segments: "beta" and "staff". A rule takes one segment', "/flag KEY on for"),
    ("checkout-v2 on for everyone in staging", 'Did not understand "everyone" after "for": give a condition like '
     "region=eu-west-1", "/flag KEY on for"),
    ("checkout-v2 on for region in eu-west-1 in staging", 'Did not understand "in" in the rule: write conditions with '
     "symbols, without spaces — region=a,b (is one of), region!=a,b (is none of)", "/flag KEY on for"),
    ("checkout-v2 on for region in eu-west-1", 'Did not understand "in" in the rule', "/flag KEY on for"),
    ("checkout-v2 on for region not in us-east-1 in staging", 'Did not understand "not" in the rule', "/flag KEY on for"),
    ("checkout-v2 on for email starts_with qa- in staging", 'Did not understand "starts_with" in the rule', "/flag KEY on for"),
    ("checkout-v2 on for region= in staging", 'Missing the value in "region="', "/flag KEY on for"),
    ("checkout-v2 on for region=a,,b in staging", 'An empty value in "region=a,,b": separate values with single commas.', "/flag KEY on for"),
    ("checkout-v2 on for =eu-west-1 in staging", 'Bad condition "=eu-west-1": it names no attribute.', "/flag KEY on for"),
    ("checkout-v2 on for version<2 in staging", 'Unknown operator "<" in "version<2". Conditions are ATTRIBUTE OPERATOR '
     "VALUE with no spaces: = (equals; with a comma list, is one of), != (is none of), ^= (starts with), >= (a version at least).", "/flag KEY on for"),
    ("checkout-v2 on for version=>2 in staging", 'Unknown operator "=>"', "/flag KEY on for"),
    ("checkout-v2 on for version<=2 in staging", 'Unknown operator "<=" in "version<=2"', "/flag KEY on for"),
    ("checkout-v2 on for version~=2 in staging", 'Unknown operator "~="', "/flag KEY on for"),
    ("checkout-v2 on for 9lives=yes in staging", 'Bad attribute "9lives" in "9lives=yes"', "/flag KEY on for"),
    ("checkout-v2 on for version>=latest in staging", 'Bad version "latest" after >=: a version here is dotted numbers', "/flag KEY on for"),
    ("checkout-v2 on for version>=2.3,2.4 in staging", '"version>=2.3,2.4": >= takes one version', "/flag KEY on for"),
    ("checkout-v2 on for region=" + "x" * 201 + " in staging", "is too long (201 characters; at most 200)", "/flag KEY on for"),
    ("checkout-v2 on for region=" + ",".join(f"r{i}" for i in range(51)) + " in staging", "51 values in one condition: at most 50", "/flag KEY on for"),
    ("checkout-v2 on for " + " ".join(f"a{i}=x" for i in range(11)) + " in staging", "11 conditions: a rule takes at most 10", "/flag KEY on for"),
    # variants
    ("search-ranking variants in staging", "Which variants, with which weights? e.g. "
     "`/flag search-ranking variants control=50,treatment=50 in ENV` (its variants: control, treatment).", "/flag KEY variants"),
    ("search-ranking variants control,treatment in staging", 'Give "control" a weight', "/flag KEY variants"),
    ("search-ranking variants contrl=50,treatment=50 in staging",
     'Unknown variant of search-ranking "contrl". Did you mean "control"? Its variants: control, treatment.', "/flag KEY variants"),
    ("search-ranking variants on=50,off=50 in staging", 'Unknown variant of search-ranking "on".', "/flag KEY variants"),
    ("search-ranking variants control=50,treatment=40 in staging", "The weights add up to 90, not 100 (control=50,treatment=40).", "/flag KEY variants"),
    ("search-ranking variants control=60,treatment=60 in staging", "The weights add up to 120, not 100", "/flag KEY variants"),
    ("search-ranking variants control=50,control=50 in staging", 'The variant "control" is given twice.', "/flag KEY variants"),
    ("search-ranking variants control=lots,treatment=50 in staging", 'Bad weight "lots" in "control=lots"', "/flag KEY variants"),
    ("search-ranking variants control=-5,treatment=105 in staging", 'Bad weight "-5"', "/flag KEY variants"),
    ("search-ranking variants =50,treatment=50 in staging", 'Missing the variant before the weight in "=50"', "/flag KEY variants"),
    # rollout and its steps
    ("checkout-v2 rollout in production --steps 5,50,25,100", 'The steps must rise: 25 comes after 50 in "5,50,25,100".', "/flag KEY rollout in ENV"),
    ("checkout-v2 rollout in production --steps 5,5,100", "The steps must rise: 5 comes after 5", "/flag KEY rollout in ENV"),
    ("checkout-v2 rollout in production --steps 5,25,50", "The last step must be 100 (a rollout ends with everyone on), "
     "got 50: --steps 5,25,50,100.", "/flag KEY rollout in ENV"),
    ("checkout-v2 rollout in production --steps 0,100", 'Bad step "0": steps are whole percentages from 1 to 100', "/flag KEY rollout in ENV"),
    ("checkout-v2 rollout in production --steps 2.5,100", 'Bad step "2.5"', "/flag KEY rollout in ENV"),
    ("checkout-v2 rollout in production --steps 5,200", 'Bad step "200"', "/flag KEY rollout in ENV"),
    ("checkout-v2 rollout in production --steps ,", "--steps needs percentages", "/flag KEY rollout in ENV"),
    ("checkout-v2 rollout in production --steps " + ",".join(str(i) for i in range(1, 22)) + ",100", "22 steps: at most 20", "/flag KEY rollout in ENV"),
    ("checkout-v2 rollout 5,25,50,100 in production", "Give the steps with --steps: "
     "`/flag checkout-v2 rollout --steps 5,25,50,100 in production`.", "/flag KEY rollout in ENV"),
    ("checkout-v2 rollout now in production", 'Unexpected word "now" after "rollout".', "/flag KEY rollout in ENV"),
    ("checkout-v2 on in staging --steps 5,100", "--steps goes with rollout, e.g. "
     "`/flag checkout-v2 rollout in production --steps 5,25,50,100`.", "/flag KEY rollout in ENV"),
    # options
    ("checkout-v2 --dry-run", "--dry-run goes with a change (on, off, PERCENT%, on for, variants, rollout, kill); "
     "`/flag checkout-v2` only shows the flag.", "/flag KEY [in ENV]"),
    ("checkout-v2 in production --reason x", "--reason goes with a change", "/flag KEY [in ENV]"),
    ("list --dry-run", "`/flag list` takes no options (got --dry-run): it only shows the flags.", "/flag list [in ENV]"),
    ("checkout-v2 on in staging --dryrun", 'Unknown option "--dryrun". Did you mean "--dry-run"?', "/flag list|KEY"),
    ("checkout-v2 on in staging --force", 'Unknown option "--force". Options: --dry-run, --reason, --steps.', "/flag list|KEY"),
    ("checkout-v2 on in staging --reason", 'The option "--reason" needs a value', "/flag list|KEY"),
    ("checkout-v2 on in staging --dry-run --dry-run", 'The option "--dry-run" is given twice.', "/flag list|KEY"),
    ('checkout-v2 on in staging --reason "never closed', "Unclosed quote", "/flag list|KEY"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "message", "usage"), ERRORS)
def test_every_mistake_is_told_what_was_wrong_with_the_usage_of_its_form(
    text: str, message: str, usage: str
) -> None:
    error = _error(text)
    assert message in error.message, error.message
    assert error.usage.startswith(usage), error.usage


def test_a_change_never_takes_the_default_environment_but_reads_need_none() -> None:
    assert VOCAB.default_environment == "staging"
    for text in ("checkout-v2 on", "checkout-v2 50%", "checkout-v2 kill", "checkout-v2 rollout",
                 "checkout-v2 on for beta", "search-ranking variants control=50,treatment=50"):  # fmt: skip
        assert 'A change names it with "in ENV"' in _error(text).message, text
    assert parse("/flag", "checkout-v2", VOCAB) == FlagShow(KEY, None)
    assert parse("/flag", "list", VOCAB) == FlagList(None)


def test_every_action_the_grammar_makes_is_one_flag_control_knows() -> None:
    made = {
        parse("/flag", text, VOCAB).action for text, expected in PARSES if isinstance(expected, FlagChange)
    }  # type: ignore[union-attr]
    assert made == {"on", "off", "percent", "target", "variants", "rollout", "kill"}
    assert set(FLAG_ACTIONS) == made - {"percent", "target"}


def test_a_flag_named_like_a_command_word_is_still_reachable_where_it_can_be() -> None:
    vocab = Vocabulary(("web",), ("staging",), flags={"help": ("on", "off"), "flag": ("on", "off")})
    assert parse("/flag", "help in staging", vocab) == FlagShow("help", "staging")
    assert parse("/flag", "flag on in staging", vocab) == change("on", key="flag")  # not the hubot prefix
    assert parse("/flag", "help", vocab) == FlagShow("help", None)


def test_without_flags_or_segments_configured_the_errors_say_so() -> None:
    bare = Vocabulary(("web",), ("staging",))
    assert (
        _error("checkout-v2 on in staging", bare).message
        == 'Unknown flag "checkout-v2". Flags: (none configured).'
    )
    assert "Segments: (none configured)." in _error("checkout-v2 on for beta in staging", VOCAB.__class__(
        ("web",), ("staging",), flags={KEY: ("on", "off")})).message  # fmt: skip


def test_variants_are_checked_only_against_a_flag_s_own_variants() -> None:
    unknown_variants = Vocabulary(("web",), ("staging",), flags={"x": ()})  # the app checks them then
    assert parse("/flag", "x variants a=30,b=70 in staging", unknown_variants) == change(
        "variants", key="x", weights=(("a", 30.0), ("b", 70.0))
    )
    three = Vocabulary(("web",), ("staging",), flags={"color": ("red", "green", "blue")})
    assert (
        "`/flag color variants red=33,green=33,blue=34 in ENV`"
        in _error("color variants in staging", three).message
    )


# ------------------------------------------------------------------------------------------ hostile

HOSTILE = [
    "<!channel>",
    "<!here>",
    "<@U123>",
    "<http://evil.example|docs>",
    "`<!here>`",
    "&lt;!channel&gt;",
    "\u202eevil",
    "x" * 2000,
    "a`b",
]


def test_hostile_words_are_quoted_clipped_and_never_break_a_code_span() -> None:
    for bad in HOSTILE:
        for text in (
            f"{bad}",
            f"{bad} on in staging",
            f"checkout-v2 {bad} in staging",
            f"checkout-v2 on in {bad}",
            f"checkout-v2 on for {bad} in staging",
            f"checkout-v2 on for region={bad} in staging",
            f"checkout-v2 on for {bad}=x in staging",
            f"search-ranking variants {bad}=50,treatment=50 in staging",
            f"search-ranking variants control={bad} in staging",
            f"checkout-v2 rollout in staging --steps '{bad}'",
            f"list {bad}",
        ):
            try:
                parsed = parse("/flag", text[:1000], VOCAB)
            except CommandError as error:
                assert len(error.message) < 600, (text, error.message)
                for span in error.message.split("`")[1::2]:
                    assert "\n" not in span
            else:  # what parses keeps the hostile text as data, for the views to escape
                assert isinstance(parsed, FlagChange), (text, parsed)


def test_a_hostile_reason_or_rule_value_is_kept_as_typed() -> None:
    parsed = parse(
        "/flag", "checkout-v2 on for 'region=x<!channel>' in staging --reason '<!here> now'", VOCAB
    )
    assert isinstance(parsed, FlagChange)
    assert parsed.reason == "<!here> now" and parsed.conditions == (c("region", "equals", "x<!channel>"),)
    assert parse("/flag", "checkout-v2 on for 'plan=b<i>,a&b' in staging", VOCAB).conditions == (  # type: ignore[union-attr]
        c("plan", "in", "b<i>", "a&b"),
    )


def test_a_suggestion_puts_the_options_back_and_survives_a_backtick() -> None:
    error = _error("checkout-v2 on staging --reason 'a`b' --dry-run")
    assert "`/flag checkout-v2 on in staging --reason 'a\u02cbb' --dry-run`" in error.message


_ALPHABET = [
    " checkout-v2", " search-ranking", " list", " help", " on", " off", " kill", " rollout", " variants",
    " for", " in", " staging", " production", " segment", " beta", " region=eu", " control=50", ",",
    " treatment=50", " 25%", " 0.5%", " 101%", " -5%", " --dry-run", " --reason", " --steps", " 5,100",
    "=", "!=", "^=", ">=", "<", '"', "'", "`", "\u2014", "%", "<!channel>", "\x00", "\n", "é", "\U0001f680",
]  # fmt: skip


def test_any_text_is_a_flag_command_or_a_command_error() -> None:
    rng = random.Random(20261212)
    vocabularies = (VOCAB, Vocabulary((), ()), Vocabulary(("web",), ("staging",), flags={KEY: ()}))
    outcomes = {"command": 0, "error": 0}
    for _ in range(1500):
        text = "".join(rng.choice(_ALPHABET) for _ in range(rng.randint(0, 12)))
        for vocab in vocabularies:
            try:
                result = parse("/flag", text, vocab)
            except CommandError as error:
                assert error.message and error.usage, text
                outcomes["error"] += 1
            else:
                assert isinstance(result, FlagList | FlagShow | FlagChange | Help), text
                outcomes["command"] += 1
    assert outcomes["command"] > 50 and outcomes["error"] > 50


# -------------------------------------------------------------------------------------- reads only


@pytest.mark.parametrize(
    "text",
    ["", "help", "list", "list in production", "checkout-v2", "checkout-v2 in production", "checkout-v2 staging",
     "flag checkout-v2", "chekout-v2", "list &lt;!here&gt;"],
)  # fmt: skip
def test_flag_reads_are_not_claimed_for_replays(text: str) -> None:
    assert cmds.reads_only("/flag", text)


@pytest.mark.parametrize(
    "text",
    ["checkout-v2 on in staging", "checkout-v2 OFF in production", "checkout-v2 25% in staging",
     "checkout-v2 on for region=eu-west-1 in staging", "search-ranking variants control=50,treatment=50 in staging",
     "checkout-v2 rollout in production", "checkout-v2 kill in production", 'checkout-v2 "on" in staging',
     "checkout-v2 'kill' in production", "checkout-v2 in staging --dry-run", "checkout-v2 25 % in staging",
     "checkout-v2 in staging \u2014reason x", 'checkout-v2 "unclosed', "x" * 1001],
)  # fmt: skip
def test_flag_changes_are_claimed_so_a_replay_changes_nothing(text: str) -> None:
    assert not cmds.reads_only("/flag", text)


def test_whatever_reads_only_lets_through_parses_to_a_read_or_an_error() -> None:
    rng = random.Random(7)
    for _ in range(2000):
        text = "".join(rng.choice(_ALPHABET) for _ in range(rng.randint(0, 8)))
        if not cmds.reads_only("/flag", text):
            continue
        try:
            parsed = parse("/flag", text, VOCAB)
        except CommandError:
            continue
        assert isinstance(parsed, FlagList | FlagShow | Help), (text, parsed)


# ------------------------------------------------------------------------------------------- help


def test_flag_help_shows_every_form_operator_and_option() -> None:
    shown = cmds.help_text("/flag")
    for form in ("/flag list", "/flag KEY [in ENV]", "/flag KEY on|off in ENV", "/flag KEY PERCENT% in ENV",
                 "/flag KEY on for", "/flag KEY variants", "/flag KEY rollout in ENV", "/flag KEY kill in ENV"):  # fmt: skip
        assert form in shown, form
    for word in ("region=eu-west-1,eu-central-1", "!=", "^=", ">=", "segment beta", "--dry-run", "--reason",
                 "--steps", "at most two decimals", "add up to 100", "ending at 100", "never falls back"):  # fmt: skip
        assert word in shown, word
    assert cmds.help_text("flag") == shown == cmds.USAGE["/flag"]
    assert "`/flag help`" in cmds.help_text("/deploy")
    assert len(cmds.help_text("/deploy")) < 3000 and len(shown) < 3000  # one Slack message each


def test_every_flag_example_parses() -> None:
    from bot.domain.commands.usage import FLAG_FORMS, example

    for key in (*FLAG_FORMS, "flag"):
        assert parse("/flag", example(key).removeprefix("/flag "), VOCAB)
