"""GitHub's REST API: a tag's commit (git/ref/tags), the check runs and the combined status of a commit,
and the comparison of two commits. A token from the environment, as a Bearer header."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from bot.adapters.evidence.rest import Rest
from bot.app.evidence import CiCheck, CiResult, CiState, Commit, Comparison, EvidenceError
from bot.config.evidence import CiSpec, Provider

_RUN_STATES: dict[str | None, CiState] = {
    "success": "success",
    "neutral": "success",
    "skipped": "success",
    "failure": "failure",
    "cancelled": "failure",
    "timed_out": "failure",
    "action_required": "failure",
    "stale": "failure",
    "startup_failure": "failure",
}
_STATUS_STATES: dict[str, CiState] = {"success": "success", "pending": "pending"}


class GitHub:
    def __init__(self, provider: Provider, token: str):
        headers = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.rest = Rest(provider, headers)

    async def close(self) -> None:
        await self.rest.close()

    async def tag_commit(self, repo: str, tag: str) -> str | None:
        ref = await self.rest.get(
            f"/repos/{repo}/git/ref/tags/{quote(tag, safe='')}",
            what=f"the repository {repo}",
            missing_ok=True,
        )
        if ref is None:
            return None
        obj = ref.get("object") or {}
        if obj.get("type") == "tag":  # an annotated tag: its object names the commit
            tag_obj = await self.rest.get(
                f"/repos/{repo}/git/tags/{obj['sha']}", what=f"the repository {repo}"
            )
            return str(tag_obj["object"]["sha"])
        return str(obj["sha"]) if obj.get("sha") else None

    async def compare(self, repo: str, base: str, head: str) -> Comparison:
        body = await self.rest.get(f"/repos/{repo}/compare/{base}...{head}", what=f"the repository {repo}")
        commits = tuple(
            Commit(
                sha=c["sha"],
                message=(c.get("commit", {}).get("message") or "").split("\n", 1)[0],
                author=(c.get("commit", {}).get("author") or {}).get("name") or "",
                url=c.get("html_url") or "",
            )
            for c in body.get("commits", [])
        )
        return Comparison(
            commits,
            int(body.get("total_commits", len(commits))),
            body.get("html_url") or "",
            behind=body.get("status") == "behind",
        )

    async def result(self, spec: CiSpec, commit: str, version: str) -> CiResult:
        what = f"the repository {spec.repo}"
        runs = await self.rest.get(
            f"/repos/{spec.repo}/commits/{commit}/check-runs", {"per_page": "100"}, what=what
        )
        status = await self.rest.get(f"/repos/{spec.repo}/commits/{commit}/status", what=what)
        checks: dict[str, CiCheck] = {}
        for run in runs.get("check_runs", []):
            state: CiState = (
                _RUN_STATES.get(run.get("conclusion"), "failure")
                if run.get("status") == "completed"
                else "pending"
            )
            checks.setdefault(run["name"], CiCheck(run["name"], state, run.get("html_url") or ""))
        # the combined status with no statuses at all says "pending": only the statuses themselves count
        for st in _statuses(status):
            checks.setdefault(
                st["context"],
                CiCheck(
                    st["context"],
                    _STATUS_STATES.get(st.get("state", ""), "failure"),
                    st.get("target_url") or "",
                ),
            )
        base = self.rest.provider.url
        link = (
            f"{base}/repos/{spec.repo}/commits/{commit}"
            if "api.github.com" not in base
            else (f"https://github.com/{spec.repo}/commit/{commit}/checks")
        )
        return CiResult("github", tuple(checks.values()), link)


def _statuses(status: Any) -> list[dict[str, Any]]:
    if not isinstance(status, dict):
        raise EvidenceError("github", "the combined status is not an object")
    return [s for s in status.get("statuses", []) if isinstance(s, dict) and s.get("context")]
