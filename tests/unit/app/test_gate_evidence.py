"""The gate reads evidence (bot.app.gate_evidence) on the in-memory adapters: a CI failure refuses naming
the failing checks, pending waits and the deploy starts when it turns green (nobody ticks it), a missing
image is refused before anything is registered, with the nearest tags; a downgrade is flagged."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bot.adapters.metrics.memory import MemoryMetrics
from bot.adapters.platforms.memory import MemoryPlatform
from bot.adapters.store.aio import AsyncStore
from bot.adapters.store.sqlite import Store
from bot.app.engine import Engine
from bot.app.evidence import (
    CiCheck,
    CiResult,
    Commit,
    Comparison,
    EvidenceError,
    EvidenceReader,
    ImageInfo,
)
from bot.config.load import parse_settings
from bot.domain import commands as cmds
from bot.domain.model import Deployment
from tests.unit.app.test_engine_on_fakes import HeldTimer, InstantClock, until_done

CONFIG = {
    "alerts": {"oncall": False},
    "environments": {
        "production": {
            "load_balancer": "lb",
            "strategy": "rolling",
            "image_check": True,
            "guards": {"require_health_and_monitoring": False},  # no alarms in these fakes
            "checklist": [
                {"id": "tests", "label": "Tests passing", "kind": "automatic", "check": "ci_passed"}
            ],
        }
    },
    "services": {
        "web": {
            "source": {"provider": "github", "repo": "acme/web"},
            "ci": [{"provider": "github", "required": ["build", "unit-tests"]}],
        }
    },
}


class FakeGitHub:
    """Tags vN -> commit "cN"; checks per commit, success unless set."""

    def __init__(self) -> None:
        self.states: dict[tuple[str, str], str] = {}
        self.asked = 0
        self.asked_thrice = asyncio.Event()

    async def tag_commit(self, repo: str, tag: str) -> str | None:
        return f"c{tag[1:]}" if tag[1:].isdigit() else None

    async def compare(self, repo: str, base: str, head: str) -> Comparison:
        b, h = int(base[1:]), int(head[1:])
        commits = tuple(Commit(f"c{n}", f"<!here> change {n}", "dev") for n in range(b + 1, h + 1))
        return Comparison(commits, len(commits), "https://github.example/compare", behind=h < b)

    async def result(self, spec, commit: str, version: str) -> CiResult:
        self.asked += 1
        if self.asked >= 3:
            self.asked_thrice.set()
        names = ("build", "unit-tests")
        return CiResult("github", tuple(CiCheck(n, self.states.get((commit, n), "success")) for n in names))  # type: ignore[arg-type]


class FakeEcr:
    def __init__(self, tags: list[str]):
        self.tags_ = tags

    async def image(self, account, repository, tag):
        return ImageInfo(tag, {}) if tag in self.tags_ else None

    async def tags(self, account, repository):
        return list(self.tags_)


@pytest.fixture
async def world(tmp_path: Path):
    settings = parse_settings(CONFIG)
    store = AsyncStore(Store(tmp_path / "deploybot.db"))
    platform = MemoryPlatform(rollout_polls=1)
    target = settings.target("web", "production")
    platform.add_service(target, "web:v1")
    github = FakeGitHub()
    reader = EvidenceReader({"github": github}, {"github": github}, FakeEcr(["v1", "v2", "v3", "v2.3.1"]))
    engine = Engine(
        settings, store, platform, MemoryMetrics(), InstantClock(), timer=HeldTimer(), evidence=reader
    )
    yield engine, platform, github
    await engine.shutdown()
    store.close()


def command(text: str) -> cmds.Command:
    return cmds.parse("/deploy", text, cmds.Vocabulary(("web",), ("production",), "production"))


async def requested(engine: Engine, text: str) -> Deployment:
    d = await engine.request(command(text), "alice")  # type: ignore[arg-type]
    assert isinstance(d, Deployment)
    return d


async def test_a_failed_required_check_refuses_naming_it(world):
    engine, platform, github = world
    github.states[("c2", "unit-tests")] = "failure"
    before = dict(platform.revisions)
    done = await until_done(engine, (await requested(engine, "web v2 to production")).id)
    assert done.state.value == "cancelled"
    assert done.outcome == "Refused: CI failed for web v2: unit-tests (GitHub)"
    assert platform.revisions == before


async def test_pending_waits_then_the_deploy_starts_when_it_turns_green(world):
    engine, platform, github = world
    github.states[("c2", "build")] = "pending"
    d = await requested(engine, "web v2 to production")

    await asyncio.wait_for(github.asked_thrice.wait(), 5)  # asked at admission, then again and again
    now = await engine.store.get(d.id)
    assert now.state.value == "awaiting_approval" and "Tests passing" in now.context["gate"]["waiting_for"]
    assert "waiting at c2 for build (GitHub)" in (await engine.store.items(d.id))["tests"].evidence
    changes = now.context["changes"]
    assert changes["from"] == "v1" and [c["sha"] for c in changes["commits"]] == ["c2"]
    github.states[("c2", "build")] = "success"
    done = await until_done(engine, d.id)
    assert done.state.value == "succeeded", done.outcome
    assert (await engine.store.items(d.id))["tests"].by == "deploybot"


async def test_a_missing_image_is_refused_before_anything_with_the_nearest_tags(world):
    engine, platform, github = world
    before = dict(platform.revisions)
    done = await until_done(engine, (await requested(engine, "web v2.3.l to production")).id)
    assert done.outcome == "Refused: no image web:v2.3.l in ECR; did you mean v2.3.1?"
    assert platform.revisions == before and github.asked == 0  # refused before the CI was asked


async def test_a_downgrade_is_flagged(world):
    engine, platform, github = world
    d = await until_done(engine, (await requested(engine, "web v3 to production")).id)
    assert d.state.value == "succeeded"
    github.states[("c2", "build")] = "failure"
    d = await until_done(engine, (await requested(engine, "web v2 to production")).id)
    assert d.context["changes"]["downgrade"] is True and d.state.value == "cancelled"


async def test_a_redeploy_of_what_runs_reads_the_running_versions_ci(world):
    engine, _, github = world
    github.states[("c1", "unit-tests")] = "failure"
    done = await until_done(engine, (await requested(engine, "web to production")).id)
    assert done.outcome == "Refused: CI failed for web (the running version): unit-tests (GitHub)"


async def test_a_refused_token_refuses_with_the_provider_and_what_to_fix(world):
    engine, platform, github = world

    async def refused(spec, commit, version):
        raise EvidenceError("github", "401 for /repos/acme/web/commits/c2/check-runs: set GITHUB_TOKEN")

    github.result = refused  # type: ignore[method-assign]
    done = await until_done(engine, (await requested(engine, "web v2 to production")).id)
    assert done.outcome == (
        "Refused: the CI evidence cannot be read: GitHub: 401 for /repos/acme/web/commits/c2/check-runs: "
        "set GITHUB_TOKEN"
    )


async def test_an_amended_version_has_its_image_looked_up_and_its_changes_read_again(world):
    engine, _, github = world
    github.states[("c2", "build")] = "pending"
    d = await requested(engine, "web v2 to production")
    await asyncio.wait_for(github.asked_thrice.wait(), 5)
    amended = await engine.request(command("web v3 to production"), "alice")  # the requester's own: amends
    assert getattr(amended, "deployment", None) is not None and amended.deployment.id == d.id
    done = await until_done(engine, d.id)
    assert done.state.value == "succeeded" and done.context["changes"]["to"] == "v3"
    again = await requested(engine, "web v2 to production")
    github.states[("c2", "build")] = "pending"
    await engine.request(command("web v2.3.l to production"), "alice")
    done = await until_done(engine, again.id)
    assert done.outcome == "Refused: no image web:v2.3.l in ECR; did you mean v2.3.1?"
