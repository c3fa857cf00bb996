"""ECS + ALB weighted target groups, implementing bot.app.ports.Platform.

A slot is an ECS service registered with its own ALB target group; a revision is a task definition ARN;
weights are the weighted forward action of the listener rule (or listener default action) forwarding to
the service's target groups. Reads of immutable things are cached: target group ARNs by name, task
definitions by full ARN. The route (which rule, on which listener of which load balancer) is found by
weights() (DescribeLoadBalancers, DescribeListeners, DescribeRules) and kept, so a weight shift is ONE
ModifyRule/ModifyListener call; it is found again only when such a write is refused (the rule changed
or went away under us), and the write is tried once more.

A new revision copies everything of its base (every field RegisterTaskDefinition takes, and the tags),
with the service container's image replaced; it is tagged with the deployment it is for (KEY_TAG), so a
deployment resumed after a crash finds it (find_revision) instead of registering another."""

from __future__ import annotations

import copy
import functools
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import botocore.session  # type: ignore[import-untyped]

from bot.adapters.aws import Answer, Caller
from bot.adapters.platforms.ecs_batch import DescribeServicesBatcher
from bot.adapters.platforms.ecs_tasks import EcsTasks
from bot.app.ports import MetricScope, PlatformError, Rollout, SlotState, TargetHealth
from bot.config.model import Target

# What a new revision does not copy from its base: what AWS sets on registration (the rest is copied, so a
# field this code has never heard of, such as ephemeralStorage or proxyConfiguration, survives a deploy).
NOT_COPIED = frozenset(
    {
        "taskDefinitionArn",
        "revision",
        "status",
        "requiresAttributes",
        "compatibilities",
        "registeredAt",
        "registeredBy",
        "deregisteredAt",
        "deleteRequestedAt",
    }
)
KEY_TAG = "deploybot:deployment"  # on each revision the bot registers: the deployment it is for
BASE_TAG = "deploybot:base"  # ... and the revision it was made from
MAX_TAGS = 50  # AWS's limit per resource
FIND_PAGES, FIND_PAGE_SIZE = 2, 10  # a resume looks at the family's newest revisions only
log = logging.getLogger(__name__)


@functools.cache
def _register_fields() -> frozenset[str]:
    """What RegisterTaskDefinition takes, from botocore's own model of it (no call is made): a read-only
    field AWS adds to DescribeTaskDefinition one day is left out (and logged) rather than refused."""
    model = botocore.session.get_session().get_service_model("ecs")
    return frozenset(model.operation_model("RegisterTaskDefinition").input_shape.members)


def clone_params(described: Answer, image: str, container: str, key: str, base: str) -> dict[str, Any]:
    """RegisterTaskDefinition's arguments for a revision like `described` (a DescribeTaskDefinition answer
    with include=["TAGS"]) with `container`'s image replaced: every field but those AWS sets, and its
    tags but those AWS reserves (`aws:`) and the bot's own, which name the new deployment instead."""
    td = described["taskDefinition"]
    fields = _register_fields()
    params: dict[str, Any] = {}
    for name, value in td.items():
        if name in NOT_COPIED or value is None:
            continue
        if name not in fields:
            log.warning(
                "task definition %s: field %s is not copied (RegisterTaskDefinition has no such parameter)",
                base,
                name,
            )
            continue
        params[name] = value
    params["containerDefinitions"] = [
        {**c, "image": image} if c["name"] == container else c for c in td["containerDefinitions"]
    ]
    kept = [
        t
        for t in described.get("tags") or []
        if not t["key"].lower().startswith("aws:") and t["key"] not in (KEY_TAG, BASE_TAG)
    ]
    own = [{"key": KEY_TAG, "value": key}, {"key": BASE_TAG, "value": base}]
    tags = kept + own[: max(0, MAX_TAGS - len(kept))]  # the base's own tags first: they are the service's
    params.pop("tags", None)
    if tags:
        params["tags"] = tags
    return params


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


class EcsPlatform(EcsTasks):
    """One per process (it caches); `aws` is bot.adapters.aws.Aws (or anything with its call())."""

    def __init__(self, aws: Caller):
        self.aws = aws
        self._services = DescribeServicesBatcher(aws)
        self._arns: dict[tuple[str, str], str] = {}
        self._task_definitions: dict[str, Answer] = {}
        self._routes: dict[tuple[str, str, int, str], Route] = {}

    # ------------------------------------------------------------------------------------------- ECS

    async def _service(self, target: Target, slot: str) -> Answer:
        """One ECS service, read together with the other services of its cluster asked for at the same
        time (ecs_batch.py: one DescribeServices per 10)."""
        name = target.ecs_service(slot)
        return await self._services.service(target.env.aws_role_arn, target.cluster, name)

    async def _described(self, target: Target, arn: str) -> Answer:
        """A task definition with its tags (DescribeTaskDefinition, include=["TAGS"]): {"taskDefinition",
        "tags"}. One by full ARN is immutable, so it is read once ("family:rev" names are not cached);
        its tags are kept with it."""
        if arn not in self._task_definitions:
            out = await self.aws.call(
                "ecs",
                "describe_task_definition",
                target.env.aws_role_arn,
                taskDefinition=arn,
                include=["TAGS"],
            )
            described = {"taskDefinition": out["taskDefinition"], "tags": out.get("tags") or []}
            if not arn.startswith("arn:"):
                return described
            self._task_definitions[arn] = described
        return copy.deepcopy(self._task_definitions[arn])

    async def _task_definition(self, target: Target, arn: str) -> Answer:
        td: Answer = (await self._described(target, arn))["taskDefinition"]
        return td

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

    async def register_revision(self, target: Target, base: str, image: str, *, key: str) -> str:
        described = await self._described(target, base)
        names = [c["name"] for c in described["taskDefinition"]["containerDefinitions"]]
        if target.service.container not in names:
            raise PlatformError(
                "ECS RegisterTaskDefinition",
                f"task definition {base} has no container {target.service.container!r} "
                f"(it has: {', '.join(names)})",
            )
        params = clone_params(described, image, target.service.container, key, base)
        out = await self.aws.call("ecs", "register_task_definition", target.env.aws_role_arn, **params)
        arn: str = out["taskDefinition"]["taskDefinitionArn"]
        self._task_definitions[arn] = {
            "taskDefinition": out["taskDefinition"],
            "tags": out.get("tags") or params.get("tags", []),
        }
        return arn

    async def find_revision(self, target: Target, base: str, image: str, key: str) -> str | None:
        """The family's newest ACTIVE revisions (ListTaskDefinitions, newest first, a page or two), each
        described until one carries the deployment's tag and runs `image`."""
        family = (await self._task_definition(target, base))["family"]
        params: dict[str, Any] = {
            "familyPrefix": family,
            "status": "ACTIVE",
            "sort": "DESC",
            "maxResults": FIND_PAGE_SIZE,
        }
        for _ in range(FIND_PAGES):
            out = await self.aws.call("ecs", "list_task_definitions", target.env.aws_role_arn, **params)
            for arn in _newest(out.get("taskDefinitionArns", []), family):
                if arn == base:
                    continue
                described = await self._described(target, arn)
                tags = {t["key"]: t["value"] for t in described["tags"]}
                containers = described["taskDefinition"]["containerDefinitions"]
                if (
                    tags.get(KEY_TAG) == key
                    and tags.get(BASE_TAG, base) == base
                    and any(c["name"] == target.service.container and c["image"] == image for c in containers)
                ):
                    return arn
            if not out.get("nextToken"):
                break
            params["nextToken"] = out["nextToken"]
        return None

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
        for rule in await self._rules(role, listener["ListenerArn"]):
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

    async def _rules(self, role: str | None, listener_arn: str) -> list[Answer]:
        """Every rule of the listener, its pages followed (a listener holds up to 100 rules by default,
        more on request; DescribeRules answers them in pages)."""
        rules: list[Answer] = []
        params: dict[str, Any] = {"ListenerArn": listener_arn, "PageSize": 400}
        while True:
            out = await self.aws.call("elbv2", "describe_rules", role, **params)
            rules.extend(out.get("Rules", []))
            if not out.get("NextMarker"):
                return rules
            params["Marker"] = out["NextMarker"]

    async def weights(self, target: Target) -> dict[str, int]:
        """Read fresh: the route found before is read again in one call (DescribeRules or
        DescribeListeners by ARN); it is looked for anew when it is gone or no longer forwards to the
        service's groups."""
        route = self._routes.get(self._route_key(target))
        fresh = await self._reread(target, route) if route is not None else None
        route = fresh or await self._find_route(target)
        return {s: route.weights.get(await self._target_group_arn(target, s), 0) for s in target.slots}

    async def _reread(self, target: Target, route: Route) -> Route | None:
        role = target.env.aws_role_arn
        try:
            if route.is_rule:
                out = await self.aws.call("elbv2", "describe_rules", role, RuleArns=[route.arn])
                actions = [a for r in out.get("Rules", []) for a in r.get("Actions", [])]
            else:
                out = await self.aws.call("elbv2", "describe_listeners", role, ListenerArns=[route.arn])
                actions = [a for li in out.get("Listeners", []) for a in li.get("DefaultActions", [])]
        except PlatformError as exc:
            if exc.code in ("RuleNotFound", "ListenerNotFound"):
                return None
            raise
        groups = {await self._target_group_arn(target, s) for s in target.slots}
        for action in actions:
            weights = _forward_weights(action)
            if weights and groups & weights.keys():
                again = Route(route.arn, route.is_rule, route.load_balancer_arn, weights, action)
                self._routes[self._route_key(target)] = again
                return again
        return None

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


def _newest(arns: list[str], family: str) -> list[str]:
    """The family's revisions of one ListTaskDefinitions page, newest first, at most a page's worth (AWS
    sorts and pages as asked; moto returns every revision, oldest first, in one page)."""
    mine = [(a, a.rsplit("/", 1)[-1].rsplit(":", 1)) for a in arns]
    numbered = [(int(n[1]), a) for a, n in mine if len(n) == 2 and n[0] == family and n[1].isdigit()]
    return [a for _, a in sorted(numbered, reverse=True)[:FIND_PAGE_SIZE]]


def _forward_weights(action: Mapping[str, Any]) -> dict[str, int]:
    if action.get("Type") != "forward":
        return {}
    groups = action.get("ForwardConfig", {}).get("TargetGroups")
    if groups:
        return {g["TargetGroupArn"]: int(g.get("Weight", 1)) for g in groups}
    if action.get("TargetGroupArn"):
        return {action["TargetGroupArn"]: 1}
    return {}
