"""The sandbox's AWS world: moto's server on loopback, provisioned with the demo world (per environment an
ECS cluster, an ALB with one weighted rule per service, blue/green target groups and ECS services), plus
the emulators (bot.sandbox.emulator) that make rollouts, target health and ALB metrics move with the clock,
the flag traffic (bot.sandbox.flag_traffic, when the sandbox gives one) that each tick kicks off in the
background, and the fault injector (bot.sandbox.faults) in front of moto that fails the bot's calls on
request."""

from __future__ import annotations

import asyncio
import logging
import random
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from moto import moto_api
from moto.ecs.models import ecs_backends
from moto.elbv2.models import elbv2_backends
from moto.server import ThreadedMotoServer

from bot.adapters.metrics.cloudwatch import NAMESPACE
from bot.clock import Clock
from bot.sandbox.emulator import (
    ACCOUNT_ID,
    REGION,
    Behaviour,
    RolloutEmulator,
    Route,
    TrafficSimulator,
    image_of,
    metric_dimensions,
    parse_image,
    rule_weights,
    short_task_definition,
)
from bot.sandbox.faults import FaultInjector
from bot.sandbox.flag_traffic import FlagTraffic
from bot.sandbox.tasks import TaskBehaviour, TaskEmulator

log = logging.getLogger(__name__)

__all__ = ["ACCOUNT_ID", "BOT_ACCESS_KEY", "REGION", "SANDBOX_ACCESS_KEY", "SLOTS", "AwsWorld", "Behaviour"]

SLOTS = ("blue", "green")
CONTAINER_PORT = 8080
DEREGISTRATION_DELAY = 30
DEFAULT_RPM = 3000.0  # enough that a 5% canary sees > 50 requests a minute (analysis min_requests)
# Dummy credentials for the boto3 clients the sandbox makes: real ones are never read. The bot gets a key
# of its own: faults apply to every key but the sandbox's (the bot's, and what STS hands it for a role).
SANDBOX_ACCESS_KEY = "sandbox"
BOT_ACCESS_KEY = "deploybot-bot"
DUMMY_CREDENTIALS = {"aws_access_key_id": SANDBOX_ACCESS_KEY, "aws_secret_access_key": "sandbox"}
DEPLOYMENT_CONFIGURATION = {
    "maximumPercent": 200,
    "minimumHealthyPercent": 100,
    "deploymentCircuitBreaker": {"enable": True, "rollback": False},
}


class AwsWorld:
    """moto's server plus the demo world and its emulators. One per process (the emulators act on moto's
    in-process backends for account 123456789012 / us-east-1)."""

    def __init__(
        self,
        clock: Clock,
        *,
        services: tuple[str, ...] = ("web", "api"),
        environments: tuple[str, ...] = ("staging", "production"),
        tick_seconds: float = 5.0,
        failure_after_seconds: float = 60.0,
        seed: int = 7,
        workdir: Path | None = None,
    ):
        self.clock = clock
        self.services = tuple(services)
        self.environments = tuple(environments)
        self.tick_seconds = float(tick_seconds)
        self.endpoint: str | None = None
        self.resources: dict[str, Any] = {}
        self._server: ThreadedMotoServer | None = None
        self._clients: dict[str, Any] = {}
        self._seed = seed
        self._versions: dict[tuple[str, str], Behaviour] = {}
        self._rpm: dict[str, float] = {}
        self._tick_lock = asyncio.Lock()  # re-made by reset(): a test may bring a new event loop
        self._last_traffic_at: float | None = None
        self._client_lock = threading.Lock()
        self.emulator = RolloutEmulator(
            self.behaviour, lambda: self.clock.now(), failure_after_seconds=failure_after_seconds
        )
        self.traffic = TrafficSimulator(self.emulator, self.behaviour, self.requests_per_minute)
        self.faults = FaultInjector(lambda: self.clock.now(), exempt_keys=(SANDBOX_ACCESS_KEY,))
        # Simulated users reading flags from the bot over OFREP; the Sandbox sets it (it knows the bot).
        self.flags: FlagTraffic | None = None
        self._task_behaviour: dict[tuple[str, str], TaskBehaviour] = {}
        self.tasks = TaskEmulator(
            lambda: self.clock.now(),
            lambda service, tag: self._task_behaviour.get((service, tag)) or TaskBehaviour(),
            workdir,
        )
        self._workdir = workdir
        self._reset_state()

    # --- server -----------------------------------------------------------------------------------------
    def start(self) -> str:
        """Start moto's server on 127.0.0.1 (a free port), reset its backends; returns the endpoint URL."""
        if self._server is None:
            werkzeug = logging.getLogger("werkzeug")  # one log line per request otherwise
            if werkzeug.level == logging.NOTSET:
                werkzeug.setLevel(logging.WARNING)
            self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
            self._server.start()
            # moto's request recorder writes to ./moto_recording by default: one file for every sandbox
            # started from the same folder (parallel test workers read each other's calls). Ours: its own.
            recording = Path(self._workdir or tempfile.mkdtemp(prefix="deploybot-moto-")) / "moto_recording"
            moto_api.recorder._location = str(recording)
            # werkzeug's server calls its `app` per request: faults go in front of moto's dispatcher.
            wsgi = self._server._server
            assert wsgi is not None
            wsgi.app = self.faults.wrap(self.tasks.wrap(wsgi.app))  # faults reach RunTask too
            host, port = self._server.get_host_and_port()
            self.endpoint = f"http://{host}:{port}"
            self.emulator.activate()
        self.reset()
        return self.endpoint  # type: ignore[return-value]

    def reset(self, clock: Clock | None = None) -> None:
        """Empty every moto backend (POST /moto-api/reset) and forget the world (faults too); provision()
        rebuilds it."""
        if clock is not None:
            self.clock = clock
        request = urllib.request.Request(f"{self._require_endpoint()}/moto-api/reset", method="POST")
        no_proxy = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback, never a proxy
        with no_proxy.open(request, timeout=30) as response:
            response.read()
        self._reset_state()

    def _reset_state(self) -> None:
        self.resources = {}
        self._versions = {}
        self._rpm = {service: DEFAULT_RPM for service in self.services}
        self.emulator.clear()
        self.emulator.rng = random.Random(self._seed)
        self.traffic.clear()
        self.traffic.rng = random.Random(self._seed + 1)
        self._tick_lock = asyncio.Lock()
        self._last_traffic_at = None
        self.faults.clear()
        self._task_behaviour = {}
        self.tasks.clear()

    def stop(self) -> None:
        """Stop the server and restore moto's patched methods."""
        self.emulator.deactivate()
        self.faults.clear()  # a request a timeout holds is let go
        if self._server is not None:
            self._server.stop()
            self._server = None
        self._clients.clear()

    def _require_endpoint(self) -> str:
        if self.endpoint is None or self._server is None:
            raise RuntimeError("AwsWorld.start() first")
        return self.endpoint

    def client(self, name: str) -> Any:
        """A boto3 client for this endpoint (us-east-1, dummy credentials); cached per service name."""
        with self._client_lock:
            if name not in self._clients:
                session = boto3.session.Session(region_name=REGION, **DUMMY_CREDENTIALS)
                self._clients[name] = session.client(
                    name,
                    endpoint_url=self._require_endpoint(),
                    config=Config(retries={"max_attempts": 2, "mode": "standard"}),
                )
            return self._clients[name]

    # --- provisioning -----------------------------------------------------------------------------------
    def provision(self) -> None:
        """Build the demo world through boto3 against the server; then the blue slots are made fully
        rolled out (tasks running, targets healthy), which moto cannot express."""
        ec2, ecs, elb = self.client("ec2"), self.client("ecs"), self.client("elbv2")
        vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        subnets = [
            ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.0.{i}.0/24", AvailabilityZone=f"{REGION}{az}")[
                "Subnet"
            ]["SubnetId"]
            for i, az in enumerate("ab")
        ]
        group = ec2.create_security_group(GroupName="deploybot-sandbox", Description="sandbox", VpcId=vpc)
        network = {
            "awsvpcConfiguration": {
                "subnets": subnets,
                "securityGroups": [group["GroupId"]],
                "assignPublicIp": "DISABLED",
            }
        }
        self.resources = {"vpc": vpc, "subnets": subnets, "security_group": group["GroupId"], "envs": {}}
        for env in self.environments:
            cluster = ecs.create_cluster(clusterName=env)["cluster"]["clusterArn"]
            lb = elb.create_load_balancer(
                Name=f"deploybot-{env}",
                Subnets=subnets,
                SecurityGroups=[group["GroupId"]],
                Scheme="internet-facing",
                Type="application",
            )["LoadBalancers"][0]["LoadBalancerArn"]
            listener = elb.create_listener(
                LoadBalancerArn=lb,
                Protocol="HTTP",
                Port=80,
                DefaultActions=[
                    {
                        "Type": "fixed-response",
                        "FixedResponseConfig": {"StatusCode": "404", "ContentType": "text/plain"},
                    }
                ],
            )["Listeners"][0]["ListenerArn"]
            env_res: dict[str, Any] = {"cluster": cluster, "load_balancer": lb, "listener": listener}
            env_res["services"] = {}
            self.resources["envs"][env] = env_res
            for priority, service in enumerate(self.services, start=1):
                env_res["services"][service] = self._provision_service(env, service, priority, vpc, network)
        now = self.clock.now()
        for env in self.environments:
            for service in self.services:
                self.emulator.seed_running(f"{env}:{service}-blue", now)
                res = self.resources["envs"][env]
                self.traffic.routes.append(
                    Route(env, service, res["services"][service]["rule"], res["load_balancer"])
                )
        self._provision_alarms()
        self._provision_databases()

    def _provision_alarms(self) -> None:
        """One 5XX alarm per service and environment, as a monitored service would have: `{service}-{env}-5xx`
        on the ALB's target 5XX count of its blue slot (the config's monitoring item checks them)."""
        cloudwatch = self.client("cloudwatch")
        for env in self.environments:
            for service in self.services:
                cloudwatch.put_metric_alarm(
                    AlarmName=f"{service}-{env}-5xx",
                    Namespace=NAMESPACE,
                    MetricName="HTTPCode_Target_5XX_Count",
                    Statistic="Sum",
                    Period=60,
                    EvaluationPeriods=1,
                    Threshold=50.0,
                    ComparisonOperator="GreaterThanThreshold",
                    Dimensions=self.metric_dimensions(service, env, "blue"),
                )

    def _provision_databases(self) -> None:
        """Per environment an RDS instance `api-{env}` (what the migrations' backup snapshots) and the demo
        application's database at v1's schema (bot.sandbox.tasks runs the migrations against it); a log
        group per service for its tasks' lines."""
        rds, logs = self.client("rds"), self.client("logs")
        for service in self.services:
            logs.create_log_group(logGroupName=f"/sandbox/{service}")
        for env in self.environments:
            rds.create_db_instance(
                DBInstanceIdentifier=f"api-{env}",
                DBInstanceClass="db.t3.micro",
                Engine="postgres",
                AllocatedStorage=20,
                MasterUsername="app",
                MasterUserPassword="sandbox-only",
            )
            self.tasks.appdb(env).up(1)

    def write_task_logs(self, entries: list[tuple[tuple[str, str], list[str]]]) -> None:
        """Put finished tasks' lines into CloudWatch Logs (moto's), where the bot reads them."""
        logs = self.client("logs")
        for (group, stream), lines in entries:
            logs.create_log_stream(logGroupName=group, logStreamName=stream)
            # wall time: CloudWatch Logs drops events from more than 14 days ago or 2 hours ahead, and the
            # sandbox clock runs ahead of the wall (or was pinned to another day)
            at = int(time.time() * 1000)
            events = [{"timestamp": at + i, "message": line} for i, line in enumerate(lines)]
            if events:
                logs.put_log_events(logGroupName=group, logStreamName=stream, logEvents=events)

    def _provision_service(
        self, env: str, service: str, priority: int, vpc: str, network: dict[str, Any]
    ) -> dict[str, Any]:
        ecs, elb = self.client("ecs"), self.client("elbv2")
        family = f"{service}-{env}"
        task_definition = ecs.register_task_definition(
            family=family,
            networkMode="awsvpc",
            requiresCompatibilities=["FARGATE"],
            cpu="256",
            memory="512",
            containerDefinitions=[
                {
                    "name": service,
                    "image": f"{service}:v1",
                    "essential": True,
                    "portMappings": [{"containerPort": CONTAINER_PORT, "protocol": "tcp"}],
                    "logConfiguration": {
                        "logDriver": "awslogs",
                        "options": {
                            "awslogs-group": f"/sandbox/{service}",
                            "awslogs-region": REGION,
                            "awslogs-stream-prefix": env,
                        },
                    },
                }
            ],
        )["taskDefinition"]["taskDefinitionArn"]
        target_groups = {}
        for slot in SLOTS:
            arn = elb.create_target_group(
                Name=f"{service}-{env}-{slot}",
                Protocol="HTTP",
                Port=CONTAINER_PORT,
                VpcId=vpc,
                TargetType="ip",
                HealthCheckProtocol="HTTP",
                HealthCheckPath="/healthz",
                Matcher={"HttpCode": "200"},
            )["TargetGroups"][0]["TargetGroupArn"]
            elb.modify_target_group_attributes(
                TargetGroupArn=arn,
                Attributes=[
                    {"Key": "deregistration_delay.timeout_seconds", "Value": str(DEREGISTRATION_DELAY)}
                ],
            )
            target_groups[slot] = arn
        rule = elb.create_rule(
            ListenerArn=self.resources["envs"][env]["listener"],
            Priority=priority,
            Conditions=[{"Field": "host-header", "HostHeaderConfig": {"Values": [self.host(service, env)]}}],
            Actions=[
                {
                    "Type": "forward",
                    "ForwardConfig": {
                        "TargetGroups": [
                            {"TargetGroupArn": target_groups["blue"], "Weight": 100},
                            {"TargetGroupArn": target_groups["green"], "Weight": 0},
                        ],
                        "TargetGroupStickinessConfig": {"Enabled": False},
                    },
                }
            ],
        )["Rules"][0]["RuleArn"]
        ecs_services = {}
        for slot in SLOTS:
            name = f"{service}-{slot}"
            ecs_services[slot] = ecs.create_service(
                cluster=env,
                serviceName=name,
                taskDefinition=f"{family}:1",
                desiredCount=2 if slot == "blue" else 0,
                launchType="FARGATE",
                networkConfiguration=network,
                deploymentController={"type": "ECS"},
                loadBalancers=[
                    {
                        "targetGroupArn": target_groups[slot],
                        "containerName": service,
                        "containerPort": CONTAINER_PORT,
                    }
                ],
            )["service"]["serviceArn"]
            # moto drops deploymentConfiguration on create_service but keeps (and returns) what
            # update_service sets, so the ECS defaults are set in a second call.
            ecs.update_service(cluster=env, service=name, deploymentConfiguration=DEPLOYMENT_CONFIGURATION)
        return {
            "task_definition": task_definition,
            "target_groups": target_groups,
            "rule": rule,
            "ecs_services": ecs_services,
        }

    # --- names --------------------------------------------------------------------------------------------
    @staticmethod
    def host(service: str, env: str) -> str:
        return f"{service}.{env}.sandbox.test"

    def _service_res(self, service: str, env: str) -> dict[str, Any]:
        try:
            return self.resources["envs"][env]["services"][service]
        except KeyError:
            raise KeyError(f"no provisioned service {service!r} in environment {env!r}") from None

    def target_group_arn(self, service: str, env: str, slot: str) -> str:
        return self._service_res(service, env)["target_groups"][slot]

    def rule_arn(self, service: str, env: str) -> str:
        return self._service_res(service, env)["rule"]

    def listener_arn(self, env: str) -> str:
        return self.resources["envs"][env]["listener"]

    def load_balancer_arn(self, env: str) -> str:
        return self.resources["envs"][env]["load_balancer"]

    def metric_dimensions(self, service: str, env: str, slot: str) -> list[dict[str, str]]:
        """The dimensions the traffic simulator publishes a slot's ALB metrics under (canonical order)."""
        return metric_dimensions(self.target_group_arn(service, env, slot), self.load_balancer_arn(env))

    # --- behaviour ------------------------------------------------------------------------------------------
    def behaviour(self, service: str, version: str) -> Behaviour:
        return self._versions.get((service, version)) or Behaviour()

    def requests_per_minute(self, service: str) -> float:
        return self._rpm.get(service, DEFAULT_RPM)

    def inject(
        self,
        service: str,
        version: str | None = None,
        *,
        error_rate: float | None = None,
        latency_ms: float | None = None,
        unhealthy: bool | None = None,
        requests_per_minute: float | None = None,
        migration: str | None = None,
        integration_tests: str | None = None,
    ) -> dict[str, Any]:
        """Set a version's behaviour (None leaves a field as it is); requests_per_minute is per service.
        `version` is the image tag ('v3'; 'web:v3' is accepted too). Returns the behaviour table."""
        if service not in self.services:
            raise ValueError(f"unknown service {service!r}; expected one of {', '.join(self.services)}")
        if error_rate is not None and not 0 <= error_rate <= 1:
            raise ValueError(f"error_rate must be within 0..1, got {error_rate}")
        if latency_ms is not None and latency_ms < 0:
            raise ValueError(f"latency_ms must be >= 0, got {latency_ms}")
        if requests_per_minute is not None and requests_per_minute < 0:
            raise ValueError(f"requests_per_minute must be >= 0, got {requests_per_minute}")
        if migration or integration_tests:
            self._inject_tasks(service, version, migration, integration_tests)
        if requests_per_minute is not None:
            self._rpm[service] = float(requests_per_minute)
        if any(v is not None for v in (error_rate, latency_ms, unhealthy)):
            if not version:
                raise ValueError("a version (image tag) is needed for error_rate, latency_ms or unhealthy")
            repo, tag = parse_image(version) if ":" in version else (service, version)
            if repo != service:
                raise ValueError(f"version {version!r} is not an image of {service!r}")
            current = self.behaviour(service, tag)
            self._versions[(service, tag)] = Behaviour(
                error_rate=current.error_rate if error_rate is None else float(error_rate),
                latency_ms=current.latency_ms if latency_ms is None else float(latency_ms),
                unhealthy=current.unhealthy if unhealthy is None else bool(unhealthy),
            )
        return self.behaviour_table()

    def _inject_tasks(
        self, service: str, version: str | None, migration: str | None, integration_tests: str | None
    ) -> None:
        """How the version's one-off tasks end: migration fails | slow | down_fails | ok, integration tests
        fail | pass (None leaves it as it is)."""
        if migration not in (None, "fails", "slow", "down_fails", "ok"):
            raise ValueError(f"migration must be fails, slow, down_fails or ok, got {migration!r}")
        if integration_tests not in (None, "fail", "pass"):
            raise ValueError(f"integration_tests must be fail or pass, got {integration_tests!r}")
        if not version:
            raise ValueError("a version (image tag) is needed for migration or integration_tests")
        tag = parse_image(version)[1] if ":" in version else version
        now = self._task_behaviour.get((service, tag)) or TaskBehaviour()
        self._task_behaviour[(service, tag)] = TaskBehaviour(
            migration=now.migration if migration is None else (None if migration == "ok" else migration),
            integration_tests=now.integration_tests
            if integration_tests is None
            else (None if integration_tests == "pass" else integration_tests),
        )

    def behaviour_table(self) -> dict[str, Any]:
        return {
            "default": vars(Behaviour()),
            "versions": {f"{s}:{v}": vars(b).copy() for (s, v), b in sorted(self._versions.items())},
            "requests_per_minute": dict(self._rpm),
            "tasks": {f"{s}:{v}": vars(b).copy() for (s, v), b in sorted(self._task_behaviour.items())},
        }

    # --- the loop -----------------------------------------------------------------------------------------
    async def tick(self) -> None:
        """One step: progress ECS rollouts and target health, publish this tick's ALB metrics, and start a
        flag traffic tick in the background when one is due (it never holds this one up)."""
        async with self._tick_lock:
            now = self.clock.now()
            self.emulator.step(now)
            finished = await asyncio.to_thread(self.tasks.step, now)  # a migration's SQL: off the loop
            if finished:
                await asyncio.to_thread(self.write_task_logs, finished)
            # Traffic for the virtual time that really passed: under load the loop's ticks lag behind a fast
            # clock, and a fixed amount per tick would starve the metrics (a 5% canary would look idle).
            last = self._last_traffic_at
            elapsed = self.tick_seconds if last is None else min(max(now - last, 0.0), 60.0)
            self._last_traffic_at = now
            data = self.traffic.datapoints(now, elapsed) if elapsed > 0 else []
            if data:
                await asyncio.to_thread(self._put_metrics, data)
            if self.flags is not None:
                self.flags.kick()

    def _put_metrics(self, data: list[dict[str, Any]]) -> None:
        cloudwatch = self.client("cloudwatch")
        for i in range(0, len(data), 500):
            cloudwatch.put_metric_data(Namespace=TrafficSimulator.NAMESPACE, MetricData=data[i : i + 500])

    def put_metric_data(self, namespace: str, data: list[dict[str, Any]]) -> None:
        """Publish up to 500 datapoints, with the sandbox's key (never faulted): the flag traffic's."""
        self.client("cloudwatch").put_metric_data(Namespace=namespace, MetricData=data)

    async def run(self) -> None:
        """Tick every tick_seconds of clock time until cancelled; a failing tick is logged, not fatal."""
        while True:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("sandbox AWS tick failed")
            await self.clock.sleep(self.tick_seconds)

    # --- looking at it ------------------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """Per environment and service: the rule's weights and each slot's ECS service and targets."""
        with self.emulator.lock:  # callable from any thread: never half-way through a tick
            return self._snapshot()

    def _snapshot(self) -> dict[str, Any]:
        ecs, elb = ecs_backends[ACCOUNT_ID][REGION], elbv2_backends[ACCOUNT_ID][REGION]
        out: dict[str, Any] = {}
        for env, env_res in self.resources.get("envs", {}).items():
            out[env] = {}
            for service, res in env_res["services"].items():
                weights = dict(rule_weights(res["rule"]))
                slots = {}
                for slot in SLOTS:
                    tg_arn = res["target_groups"][slot]
                    svc = ecs.services.get(f"{env}:{service}-{slot}")
                    if svc is None:
                        continue
                    slots[slot] = {
                        "service": svc.name,
                        "taskDefinition": short_task_definition(svc.task_definition),
                        "image": image_of(svc.task_definition),
                        "desired": svc.desired_count,
                        "running": svc.running_count,
                        "pending": svc.pending_count,
                        "deployments": [
                            {
                                "id": d["id"],
                                "status": d["status"],
                                "taskDefinition": short_task_definition(str(d["taskDefinition"])),
                                "rolloutState": d.get("rolloutState"),
                                "desired": d.get("desiredCount"),
                                "running": d.get("runningCount"),
                                "pending": d.get("pendingCount"),
                            }
                            for d in svc.deployments
                        ],
                        "targets": [
                            {"id": h.instance_id, "port": h.port, "state": h.status, "reason": h.reason}
                            for h in elb.describe_target_health(tg_arn, [])
                        ],
                        "weight": weights.get(tg_arn, 0),
                        "events": [e["message"] for e in svc.events[:5]],
                    }
                out[env][service] = {
                    "host": self.host(service, env),
                    "weights": {slot: weights.get(res["target_groups"][slot], 0) for slot in SLOTS},
                    "slots": slots,
                }
        return out
