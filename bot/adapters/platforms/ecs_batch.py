"""Coalescing DescribeServices: the reads of ECS services in one cluster that arrive within one short
window (the same loop turn, or `window_seconds`) go out as one call per 10 services (the API's limit),
each service asked once however many callers want it, and each caller gets its own service back. With
many deployments polling their rollouts, the polls that coincide share a call. A service AWS reports as a
failure (MISSING) fails only its callers; an AWS error fails every caller in that call, as their own calls
would have."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from bot.adapters.aws import Answer, Caller
from bot.app.ports import PlatformError
from bot.tasks import detached_task

MAX_SERVICES = 10  # DescribeServices takes up to 10 services per request
Key = tuple[str | None, str]  # role, cluster


@dataclass
class _Pending:
    waiters: dict[str, list[asyncio.Future[Answer]]] = field(default_factory=dict)


class DescribeServicesBatcher:
    def __init__(self, aws: Caller, *, window_seconds: float = 0.0, turns: int = 2):
        self.aws, self.window, self.turns = aws, window_seconds, turns
        self._pending: dict[Key, _Pending] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def service(self, role: str | None, cluster: str, name: str) -> Answer:
        """The service as DescribeServices describes it; PlatformError naming it when AWS has none."""
        loop = asyncio.get_running_loop()
        key = (role, cluster)
        pending = self._pending.get(key)
        if pending is None:
            pending = self._pending[key] = _Pending()
            self._schedule(loop, key)
        future: asyncio.Future[Answer] = loop.create_future()
        pending.waiters.setdefault(name, []).append(future)
        return await future

    def _schedule(self, loop: asyncio.AbstractEventLoop, key: Key) -> None:
        def turn(left: int) -> None:
            if left > 0:
                loop.call_soon(turn, left - 1)
            else:
                self._flush(loop, key)

        if self.window > 0:
            loop.call_later(self.window, turn, self.turns)
        else:
            loop.call_soon(turn, self.turns)

    def _flush(self, loop: asyncio.AbstractEventLoop, key: Key) -> None:
        pending = self._pending.pop(key, None)
        if pending is None:
            return
        wanted = {n: [f for f in fs if not f.done()] for n, fs in pending.waiters.items()}
        names = [n for n, fs in wanted.items() if fs]
        for i in range(0, len(names), MAX_SERVICES):
            chunk = {n: wanted[n] for n in names[i : i + MAX_SERVICES]}
            task = detached_task(self._call(key, chunk), "describe-services")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _call(self, key: Key, chunk: dict[str, list[asyncio.Future[Answer]]]) -> None:
        role, cluster = key
        try:
            out = await self.aws.call("ecs", "describe_services", role, cluster=cluster, services=list(chunk))
        except Exception as exc:
            for futures in chunk.values():
                for f in futures:
                    if not f.done():
                        f.set_exception(exc)
            return
        found = {}
        for s in out.get("services", []):
            found[s.get("serviceName")] = s
            found[s.get("serviceArn")] = s
        reasons = {
            f.get("arn", "").rsplit("/", 1)[-1]: f.get("reason", "not found") for f in out.get("failures", [])
        }
        for name, futures in chunk.items():
            service = found.get(name)
            for f in futures:
                if f.done():
                    continue
                if service is not None:
                    f.set_result(service)
                else:
                    f.set_exception(
                        PlatformError(
                            "ECS DescribeServices",
                            f"service {name} in cluster {cluster}: {reasons.get(name, 'not found')}",
                        )
                    )
