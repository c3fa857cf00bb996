"""ECS + ALB weighted target groups, implementing bot.app.ports.Platform.

A slot is an ECS service registered with its own ALB target group; a revision is a task definition ARN;
weights are the weighted forward action of the listener rule (or listener default action) forwarding to
the service's target groups. Reads of immutable things are cached: target group ARNs by name, task
definitions by full ARN. The route (which rule, on which listener of which load balancer) is found by
weights() (DescribeLoadBalancers, DescribeListeners, DescribeRules) and kept, so a weight shift is ONE
ModifyRule/ModifyListener call; it is found again only when such a write is refused (the rule changed
or went away under us), and the write is tried once more."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bot.adapters.aws import Answer, Caller
from bot.app.ports import MetricScope, PlatformError, Rollout, SlotState, TargetHealth
from bot.config.model import Target

_KEEP = (  # what a new task definition revision copies from its base, besides the containers
    "family",
    "taskRoleArn",
    "executionRoleArn",
    "networkMode",
    "volumes",
    "placementConstraints",
    "requiresCompatibilities",
    "cpu",
    "memory",
    "runtimePlatform",
    "pidMode",
    "ipcMode",
)


@dataclass(frozen=True)
class Route:
    """The listener rule (or listener default action) forwarding to a service's slots, with weights."""

    arn: str
    is_rule: bool
    load_balancer_arn: str
    weights: dict[str, int]  # target group ARN -> weight
    action: dict[str, Any] = field(default_factory=dict)  # the forward action as AWS has it (stickiness)


def alb_dimensions(target_group_arn: str, load_balancer_arn: str) -> list[dict[str, str]]:
    """The ALB metric dimensions for a target group, as AWS names them, in the one canonical order
    (TargetGroup, then LoadBalancer): moto matches dimensions by their order, AWS by the set."""
    tg = target_group_arn.split(":", 5)[-1]
    lb = load_balancer_arn.split(":", 5)[-1].removeprefix("loadbalancer/")
    if not tg.startswith("targetgroup/") or tg.count("/") != 2:
        raise ValueError(f"not a target group ARN: {target_group_arn!r}")
    if not lb.startswith("app/") or lb.count("/") != 2:
        raise ValueError(f"not an application load balancer ARN: {load_balancer_arn!r}")
    return [{"Name": "TargetGroup", "Value": tg}, {"Name": "LoadBalancer", "Value": lb}]


class EcsPlatform:
    """One per process (it caches); `aws` is bot.adapters.aws.Aws (or anything with its call())."""

    def __init__(self, aws: Caller):
        self.aws = aws
        self._arns: dict[tuple[str, str], str] = {}
        self._task_definitions: dict[str, Answer] = {}
        self._routes: dict[tuple[str, str, int, str], Route] = {}

    # ------------------------------------------------------------------------------------------- ECS

    async def _service(self, target: Target, slot: str) -> Answer:
        name = target.ecs_service(slot)
        out = await self.aws.call(
            "ecs", "describe_services", target.env.aws_role_arn, cluster=target.cluster, services=[name]
        )
        if not out.get("services"):
            reason = out.get("failures", [{}])[0].get("reason", "not found")
            raise PlatformError(
                "ECS DescribeServices", f"service {name} in cluster {target.cluster}: {reason}"
            )
        service: Answer = out["services"][0]
        return service

    async def _task_definition(self, target: Target, arn: str) -> Answer:
        """A task definition by full ARN is immutable, so it is read once ("family:rev" names are not cached)."""
        if arn not in self._task_definitions:
            out = await self.aws.call(
                "ecs", "describe_task_definition", target.env.aws_role_arn, taskDefinition=arn
            )
            if not arn.startswith("arn:"):
                return dict(out["taskDefinition"])
            self._task_definitions[arn] = out["taskDefinition"]
        return copy.deepcopy(self._task_definitions[arn])

    async def running(self, target: Target, slot: str | None = None) -> SlotState:
        slot = slot if slot is not None else await self.live_slot(target)
        svc = await self._service(target, slot)
        revision = svc.get("taskDefinition") or ""
        image = None
        if revision:
            td = await self._task_definition(target, revision)
            image = next(
                (c["image"] for c in td["containerDefinitions"] if c["name"] == target.service.container),
                None,
            )
        return SlotState(slot, revision, image, svc.get("desiredCount", 0), svc.get("runningCount", 0))

    async def register_revision(self, target: Target, base: str, image: str) -> str:
        td = await self._task_definition(target, base)
        names = [c["name"] for c in td["containerDefinitions"]]
        if target.service.container not in names:
            raise PlatformError(
                "ECS RegisterTaskDefinition",
                f"task definition {base} has no container {target.service.container!r} "
                f"(it has: {', '.join(names)})",
            )
        containers = [
            {**c, "image": image} if c["name"] == target.service.container else c
            for c in td["containerDefinitions"]
        ]
        params = {k: td[k] for k in _KEEP if td.get(k) not in (None, [], "")}
        out = await self.aws.call(
            "ecs",
            "register_task_definition",
            target.env.aws_role_arn,
            containerDefinitions=containers,
            **params,
        )
        arn: str = out["taskDefinition"]["taskDefinitionArn"]
        return arn

    async def update_slot(
        self, target: Target, slot: str, *, revision: str | None = None, count: int | None = None
    ) -> None:
        params: dict[str, Any] = {
            "cluster": target.cluster,
            "service": target.ecs_service(slot),
            "deploymentConfiguration": target.deployment_configuration.to_ecs(),
        }
        if revision is not None:
            params["taskDefinition"] = revision
        if count is not None:
            params["desiredCount"] = count
        await self.aws.call("ecs", "update_service", target.env.aws_role_arn, **params)

    async def rollout(self, target: Target, slot: str) -> Rollout:
        svc = await self._service(target, slot)
        deployments = svc.get("deployments", [])
        primary = next((d for d in deployments if d.get("status") == "PRIMARY"), None)
        if primary is None:
            return Rollout(
                svc.get("taskDefinition", ""),
                "IN_PROGRESS",
                "no deployment yet",
                svc.get("desiredCount", 0),
                svc.get("runningCount", 0),
                0,
            )
        return Rollout(
            revision=primary.get("taskDefinition", ""),
            state=primary.get("rolloutState", "IN_PROGRESS"),
            reason=primary.get("rolloutStateReason", ""),
            desired=primary.get("desiredCount", 0),
            running=primary.get("runningCount", 0),
            active_deployments=sum(1 for d in deployments if d.get("status") == "ACTIVE"),
        )

    # ----------------------------------------------------------------------------------------- ELBv2

    async def _target_group_arn(self, target: Target, slot: str) -> str:
        name = target.target_group(slot)
        key = (target.env.aws_role_arn or "", name)
        if key not in self._arns:
            out = await self.aws.call(
                "elbv2", "describe_target_groups", target.env.aws_role_arn, Names=[name]
            )
            self._arns[key] = out["TargetGroups"][0]["TargetGroupArn"]
        return self._arns[key]

    async def target_health(self, target: Target, slot: str) -> list[TargetHealth]:
        arn = await self._target_group_arn(target, slot)
        out = await self.aws.call(
            "elbv2", "describe_target_health", target.env.aws_role_arn, TargetGroupArn=arn
        )
        return [
            TargetHealth(d["Target"]["Id"], d["TargetHealth"]["State"], d["TargetHealth"].get("Reason"))
            for d in out.get("TargetHealthDescriptions", [])
        ]

    def _route_key(self, target: Target) -> tuple[str, str, int, str]:
        env = target.env
        return (env.aws_role_arn or "", env.load_balancer, env.listener_port, target.service.name)

    async def _find_route(self, target: Target) -> Route:
        """Find (and keep) the rule on the environment's listener that forwards to the service's groups."""
        role, env = target.env.aws_role_arn, target.env
        tg_arns = {await self._target_group_arn(target, s) for s in target.slots}
        lbs = await self.aws.call("elbv2", "describe_load_balancers", role, Names=[env.load_balancer])
        lb_arn = lbs["LoadBalancers"][0]["LoadBalancerArn"]
        listeners = await self.aws.call("elbv2", "describe_listeners", role, LoadBalancerArn=lb_arn)
        listener = next((li for li in listeners["Listeners"] if li["Port"] == env.listener_port), None)
        if listener is None:
            raise PlatformError(
                "ELBv2 DescribeListeners",
                f"load balancer {env.load_balancer} has no listener on port {env.listener_port}",
            )
        rules = await self.aws.call("elbv2", "describe_rules", role, ListenerArn=listener["ListenerArn"])
        for rule in rules["Rules"]:
            for action in rule.get("Actions", []):
                weights = _forward_weights(action)
                if weights and tg_arns & weights.keys():
                    is_rule = not rule.get("IsDefault", False)
                    arn = rule["RuleArn"] if is_rule else listener["ListenerArn"]
                    route = Route(arn, is_rule, lb_arn, weights, action)
                    self._routes[self._route_key(target)] = route
                    return route
        raise PlatformError(
            "ELBv2 DescribeRules",
            f"no rule on {env.load_balancer}:{env.listener_port} forwards to "
            f"{', '.join(target.target_group(s) for s in target.slots)}",
        )

    async def weights(self, target: Target) -> dict[str, int]:
        route = await self._find_route(target)
        return {s: route.weights.get(await self._target_group_arn(target, s), 0) for s in target.slots}

    async def live_slot(self, target: Target) -> str:
        if len(target.slots) == 1:
            return target.slots[0]
        by_slot = await self.weights(target)
        return max(target.slots, key=lambda s: (by_slot[s], s == target.slots[0]))

    async def set_weights(self, target: Target, weights: Mapping[str, int]) -> None:
        """ONE listener/rule modification, on the route found before; a refused write finds the route
        again and is tried once more."""
        route = self._routes.get(self._route_key(target))
        if route is not None:
            try:
                await self._write_weights(target, route, weights)
                return
            except PlatformError:
                pass  # the rule may have changed under us: look again
        await self._write_weights(target, await self._find_route(target), weights)

    async def _write_weights(self, target: Target, route: Route, weights: Mapping[str, int]) -> None:
        groups = [
            {"TargetGroupArn": await self._target_group_arn(target, s), "Weight": int(w)}
            for s, w in weights.items()
        ]
        forward = {**route.action.get("ForwardConfig", {}), "TargetGroups": groups}
        action = {"Type": "forward", "ForwardConfig": forward}
        role = target.env.aws_role_arn
        if route.is_rule:
            await self.aws.call("elbv2", "modify_rule", role, RuleArn=route.arn, Actions=[action])
        else:
            await self.aws.call(
                "elbv2", "modify_listener", role, ListenerArn=route.arn, DefaultActions=[action]
            )

    async def drain_seconds(self, target: Target, slot: str) -> float:
        arn = await self._target_group_arn(target, slot)
        out = await self.aws.call(
            "elbv2", "describe_target_group_attributes", target.env.aws_role_arn, TargetGroupArn=arn
        )
        for attr in out.get("Attributes", []):
            if attr["Key"] == "deregistration_delay.timeout_seconds":
                return float(attr["Value"])
        return 300.0  # AWS's default

    async def metric_scope(self, target: Target, slot: str) -> MetricScope:
        route = self._routes.get(self._route_key(target)) or await self._find_route(target)
        dims = alb_dimensions(await self._target_group_arn(target, slot), route.load_balancer_arn)
        return MetricScope(tuple((d["Name"], d["Value"]) for d in dims))


def _forward_weights(action: Mapping[str, Any]) -> dict[str, int]:
    if action.get("Type") != "forward":
        return {}
    groups = action.get("ForwardConfig", {}).get("TargetGroups")
    if groups:
        return {g["TargetGroupArn"]: int(g.get("Weight", 1)) for g in groups}
    if action.get("TargetGroupArn"):
        return {action["TargetGroupArn"]: 1}
    return {}
