"""The evidence clients from the config and the process environment (tokens only from there)."""

from __future__ import annotations

from collections.abc import Mapping

from bot.adapters.aws import Caller
from bot.adapters.evidence.circleci import CircleCi
from bot.adapters.evidence.ecr import EcrRegistry
from bot.adapters.evidence.github import GitHub
from bot.adapters.evidence.gitlab import GitLab
from bot.adapters.evidence.jenkins import Jenkins
from bot.app.evidence import CiProvider, EvidenceReader, SourceHost
from bot.config.model import Settings


def tokens(settings: Settings, env: Mapping[str, str]) -> list[str]:
    """Every provider token set in the environment: the logs redact them."""
    names = [p.token_env for p in settings.providers.values()]
    return [env[n] for n in names if env.get(n)]


def build_evidence(settings: Settings, aws: Caller, env: Mapping[str, str]) -> EvidenceReader:
    """The clients (nothing is asked until a request needs it)."""
    p = settings.providers

    def token(name: str) -> str:
        return env.get(p[name].token_env, "")

    github, gitlab = GitHub(p["github"], token("github")), GitLab(p["gitlab"], token("gitlab"))
    hosts: dict[str, SourceHost] = {"github": github, "gitlab": gitlab}
    ci: dict[str, CiProvider] = {
        "github": github,
        "gitlab": gitlab,
        "jenkins": Jenkins(p["jenkins"], env.get(p["jenkins"].user_env or "", ""), token("jenkins")),
        "circleci": CircleCi(p["circleci"], token("circleci")),
    }
    return EvidenceReader(hosts, ci, EcrRegistry(aws))
