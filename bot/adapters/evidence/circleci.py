"""CircleCI's API v2: the project's pipelines (by branch, a page or two) and the one for the commit
(vcs.revision), then its workflows. The token as Circle-Token."""

from __future__ import annotations

from bot.adapters.evidence.rest import Rest
from bot.app.evidence import CiCheck, CiResult, CiState
from bot.config.evidence import CiSpec, Provider

_STATES: dict[str, CiState] = {
    "success": "success",
    "failed": "failure",
    "error": "failure",
    "failing": "failure",
    "canceled": "failure",
    "unauthorized": "failure",
}
PAGES = 3


class CircleCi:
    def __init__(self, provider: Provider, token: str):
        self.rest = Rest(provider, {"Circle-Token": token} if token else {})

    async def close(self) -> None:
        await self.rest.close()

    async def result(self, spec: CiSpec, commit: str, version: str) -> CiResult:
        what = f"the project {spec.repo}"
        pipeline, token = None, ""
        for _ in range(PAGES):
            params = {"branch": spec.branch} if spec.branch else {}
            if token:
                params["page-token"] = token
            page = await self.rest.get(f"/api/v2/project/{spec.repo}/pipeline", params, what=what)
            pipeline = next(
                (p for p in page.get("items", []) if (p.get("vcs") or {}).get("revision") == commit), None
            )
            token = page.get("next_page_token") or ""
            if pipeline is not None or not token:
                break
        if pipeline is None:
            return CiResult("circleci", ())
        flows = await self.rest.get(f"/api/v2/pipeline/{pipeline['id']}/workflow", what=what)
        link = f"https://app.circleci.com/pipelines/{spec.repo}/{pipeline.get('number', '')}"
        checks = tuple(
            CiCheck(w["name"], _STATES.get(w.get("status", ""), "pending")) for w in flows.get("items", [])
        )
        return CiResult("circleci", checks, link)
