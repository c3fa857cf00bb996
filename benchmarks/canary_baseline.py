"""The canary benchmark's baseline: the same canary as a plain synchronous boto3 script making the calls the
bot must make, in its order with its parameters, nothing else (no engine, no store, no asyncio). Written
from the bot's recorded calls: like the bot it reads the route once (every weight shift reuses it) and a
task definition once (the idle slot's is read only when it differs from the live one's). See
canary_overhead.py."""

from __future__ import annotations

import asyncio
import math
import time
from datetime import UTC, datetime
from typing import Any

from canary_parts import APIS, CANARY_STEPS, ENV, GC, SERVICE, VERSION, Recorder, Run
from canary_world import RemoteWorld

from bot.adapters.aws import session as aws_session
from bot.adapters.platforms.ecs import NOT_COPIED  # what AWS sets, as the bot leaves it out
from bot.clock import Clock
from bot.sandbox.aws import SLOTS
from bot.sandbox.emulator import REGION

DEPLOYMENT_CONFIGURATION = {
    "maximumPercent": 150,
    "minimumHealthyPercent": 100,
    "deploymentCircuitBreaker": {"enable": True, "rollback": False},
}


def dimensions(tg: str, lb: str) -> list[dict[str, str]]:
    return [
        {"Name": "TargetGroup", "Value": tg.split(":", 5)[-1]},
        {"Name": "LoadBalancer", "Value": lb.split(":", 5)[-1].removeprefix("loadbalancer/")},
    ]


class PlainScript:
    """One canary, step by step; `run()` times it."""

    def __init__(self, endpoint: str, clock: Clock, poll: float, recorder: Recorder):
        # botocore's response parsing as the bot has it (its timestamp parser, bot.adapters.aws.session):
        # the ratio is what the bot's own work costs, not what a faster parser saves it
        session = aws_session()
        self.ecs, self.elb, self.cw = (
            recorder.attach(session.client(a, endpoint_url=endpoint, region_name=REGION)) for a in APIS
        )
        self.clock, self.poll, self.recorder = clock, poll, recorder
        self.cluster, self.lb_name, self.port = ENV, f"deploybot-{ENV}", 80
        self.marks: dict[int, float] = {}
        self.slept = 0.0
        self.index = -1

    def step(self) -> None:
        self.index += 1
        self.recorder.step = self.index
        self.marks[self.index] = time.perf_counter()

    def sleep(self) -> None:
        before = time.perf_counter()
        time.sleep(self.poll / self.clock.speed)
        self.slept += time.perf_counter() - before

    def service(self, slot: str) -> dict[str, Any]:
        out: dict[str, Any] = self.ecs.describe_services(cluster=self.cluster, services=[f"{SERVICE}-{slot}"])
        return dict(out["services"][0])

    def route(self) -> tuple[str, str, dict[str, Any], dict[str, int]]:
        lb = self.elb.describe_load_balancers(Names=[self.lb_name])["LoadBalancers"][0]["LoadBalancerArn"]
        listeners = self.elb.describe_listeners(LoadBalancerArn=lb)["Listeners"]
        listener = next(li for li in listeners if li["Port"] == self.port)
        for rule in self.elb.describe_rules(ListenerArn=listener["ListenerArn"], PageSize=400)["Rules"]:
            for action in rule["Actions"]:
                groups = action.get("ForwardConfig", {}).get("TargetGroups", [])
                if {g["TargetGroupArn"] for g in groups} & set(self.tgs.values()):
                    return lb, rule["RuleArn"], action, {g["TargetGroupArn"]: g["Weight"] for g in groups}
        raise RuntimeError("no rule forwards to the web target groups")

    def capture_traffic(self) -> None:
        self.step()
        self.tgs = {
            s: self.elb.describe_target_groups(Names=[f"{SERVICE}-{ENV}-{s}"])["TargetGroups"][0][
                "TargetGroupArn"
            ]
            for s in SLOTS
        }
        self.lb, self.rule, self.action, weights = self.route()  # once: every weight shift reuses it
        self.stable = next(s for s in SLOTS if weights.get(self.tgs[s], 0) > 0)
        self.new = next(s for s in SLOTS if s != self.stable)
        live = self.service(self.stable)
        self.previous = live["taskDefinition"]
        self.desired = max(1, live["desiredCount"])
        described = self.ecs.describe_task_definition(taskDefinition=self.previous, include=["TAGS"])
        self.base, self.base_tags = described["taskDefinition"], described.get("tags", [])

    def use_revision(self) -> None:
        """The idle slot's task definition does not run the new image, so register one."""
        self.step()
        idle = self.service(self.new)
        if idle["taskDefinition"] != self.previous:
            self.ecs.describe_task_definition(taskDefinition=idle["taskDefinition"])
        containers = [
            {**c, "image": f"{SERVICE}:{VERSION}"} if c["name"] == SERVICE else c
            for c in self.base["containerDefinitions"]
        ]
        params = {k: v for k, v in self.base.items() if k not in NOT_COPIED and v is not None}
        params["containerDefinitions"] = containers
        tags = [t for t in self.base_tags if not t["key"].startswith(("aws:", "deploybot:"))]
        tags += [
            {"key": "deploybot:deployment", "value": "1"},
            {"key": "deploybot:base", "value": self.previous},
        ]
        out = self.ecs.register_task_definition(**params, tags=tags)
        self.revision = out["taskDefinition"]["taskDefinitionArn"]

    def prepare_slot(self) -> None:
        self.step()
        self.ecs.update_service(
            cluster=self.cluster,
            service=f"{SERVICE}-{self.new}",
            deploymentConfiguration=DEPLOYMENT_CONFIGURATION,
            taskDefinition=self.revision,
            desiredCount=self.desired,
        )

    def wait_for_rollout(self) -> None:
        self.step()
        while True:
            primary: dict[str, Any] = next(
                (d for d in self.service(self.new)["deployments"] if d["status"] == "PRIMARY"), {}
            )
            if primary.get("taskDefinition") == self.revision:
                if primary.get("rolloutState") == "COMPLETED":
                    return
                if primary.get("rolloutState") == "FAILED":
                    raise RuntimeError(f"rollout failed: {primary.get('rolloutStateReason')}")
            self.sleep()

    def wait_for_healthy_targets(self) -> None:
        self.step()
        while True:
            health = self.elb.describe_target_health(TargetGroupArn=self.tgs[self.new])
            states = [h["TargetHealth"]["State"] for h in health["TargetHealthDescriptions"]]
            if all(s in ("healthy", "draining") for s in states) and states.count("healthy") >= self.desired:
                return
            self.sleep()

    def set_weights(self, weight: int) -> None:
        self.step()
        groups = [
            {"TargetGroupArn": self.tgs[self.new], "Weight": weight},
            {"TargetGroupArn": self.tgs[self.stable], "Weight": 100 - weight},
        ]
        forward = {**self.action.get("ForwardConfig", {}), "TargetGroups": groups}
        self.elb.modify_rule(RuleArn=self.rule, Actions=[{"Type": "forward", "ForwardConfig": forward}])

    def analyze(self, weight: int) -> None:
        self.step()
        groups_dims = {"canary": dimensions(self.tgs[self.new], self.lb)}
        if weight < 100:
            groups_dims["stable"] = dimensions(self.tgs[self.stable], self.lb)
        at = float(math.floor(self.clock.now()))
        queries = [
            {
                "Id": f"g{i}_{suffix}",
                "MetricStat": {
                    "Metric": {"Namespace": "AWS/ApplicationELB", "MetricName": metric, "Dimensions": dims},
                    "Period": 60,
                    "Stat": stat,
                },
                "ReturnData": True,
            }
            for i, dims in enumerate(groups_dims.values())
            for suffix, metric, stat in (
                ("requests", "RequestCount", "Sum"),
                ("errors", "HTTPCode_Target_5XX_Count", "Sum"),
                ("latency", "TargetResponseTime", "Average"),
            )
        ]
        out = self.cw.get_metric_data(
            MetricDataQueries=queries,
            StartTime=datetime.fromtimestamp(at - 60, UTC),
            EndTime=datetime.fromtimestamp(at, UTC),
            ScanBy="TimestampAscending",
        )
        if not out["MetricDataResults"][0].get("Values"):
            raise RuntimeError(f"no canary requests at {weight}%")

    def scale_down(self) -> None:
        self.step()
        attributes = self.elb.describe_target_group_attributes(TargetGroupArn=self.tgs[self.stable])
        delay = next(
            float(a["Value"])
            for a in attributes["Attributes"]
            if a["Key"] == "deregistration_delay.timeout_seconds"
        )
        time.sleep(delay / self.clock.speed)
        self.elb.describe_rules(RuleArns=[self.rule])  # never scale down a slot that still has traffic
        self.ecs.update_service(
            cluster=self.cluster,
            service=f"{SERVICE}-{self.stable}",
            deploymentConfiguration=DEPLOYMENT_CONFIGURATION,
            desiredCount=0,
        )

    def verify_live(self) -> None:
        """Before it is called live: all traffic on the new slot, which runs the new revision."""
        self.step()
        self.elb.describe_rules(RuleArns=[self.rule])
        self.service(self.new)

    def run(self) -> Run:
        GC.start()
        start = time.perf_counter()
        self.capture_traffic()
        self.use_revision()
        self.prepare_slot()
        self.wait_for_rollout()
        self.wait_for_healthy_targets()
        for weight in CANARY_STEPS:
            self.set_weights(weight)
            self.analyze(weight)
        self.scale_down()
        self.verify_live()
        end = time.perf_counter()
        gc_seconds, gc_full = GC.stop()
        return Run(
            "baseline",
            end - start,
            self.recorder,
            self.slept,
            self.marks,
            end,
            ok=True,
            gc_seconds=gc_seconds,
            gc_full=gc_full,
        )


async def run_baseline(world: RemoteWorld, endpoint: str, poll: float) -> Run:
    recorder = Recorder(world.tick)
    try:
        return await asyncio.to_thread(lambda: PlainScript(endpoint, world.clock, poll, recorder).run())
    except Exception as exc:
        return Run("baseline", 0.0, recorder, 0.0, {}, 0.0, ok=False, outcome=f"{type(exc).__name__}: {exc}")
