"""The pipelines' part of AsyncStore (bot.adapters.store.aio): each method a call of the Store's own on
the store's thread; a save that appends outbox events wakes the outbox's readers."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from bot.domain.events import DomainEvent
from bot.domain.model import Event
from bot.domain.pipelines import Pipeline, Stage

if TYPE_CHECKING:
    from bot.adapters.store.sqlite import Store

P = ParamSpec("P")
R = TypeVar("R")


class AsyncPipelines:
    """Mixed into AsyncStore, which provides `sync`, `call` and `_write`."""

    if TYPE_CHECKING:
        sync: Store

        async def call(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R: ...

        async def _write(
            self, appended: Sequence[DomainEvent], fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs
        ) -> R: ...

    async def create_pipeline(
        self,
        *,
        name: str,
        service: str,
        version: str,
        requested_by: str,
        roles: Sequence[str],
        stages: Sequence[Stage],
        channel: str | None = None,
        request_key: str | None = None,
    ) -> Pipeline:
        return await self.call(
            self.sync.create_pipeline,
            name=name,
            service=service,
            version=version,
            requested_by=requested_by,
            roles=roles,
            stages=stages,
            channel=channel,
            request_key=request_key,
        )

    async def save_pipeline(
        self,
        p: Pipeline,
        *,
        actor: str,
        action: str,
        details: dict[str, Any] | None = None,
        deployment_id: int | None = None,
        events: Sequence[DomainEvent] = (),
    ) -> Pipeline:
        return await self._write(
            events,
            self.sync.save_pipeline,
            p,
            actor=actor,
            action=action,
            details=details,
            deployment_id=deployment_id,
            events=events,
        )

    async def pipeline(self, pipeline_id: int) -> Pipeline:
        return await self.call(self.sync.pipeline, pipeline_id)

    async def find_pipeline(self, pipeline_id: int) -> Pipeline | None:
        return await self.call(self.sync.find_pipeline, pipeline_id)

    async def running_pipelines(self) -> list[Pipeline]:
        return await self.call(self.sync.running_pipelines)

    async def latest_pipelines(self, service: str | None = None, limit: int = 10) -> list[Pipeline]:
        return await self.call(self.sync.latest_pipelines, service, limit)

    async def pipeline_events(self, pipeline_id: int) -> list[Event]:
        return await self.call(self.sync.pipeline_events, pipeline_id)

    async def record_pipeline_post(self, pipeline_id: int, at: float) -> None:
        return await self.call(self.sync.record_pipeline_post, pipeline_id, at)

    async def pipeline_post_attempted(self, pipeline_id: int) -> float | None:
        return await self.call(self.sync.pipeline_post_attempted, pipeline_id)

    async def unconfirmed_pipeline_posts(self) -> list[int]:
        return await self.call(self.sync.unconfirmed_pipeline_posts)

    async def set_pipeline_message(self, pipeline_id: int, channel: str, ts: str) -> None:
        return await self.call(self.sync.set_pipeline_message, pipeline_id, channel, ts)
