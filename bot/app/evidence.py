"""Evidence instead of checkboxes: a version's commit (a git tag, an image label or a template), its CI
results (GitHub checks and statuses, a GitLab pipeline, a Jenkins build, CircleCI workflows) judged as one
verdict, its image in the registry (a missing tag refused with the nearest ones), and what changes
between the running and the new version (the commits between them). The outside systems are behind the
protocols declared here; bot/adapters/evidence/ implements them."""

from __future__ import annotations

import difflib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from bot.config.evidence import CiSpec, Source
from bot.config.model import Target
from bot.domain.versions import compare_versions

log = logging.getLogger(__name__)

CiState = Literal["success", "failure", "pending"]
PROVIDER_NAMES = {
    "github": "GitHub",
    "gitlab": "GitLab",
    "jenkins": "Jenkins",
    "circleci": "CircleCI",
    "ecr": "ECR",
}
MAX_COMMITS = 10  # listed on a message; the rest is a link
MESSAGE_LIMIT = 100  # characters of a commit's first line kept (it is a repository's text, untrusted)


class EvidenceError(Exception):
    """An outside system did not answer usefully. `transient` (5xx, 429, no answer): ask again later;
    otherwise (401, 403, 404, a malformed answer) the message names the provider and what to fix — never
    the token."""

    def __init__(self, provider: str, message: str, transient: bool = False):
        self.provider, self.transient = provider, transient
        super().__init__(f"{PROVIDER_NAMES.get(provider, provider)}: {message}")


@dataclass(frozen=True)
class Commit:
    sha: str
    message: str  # the first line, as the repository has it (escape before showing)
    author: str = ""
    url: str = ""


@dataclass(frozen=True)
class Comparison:
    commits: tuple[Commit, ...]  # oldest first, as the compare APIs give them
    total: int
    url: str
    behind: bool = False  # the head is older than the base: a downgrade


@dataclass(frozen=True)
class CiCheck:
    name: str
    state: CiState
    url: str = ""


@dataclass(frozen=True)
class CiResult:
    """What one provider says about one commit: its checks (jobs, workflows, a build) and a link."""

    provider: str
    checks: tuple[CiCheck, ...]
    url: str = ""


@dataclass(frozen=True)
class ImageInfo:
    tag: str
    labels: Mapping[str, str]  # OCI manifest annotations (org.opencontainers.image.revision, ...)


class SourceHost(Protocol):
    """GitHub or GitLab: tags and comparisons of a repository."""

    async def tag_commit(self, repo: str, tag: str) -> str | None:
        """The commit a tag points at; None when there is no such tag."""
        ...

    async def compare(self, repo: str, base: str, head: str) -> Comparison: ...


class CiProvider(Protocol):
    async def result(self, spec: CiSpec, commit: str, version: str) -> CiResult:
        """The checks reported for `commit` (none yet: an empty tuple)."""
        ...


class Registry(Protocol):
    async def image(self, account: str | None, repository: str, tag: str) -> ImageInfo | None: ...

    async def tags(self, account: str | None, repository: str) -> list[str] | None:
        """None: there is no such repository."""
        ...


@dataclass(frozen=True)
class CiVerdict:
    state: CiState | Literal["error"]
    evidence: str  # what the checklist item shows: each check and a link
    failing: tuple[str, ...] = ()  # names of the failing checks (a refusal names them)


def repository_of(image: str) -> tuple[str | None, str]:
    """(registry id, repository) of an image reference: '1234.dkr.ecr.eu-west-1.amazonaws.com/web' ->
    ('1234', 'web'); 'web' -> (None, 'web') (the default registry)."""
    head, _, rest = image.partition("/")
    if rest and ("." in head or ":" in head):
        registry = head.split(".", 1)[0] if ".dkr.ecr." in head else None
        return registry, rest
    return None, image


def nearest(word: str, choices: Sequence[str], n: int = 3) -> list[str]:
    return difflib.get_close_matches(word, list(choices), n=n, cutoff=0.6)


def judge(results: Sequence[tuple[CiSpec, CiResult]], commit: str) -> CiVerdict:
    """One verdict over every configured result: a failure of a counted check refuses; a counted check
    not reported yet, or still running, waits; else success. `required` names count those only."""
    parts, failing, pending = [], [], []
    for spec, result in results:
        who = PROVIDER_NAMES.get(spec.provider, spec.provider)
        by_name = {c.name: c for c in result.checks}
        counted = [by_name.get(n, CiCheck(n, "pending")) for n in spec.required] or list(result.checks)
        if not counted:
            pending.append(f"{who} (nothing reported yet)")
            continue
        for check in counted:
            if check.state == "failure":
                failing.append(f"{check.name} ({who})")
            elif check.state == "pending":
                pending.append(f"{check.name} ({who})")
        marks = ", ".join(f"{c.name} {_MARK[c.state]}" for c in counted)
        parts.append(f"{who}: {marks}" + (f" {result.url}" if result.url else ""))
    short = commit[:7]
    seen = "; ".join(parts)
    if failing:
        return CiVerdict("failure", f"failed at {short}: {', '.join(failing)} — {seen}", tuple(failing))
    if pending:
        return CiVerdict(
            "pending", f"waiting at {short} for {', '.join(pending)}" + (f" — {seen}" if seen else "")
        )
    return CiVerdict("success", f"passed at {short}: {seen}")


_MARK = {"success": "✓", "failure": "✗", "pending": "…"}


class EvidenceReader:
    """The use case: commit of a version, CI verdict, image lookup, what changes. Never logs a token (it
    never sees one: the adapters hold them)."""

    def __init__(
        self,
        hosts: Mapping[str, SourceHost],
        ci: Mapping[str, CiProvider],
        registry: Registry | None = None,
    ):
        self.hosts, self.ci_providers, self.registry = hosts, ci, registry

    async def close(self) -> None:
        """Close each client's connections (those that keep any)."""
        clients = {id(c): c for c in (*self.hosts.values(), *self.ci_providers.values())}
        for client in clients.values():
            close = getattr(client, "close", None)
            if close is not None:
                await close()

    async def commit(self, target: Target, version: str) -> str:
        """The commit `version` stands for; EvidenceError when it cannot be told."""
        source = target.service.evidence.source
        if source is None:
            raise EvidenceError(
                "config", f"{target.service.name} has no [services.{target.service.name}.source]"
            )
        if source.commit_from == "image_label":
            return await self._label_commit(target, source, version)
        host = self.hosts.get(source.provider)
        if host is None:
            raise EvidenceError(source.provider, "no client configured")
        sha = await host.tag_commit(source.repo, source.tag_of(version))
        if sha is None:
            raise EvidenceError(
                source.provider,
                f"no tag {source.tag_of(version)} in {source.repo}: push the tag, or fix commit_from",
            )
        return sha

    async def _label_commit(self, target: Target, source: Source, version: str) -> str:
        if self.registry is None:
            raise EvidenceError("ecr", "no registry client to read the image's labels from")
        account, repository = repository_of(target.service.image)
        info = await self.registry.image(account, repository, version)
        if info is None:
            raise EvidenceError("ecr", f"no image {repository}:{version}")
        sha = info.labels.get(source.label)
        if not sha:
            raise EvidenceError("ecr", f"image {repository}:{version} has no {source.label} label")
        return sha

    async def ci(self, target: Target, version: str | None) -> CiVerdict:
        specs = target.service.evidence.ci
        name = target.service.name
        if not specs:
            return CiVerdict("error", f"{name} has no CI configured: add [[services.{name}.ci]]")
        if not version:
            return CiVerdict("error", "no version to look up")
        try:
            commit = await self.commit(target, version)
            results = []
            for spec in specs:
                provider = self.ci_providers.get(spec.provider)
                if provider is None:
                    raise EvidenceError(spec.provider, "no client configured")
                results.append((spec, await provider.result(spec, commit, version)))
        except EvidenceError as exc:
            if exc.transient:
                return CiVerdict("pending", f"{exc}; asking again")
            return CiVerdict("error", str(exc))
        return judge(results, commit)

    async def missing_image(self, target: Target, version: str) -> str | None:
        """None when the image is in the registry; else the refusal, with the nearest existing tags."""
        if self.registry is None:
            return None
        account, repository = repository_of(target.service.image)
        if await self.registry.image(account, repository, version) is not None:
            return None
        tags = await self.registry.tags(account, repository)
        if tags is None:
            return (
                f"no ECR repository {repository} (the service's image): create it, or fix image in the config"
            )
        near = nearest(version, tags)
        hint = f"; did you mean {' or '.join(near)}?" if near else f"; push {repository}:{version} first"
        return f"no image {repository}:{version} in ECR{hint}"

    async def changes(
        self, target: Target, running: str | None, version: str | None
    ) -> dict[str, Any] | None:
        """What the message shows under "What changes": the commits from the running version to the new
        one (at most MAX_COMMITS, with the compare link for the rest) and whether it is a downgrade. None
        when the service has no source or nothing is known to compare with."""
        source = target.service.evidence.source
        if source is None or not running or not version or running == version:
            return None
        order = compare_versions(version, running)
        out: dict[str, Any] = {"from": running, "to": version, "downgrade": order is not None and order < 0}
        host = self.hosts.get(source.provider)
        try:
            if host is None:
                raise EvidenceError(source.provider, "no client configured")
            base, head = await self.commit(target, running), await self.commit(target, version)
            cmp = await host.compare(source.repo, base, head)
        except EvidenceError as exc:
            out["error"] = str(exc)
            return out
        out["downgrade"] = out["downgrade"] or cmp.behind
        out["total"] = cmp.total
        out["url"] = cmp.url
        newest = list(cmp.commits)[-MAX_COMMITS:][::-1]  # the newest first, as people read a changelog
        out["commits"] = [
            {"sha": c.sha[:12], "message": c.message[:MESSAGE_LIMIT], "author": c.author[:60], "url": c.url}
            for c in newest
        ]
        return out
