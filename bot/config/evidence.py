"""The config of evidence: where a service's code lives and how a version maps to a commit
(`[services.NAME.source]`), which CI results count for it (`[[services.NAME.ci]]`), and the REST APIs the
bot reads them from (`[providers.NAME]`: base URL, the environment variable holding the token, timeouts).
Tokens never live in the file: only the names of the variables that hold them."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bot.config.tables import ConfigError, _Table

SOURCE_PROVIDERS = ("github", "gitlab")
CI_PROVIDERS = ("github", "gitlab", "jenkins", "circleci")
DEFAULT_URLS = {
    "github": "https://api.github.com",
    "gitlab": "https://gitlab.com",
    "jenkins": "",
    "circleci": "https://circleci.com",
}
DEFAULT_TOKEN_ENVS = {
    "github": "GITHUB_TOKEN",
    "gitlab": "GITLAB_TOKEN",
    "jenkins": "JENKINS_TOKEN",
    "circleci": "CIRCLECI_TOKEN",
}
REVISION_LABEL = "org.opencontainers.image.revision"
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_REPO = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)+$")


@dataclass(frozen=True)
class Provider:
    """One REST API: its base URL, the variables naming its token (and Jenkins' user), its patience."""

    name: str
    url: str
    token_env: str
    user_env: str | None = None  # Jenkins: basic auth is user + API token
    timeout_seconds: float = 10.0
    retries: int = 2  # transient answers (5xx, 429, no answer) asked again this many times


@dataclass(frozen=True)
class Source:
    """Where a service's code lives and how its version names a commit."""

    provider: str  # github | gitlab
    repo: str  # "acme/web" (GitLab: the project's path)
    commit_from: str = "tag"  # "tag" | "image_label" | a template of {version}, e.g. "release-{version}"
    label: str = REVISION_LABEL  # image_label: the OCI annotation/label holding the commit

    def tag_of(self, version: str) -> str:
        """The git ref a version stands for ("tag": the version; a template: it filled in)."""
        return (
            version
            if self.commit_from in ("tag", "image_label")
            else self.commit_from.format(version=version)
        )


@dataclass(frozen=True)
class CiSpec:
    """One CI result that must be green: GitHub check runs and statuses (`required` names: all
    otherwise), GitLab's latest pipeline for the commit, a Jenkins job's build of it, CircleCI's
    pipeline workflows (`required` workflow names: all otherwise)."""

    provider: str
    repo: str = ""  # github/gitlab: the source's repo unless given; circleci: the project slug
    required: tuple[str, ...] = ()
    job: str = ""  # jenkins: the job's name (folders as "folder/job/name")
    branch: str = ""  # circleci: the branch its pipelines are listed by (empty: all)


@dataclass(frozen=True)
class Evidence:
    """A service's source and CI, resolved: what the checklist's `ci_passed` item and "what changes" read."""

    source: Source | None = None
    ci: tuple[CiSpec, ...] = field(default_factory=tuple)


def parse_providers(
    raw: Any, path: str, expand: Callable[[str, str], str] = lambda _key, value: value
) -> dict[str, Provider]:
    """[providers.github|gitlab|jenkins|circleci]; each has defaults, so the table is optional.
    `expand(key, value)`: the loader's ${VAR:-default} expansion of a URL."""
    t = _Table(path, "providers", raw if raw is not None else {})
    out: dict[str, Provider] = {}
    for name in CI_PROVIDERS:
        p = t.table(name)
        url = p.get("url", str, DEFAULT_URLS[name])
        url = expand(p.key("url"), url).rstrip("/")
        if url and not url.startswith(("http://", "https://")):
            raise ConfigError(path, p.key("url"), f"expected an http(s) URL, got {url!r}")
        out[name] = Provider(
            name=name,
            url=url,
            token_env=p.get("token_env", str, DEFAULT_TOKEN_ENVS[name], _ENV_NAME.match, "a variable name"),
            user_env=p.get(
                "user_env",
                str,
                "JENKINS_USER" if name == "jenkins" else None,
                _ENV_NAME.match,
                "a variable name",
            ),
            timeout_seconds=float(
                p.get("timeout_seconds", (int, float), 10, lambda v: 0 < v <= 120, "seconds, 0 < s <= 120")
            ),
            retries=p.get("retries", int, 2, lambda v: 0 <= v <= 10, "an integer 0..10"),
        )
        p.finish()
    t.finish()
    return out


def parse_evidence(t: _Table, path: str) -> Evidence:
    """A service's `source` table and `ci` list (the caller's table marks them seen)."""
    t.seen.update(("source", "ci"))
    source = _source(t, path) if "source" in t.data else None
    raw_ci = t.data.get("ci", [])
    if isinstance(raw_ci, dict):
        raw_ci = [raw_ci]
    if not isinstance(raw_ci, list):
        raise ConfigError(path, t.key("ci"), "expected a table or a list of tables ([[services.NAME.ci]])")
    ci = tuple(_ci(_Table(path, f"{t.key('ci')}[{n}]", c), path, source) for n, c in enumerate(raw_ci))
    return Evidence(source, ci)


def _source(t: _Table, path: str) -> Source:
    s = t.table("source")
    provider = s.get("provider", str, ..., lambda v: v in SOURCE_PROVIDERS, " or ".join(SOURCE_PROVIDERS))
    repo = s.get("repo", str, ..., _REPO.match, 'a repository path, e.g. "acme/web"')
    commit_from = s.get("commit_from", str, "tag")
    if commit_from not in ("tag", "image_label"):
        try:
            filled = commit_from.format(version="v1")
        except (KeyError, IndexError, ValueError) as exc:
            raise ConfigError(
                path,
                s.key("commit_from"),
                f'expected "tag", "image_label" or a template of {{version}}, got {commit_from!r} ({exc})',
            ) from None
        if filled == commit_from:
            raise ConfigError(
                path,
                s.key("commit_from"),
                f'expected "tag", "image_label" or a template using {{version}}, got {commit_from!r}',
            )
    source = Source(provider, repo, commit_from, s.get("label", str, REVISION_LABEL))
    s.finish()
    return source


def _ci(c: _Table, path: str, source: Source | None) -> CiSpec:
    provider = c.get("provider", str, ..., lambda v: v in CI_PROVIDERS, " or ".join(CI_PROVIDERS))
    default_repo = source.repo if source is not None and source.provider == provider else ""
    spec = CiSpec(
        provider=provider,
        repo=c.get("repo", str, default_repo),
        required=tuple(
            c.get("required", list, [], lambda v: all(isinstance(x, str) and x for x in v), "a list of names")
        ),
        job=c.get("job", str, ""),
        branch=c.get("branch", str, ""),
    )
    if provider == "jenkins" and not spec.job:
        raise ConfigError(path, c.key("job"), 'a Jenkins result needs the job\'s name (job = "web-build")')
    if provider in ("github", "gitlab", "circleci") and not spec.repo:
        what = 'the project slug (repo = "gh/acme/web")' if provider == "circleci" else "the repository"
        raise ConfigError(path, c.key("repo"), f"is required: {what} (or a [source] on {provider})")
    if provider != "jenkins" and spec.job:
        raise ConfigError(path, c.key("job"), "only a Jenkins result has a job")
    c.finish()
    return spec
