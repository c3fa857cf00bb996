"""Config of evidence: [services.NAME.source], [[services.NAME.ci]], [providers.NAME], image_check — the
example's values, and every bad one named with its file, key and what is expected."""

from __future__ import annotations

import pytest

from bot.config.load import load_settings, parse_settings
from tests.unit.config.edits import changed, config_error
from tests.unit.config.test_settings import EXAMPLE, example


def test_the_example_reads_ci_from_github_gitlab_and_jenkins():
    s = load_settings(EXAMPLE, env={"SANDBOX_GITHUB_URL": "http://127.0.0.1:9/github"})
    web, api = s.services["web"].evidence, s.services["api"].evidence
    assert web.source is not None and (web.source.provider, web.source.repo, web.source.commit_from) == (
        "github",
        "acme/web",
        "tag",
    )
    assert web.ci[0].required == ("build", "unit-tests") and web.ci[0].repo == "acme/web"
    assert api.source is not None and api.source.commit_from == "image_label"
    assert [(c.provider, c.job) for c in api.ci] == [("gitlab", ""), ("jenkins", "api-integration")]
    assert s.providers["github"].url == "http://127.0.0.1:9/github"  # ${VAR:-default} expanded
    assert load_settings(EXAMPLE, env={}).providers["github"].url == "https://api.github.com"
    assert s.environments["production"].image_check and not s.environments["staging"].image_check
    assert s.environments["production"].policy.items[0].check == "ci_passed"


@pytest.mark.parametrize(
    ("path", "value", "said"),
    [
        (
            "services/web/source/provider",
            "bitbucket",
            "services.web.source.provider: expected github or gitlab",
        ),
        (
            "services/web/source/repo",
            "web",
            'services.web.source.repo: expected a repository path, e.g. "acme/web"',
        ),
        ("services/web/source/commit_from", "release", 'services.web.source.commit_from: expected "tag"'),
        ("services/web/source/commit_from", "r-{ver}", "services.web.source.commit_from: expected"),
        ("services/web/source/branch", "main", "services.web.source.branch: unknown key"),
        (
            "services/web/ci",
            [{"provider": "travis"}],
            "services.web.ci[0].provider: expected github or gitlab",
        ),
        (
            "services/web/ci",
            [{"provider": "jenkins"}],
            "services.web.ci[0].job: a Jenkins result needs the job",
        ),
        (
            "services/web/ci",
            [{"provider": "circleci"}],
            "services.web.ci[0].repo: is required: the project slug",
        ),
        ("services/web/ci", [{"provider": "github", "requird": ["x"]}], 'did you mean "required"?'),
        ("services/web/ci", [{"provider": "gitlab", "job": "x"}], "services.web.ci[0].repo: is required"),
        ("providers/github/token_env", "my-token", "providers.github.token_env: expected a variable name"),
        ("providers/github/url", "api.github.com", "providers.github.url: expected an http(s) URL"),
        ("providers/gitlab/timeout_seconds", 0, "providers.gitlab.timeout_seconds: expected seconds"),
        ("providers/gitea", {}, "providers.gitea: unknown key"),
        (
            "environments/production/image_check",
            "yes",
            "environments.production.image_check: expected true or false",
        ),
    ],
)
def test_a_bad_value_is_named(path, value, said):
    assert said in config_error(changed(example(), path, value))


def test_a_ci_check_item_is_known_to_the_checklist():
    data = example()
    data["environments"]["production"]["checklist"][0]["check"] = "ci_pased"
    assert "one of" in config_error(data) and "ci_passed" in config_error(data)
    assert parse_settings(example(), "deploybot.toml").services["web"].evidence.ci


def test_check_config_says_where_evidence_comes_from_and_whether_tokens_are_set():
    from bot.config.report import evidence_report

    data = example()
    del data["services"]["api"]["ci"]
    lines = evidence_report(parse_settings(data, "deploybot.toml"), {"GITHUB_TOKEN": "ghp_secret"})
    assert (
        "services.web.ci: github acme/web (required: build, unit-tests) at https://api.github.com; "
        "$GITHUB_TOKEN set"
    ) in lines
    assert all("ghp_secret" not in line for line in lines)
    assert "warning: services.api has no [[services.api.ci]] but production checks ci_passed" in "\n".join(
        lines
    )
