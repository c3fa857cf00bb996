"""`/deploy SERVICE VERSION --pipeline [NAME]`: the pipeline's name is the word after the option (or
`--pipeline=NAME`), the form names no environment, and what cannot go with a pipeline says why."""

from __future__ import annotations

import pytest

from bot.domain import commands as cmds

VOCAB = cmds.Vocabulary(("web", "api"), ("staging", "production"), "staging")


def parse(text: str) -> cmds.Deploy:
    parsed = cmds.parse("/deploy", text, VOCAB)
    assert isinstance(parsed, cmds.Deploy)
    return parsed


def error(text: str) -> str:
    with pytest.raises(cmds.CommandError) as caught:
        cmds.parse("/deploy", text, VOCAB)
    return caught.value.message


@pytest.mark.parametrize(
    ("text", "pipeline", "reason"),
    [
        ("web v4 --pipeline", "", None),
        ("web/v4 --pipeline", "", None),
        ("web v4 --pipeline release", "release", None),
        ("web v4 --pipeline=release", "release", None),
        ('web v4 --pipeline --reason "checkout fix"', "", "checkout fix"),
        ('web v4 --reason "checkout fix" --pipeline release', "release", "checkout fix"),
        ("web v4 \u2014pipeline", "", None),  # a phone's dash
        ("web v4 --PIPELINE", "", None),
    ],
)
def test_a_pipeline_deploy_names_a_version_and_maybe_a_pipeline(text, pipeline, reason):
    d = parse(text)
    assert (d.service, d.version, d.env, d.pipeline, d.reason) == ("web", "v4", "", pipeline, reason)
    assert (d.strategy, d.dry_run, d.emergency, d.window, d.at) == (None, False, None, False, None)


def test_without_the_option_nothing_changes():
    assert parse("web v4 to production").pipeline is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("web v4 to production --pipeline", 'A pipeline goes through its own environments in order: leave out "to production".'),
        ("web v4 --pipeline to staging", 'A pipeline goes through its own environments in order: leave out "to staging".'),
        ("web --pipeline", "A pipeline takes one version: `/deploy web VERSION --pipeline`."),
        ("web --pipeline v4", 'A pipeline takes one version: `/deploy web VERSION --pipeline` (the word after --pipeline is its name: "v4").'),
        ("web v4 --pipeline --strategy canary", "--strategy cannot go with --pipeline: each of its environments deploys with its own strategy through its own gate."),
        ('web v4 --pipeline --dry-run --at "tomorrow 02:00"', "--dry-run, --at cannot go with --pipeline"),
        ("web v4 --pipeline a --pipeline b", 'The option "--pipeline" is given twice.'),
        ("web v4 --pipeline=a/b", 'Bad pipeline name "a/b": one word of letters, digits, - and _.'),
        ("web v4 --pipline", 'Unknown option "--pipline". Did you mean "--pipeline"?'),
    ],
)  # fmt: skip
def test_what_cannot_go_with_a_pipeline_says_why(text, expected):
    assert expected in error(text)


def test_the_usage_and_help_name_the_option():
    assert "[--pipeline [NAME]]" in cmds.USAGE["/deploy"] and "--pipeline [NAME]" in cmds.help_text("/deploy")
