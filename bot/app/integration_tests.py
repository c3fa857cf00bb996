"""A pipeline's integration tests in one environment: the service's `[integration_tests]` command as a
one-off task of the revision the environment runs now (it must run the pipeline's version), waited for
on the clock, and/or its HTTP checks from the bot. What it has done is saved on the stage as it goes
(the task's key before it is started, the task, its exit code), so a resumed run looks the task up and
never starts a second one; HTTP checks only read, and are simply asked again.

`Tests.run` returns the stage's words when every test passed and raises TestsFailed saying why not."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from bot.app.ports import Http, HttpError, Platform, PlatformError
from bot.app.rollback import FORWARD_ATTEMPTS, backoff
from bot.clock import Clock
from bot.config.migrations import HttpCheck, IntegrationTests
from bot.config.model import Target
from bot.domain.durations import duration
from bot.domain.pipelines import Pipeline, Stage, task_key

LOG_LINES = 10  # a failed task's last log lines, on the pipeline's message
T = TypeVar("T")
SaveStage = Callable[..., Awaitable[Stage]]  # (**changes) -> the stage as saved (still running)


class TestsFailed(Exception):
    """The environment did not pass: the message says which test and how, for people."""


def short(task: str) -> str:
    return task.rsplit("/", 1)[-1]


@dataclass
class Tests:
    platform: Platform
    clock: Clock
    http: Http | None

    async def run(self, p: Pipeline, index: int, target: Target, save: SaveStage) -> str:
        stage = p.stages[index]
        tests = target.integration_tests
        if tests is None:
            raise TestsFailed(
                f"{p.service} has no integration tests in {stage.env} any more: nothing shows "
                f"{p.version} works there"
            )
        deadline = (stage.started_at or self.clock.now()) + tests.timeout_seconds
        said = []
        if tests.command:
            if stage.exit_code != 0:
                stage = await self._task(p, index, stage, target, tests, deadline, save)
            said.append(f"task {short(stage.task or '')} exited 0")
        for check in tests.http:
            said.append(await self._check(p, stage.env, target, check))
        return "; ".join(said)

    async def _retried(self, call: Callable[[], Awaitable[T]], what: str) -> T:
        """A platform call, tried again with backoff while the platform fails (as a step would be)."""
        for attempt in range(1, FORWARD_ATTEMPTS + 1):
            try:
                return await call()
            except PlatformError as exc:
                if attempt == FORWARD_ATTEMPTS:
                    raise TestsFailed(f"{what}: {exc}") from None
                await self.clock.sleep(backoff(attempt))
        raise AssertionError("unreachable")

    async def _task(
        self,
        p: Pipeline,
        index: int,
        stage: Stage,
        target: Target,
        tests: IntegrationTests,
        deadline: float,
        save: SaveStage,
    ) -> Stage:
        task = stage.task
        if task is None:
            stage, task = await self._start(p, index, stage, target, tests, save)
            stage = await save(task=task)
        return await self._wait(stage, target, task, deadline, save)

    async def _start(
        self, p: Pipeline, index: int, stage: Stage, target: Target, tests: IntegrationTests, save: SaveStage
    ) -> tuple[Stage, str]:
        """The task started (or found: a start that may have landed is looked up before another)."""
        key = task_key(p.id, index)
        revision = None
        for attempt in range(1, FORWARD_ATTEMPTS + 1):
            try:
                if stage.task_key is not None:
                    found = await self.platform.find_task(target, key)
                    if found is not None:
                        return stage, found
                revision = revision or await self._revision(p, target)
                if stage.task_key is None:
                    stage = await save(task_key=key)  # before the call: a resume looks for it first
                told = {**tests.environment(p.service, stage.env, p.version), "DEPLOYBOT_PIPELINE": str(p.id)}
                task = await self.platform.run_task(
                    target, revision, tests.command, key=key, environment=told
                )
                return stage, task
            except PlatformError as exc:
                if attempt == FORWARD_ATTEMPTS:
                    raise TestsFailed(
                        f"the integration tests in {stage.env} could not start: {exc}"
                    ) from None
                await self.clock.sleep(backoff(attempt))
        raise AssertionError("unreachable")

    async def _revision(self, p: Pipeline, target: Target) -> str:
        """What the environment runs now: the deployed revision, as long as it is the pipeline's version."""
        running = await self.platform.running(target)
        wanted = target.image(p.version)
        if running.image != wanted:
            raise TestsFailed(
                f"{target.env.name} no longer runs {wanted} (it runs {running.image or 'nothing'}): its "
                "tests would test something else"
            )
        return running.revision

    async def _wait(self, stage: Stage, target: Target, task: str, deadline: float, save: SaveStage) -> Stage:
        while True:
            t = await self._retried(lambda: self.platform.task(target, task), "reading the tests' task")
            if t.stopped:
                break
            if self.clock.now() >= deadline:
                raise TestsFailed(
                    f"the integration tests in {stage.env} (task {short(task)}) did not finish in time "
                    f"({duration(deadline - (stage.started_at or deadline))}); the task may still be running"
                )
            await self.clock.sleep(target.poll_seconds)
        if t.exit_code != 0:
            lines = await self._retried(
                lambda: self.platform.task_logs(target, task, LOG_LINES), "reading the task's log"
            )
            tail = "\n".join(lines) if lines else "(no log lines)"
            ended = f"exited with code {t.exit_code}" if t.exit_code is not None else "never ran"
            raise TestsFailed(
                f"the integration tests in {stage.env} failed: task {short(task)} {ended}"
                + (f" ({t.reason})" if t.reason else "")
                + f"; its last log lines:\n{tail}"
            )
        return await save(exit_code=0)

    async def _check(self, p: Pipeline, env: str, target: Target, check: HttpCheck) -> str:
        if self.http is None:
            raise TestsFailed("no HTTP client is configured for this bot: the HTTP checks cannot run")
        values = {"service": p.service, "env": env, "version": p.version}
        url = check.url.format(**values)
        body = check.expect_body.format(**values) if check.expect_body else None
        deadline = self.clock.now() + check.timeout_seconds
        while True:
            try:
                status, text = await self.http.get(url, timeout_seconds=min(10.0, check.timeout_seconds))
                seen = f"{status} {text[:100]!r}"
                if status == check.expect_status and (body is None or body in text):
                    return f"GET {url} → {status}"
            except HttpError as exc:
                seen = f"no answer ({str(exc).split(':')[0]})"
            if self.clock.now() >= deadline:
                wanted = f"{check.expect_status}" + (f" with {body!r}" if body else "")
                raise TestsFailed(
                    f"the integration tests in {env} failed: GET {url} → {seen} (wanted {wanted}, "
                    f"for {duration(check.timeout_seconds)})"
                )
            await self.clock.sleep(target.poll_seconds)
