"""Emulators for what moto leaves static: ECS rollouts (tasks, deployments, events, target health) and ALB
traffic (CloudWatch metrics per target group by listener weight). They mutate moto's in-process backends
directly, so they only work with a moto server running in this process; bot.sandbox.aws drives them."""

from __future__ import annotations

import logging
import math
import random
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from moto.ecs.models import EC2ContainerServiceBackend, ecs_backends
from moto.elbv2.models import FakeHealthStatus, FakeTargetGroup, elbv2_backends

from bot.adapters.metrics.cloudwatch import NAMESPACE

log = logging.getLogger(__name__)

ACCOUNT_ID = "123456789012"  # moto's default account
REGION = "us-east-1"

PENDING, RUNNING, UNHEALTHY, DRAINING = "PENDING", "RUNNING", "UNHEALTHY", "DRAINING"

# What describe_target_health reports for a task's target, by task state (RUNNING: moto's own `healthy`).
_TARGET_HEALTH = {
    PENDING: ("initial", "Elb.RegistrationInProgress", "Target registration is in progress"),
    UNHEALTHY: ("unhealthy", "Target.FailedHealthChecks", "Health checks failed"),
    DRAINING: ("draining", "Target.DeregistrationInProgress", "Target deregistration is in progress"),
}
MAX_EVENTS = 100  # ECS keeps the newest 100 service events


@dataclass
class Behaviour:
    """How one version (image tag) of a service behaves."""

    error_rate: float = 0.001
    latency_ms: float = 80.0
    unhealthy: bool = False


def parse_image(image: str) -> tuple[str, str]:
    """'web:v3' -> ('web', 'v3'); '1234.dkr.ecr.../team/web:v3' -> ('web', 'v3'); no tag -> 'latest'."""
    name = image.rsplit("/", 1)[-1].split("@", 1)[0]
    repo, _, tag = name.partition(":")
    return repo, tag or "latest"


@dataclass
class Task:
    task_id: str
    deployment_id: str
    image: str
    ip: str
    state: str
    started_at: float
    target_groups: list[tuple[str, int]] = field(default_factory=list)  # (arn, port) it registered in
    drain_until: float = 0.0


@dataclass
class ServiceState:
    """The emulator's own view of one ECS service: its tasks, which moto does not model for services."""

    service: Any  # the moto Service object this state belongs to
    tasks: list[Task] = field(default_factory=list)
    started: dict[str, float] = field(default_factory=dict)  # deployment id -> virtual time it started
    failed_tasks: dict[str, int] = field(default_factory=dict)
    steady: bool = False


def _ecs() -> EC2ContainerServiceBackend:
    return ecs_backends[ACCOUNT_ID][REGION]


def _elbv2() -> Any:
    return elbv2_backends[ACCOUNT_ID][REGION]


def short_task_definition(arn: str | None) -> str:
    return (arn or "").rsplit("/", 1)[-1]


def image_of(task_definition: str | None) -> str | None:
    """The first container's image of a task definition (name:revision or ARN), None if unknown."""
    try:
        image = _ecs().describe_task_definition(task_definition or "").container_definitions[0]["image"]
        return str(image) if image is not None else None
    except Exception:
        return None


# --- moto patches ----------------------------------------------------------------------------------------
# moto reports every registered target `healthy`, and its update_service neither starts a deployment nor
# leaves runningCount alone (it jumps to the new desiredCount). The sandbox owns the emulation, not moto, so
# while at least one RolloutEmulator is active two moto methods are wrapped (class attributes, restored by
# uninstall_patches() when the last emulator deactivates, i.e. AwsWorld.stop()):
#   FakeTargetGroup.health_for: a target the emulator knows as starting / failing / draining reports
#     initial / unhealthy / draining instead of moto's `healthy`; every other target is left to moto.
#   EC2ContainerServiceBackend.update_service: after moto's own update, the emulator puts runningCount /
#     pendingCount back (they move over ticks) and, as ECS does within the call, adds the new PRIMARY
#     deployment when the task definition changed or forceNewDeployment was asked.
_ACTIVE: list[RolloutEmulator] = []
_ORIGINALS: dict[str, Any] = {}


def _health_for(self: FakeTargetGroup, target: dict[str, Any], ec2_backend: Any) -> FakeHealthStatus:
    status = _ORIGINALS["health_for"](self, target, ec2_backend)
    if status.status == "healthy":
        for emulator in list(_ACTIVE):
            override = emulator.target_health(self.arn, target["Id"])
            if override:
                return FakeHealthStatus(status.instance_id, status.port, status.health_check_port, *override)
    return status


def _update_service(self: EC2ContainerServiceBackend, service_properties: dict[str, Any]) -> Any:
    force = bool(service_properties.get("force_new_deployment"))
    try:
        cluster = self._get_cluster(service_properties.get("cluster", "default"))
        before = self.services.get(f"{cluster.name}:{service_properties['service'].split('/')[-1]}")
    except Exception:  # let moto raise its own error below
        before = None
    seen = None
    if before is not None:
        primary = dict(before.deployments[0]) if before.deployments else None
        seen = (before.running_count, before.pending_count, primary)
    service = _ORIGINALS["update_service"](self, service_properties)
    for emulator in list(_ACTIVE):
        if seen is not None and emulator.manages(self):
            emulator.on_update_service(service, *seen, force=force)
            break
    return service


def install_patches() -> None:
    if not _ORIGINALS:
        _ORIGINALS["health_for"] = FakeTargetGroup.health_for
        _ORIGINALS["update_service"] = EC2ContainerServiceBackend.update_service
        FakeTargetGroup.health_for = _health_for  # type: ignore[method-assign]
        EC2ContainerServiceBackend.update_service = _update_service  # type: ignore[method-assign]


def uninstall_patches() -> None:
    if _ORIGINALS and not _ACTIVE:
        FakeTargetGroup.health_for = _ORIGINALS.pop("health_for")  # type: ignore[method-assign]
        EC2ContainerServiceBackend.update_service = _ORIGINALS.pop("update_service")  # type: ignore[method-assign]


# --- ECS rollouts ----------------------------------------------------------------------------------------
class RolloutEmulator:
    """Progresses every ECS service of the sandbox account over ticks of virtual time, like ECS would:
    new deployments when the task definition changes, tasks started within maximumPercent, old tasks
    stopped within minimumHealthyPercent, targets registered / failing / draining, circuit breaker
    failure, counts and service events."""

    def __init__(
        self,
        behaviour: Callable[[str, str], Behaviour],
        now: Callable[[], float],
        *,
        failure_after_seconds: float = 60.0,
        rng: random.Random | None = None,
    ):
        self.behaviour = behaviour
        self.now = now  # virtual time, for changes made inside update_service (the server's thread)
        self.lock = threading.Lock()  # ticks (event loop) vs update_service (server threads), snapshots
        self.failure_after_seconds = failure_after_seconds
        self.rng = rng or random.Random(0)
        self.states: dict[str, ServiceState] = {}
        self._targets: dict[tuple[str, str], Task] = {}  # (target group arn, ip) -> task
        self._next_ip = 0

    # lifecycle
    def activate(self) -> None:
        if self not in _ACTIVE:
            _ACTIVE.append(self)
        install_patches()

    def deactivate(self) -> None:
        if self in _ACTIVE:
            _ACTIVE.remove(self)
        uninstall_patches()

    def clear(self) -> None:
        self.states.clear()
        self._targets.clear()
        self._next_ip = 0

    def manages(self, backend: Any) -> bool:
        return backend is _ecs()

    def target_health(self, tg_arn: str, target_id: str) -> tuple[str, str, str] | None:
        task = self._targets.get((tg_arn, target_id))
        return _TARGET_HEALTH.get(task.state) if task else None

    def tasks_in(self, tg_arn: str) -> list[Task]:
        """Tasks registered in a target group (draining ones included)."""
        return [t for (arn, _), t in self._targets.items() if arn == tg_arn]

    # helpers
    def _id(self, digits: int) -> str:
        return "".join(self.rng.choice("0123456789abcdef") for _ in range(digits))

    def _ip(self) -> str:
        self._next_ip += 1
        n = self._next_ip
        return f"10.0.{100 + n // 250}.{n % 250 + 2}"

    @staticmethod
    def _time(now: float) -> datetime:
        return datetime.fromtimestamp(now, UTC)

    def _event(self, svc: Any, message: str, now: float) -> None:
        event = {"id": str(uuid.UUID(int=self.rng.getrandbits(128))), "createdAt": self._time(now)}
        event["message"] = f"(service {svc.name}) {message}"
        svc.events = [event, *svc.events][:MAX_EVENTS]

    def _behaviour(self, image: str) -> Behaviour:
        return self.behaviour(*parse_image(image))

    @staticmethod
    def recount_clusters(backend: EC2ContainerServiceBackend) -> None:
        for cluster in backend.clusters.values():
            services = [s for k, s in backend.services.items() if k.startswith(f"{cluster.name}:")]
            cluster.running_tasks_count = sum(s.running_count for s in services)
            cluster.pending_tasks_count = sum(s.pending_count for s in services)

    def _state(self, key: str, svc: Any) -> ServiceState:
        state = self.states.get(key)
        if state is None or state.service is not svc:
            primary = next((d for d in svc.deployments if d["status"] == "PRIMARY"), None)
            state = ServiceState(service=svc)
            if primary:  # a service created after provision(): its rollout starts when first seen
                state.started[primary["id"]] = self.now()
            self.states[key] = state
        return state

    # tasks and targets
    def _start_task(self, svc: Any, state: ServiceState, deployment: dict[str, Any], now: float) -> Task:
        task = Task(
            task_id=self._id(32),
            deployment_id=deployment["id"],
            image=image_of(deployment["taskDefinition"]) or "unknown:unknown",
            ip=self._ip(),
            state=PENDING,
            started_at=now,
        )
        elb = _elbv2()
        for lb in svc.load_balancers:
            tg = elb.target_groups.get(lb.get("targetGroupArn"))
            if tg is None:
                continue
            port = int(lb.get("containerPort") or tg.port)
            tg.register([{"Id": task.ip, "Port": port}])
            task.target_groups.append((tg.arn, port))
            self._targets[(tg.arn, task.ip)] = task
        state.tasks.append(task)
        return task

    def _stop_task(self, state: ServiceState, task: Task, now: float) -> None:
        """Deregistration starts draining; the task is gone when the target group's delay has passed."""
        delay = 0.0
        elb = _elbv2()
        for arn, _ in task.target_groups:
            tg = elb.target_groups.get(arn)
            if tg is not None:
                delay = max(delay, float(tg.attributes.get("deregistration_delay.timeout_seconds", 300)))
        task.state = DRAINING
        task.drain_until = now + delay
        if delay <= 0:
            self._remove_task(state, task)

    def _remove_task(self, state: ServiceState, task: Task) -> None:
        elb = _elbv2()
        for arn, port in task.target_groups:
            self._targets.pop((arn, task.ip), None)
            tg = elb.target_groups.get(arn)
            if tg is not None and task.ip in tg.targets:
                tg.deregister([{"Id": task.ip, "Port": port}])
        state.tasks.remove(task)

    # provisioning helper
    def seed_running(self, key: str, now: float) -> None:
        """Make a freshly created service look fully rolled out: desiredCount tasks running and healthy."""
        with self.lock:
            self._seed_running(key, now)

    def _seed_running(self, key: str, now: float) -> None:
        svc = _ecs().services[key]
        state = self._state(key, svc)
        primary = next(d for d in svc.deployments if d["status"] == "PRIMARY")
        state.started[str(primary["id"])] = now
        for _ in range(svc.desired_count):
            self._start_task(svc, state, primary, now).state = RUNNING
        primary["rolloutState"] = "COMPLETED"
        primary["rolloutStateReason"] = f"ECS deployment {primary['id']} completed."
        primary["createdAt"] = primary["updatedAt"] = self._time(now)
        self._update_counts(svc, state, [primary])
        state.steady = True
        self._event(svc, "has reached a steady state.", now)
        self.recount_clusters(_ecs())

    # the tick
    def step(self, now: float) -> None:
        with self.lock:
            backend = _ecs()
            for key, svc in list(backend.services.items()):
                if svc.status != "ACTIVE" or svc.deployment_controller.get("type", "ECS") != "ECS":
                    continue
                try:
                    self._step_service(svc, self._state(key, svc), now)
                except Exception:
                    log.exception("sandbox ECS emulator failed on %s", key)
            self.recount_clusters(backend)

    def on_update_service(
        self, svc: Any, running: int, pending: int, primary: dict[str, Any] | None, *, force: bool
    ) -> None:
        """Right after moto's update_service: keep the counts, start the deployment ECS would start."""
        with self.lock:
            svc.running_count, svc.pending_count = running, pending
            deployments = list(svc.deployments)
            if force and deployments and primary is not None:
                deployments[0].update(primary)  # moto re-labels the primary in place (id, times): undo that
            if svc.deployment_controller.get("type", "ECS") == "ECS":
                state = self._state(f"{svc.cluster_name}:{svc.name}", svc)
                svc.deployments = self._sync_deployment(svc, state, deployments, self.now(), force=force)
            self.recount_clusters(_ecs())

    def _sync_deployment(
        self, svc: Any, state: ServiceState, deployments: list[dict[str, Any]], now: float, *, force: bool
    ) -> list[dict[str, Any]]:
        """A new PRIMARY deployment when the service's task definition is not the primary's (or forced)."""
        primary = next((d for d in deployments if d["status"] == "PRIMARY"), None)
        if primary is None:
            return deployments
        try:
            task_definition = _ecs().describe_task_definition(svc.task_definition).arn
            svc.task_definition = task_definition  # moto keeps what the caller typed; ECS returns the ARN
        except Exception:
            task_definition = svc.task_definition
        if task_definition != primary["taskDefinition"] or force:
            new = {
                **{k: v for k, v in primary.items() if k not in ("rolloutState", "rolloutStateReason")},
                "id": f"ecs-svc/{self.rng.randint(10**18, 10**19 - 1)}",
                "status": "PRIMARY",
                "taskDefinition": task_definition,
                "runningCount": 0,
                "pendingCount": 0,
                "failedTasks": 0,
                "createdAt": self._time(now),
                "updatedAt": self._time(now),
            }
            new["rolloutState"] = "IN_PROGRESS"
            new["rolloutStateReason"] = f"ECS deployment {new['id']} in progress."
            primary["status"] = "ACTIVE"
            primary["updatedAt"] = self._time(now)
            deployments.insert(0, new)
            primary = new
            state.started[new["id"]] = now
            state.steady = False
        primary["desiredCount"] = svc.desired_count
        return deployments

    def _step_service(self, svc: Any, state: ServiceState, now: float) -> None:
        deployments = self._sync_deployment(svc, state, list(svc.deployments), now, force=False)
        primary = next((d for d in deployments if d["status"] == "PRIMARY"), None)
        if primary is None:
            return
        config = getattr(svc, "deployment_configuration", None) or {}
        self._follow_health(svc, state, now)
        if primary["rolloutState"] == "FAILED":
            self._scale_failed(state, primary, svc.desired_count, now)
        else:
            self._replace_tasks(svc, state, primary, config, now)
        self._trip_breaker(svc, state, primary, deployments, config, now)
        self._settle(svc, state, primary, deployments, now)

    def _follow_health(self, svc: Any, state: ServiceState, now: float) -> None:
        """Health follows the version's behaviour; a started task needs one tick to pass health checks."""
        for task in state.tasks:
            if task.state == DRAINING:
                continue
            healthy = not self._behaviour(task.image).unhealthy
            if task.state in (PENDING, RUNNING) and not healthy:
                task.state = UNHEALTHY
                state.failed_tasks[task.deployment_id] = state.failed_tasks.get(task.deployment_id, 0) + 1
                for arn, port in task.target_groups:
                    self._event(
                        svc,
                        f"(task {task.task_id}) (port {port}) is unhealthy in (target-group {arn}) "
                        "due to (reason Health checks failed).",
                        now,
                    )
            elif task.state in (PENDING, UNHEALTHY) and healthy:
                task.state = RUNNING
        for task in [t for t in state.tasks if t.state == DRAINING and t.drain_until <= now]:
            self._remove_task(state, task)

    def _scale_failed(self, state: ServiceState, primary: dict[str, Any], desired: int, now: float) -> None:
        """A FAILED deployment launches nothing and replaces nothing (the old tasks keep serving); only a
        lower desiredCount stops tasks, the failing ones first."""
        live = [t for t in state.tasks if t.state != DRAINING]
        for group in (
            [t for t in live if t.deployment_id == primary["id"]],
            [t for t in live if t.deployment_id != primary["id"]],
        ):
            for task in sorted(group, key=lambda t: t.state == RUNNING)[: max(0, len(group) - desired)]:
                self._stop_task(state, task, now)

    def _replace_tasks(
        self, svc: Any, state: ServiceState, primary: dict[str, Any], config: dict[str, Any], now: float
    ) -> None:
        """Stop old tasks as far as minimumHealthyPercent allows, start new ones within maximumPercent."""
        desired = svc.desired_count
        stopping: list[Task] = []
        live = [t for t in state.tasks if t.state != DRAINING]
        mine = [t for t in live if t.deployment_id == primary["id"]]
        old = [t for t in live if t.deployment_id != primary["id"]]
        stopping += [t for t in old if t.state != RUNNING]  # never-healthy old tasks go at once
        if len(mine) > desired:  # scaled down: failing first, then starting, then newest running
            rank = {UNHEALTHY: 0, PENDING: 1, RUNNING: 2}
            excess = sorted(mine, key=lambda t: (rank[t.state], -t.started_at))[: len(mine) - desired]
            stopping += excess
            mine = [t for t in mine if t not in excess]
        running = [t for t in live if t.state == RUNNING and t not in stopping]
        min_healthy = math.ceil(desired * int(config.get("minimumHealthyPercent", 100)) / 100)
        old_running = [t for t in old if t.state == RUNNING]
        stopping += old_running[: max(0, len(running) - min_healthy)]
        was_running = [t for t in stopping if t.state == RUNNING]
        for task in stopping:
            self._stop_task(state, task, now)
        if was_running:
            ids = " ".join(f"(task {t.task_id})" for t in was_running)
            self._event(svc, f"has stopped {len(was_running)} running tasks: {ids}.", now)
        need = desired - len(mine)
        if need > 0:
            live = [t for t in state.tasks if t.state != DRAINING]
            room = math.floor(desired * int(config.get("maximumPercent", 200)) / 100) - len(live)
            started = [self._start_task(svc, state, primary, now) for _ in range(min(need, max(1, room)))]
            ids = " ".join(f"(task {t.task_id})" for t in started)
            self._event(svc, f"has started {len(started)} tasks: {ids}.", now)

    def _trip_breaker(
        self,
        svc: Any,
        state: ServiceState,
        primary: dict[str, Any],
        deployments: list[dict[str, Any]],
        config: dict[str, Any],
        now: float,
    ) -> None:
        """Failure: tasks of the new deployment keep failing health checks (the circuit breaker)."""
        mine = [t for t in state.tasks if t.deployment_id == primary["id"]]
        if not (
            primary["rolloutState"] == "IN_PROGRESS"
            and any(t.state == UNHEALTHY for t in mine)
            and now - state.started.get(primary["id"], now) >= self.failure_after_seconds
        ):
            return
        primary["rolloutState"] = "FAILED"
        primary["rolloutStateReason"] = "ECS deployment circuit breaker: tasks failed to start."
        primary["updatedAt"] = self._time(now)
        self._event(svc, f"(deployment {primary['id']}) deployment failed: tasks failed to start.", now)
        previous = next((d for d in deployments if d["status"] == "ACTIVE"), None)
        breaker = config.get("deploymentCircuitBreaker") or {}
        if breaker.get("rollback") and previous is not None:
            svc.task_definition = previous["taskDefinition"]  # deployed from the next tick on
            self._event(svc, f"rolling back to deployment {previous['id']}.", now)

    def _settle(
        self,
        svc: Any,
        state: ServiceState,
        primary: dict[str, Any],
        deployments: list[dict[str, Any]],
        now: float,
    ) -> None:
        """Old deployments leave the list when their last task is gone; completion; steady state."""
        if primary["rolloutState"] != "FAILED":
            with_tasks = {t.deployment_id for t in state.tasks}
            deployments = [d for d in deployments if d is primary or d["id"] in with_tasks]
        mine = [t for t in state.tasks if t.deployment_id == primary["id"]]
        others = [t for t in state.tasks if t.deployment_id != primary["id"]]
        settled = (
            sum(t.state == RUNNING for t in mine) == svc.desired_count
            and all(t.state == RUNNING for t in mine)
            and not others
        )
        if settled and primary["rolloutState"] == "IN_PROGRESS":
            primary["rolloutState"] = "COMPLETED"
            primary["rolloutStateReason"] = f"ECS deployment {primary['id']} completed."
            primary["updatedAt"] = self._time(now)
        steady = settled and primary["rolloutState"] == "COMPLETED"
        if steady and not state.steady:
            self._event(svc, "has reached a steady state.", now)
        state.steady = steady
        self._update_counts(svc, state, deployments)

    def _update_counts(self, svc: Any, state: ServiceState, deployments: list[dict[str, Any]]) -> None:
        for d in deployments:
            tasks = [t for t in state.tasks if t.deployment_id == d["id"] and t.state != DRAINING]
            running = sum(t.state == RUNNING for t in tasks)
            pending = len(tasks) - running
            if d["status"] != "PRIMARY":
                d["desiredCount"] = len(tasks)
            d["runningCount"], d["pendingCount"] = running, pending
            d["failedTasks"] = state.failed_tasks.get(d["id"], 0)
        live = [t for t in state.tasks if t.state != DRAINING]
        svc.running_count = sum(t.state == RUNNING for t in live)
        svc.pending_count = len(live) - svc.running_count
        svc.deployments = deployments


# --- ALB traffic -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Route:
    """One listener rule of the world: the service it serves and the load balancer it belongs to."""

    env: str
    service: str
    rule_arn: str
    load_balancer_arn: str


def metric_dimensions(target_group_arn: str, load_balancer_arn: str) -> list[dict[str, str]]:
    """ALB metric dimensions in the one canonical order (moto matches dimensions by order)."""
    return [
        {"Name": "TargetGroup", "Value": target_group_arn.rsplit(":", 1)[-1]},
        {"Name": "LoadBalancer", "Value": load_balancer_arn.rsplit(":", 1)[-1].removeprefix("loadbalancer/")},
    ]


def rule_weights(rule_arn: str) -> list[tuple[str, int]]:
    """The forward action's (target group arn, weight) pairs, read from moto's listener rule."""
    rule = _elbv2().describe_rules(None, [rule_arn])[0]
    for action in rule.actions:
        if action.type != "forward":
            continue
        config = action.data.get("ForwardConfig") or {}
        if config.get("TargetGroups"):
            return [(tg["TargetGroupArn"], int(tg.get("Weight", 1))) for tg in config["TargetGroups"]]
        if action.data.get("TargetGroupArn"):
            return [(action.data["TargetGroupArn"], 1)]
    return []


class TrafficSimulator:
    """Each tick, splits a service's requests across its rule's target groups by weight and turns them into
    the CloudWatch datapoints an ALB would publish, from the versions of the tasks serving each group."""

    NAMESPACE = NAMESPACE  # what the bot reads (bot.adapters.metrics.cloudwatch)

    def __init__(
        self,
        emulator: RolloutEmulator,
        behaviour: Callable[[str, str], Behaviour],
        requests_per_minute: Callable[[str], float],
        *,
        rng: random.Random | None = None,
    ):
        self.emulator = emulator
        self.behaviour = behaviour
        self.requests_per_minute = requests_per_minute
        self.rng = rng or random.Random(0)
        self.routes: list[Route] = []
        self._carry: dict[tuple[str, str], float] = {}

    def clear(self) -> None:
        self.routes.clear()
        self._carry.clear()

    def _whole(self, key: tuple[str, str], amount: float) -> int:
        """Whole requests/errors this tick; the fractions carry over so the long-run totals are exact."""
        total = self._carry.get(key, 0.0) + amount
        whole = math.floor(total + 1e-9)
        self._carry[key] = total - whole
        return whole

    def datapoints(self, now: float, seconds: float) -> list[dict[str, Any]]:
        """The metric data for `seconds` of traffic ending at `now` (virtual time)."""
        timestamp = datetime.fromtimestamp(now, UTC)
        data: list[dict[str, Any]] = []

        def put(name: str, dims: list[dict[str, str]], value: float, unit: str) -> None:
            data.append(
                {"MetricName": name, "Dimensions": dims, "Value": value, "Unit": unit, "Timestamp": timestamp}
            )

        for route in self.routes:
            rpm = self.requests_per_minute(route.service)
            if rpm <= 0:
                continue
            weights = [(arn, w) for arn, w in rule_weights(route.rule_arn) if w > 0]
            total_weight = sum(w for _, w in weights)
            requests = rpm * seconds / 60
            for tg_arn, weight in weights:
                count = self._whole(("requests", tg_arn), requests * weight / total_weight)
                if count <= 0:
                    continue
                dims = metric_dimensions(tg_arn, route.load_balancer_arn)
                tasks = [t for t in self.emulator.tasks_in(tg_arn) if t.state != DRAINING]
                serving = [t for t in tasks if t.state == RUNNING] or tasks  # no healthy target: fail open
                if not serving:  # nothing registered: the load balancer answers 503 itself
                    put("HTTPCode_ELB_5XX_Count", dims[1:], count, "Count")
                    continue
                behaviours = [self.behaviour(*parse_image(t.image)) for t in serving]
                expected = sum(b.error_rate for b in behaviours) * count / len(behaviours)
                errors = min(count, self._whole(("errors", tg_arn), expected))
                latency_ms = sum(b.latency_ms for b in behaviours) / len(behaviours)
                latency_ms *= self.rng.uniform(0.95, 1.05)
                put("RequestCount", dims, count, "Count")
                put("HTTPCode_Target_2XX_Count", dims, count - errors, "Count")
                put("HTTPCode_Target_5XX_Count", dims, errors, "Count")
                put("TargetResponseTime", dims, round(latency_ms / 1000, 6), "Seconds")
        return data
