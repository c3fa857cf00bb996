"""One-off tasks on ECS (migrations, integration tests), part of EcsPlatform: RunTask of a revision with
the service container's command overridden, on the live slot's network configuration and launch type (the
task runs where the service runs, with its roles); `startedBy` carries the caller's key, so a resume finds
the task (ListTasks by startedBy) instead of starting a second one. Logs come from CloudWatch Logs where
the container logs with the awslogs driver (stream PREFIX/CONTAINER/TASK-ID)."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from bot.adapters.aws import Answer, Caller
from bot.app.ports import PlatformError, TaskRun
from bot.config.model import Target

KEY_RE = re.compile(r"^[A-Za-z0-9_-]{1,36}$")  # what ECS allows in startedBy
# What RunTask takes from the service it imitates (DescribeServices' field -> RunTask's parameter).
FROM_SERVICE = ("networkConfiguration", "launchType", "capacityProviderStrategy", "platformVersion")


def task_id(task: str) -> str:
    return task.rsplit("/", 1)[-1]


def _epoch(value: Any) -> float | None:
    return value.timestamp() if isinstance(value, datetime) else None


class EcsTasks:
    """Mixed into EcsPlatform, which provides `aws`, `_service` and `_task_definition`."""

    aws: Caller
    _service: Callable[[Target, str], Awaitable[Answer]]
    _task_definition: Callable[[Target, str], Awaitable[Answer]]
    live_slot: Callable[[Target], Awaitable[str]]

    async def run_task(
        self,
        target: Target,
        revision: str,
        command: Sequence[str],
        *,
        key: str,
        environment: Mapping[str, str] | None = None,
    ) -> str:
        if not KEY_RE.match(key):
            raise ValueError(f"a task key is 1..36 letters, digits, - or _: {key!r}")
        service = await self._service(target, await self.live_slot(target))
        params: dict[str, Any] = {k: service[k] for k in FROM_SERVICE if service.get(k)}
        override: dict[str, Any] = {"name": target.service.container, "command": list(command)}
        if environment:
            override["environment"] = [{"name": k, "value": v} for k, v in environment.items()]
        out = await self.aws.call(
            "ecs",
            "run_task",
            target.env.aws_role_arn,
            cluster=target.cluster,
            taskDefinition=revision,
            count=1,
            startedBy=key,
            overrides={"containerOverrides": [override]},
            **params,
        )
        tasks = out.get("tasks") or []
        if not tasks:
            failures = "; ".join(
                f"{f.get('arn', '')} {f.get('reason', '')} {f.get('detail', '')}".strip()
                for f in out.get("failures", [])
            )
            raise PlatformError("ECS RunTask", f"no task started: {failures or 'no reason given'}")
        arn: str = tasks[0]["taskArn"]
        return arn

    async def find_task(self, target: Target, key: str) -> str | None:
        for status in ("RUNNING", "STOPPED"):  # ListTasks lists one desired status at a time
            out = await self.aws.call(
                "ecs",
                "list_tasks",
                target.env.aws_role_arn,
                cluster=target.cluster,
                startedBy=key,
                desiredStatus=status,
            )
            arns = out.get("taskArns") or []
            if arns:
                return str(arns[0])
        return None

    async def _describe(self, target: Target, task: str) -> Answer:
        out = await self.aws.call(
            "ecs", "describe_tasks", target.env.aws_role_arn, cluster=target.cluster, tasks=[task]
        )
        if not out.get("tasks"):
            reason = (out.get("failures") or [{}])[0].get("reason", "not found")
            raise PlatformError("ECS DescribeTasks", f"task {task_id(task)}: {reason}")
        found: Answer = out["tasks"][0]
        return found

    async def task(self, target: Target, task: str) -> TaskRun:
        t = await self._describe(target, task)
        container = next(
            (c for c in t.get("containers", []) if c.get("name") == target.service.container),
            (t.get("containers") or [{}])[0],
        )
        status = t.get("lastStatus", "")
        stopped = status == "STOPPED"
        reason = " ".join(r for r in (t.get("stoppedReason"), container.get("reason")) if r)
        return TaskRun(
            task=t["taskArn"],
            status=status,
            exit_code=container.get("exitCode") if stopped else None,
            reason=reason if stopped else "",
            started_at=_epoch(t.get("startedAt")),
            stopped_at=_epoch(t.get("stoppedAt")),
        )

    async def task_logs(self, target: Target, task: str, limit: int = 20) -> list[str]:
        t = await self._describe(target, task)
        td = await self._task_definition(target, t["taskDefinitionArn"])
        container = next(
            (c for c in td["containerDefinitions"] if c["name"] == target.service.container), None
        )
        config = (container or {}).get("logConfiguration") or {}
        options = config.get("options") or {}
        if config.get("logDriver") != "awslogs" or "awslogs-group" not in options:
            return []
        stream = f"{options.get('awslogs-stream-prefix', 'ecs')}/{target.service.container}/{task_id(task)}"
        try:
            out = await self.aws.call(
                "logs",
                "get_log_events",
                target.env.aws_role_arn,
                logGroupName=options["awslogs-group"],
                logStreamName=stream,
                limit=limit,
                startFromHead=False,
            )
        except PlatformError as exc:
            if exc.code == "ResourceNotFoundException":  # it logged nothing (yet)
                return []
            raise
        return [str(e.get("message", "")) for e in out.get("events", [])][-limit:]
