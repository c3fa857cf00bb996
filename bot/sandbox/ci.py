"""The sandbox's source hosts and CI: local servers speaking the REST shapes the bot reads — GitHub
(`/github/...`: git/ref/tags, check-runs, combined status, compare), GitLab (`/gitlab/api/v4/...`: tags,
pipelines by sha and their jobs, compare), Jenkins (`/jenkins/job/NAME/api/json`) and CircleCI
(`/circleci/api/v2/...`: pipelines, workflows) — over demo repositories whose tags are the demo versions
(v1..v20, two commits each; one of v5's messages is hostile on purpose), and ECR images of the same
versions whose manifests carry `org.opencontainers.image.revision`. Every check of every version passes
until told otherwise:

  POST /_sandbox/ci {"provider", "repo" (Jenkins: the job), "commit" | "version", "check", "state":
       "success" | "failure" | "pending", "kind": "status" (GitHub: a commit status, not a check run)}
  POST /_sandbox/push {"service", "version"}  a new version: two commits, the tag, its image in ECR

Each provider wants its token (random per sandbox, handed to the bot in its environment): a wrong or
missing one gets 401, as the real ones answer."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from aiohttp import web

from bot.config.evidence import REVISION_LABEL
from bot.config.model import Settings

VERSIONS = tuple(f"v{n}" for n in range(1, 21))
HOSTILE = "<!channel> urgent: see <https://evil.example|your bonus> & `rm -rf` *now*"
TOKEN_ENVS = {
    "github": "GITHUB_TOKEN",
    "gitlab": "GITLAB_TOKEN",
    "jenkins": "JENKINS_TOKEN",
    "circleci": "CIRCLECI_TOKEN",
}
JENKINS_USER = "deploybot"
URL_ENVS = {
    "github": "SANDBOX_GITHUB_URL",
    "gitlab": "SANDBOX_GITLAB_URL",
    "jenkins": "SANDBOX_JENKINS_URL",
    "circleci": "SANDBOX_CIRCLECI_URL",
}
STATES = ("success", "failure", "pending")


@dataclass
class Repo:
    name: str
    commits: list[tuple[str, str, str]] = field(default_factory=list)  # (sha, message, author), oldest first
    tags: dict[str, int] = field(default_factory=dict)  # tag -> index of its commit

    def add_version(self, version: str) -> str:
        for i in (1, 2):
            sha = hashlib.sha1(f"{self.name}:{version}:{i}".encode()).hexdigest()
            message = (
                HOSTILE
                if version == "v5" and i == 1
                else f"{self.name.split('/')[-1]}: change {i} of {version}\n\nThe body."
            )
            self.commits.append((sha, message, "Dev Eloper" if i == 1 else "Ann Author"))
        self.tags[version] = len(self.commits) - 1
        return self.commits[-1][0]

    def sha(self, ref: str) -> str | None:
        if ref in self.tags:
            return self.commits[self.tags[ref]][0]
        return ref if any(c[0] == ref for c in self.commits) else None

    def index(self, sha: str) -> int:
        return next(i for i, c in enumerate(self.commits) if c[0] == sha)

    def tagged(self) -> list[str]:
        """The tagged commits, newest first (what CI built)."""
        return [self.commits[i][0] for i in sorted(self.tags.values(), reverse=True)]


class LocalCi:
    def __init__(self, settings: Settings | None):
        self.tokens = {p: f"sandbox-{p}-" + secrets.token_hex(12) for p in TOKEN_ENVS}
        self.repos: dict[str, Repo] = {}
        self.service_repo: dict[str, str] = {}  # service -> its repo
        self.images: dict[str, str] = {}  # service -> ECR repository
        self.checks: dict[tuple[str, str], list[str]] = {}  # (provider, repo|job) -> default check names
        self.jobs: dict[str, str] = {}  # jenkins job -> repo
        self.results: dict[
            tuple[str, str, str], dict[str, str]
        ] = {}  # (provider, key, sha) -> check -> state
        self.statuses: dict[tuple[str, str], dict[str, str]] = {}  # github (repo, sha) -> context -> state
        self._ecr: Any = None
        self._pipelines: dict[str, tuple[str, str]] = {}  # CircleCI pipeline id -> (slug, sha)
        for name, svc in (settings.services if settings else {}).items():
            self.images[name] = svc.image.rsplit("/", 1)[-1]
            source = svc.evidence.source
            repo_name = source.repo if source else f"sandbox/{name}"
            self.service_repo[name] = repo_name
            repo = self.repos.setdefault(repo_name, Repo(repo_name))
            if not repo.tags:
                for v in VERSIONS:
                    repo.add_version(v)
            for spec in svc.evidence.ci:
                key = spec.job if spec.provider == "jenkins" else spec.repo
                if spec.provider == "jenkins":
                    self.jobs[spec.job] = repo_name
                elif spec.repo not in self.repos:
                    self.repos[spec.repo] = repo
                default = {"github": ["build"], "gitlab": ["test"], "circleci": ["build-and-test"]}
                self.checks[(spec.provider, key)] = list(spec.required) or default.get(
                    spec.provider, ["build"]
                )

    def bot_env(self, base_url: str) -> dict[str, str]:
        env = {TOKEN_ENVS[p]: t for p, t in self.tokens.items()}
        env["JENKINS_USER"] = JENKINS_USER
        env.update({URL_ENVS[p]: f"{base_url}/{p}" for p in URL_ENVS})
        return env

    # ------------------------------------------------------------------------------------------- ECR
    def seed_registry(self, ecr: Any) -> None:
        """Every demo service's images v1..v20 in ECR (moto), each manifest naming its commit."""
        self._ecr = ecr
        for service in self.images:
            ecr.create_repository(repositoryName=self.images[service])
            for version in VERSIONS:
                self._put_image(service, version)
        for service, repository in self.images.items():  # read back: a request must find them
            found = ecr.describe_images(repositoryName=repository, maxResults=100)["imageDetails"]
            tags = {t for d in found for t in d.get("imageTags") or []}
            if not set(VERSIONS) <= tags:
                raise RuntimeError(f"ECR in moto kept {sorted(tags)} of {service}'s images, not v1..v20")

    def _put_image(self, service: str, version: str) -> None:
        sha = self.repos[self.service_repo[service]].sha(version) or ""
        digest = "sha256:" + hashlib.sha256(f"{service}:{version}".encode()).hexdigest()
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest, "size": 2},
            "layers": [],
            "annotations": {REVISION_LABEL: sha},
        }
        self._ecr.put_image(
            repositoryName=self.images[service],
            imageManifest=json.dumps(manifest),
            imageManifestMediaType="application/vnd.oci.image.manifest.v1+json",
            imageTag=version,
        )

    def push(self, service: str, version: str) -> str:
        if service not in self.images:
            raise ValueError(f"no service {service!r} (services: {', '.join(self.images)})")
        if not version or len(version) > 128:
            raise ValueError("version must be an image tag")
        repo = self.repos[self.service_repo[service]]
        sha = repo.sha(version) or repo.add_version(version)
        if self._ecr is not None:
            self._put_image(service, version)
        return sha

    # --------------------------------------------------------------------------------------- control
    def set_result(self, body: dict[str, Any]) -> dict[str, Any]:
        provider = body.get("provider")
        if provider not in TOKEN_ENVS:
            raise ValueError(f"provider must be one of {', '.join(TOKEN_ENVS)}")
        key = str(body.get("repo") or body.get("job") or "")
        repo_name = self.jobs.get(key, key) if provider == "jenkins" else key
        repo = self.repos.get(repo_name)
        if repo is None:
            known = sorted(self.jobs) if provider == "jenkins" else sorted(self.repos)
            raise ValueError(
                f"no {'job' if provider == 'jenkins' else 'repo'} {key!r} (known: {', '.join(known)})"
            )
        ref = body.get("commit") or body.get("version") or ""
        sha = repo.sha(str(ref))
        if sha is None:
            raise ValueError(f"no commit or version {ref!r} in {repo_name}")
        state = body.get("state")
        if state not in STATES:
            raise ValueError(f"state must be one of {', '.join(STATES)}")
        check = str(body.get("check") or (self.checks.get((provider, key)) or ["build"])[0])
        if provider == "github" and body.get("kind") == "status":
            self.statuses.setdefault((repo_name, sha), {})[check] = state
        else:
            self.results.setdefault((provider, key, sha), {})[check] = state
        return {"provider": provider, "repo": key, "commit": sha, "check": check, "state": state}

    def states(self, provider: str, key: str, sha: str) -> dict[str, str]:
        out = {name: "success" for name in self.checks.get((provider, key), ["build"])}
        out.update(self.results.get((provider, key, sha), {}))
        return out

    # ---------------------------------------------------------------------------------------- routes
    def mount(self, app: web.Application) -> None:
        r = app.router
        r.add_post("/_sandbox/ci", self._control)
        gh = "/github/repos/{owner}/{name}"
        r.add_get(gh + "/git/ref/tags/{tag}", self._gh_tag)
        r.add_get(gh + "/commits/{ref}/check-runs", self._gh_runs)
        r.add_get(gh + "/commits/{ref}/status", self._gh_status)
        r.add_get(gh + "/compare/{spec}", self._gh_compare)
        gl = "/gitlab/api/v4/projects/{project}"
        r.add_get(gl + "/repository/tags/{tag}", self._gl_tag)
        r.add_get(gl + "/repository/compare", self._gl_compare)
        r.add_get(gl + "/pipelines", self._gl_pipelines)
        r.add_get(gl + "/pipelines/{pid}/jobs", self._gl_jobs)
        r.add_get("/jenkins/job/{job}/api/json", self._jenkins)
        r.add_get("/circleci/api/v2/project/{slug:.+}/pipeline", self._cc_pipelines)
        r.add_get("/circleci/api/v2/pipeline/{pid}/workflow", self._cc_workflows)

    async def _control(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
            if not isinstance(body, dict):
                raise ValueError("expected a JSON object")
            return web.json_response({"ok": True, **self.set_result(body)})
        except ValueError as exc:
            return web.json_response({"ok": False, "error": f"bad ci request: {exc}"}, status=400)

    def _authorized(self, request: web.Request, provider: str) -> bool:
        token = self.tokens[provider]
        h = request.headers
        if provider == "github":
            return h.get("Authorization") == f"Bearer {token}"
        if provider == "gitlab":
            return h.get("PRIVATE-TOKEN") == token
        if provider == "circleci":
            return h.get("Circle-Token") == token
        want = base64.b64encode(f"{JENKINS_USER}:{token}".encode()).decode()
        return h.get("Authorization") == f"Basic {want}"

    def _repo(self, request: web.Request, provider: str) -> Repo:
        if not self._authorized(request, provider):
            raise web.HTTPUnauthorized(text=json.dumps({"message": "Bad credentials"}))
        name = (
            f"{request.match_info['owner']}/{request.match_info['name']}"
            if provider == "github"
            else unquote(request.match_info["project"])
        )
        repo = self.repos.get(name)
        if repo is None:
            raise web.HTTPNotFound(text=json.dumps({"message": "Not Found"}))
        return repo

    def _sha(self, repo: Repo, ref: str) -> str:
        sha = repo.sha(ref)
        if sha is None:
            raise web.HTTPNotFound(text=json.dumps({"message": f"No commit found for SHA: {ref}"}))
        return sha

    async def _gh_tag(self, request: web.Request) -> web.Response:
        repo, tag = self._repo(request, "github"), request.match_info["tag"]
        if tag not in repo.tags:
            raise web.HTTPNotFound(text=json.dumps({"message": "Not Found"}))
        sha = repo.commits[repo.tags[tag]][0]
        return web.json_response({"ref": f"refs/tags/{tag}", "object": {"sha": sha, "type": "commit"}})

    async def _gh_runs(self, request: web.Request) -> web.Response:
        repo = self._repo(request, "github")
        sha = self._sha(repo, request.match_info["ref"])
        runs = []
        for n, (name, state) in enumerate(self.states("github", repo.name, sha).items()):
            done = state != "pending"
            runs.append(
                {
                    "id": n + 1,
                    "name": name,
                    "status": "completed" if done else "in_progress",
                    "conclusion": state if done else None,
                    "html_url": f"https://github.example/{repo.name}/runs/{sha[:7]}-{n + 1}",
                }
            )
        return web.json_response({"total_count": len(runs), "check_runs": runs})

    async def _gh_status(self, request: web.Request) -> web.Response:
        repo = self._repo(request, "github")
        sha = self._sha(repo, request.match_info["ref"])
        statuses = [
            {"context": c, "state": s, "target_url": f"https://ci.example/{sha[:7]}/{c}"}
            for c, s in self.statuses.get((repo.name, sha), {}).items()
        ]
        states = {s["state"] for s in statuses}
        combined = "failure" if "failure" in states else "success" if states == {"success"} else "pending"
        return web.json_response(
            {"state": combined, "sha": sha, "total_count": len(statuses), "statuses": statuses}
        )

    async def _gh_compare(self, request: web.Request) -> web.Response:
        repo = self._repo(request, "github")
        base_ref, _, head_ref = request.match_info["spec"].partition("...")
        base, head = self._sha(repo, base_ref), self._sha(repo, head_ref)
        b, h = repo.index(base), repo.index(head)
        between = repo.commits[b + 1 : h + 1] if h >= b else []
        return web.json_response(
            {
                "status": "identical" if b == h else "ahead" if h > b else "behind",
                "ahead_by": max(0, h - b),
                "behind_by": max(0, b - h),
                "total_commits": len(between),
                "html_url": f"https://github.example/{repo.name}/compare/{base[:7]}...{head[:7]}",
                "commits": [
                    {
                        "sha": sha,
                        "html_url": f"https://github.example/{repo.name}/commit/{sha}",
                        "commit": {"message": msg, "author": {"name": author}},
                    }
                    for sha, msg, author in between
                ],
            }
        )

    async def _gl_tag(self, request: web.Request) -> web.Response:
        repo, tag = self._repo(request, "gitlab"), request.match_info["tag"]
        if tag not in repo.tags:
            raise web.HTTPNotFound(text=json.dumps({"message": "404 Tag Not Found"}))
        return web.json_response({"name": tag, "commit": {"id": repo.commits[repo.tags[tag]][0]}})

    async def _gl_compare(self, request: web.Request) -> web.Response:
        repo = self._repo(request, "gitlab")
        base, head = (
            self._sha(repo, request.query.get("from", "")),
            self._sha(repo, request.query.get("to", "")),
        )
        b, h = repo.index(base), repo.index(head)
        between = repo.commits[b + 1 : h + 1] if h >= b else []
        return web.json_response(
            {
                "commits": [
                    {"id": s, "short_id": s[:8], "title": m.split("\n")[0], "author_name": a}
                    for s, m, a in between
                ],
                "web_url": f"https://gitlab.example/{repo.name}/-/compare/{base[:8]}...{head[:8]}",
            }
        )

    def _gl_pipeline(self, repo: Repo, sha: str) -> dict[str, Any]:
        states = set(self.states("gitlab", repo.name, sha).values())
        status = "failed" if "failure" in states else "running" if "pending" in states else "success"
        pid = repo.index(sha) + 1
        return {
            "id": pid,
            "sha": sha,
            "status": status,
            "web_url": f"https://gitlab.example/{repo.name}/-/pipelines/{pid}",
        }

    async def _gl_pipelines(self, request: web.Request) -> web.Response:
        repo = self._repo(request, "gitlab")
        sha = repo.sha(request.query.get("sha", ""))
        return web.json_response([self._gl_pipeline(repo, sha)] if sha and sha in repo.tagged() else [])

    async def _gl_jobs(self, request: web.Request) -> web.Response:
        repo = self._repo(request, "gitlab")
        index = int(request.match_info["pid"]) - 1
        if not 0 <= index < len(repo.commits):
            raise web.HTTPNotFound(text=json.dumps({"message": "404 Not found"}))
        sha = repo.commits[index][0]
        names = {"success": "success", "failure": "failed", "pending": "running"}
        return web.json_response(
            [
                {
                    "id": n,
                    "name": c,
                    "status": names[s],
                    "web_url": f"https://gitlab.example/{repo.name}/-/jobs/{n}",
                }
                for n, (c, s) in enumerate(self.states("gitlab", repo.name, sha).items(), 1)
            ]
        )

    async def _jenkins(self, request: web.Request) -> web.Response:
        if not self._authorized(request, "jenkins"):
            raise web.HTTPUnauthorized(text="Invalid password/token")
        job = request.match_info["job"]
        if job not in self.jobs:
            raise web.HTTPNotFound(text="Not Found")
        repo = self.repos[self.jobs[job]]
        builds = []
        for sha in repo.tagged()[:50]:
            states = set(self.states("jenkins", job, sha).values())
            number = repo.index(sha) + 1
            builds.append(
                {
                    "number": number,
                    "building": "pending" in states,
                    "result": None
                    if "pending" in states
                    else "FAILURE"
                    if "failure" in states
                    else "SUCCESS",
                    "url": f"https://jenkins.example/job/{job}/{number}/",
                    "actions": [{}, {"lastBuiltRevision": {"SHA1": sha}}],
                }
            )
        return web.json_response({"builds": builds})

    async def _cc_pipelines(self, request: web.Request) -> web.Response:
        if not self._authorized(request, "circleci"):
            raise web.HTTPUnauthorized(text=json.dumps({"message": "You must log in first."}))
        slug = request.match_info["slug"]
        repo = self.repos.get(slug)
        if repo is None:
            raise web.HTTPNotFound(text=json.dumps({"message": "Project not found"}))
        items = []
        for sha in repo.tagged():
            pid = hashlib.sha1(f"{slug}:{sha}".encode()).hexdigest()[:16]
            self._pipelines[pid] = (slug, sha)
            items.append({"id": pid, "number": repo.index(sha) + 1, "vcs": {"revision": sha}})
        return web.json_response({"items": items, "next_page_token": None})

    async def _cc_workflows(self, request: web.Request) -> web.Response:
        if not self._authorized(request, "circleci"):
            raise web.HTTPUnauthorized(text=json.dumps({"message": "You must log in first."}))
        found = self._pipelines.get(request.match_info["pid"])
        if found is None:
            raise web.HTTPNotFound(text=json.dumps({"message": "Pipeline not found"}))
        slug, sha = found
        names = {"success": "success", "failure": "failed", "pending": "running"}
        return web.json_response(
            {
                "items": [
                    {"name": c, "status": names[s]} for c, s in self.states("circleci", slug, sha).items()
                ]
            }
        )
