"""/deploy report [SERVICE] [in ENV]: every form parses, and a wrong word gets a clear error with the
form's usage line."""

from __future__ import annotations

import pytest

from bot.domain.commands import CommandError, Report, Vocabulary, parse

VOCAB = Vocabulary(("web", "api"), ("staging", "production"), "staging")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("report", Report(None, None)),
        ("report web", Report("web", None)),
        ("report WEB in production", Report("web", "production")),
        ("report in staging", Report(None, "staging")),
        ("report production", Report(None, "production")),
        ("report api on production", Report("api", "production")),
    ],
)
def test_report_forms(text: str, expected: Report) -> None:
    assert parse("/deploy", text, VOCAB) == expected


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("report wbe", '"wbe"'),
        ("report web in prod", 'Unknown environment "prod". Environments: production, staging.'),
        ("report in", "environment"),
        ("report web in production now", '"now"'),
        ("report production web", '"web"'),
    ],
)
def test_report_errors(text: str, said: str) -> None:
    with pytest.raises(CommandError) as caught:
        parse("/deploy", text, VOCAB)
    assert said in caught.value.message
    assert caught.value.usage == "/deploy report [SERVICE] [in ENV]"
