"""Pipelines: `/deploy web v2 --pipeline [NAME]` takes one version through the pipeline's environments in
order. The first is requested at once, through the normal intake (access, guards, the gate, its own
strategy); then, driven by the outbox, each deployment that succeeds is followed by the service's
integration tests there (bot.app.integration_tests), and tests that pass by a request for exactly that
version in the next environment, through that environment's whole gate (checklist, approvals — the
requester's, so the four-eyes rule still wants someone else —, a window when the pipeline asks for one,
freezes), as the pipeline's requester with the roles they had when they asked. A stage that fails (its
deployment failed, rolled back, was cancelled, rejected or refused; the tests failed) stops the pipeline
and says why: nothing later is requested.

Crash-safe: the store is the truth. This consumer reads the outbox with its own cursor ("pipelines") only
to learn WHEN to look (and only while a pipeline runs); what to do is read from the pipeline's record, each save a compare-and-set with
its audit event and outbox events. A stage's deployment is requested with a key naming the pipeline and
the stage (asked again, the store hands back the same deployment), the tests' task is started with a key
saved before the call (looked up after a crash): a restart drives every running pipeline on from where
the store says it is, and nothing is done twice."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bot.app.access import Access
from bot.app.intake import Intake, StageRequest
from bot.app.integration_tests import Tests, TestsFailed
from bot.app.ports import Http, Platform
from bot.app.storage import Storage
from bot.clock import Clock
from bot.config.model import Settings
from bot.config.pipelines import PipelineSpec
from bot.domain import commands as cmds
from bot.domain.errors import Conflict, Refused
from bot.domain.events import DomainEvent
from bot.domain.machine import State
from bot.domain.model import BOT, Amendment, Deployment, LockInfo
from bot.domain.mrkdwn import text
from bot.domain.pipelines import (
    DEPLOY,
    FAILED,
    RUNNING,
    SUCCEEDED,
    Pipeline,
    PipelineEnded,
    PipelineStageChanged,
    PipelineStarted,
    Stage,
    plan_stages,
    stage_request_key,
)
from bot.tasks import TaskGroup, detached_task

log = logging.getLogger(__name__)
CONSUMER = "pipelines"  # this use case's outbox cursor
BATCH = 100


@dataclass(frozen=True)
class PipelineRequested:
    """What `/deploy ... --pipeline` did: the pipeline, and its first stage's answer (the deployment, or
    who holds the lock — then the pipeline has already stopped, saying so)."""

    pipeline: Pipeline
    first: Deployment | LockInfo


class Pipelines:
    def __init__(
        self,
        settings: Settings,
        store: Storage,
        intake: Intake,
        access: Access,
        platform: Platform,
        clock: Clock,
        http: Http | None = None,
    ):
        self.settings, self.store, self.intake, self.access = settings, store, intake, access
        self.clock = clock
        self.tests = Tests(platform, clock, http)
        self._driving: dict[int, bool] = {}  # pipelines driven now -> drive once more when done
        self._drives = TaskGroup("pipelines")
        self._wake = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None
        self._closing = False
        # Whether any pipeline may be running: while none is, the outbox is not read (the store's thread
        # serves requests first); `_starts` counts requests, so a read that began before one cannot
        # decide that none runs.
        self._watching = False
        self._starts = 0
        self._watchers: list[Callable[[], None]] = []  # told when a pipeline may run (its message's reader)
        self._unsubscribe = store.on_append(self._nudge)

    # --------------------------------------------------------------------------------- requests

    def spec(self, service: str, name: str | None) -> PipelineSpec:
        """The pipeline `name` (None or "": the one pipeline that takes the service); Refused otherwise."""
        pipelines = self.settings.pipelines
        if not pipelines:
            raise Refused(
                "No pipelines are configured: add [pipelines.NAME] with environments = [...] to the config."
            )
        if name:
            spec = next((p for n, p in pipelines.items() if n.lower() == name.lower()), None)
            if spec is None:
                raise Refused(f'There is no pipeline "{text(name, 40)}". Pipelines: {", ".join(pipelines)}.')
            if not spec.covers(service):
                raise Refused(
                    f"Pipeline {spec.name} is not for {service}: it takes {', '.join(spec.services)}."
                )
            return spec
        covering = [p for p in pipelines.values() if p.covers(service)]
        if len(covering) == 1:
            return covering[0]
        if not covering:
            raise Refused(f"No pipeline takes {service}. Pipelines: {', '.join(pipelines)}.")
        names = ", ".join(p.name for p in covering)
        raise Refused(
            f"Several pipelines take {service} ({names}): name one, e.g. --pipeline {covering[0].name}."
        )

    async def request(
        self, command: cmds.Deploy, user: str, request_key: str | None, roles: frozenset[str] | set[str]
    ) -> PipelineRequested:
        """Start a pipeline: the person may deploy to its first environment and promote to every later
        one (checked now, each refusal recorded), then the first stage is requested at once."""
        spec = self.spec(command.service, command.pipeline)
        if not command.version:
            raise Refused(f"A pipeline takes one version: /deploy {command.service} VERSION --pipeline.")
        roles = frozenset(roles)
        for i, env in enumerate(spec.environments):
            await self.access.check(
                "deploy" if i == 0 else "promote", env, user, roles, service=command.service
            )
        stages = plan_stages(
            spec.environments,
            lambda env: self.settings.target(command.service, env).integration_tests is not None,
        )
        first = self.settings.target(command.service, spec.environments[0])
        self._starts += 1
        p = await self.store.create_pipeline(
            name=spec.name,
            service=command.service,
            version=command.version,
            requested_by=user,
            roles=sorted(roles),
            stages=stages,
            channel=first.env.channel,
            request_key=request_key,
        )
        self._watch()
        stage = p.stages[0]
        if stage.deployment_id is not None:  # the same request again: what it did the first time
            return PipelineRequested(p, await self.store.get(stage.deployment_id))
        if p.ended:  # ... which was refused
            raise Refused(f"{p.ref} stopped: {p.reason}")
        p, answer = await self._request(p, 0, reason=command.reason, raise_refusal=True)
        self.drive(p.id)  # its deployment may have ended before the pipeline recorded it: look once
        return PipelineRequested(p, answer)

    async def _request(
        self, p: Pipeline, index: int, reason: str | None = None, raise_refusal: bool = False
    ) -> tuple[Pipeline, Deployment | LockInfo]:
        """Request stage `index`'s deployment; a refusal or a lock stops the pipeline, saying so."""
        stage = p.stages[index]
        source = p.source_of(index)
        spec = self.settings.pipelines.get(p.name)
        command = cmds.Deploy(
            service=p.service,
            version=p.version,
            env=stage.env,
            strategy=None,
            dry_run=False,
            reason=None,
            emergency=None,
            window=bool(spec and spec.windows and source is not None),
            at=None,
        )
        why = reason
        if source is not None:
            why = f"{p.ref}: promoted from {source.env} (deployment #{source.deployment_id})"
        asked = StageRequest(
            {"id": p.id, "name": p.name, "stage": index},
            source=source.deployment_id if source is not None else None,
            reason=why,
        )
        try:
            result = await self.intake.request(
                command, p.requested_by, stage_request_key(p.id, index), set(p.roles), stage=asked
            )
        except Refused as exc:
            await self._stop(p, index, f"{stage.env}: {exc}")
            if raise_refusal:
                raise
            raise _Stopped from None
        if isinstance(result, LockInfo):
            held = (
                f"deployment #{result.deployment_id}"
                if result.deployment_id
                else f"hand ({result.holder}): {result.reason or 'no reason given'}"
            )
            await self._stop(p, index, f"{p.service} in {stage.env} is locked by {held}")
            return await self.store.pipeline(p.id), result
        d = result.deployment if isinstance(result, Amendment) else result
        moved = p.with_stage(index, RUNNING, deployment_id=d.id, started_at=self.clock.now())
        said: DomainEvent = (
            PipelineStarted(p.id) if index == 0 else PipelineStageChanged(p.id, index, RUNNING)
        )
        p = await self._save(p, moved, index, deployment_id=d.id, events=[said])
        return p, d

    async def _stop(self, p: Pipeline, index: int, reason: str) -> None:
        """The stage failed before it had a deployment: the pipeline stops, saying why."""
        stopped = p.with_stage(index, FAILED, detail=reason)
        await self._save(p, stopped, index)

    async def _save(
        self,
        before: Pipeline,
        after: Pipeline,
        index: int,
        *,
        deployment_id: int | None = None,
        events: list[DomainEvent] | None = None,
    ) -> Pipeline:
        """Save `after` over `before` with the audit event of stage `index`'s move and the events saying
        it (the stage's new state, the pipeline's end)."""
        stage = after.stages[index]
        said = list(events or [])
        was = before.stages[index]
        if not said and (stage.state != was.state or stage.task != was.task):
            said.append(PipelineStageChanged(after.id, index, stage.state, stage.task or ""))
        if after.ended and not before.ended:
            said.append(PipelineEnded(after.id, after.state == SUCCEEDED, after.reason or ""))
        action = "pipeline_stage" if not after.ended else f"pipeline_{after.state}"
        details: dict[str, Any] = {
            "stage": index,
            "kind": stage.kind,
            "env": stage.env,
            "stage_state": stage.state,
            **({"deployment": stage.deployment_id} if stage.deployment_id else {}),
            **({"task": stage.task} if stage.task else {}),
            **({"detail": stage.detail} if stage.detail else {}),
        }
        return await self.store.save_pipeline(
            after,
            actor=BOT,
            action=action,
            details=details,
            deployment_id=deployment_id or stage.deployment_id,
            events=said,
        )

    # ---------------------------------------------------------------------------------- driving

    def drive(self, pipeline_id: int) -> None:
        """Look at the pipeline and do what its record says is next (once more if it is being driven)."""
        if self._closing:
            return
        if pipeline_id in self._driving:
            self._driving[pipeline_id] = True
            return
        self._driving[pipeline_id] = False
        self._drives.spawn(self._drive_loop(pipeline_id), f"pipeline-{pipeline_id}")

    async def _drive_loop(self, pipeline_id: int) -> None:
        try:
            while True:
                try:
                    await self._drive(pipeline_id)
                except asyncio.CancelledError:
                    raise
                except Exception:  # left running: the next event of its deployment, or a restart, tries again
                    log.exception("driving pipeline #%s failed", pipeline_id)
                if not self._driving.get(pipeline_id):
                    return
                self._driving[pipeline_id] = False
        finally:
            self._driving.pop(pipeline_id, None)

    async def _drive(self, pipeline_id: int) -> None:
        p = await self.store.pipeline(pipeline_id)
        while (current := p.current()) is not None:
            index, stage = current
            try:
                if stage.kind == DEPLOY:
                    if stage.deployment_id is None:
                        p, _ = await self._request(p, index)
                        continue
                    d = await self.store.get(stage.deployment_id)
                    if not d.state.terminal:
                        return  # its end comes through the outbox
                    p = await self._deployed(p, index, d)
                else:
                    p = await self._tested(p, index)
            except _Stopped:
                return
            except Conflict:  # saved meanwhile (a request's retry): look again
                p = await self.store.pipeline(pipeline_id)

    async def _deployed(self, p: Pipeline, index: int, d: Deployment) -> Pipeline:
        stage = p.stages[index]
        if d.state == State.SUCCEEDED and d.version == p.version:
            done = p.with_stage(index, SUCCEEDED, detail=d.outcome or f"{d.ref} succeeded")
            return await self._save(p, done, index)
        what = d.outcome or "no reason recorded"
        if d.state == State.SUCCEEDED:
            what = f"it deployed {d.version}, not {p.version}"
        failed = p.with_stage(
            index, FAILED, detail=f"the deployment to {stage.env} ({d.ref}) {d.state.word}: {what}"
        )
        return await self._save(p, failed, index)

    async def _tested(self, p: Pipeline, index: int) -> Pipeline:
        stage = p.stages[index]
        if stage.state != RUNNING:
            p = await self._save(p, p.with_stage(index, RUNNING, started_at=self.clock.now()), index)
        target = self.settings.target(p.service, stage.env)
        saved = p

        async def save(**changes: Any) -> Stage:
            nonlocal saved
            saved = await self._save(saved, saved.with_stage(index, RUNNING, **changes), index)
            return saved.stages[index]

        try:
            words = await self.tests.run(p, index, target, save)
        except TestsFailed as exc:
            return await self._save(saved, saved.with_stage(index, FAILED, detail=str(exc)), index)
        return await self._save(saved, saved.with_stage(index, SUCCEEDED, detail=words), index)

    # ------------------------------------------------------------------------------ the outbox

    def _nudge(self) -> None:
        if self._closing or not self._watching:
            return
        self._wake.set()
        self._ensure_reading()

    def on_watch(self, listener: Callable[[], None]) -> None:
        """Call `listener` whenever a pipeline may start running (a request, a restart with running ones):
        another reader of the outbox that only cares while pipelines run (their Slack messages)."""
        self._watchers.append(listener)

    def _watch(self) -> None:
        self._watching = True
        self._wake.set()
        self._ensure_reading()
        for listener in list(self._watchers):
            listener()

    def _ensure_reading(self) -> None:
        if not self._closing and (self._reader is None or self._reader.done()):
            self._reader = detached_task(self._read(), "pipelines-outbox")

    async def resume(self) -> list[Pipeline]:
        """After a restart: every running pipeline driven on from its record; the outbox read from the
        cursor on."""
        running = await self.store.running_pipelines()
        for p in running:
            self.drive(p.id)
        if running:
            self._watch()
        return running

    async def _read(self) -> None:
        while not self._closing:
            self._wake.clear()
            try:
                more = await self._deliver()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("reading the outbox for pipelines failed; trying again")
                more = False
                await self.clock.sleep(1.0)
            if not more and not self._wake.is_set():
                await self._wake.wait()

    async def _deliver(self) -> bool:
        """The next batch: every running pipeline whose current deployment it mentions is driven. The
        cursor moves once they are handed to their drivers (a crash after that loses nothing: a restart
        drives every running pipeline from the store)."""
        starts = self._starts
        read = await self.store.outbox_after(CONSUMER, BATCH)
        if not read:
            return False
        running = await self.store.running_pipelines()
        mentioned = {e.deployment_id for e in read if e.deployment_id is not None}
        for p in running:
            current = p.current()
            if current is not None and current[1].deployment_id in mentioned:
                self.drive(p.id)
        await self.store.mark_delivered(CONSUMER, read[-1].id)
        if not running and not self._driving and starts == self._starts:
            self._watching = False  # none runs: the next request (or restart) watches again
            return False
        return len(read) == BATCH

    async def settle(self) -> None:
        """Until every drive started so far is done (tests)."""
        await self._drives.wait()

    async def shutdown(self) -> None:
        """Stop where they are: the store has everything needed to carry on."""
        self._closing = True
        self._unsubscribe()
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        await self._drives.aclose()


class _Stopped(Exception):
    """The stage's request was refused: the pipeline has stopped (saved already)."""
