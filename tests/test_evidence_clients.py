"""The evidence clients against the sandbox's local GitHub, GitLab, Jenkins and CircleCI (bot.sandbox.ci,
served on loopback, port 0): tags to commits, comparisons, CI results judged as one verdict, and the
errors — a refused token names the provider and the variable to set, never the token; a 5xx is
transient (the item keeps waiting), not a refusal."""

from __future__ import annotations

import pytest
from aiohttp import web

from bot.adapters.evidence.circleci import CircleCi
from bot.adapters.evidence.github import GitHub
from bot.adapters.evidence.gitlab import GitLab
from bot.adapters.evidence.jenkins import Jenkins
from bot.app.evidence import EvidenceError, EvidenceReader, ImageInfo, judge
from bot.config.evidence import CiSpec, Evidence, Provider, Source
from bot.config.load import load_settings
from bot.config.model import Service
from bot.sandbox.ci import HOSTILE, JENKINS_USER, LocalCi
from tests.unit.config.test_settings import EXAMPLE


@pytest.fixture(autouse=True)
async def closed_after():
    """Every client a test makes closes its session (no unclosed-session warnings)."""
    made: list = []
    from bot.adapters.evidence import rest

    real = rest.Rest.__init__

    def init(self, *args, **kwargs):
        real(self, *args, **kwargs)
        made.append(self)

    rest.Rest.__init__ = init  # type: ignore[method-assign]
    yield
    rest.Rest.__init__ = real  # type: ignore[method-assign]
    for r in made:
        await r.close()


@pytest.fixture
async def local():
    ci = LocalCi(load_settings(EXAMPLE, env={}))
    ci.checks[("circleci", "gh/acme/web")] = ["build", "deploy-docs"]
    ci.repos["gh/acme/web"] = ci.repos["acme/web"]
    app = web.Application()
    ci.mount(app)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    yield ci, f"http://127.0.0.1:{port}"
    await runner.cleanup()


def provider(name: str, base: str, **kw) -> Provider:
    return Provider(name, f"{base}/{name}", f"{name.upper()}_TOKEN", timeout_seconds=5, **kw)


async def test_github_tags_compare_and_checks(local):
    ci, base = local
    gh = GitHub(provider("github", base), ci.tokens["github"])
    v4, v5 = await gh.tag_commit("acme/web", "v4"), await gh.tag_commit("acme/web", "v5")
    assert v4 and v5 and await gh.tag_commit("acme/web", "v99") is None
    cmp = await gh.compare("acme/web", v4, v5)
    assert [c.message for c in cmp.commits] == [HOSTILE, "web: change 2 of v5"]  # first lines only
    assert cmp.total == 2 and not cmp.behind and (await gh.compare("acme/web", v5, v4)).behind
    spec = CiSpec("github", "acme/web", required=("build", "unit-tests"))
    assert judge([(spec, await gh.result(spec, v5, "v5"))], v5).state == "success"
    ci.set_result(
        {"provider": "github", "repo": "acme/web", "version": "v5", "check": "lint", "state": "failure"}
    )
    assert judge([(spec, await gh.result(spec, v5, "v5"))], v5).state == "success"  # lint is not required
    every = CiSpec("github", "acme/web")
    verdict = judge([(every, await gh.result(every, v5, "v5"))], v5)
    assert verdict.state == "failure" and verdict.failing == ("lint (GitHub)",)
    ci.set_result(
        {
            "provider": "github",
            "repo": "acme/web",
            "version": "v5",
            "check": "ci/e2e",
            "state": "pending",
            "kind": "status",
        }
    )
    verdict = judge([(spec, await gh.result(spec, v5, "v5"))], v5)
    assert verdict.state == "success"  # a status that is not required waits for nobody
    need_e2e = CiSpec("github", "acme/web", required=("build", "ci/e2e"))
    assert judge([(need_e2e, await gh.result(need_e2e, v5, "v5"))], v5).state == "pending"
    missing = CiSpec("github", "acme/web", required=("not-reported",))
    assert judge([(missing, await gh.result(missing, v5, "v5"))], v5).state == "pending"


async def test_gitlab_project_paths_pipelines_and_jobs(local):
    ci, base = local
    gl = GitLab(provider("gitlab", base), ci.tokens["gitlab"])
    v2 = await gl.tag_commit("acme/api", "v2")
    assert v2 and await gl.tag_commit("acme/api", "nope") is None
    spec = CiSpec("gitlab", "acme/api")
    assert judge([(spec, await gl.result(spec, v2, "v2"))], v2).state == "success"
    ci.set_result(
        {"provider": "gitlab", "repo": "acme/api", "commit": v2, "check": "test", "state": "failure"}
    )
    verdict = judge([(spec, await gl.result(spec, v2, "v2"))], v2)
    assert verdict.failing == ("test (GitLab)",) and "/-/pipelines/" in verdict.evidence
    v3 = await gl.tag_commit("acme/api", "v3")
    assert [c.message for c in (await gl.compare("acme/api", v2, v3)).commits] == [
        "api: change 1 of v3",
        "api: change 2 of v3",
    ]
    untagged = ci.repos["acme/api"].commits[0][0]  # CI never ran for it: nothing reported, so it waits
    assert judge([(spec, await gl.result(spec, untagged, "x"))], untagged).state == "pending"


async def test_jenkins_build_of_the_commit(local):
    ci, base = local
    jenkins = Jenkins(provider("jenkins", base), JENKINS_USER, ci.tokens["jenkins"])
    sha = ci.repos["acme/api"].sha("v7")
    spec = CiSpec("jenkins", job="api-integration")
    result = await jenkins.result(spec, sha, "v7")
    assert result.checks[0].state == "success" and result.checks[0].name == "api-integration #14"
    ci.set_result({"provider": "jenkins", "repo": "api-integration", "version": "v7", "state": "pending"})
    assert (await jenkins.result(spec, sha, "v7")).checks[0].state == "pending"
    ci.set_result({"provider": "jenkins", "repo": "api-integration", "version": "v7", "state": "failure"})
    assert judge([(spec, await jenkins.result(spec, sha, "v7"))], sha).failing == (
        "api-integration #14 (Jenkins)",
    )
    assert (await jenkins.result(spec, "0" * 40, "v99")).checks == ()


async def test_circleci_pipeline_workflows(local):
    ci, base = local
    circle = CircleCi(provider("circleci", base), ci.tokens["circleci"])
    sha = ci.repos["acme/web"].sha("v3")
    spec = CiSpec("circleci", "gh/acme/web", required=("build",))
    assert judge([(spec, await circle.result(spec, sha, "v3"))], sha).state == "success"
    ci.set_result(
        {
            "provider": "circleci",
            "repo": "gh/acme/web",
            "version": "v3",
            "check": "deploy-docs",
            "state": "failure",
        }
    )
    assert judge([(spec, await circle.result(spec, sha, "v3"))], sha).state == "success"  # not required
    every = CiSpec("circleci", "gh/acme/web")
    assert judge([(every, await circle.result(every, sha, "v3"))], sha).failing == ("deploy-docs (CircleCI)",)


async def test_a_refused_token_names_the_provider_and_the_variable_never_the_token(local):
    ci, base = local
    gh = GitHub(provider("github", base), "ghp_wrong-secret")
    with pytest.raises(EvidenceError) as err:
        await gh.tag_commit("acme/web", "v1")
    assert not err.value.transient
    assert "GitHub: 401" in str(err.value) and "GITHUB_TOKEN" in str(err.value)
    assert "ghp_wrong-secret" not in str(err.value)
    gl = GitLab(provider("gitlab", base), ci.tokens["gitlab"])
    with pytest.raises(EvidenceError, match="GitLab: 404 .*check the project acme/nope"):
        await gl.result(CiSpec("gitlab", "acme/nope"), "0" * 40, "v1")


async def test_server_errors_are_transient_and_asked_again():
    calls = []

    async def flaky(request: web.Request) -> web.Response:
        calls.append(request.path)
        return web.Response(status=503 if len(calls) < 3 else 429)

    app = web.Application()
    app.router.add_get("/{tail:.*}", flaky)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    try:
        gh = GitHub(provider("github", f"http://127.0.0.1:{port}", retries=2), "t")
        gh.rest.backoff_seconds = 0
        with pytest.raises(EvidenceError) as err:
            await gh.tag_commit("acme/web", "v1")
        assert err.value.transient and len(calls) == 3 and "answered 429" in str(err.value)
        service = Service(
            "web",
            "web",
            "web",
            evidence=Evidence(Source("github", "acme/web"), (CiSpec("github", "acme/web"),)),
        )
        reader = EvidenceReader({"github": gh}, {"github": gh})
        verdict = await reader.ci(_target(service), "v1")
        assert verdict.state == "pending" and "asking again" in verdict.evidence
    finally:
        await runner.cleanup()


def _target(service: Service):
    from dataclasses import replace

    settings = load_settings(EXAMPLE, env={})
    return replace(settings.target("web", "production"), service=service)


class Tags:
    def __init__(self, tags: list[str]):
        self._tags = tags

    async def image(self, account, repository, tag):
        return ImageInfo(tag, {}) if tag in self._tags else None

    async def tags(self, account, repository):
        return list(self._tags)


async def test_a_missing_image_is_refused_with_the_nearest_tags():
    reader = EvidenceReader({}, {}, Tags(["v1", "v2", "v2.3.1", "v2.3.0", "v20"]))
    target = load_settings(EXAMPLE, env={}).target("web", "production")
    assert await reader.missing_image(target, "v2.3.1") is None
    said = await reader.missing_image(target, "v2.3.l")
    assert said is not None and said.startswith("no image web:v2.3.l in ECR; did you mean v2.3.1")
    assert (
        await reader.missing_image(target, "zzz-unrelated")
        == "no image web:zzz-unrelated in ECR; push web:zzz-unrelated first"
    )
