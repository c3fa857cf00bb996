"""Jenkins' JSON API: the job's recent builds (tree=builds[...]) and the one that built the commit — by
the git plugin's lastBuiltRevision or a build parameter naming the commit or the version. Basic auth:
user and API token from the environment."""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import quote

from bot.adapters.evidence.rest import Rest
from bot.app.evidence import CiCheck, CiResult, CiState
from bot.config.evidence import CiSpec, Provider

TREE = "builds[number,result,building,url,actions[parameters[name,value],lastBuiltRevision[SHA1]]]{0,50}"
_RESULTS: dict[str, CiState] = {
    "SUCCESS": "success",
    "FAILURE": "failure",
    "UNSTABLE": "failure",
    "ABORTED": "failure",
}
PARAMETERS = ("GIT_COMMIT", "COMMIT", "SHA", "REVISION", "VERSION")


class Jenkins:
    def __init__(self, provider: Provider, user: str, token: str):
        basic = base64.b64encode(f"{user}:{token}".encode()).decode()
        self.rest = Rest(provider, {"Authorization": f"Basic {basic}"} if user and token else {})

    async def close(self) -> None:
        await self.rest.close()

    async def result(self, spec: CiSpec, commit: str, version: str) -> CiResult:
        path = "".join(f"/job/{quote(part, safe='')}" for part in spec.job.split("/job/"))
        body = await self.rest.get(f"{path}/api/json", {"tree": TREE}, what=f"the job {spec.job}")
        build = next((b for b in body.get("builds", []) if _built(b, commit, version)), None)
        if build is None:
            return CiResult("jenkins", ())
        state: CiState = (
            "pending" if build.get("building") else _RESULTS.get(build.get("result") or "", "pending")
        )
        url = build.get("url") or ""
        return CiResult("jenkins", (CiCheck(f"{spec.job} #{build['number']}", state, url),), url)


def _built(build: dict[str, Any], commit: str, version: str) -> bool:
    for action in build.get("actions") or []:
        if not isinstance(action, dict):
            continue
        if (action.get("lastBuiltRevision") or {}).get("SHA1") == commit:
            return True
        for p in action.get("parameters") or []:
            if p.get("name", "").upper() in PARAMETERS and p.get("value") in (commit, version):
                return True
    return False
