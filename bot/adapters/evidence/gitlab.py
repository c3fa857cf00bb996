"""GitLab's REST API (v4): a tag's commit, the latest pipeline for a commit and its jobs, and the
comparison of two commits. Projects are named by their URL-encoded path; the token as PRIVATE-TOKEN."""

from __future__ import annotations

from urllib.parse import quote

from bot.adapters.evidence.rest import Rest
from bot.app.evidence import CiCheck, CiResult, CiState, Commit, Comparison
from bot.config.evidence import CiSpec, Provider

_STATES: dict[str, CiState] = {
    "success": "success",
    "skipped": "success",
    "manual": "success",
    "failed": "failure",
    "canceled": "failure",
}


class GitLab:
    def __init__(self, provider: Provider, token: str):
        self.rest = Rest(provider, {"PRIVATE-TOKEN": token} if token else {})

    async def close(self) -> None:
        await self.rest.close()

    @staticmethod
    def _project(repo: str) -> str:
        return "/api/v4/projects/" + quote(repo, safe="")

    async def tag_commit(self, repo: str, tag: str) -> str | None:
        body = await self.rest.get(
            f"{self._project(repo)}/repository/tags/{quote(tag, safe='')}",
            what=f"the project {repo}",
            missing_ok=True,
        )
        return None if body is None else str(body["commit"]["id"])

    async def compare(self, repo: str, base: str, head: str) -> Comparison:
        body = await self.rest.get(
            f"{self._project(repo)}/repository/compare",
            {"from": base, "to": head},
            what=f"the project {repo}",
        )
        commits = tuple(
            Commit(
                c["id"],
                (c.get("title") or "").split("\n", 1)[0],
                c.get("author_name") or "",
                c.get("web_url") or "",
            )
            for c in body.get("commits", [])
        )
        behind = not commits and base != head
        return Comparison(commits, len(commits), body.get("web_url") or "", behind=behind)

    async def result(self, spec: CiSpec, commit: str, version: str) -> CiResult:
        project, what = self._project(spec.repo), f"the project {spec.repo}"
        pipelines = await self.rest.get(
            f"{project}/pipelines",
            {"sha": commit, "order_by": "id", "sort": "desc", "per_page": "1"},
            what=what,
        )
        if not pipelines:
            return CiResult("gitlab", ())
        latest = pipelines[0]
        jobs = await self.rest.get(f"{project}/pipelines/{latest['id']}/jobs", {"per_page": "100"}, what=what)
        checks = tuple(
            CiCheck(j["name"], _STATES.get(j.get("status", ""), "pending"), j.get("web_url") or "")
            for j in jobs
        )
        if spec.required or checks:
            return CiResult("gitlab", checks, latest.get("web_url") or "")
        state = _STATES.get(latest.get("status", ""), "pending")
        return CiResult("gitlab", (CiCheck(f"pipeline #{latest['id']}", state),), latest.get("web_url") or "")
