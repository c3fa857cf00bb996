"""The AWS seam: boto3 clients (ECS, ELBv2, CloudWatch) behind small async methods.

Every boto3 call runs in a worker thread, uses botocore's standard retry mode, and takes endpoint_url from
settings, so the same code talks to AWS or to the sandbox's moto server. AWS failures surface as
CloudError with the operation and AWS's own message: strategies turn them into failed steps."""

from __future__ import annotations

import asyncio
import copy
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

if TYPE_CHECKING:  # settings read the analysis config, which uses this module: no runtime import
    from bot.config.model import AwsSettings, Target


class CloudError(Exception):
    """An AWS call that failed after botocore's retries; the message is safe to show to people."""

    def __init__(self, operation: str, message: str, code: str | None = None):
        self.operation, self.code = operation, code
        super().__init__(f"{operation} failed: {message}")


@dataclass(frozen=True)
class TargetHealth:
    id: str
    state: str  # healthy | unhealthy | initial | draining | unused | unavailable
    reason: str | None = None


@dataclass(frozen=True)
class Rollout:
    """The state of an ECS service's newest (PRIMARY) deployment."""

    task_definition: str
    rollout_state: str  # IN_PROGRESS | COMPLETED | FAILED
    reason: str
    desired: int
    running: int
    active_deployments: int  # older deployments still draining


@dataclass(frozen=True)
class Route:
    """The listener rule (or listener default action) forwarding to a service's slots, with weights."""

    arn: str
    is_rule: bool
    weights: dict[str, int]  # target group ARN -> weight
    action: dict = field(default_factory=dict)  # the forward action as AWS has it (stickiness kept)


class Cloud:
    """One per process. Clients are created per (service, role) once and shared across threads."""

    def __init__(self, aws: AwsSettings):
        self.aws = aws
        self._config = Config(
            region_name=aws.region,
            retries={"mode": "standard", "max_attempts": aws.max_attempts},
            connect_timeout=5,
            read_timeout=30,
        )
        self._clients: dict[tuple[str, str | None], Any] = {}
        self._lock = threading.Lock()
        self._arns: dict[tuple[str, str], str] = {}
        self._lb_arns: dict[str, str] = {}
        self._task_definitions: dict[str, dict] = {}
        self._role_credentials: dict[str, tuple[float, dict[str, str]]] = {}

    # ------------------------------------------------------------------------------------ plumbing

    def client(self, service: str, role_arn: str | None = None) -> Any:
        with self._lock:
            key = (service, role_arn)
            expires, _ = self._role_credentials.get(role_arn or "", (float("inf"), {}))
            if key not in self._clients or expires - time.time() < 300:
                kwargs: dict[str, Any] = {"config": self._config, "endpoint_url": self.aws.endpoint_url}
                if role_arn:
                    kwargs.update(self._assume(role_arn))
                self._clients[key] = boto3.session.Session().client(service, **kwargs)
            return self._clients[key]

    def _assume(self, role_arn: str) -> dict[str, str]:
        """Cross-account environments: credentials of the environment's role, refreshed before expiry."""
        sts = boto3.session.Session().client("sts", config=self._config, endpoint_url=self.aws.endpoint_url)
        creds = sts.assume_role(RoleArn=role_arn, RoleSessionName="deploybot")["Credentials"]
        values = {
            "aws_access_key_id": creds["AccessKeyId"],
            "aws_secret_access_key": creds["SecretAccessKey"],
            "aws_session_token": creds["SessionToken"],
        }
        self._role_credentials[role_arn] = (creds["Expiration"].timestamp(), values)
        return values

    async def call(self, api: str, operation: str, role_arn: str | None = None, /, **params: Any) -> dict:
        """One AWS API call, off the event loop, with AWS errors turned into CloudError."""

        def run() -> dict:
            method: Callable[..., dict] = getattr(self.client(api, role_arn), operation)
            return method(**params)

        name = f"{api.upper()} {''.join(p.title() for p in operation.split('_'))}"
        try:
            return await asyncio.to_thread(run)
        except ClientError as exc:
            err = exc.response.get("Error", {})
            raise CloudError(
                name, f"{err.get('Code', 'Error')}: {err.get('Message', '')}".strip(), err.get("Code")
            ) from None
        except BotoCoreError as exc:
            raise CloudError(name, str(exc)) from None

    # ---------------------------------------------------------------------------------------- ECS

    async def service(self, target: Target, slot: str) -> dict:
        name = target.ecs_service(slot)
        out = await self.call(
            "ecs", "describe_services", target.env.aws_role_arn, cluster=target.cluster, services=[name]
        )
        if not out.get("services"):
            reason = out.get("failures", [{}])[0].get("reason", "not found")
            raise CloudError("ECS DescribeServices", f"service {name} in cluster {target.cluster}: {reason}")
        return out["services"][0]

    async def task_definition(self, target: Target, arn: str) -> dict:
        """A task definition by full ARN is immutable, so it is read once ("family:rev" names are not cached)."""
        if arn in self._task_definitions:
            return copy.deepcopy(self._task_definitions[arn])
        out = await self.call("ecs", "describe_task_definition", target.env.aws_role_arn, taskDefinition=arn)
        if arn.startswith("arn:"):
            self._task_definitions[arn] = out["taskDefinition"]
        return copy.deepcopy(out["taskDefinition"])

    async def register_revision(self, target: Target, base_arn: str, image: str) -> str:
        """A new revision of base_arn's family with the service's container image replaced."""
        base = await self.task_definition(target, base_arn)
        containers = []
        found = False
        for c in base["containerDefinitions"]:
            if c["name"] == target.service.container:
                c = {**c, "image": image}
                found = True
            containers.append(c)
        if not found:
            names = ", ".join(c["name"] for c in base["containerDefinitions"])
            raise CloudError(
                "ECS RegisterTaskDefinition",
                f"task definition {base_arn} has no container {target.service.container!r} (it has: {names})",
            )
        keep = (
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
        params = {k: base[k] for k in keep if base.get(k) not in (None, [], "")}
        out = await self.call(
            "ecs",
            "register_task_definition",
            target.env.aws_role_arn,
            containerDefinitions=containers,
            **params,
        )
        return out["taskDefinition"]["taskDefinitionArn"]

    async def update_service(
        self,
        target: Target,
        slot: str,
        *,
        task_definition: str | None = None,
        desired_count: int | None = None,
    ) -> None:
        params: dict[str, Any] = {
            "cluster": target.cluster,
            "service": target.ecs_service(slot),
            "deploymentConfiguration": target.deployment_configuration.to_ecs(),
        }
        if task_definition is not None:
            params["taskDefinition"] = task_definition
        if desired_count is not None:
            params["desiredCount"] = desired_count
        await self.call("ecs", "update_service", target.env.aws_role_arn, **params)

    async def rollout(self, target: Target, slot: str) -> Rollout:
        svc = await self.service(target, slot)
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
            task_definition=primary.get("taskDefinition", ""),
            rollout_state=primary.get("rolloutState", "IN_PROGRESS"),
            reason=primary.get("rolloutStateReason", ""),
            desired=primary.get("desiredCount", 0),
            running=primary.get("runningCount", 0),
            active_deployments=sum(1 for d in deployments if d.get("status") == "ACTIVE"),
        )

    # --------------------------------------------------------------------------------------- ELBv2

    async def target_group_arn(self, target: Target, slot: str) -> str:
        name = target.target_group(slot)
        key = (target.env.aws_role_arn or "", name)
        if key not in self._arns:
            out = await self.call("elbv2", "describe_target_groups", target.env.aws_role_arn, Names=[name])
            self._arns[key] = out["TargetGroups"][0]["TargetGroupArn"]
        return self._arns[key]

    async def target_health(self, target: Target, slot: str) -> list[TargetHealth]:
        arn = await self.target_group_arn(target, slot)
        out = await self.call("elbv2", "describe_target_health", target.env.aws_role_arn, TargetGroupArn=arn)
        return [
            TargetHealth(d["Target"]["Id"], d["TargetHealth"]["State"], d["TargetHealth"].get("Reason"))
            for d in out.get("TargetHealthDescriptions", [])
        ]

    async def route(self, target: Target) -> Route:
        """Find the rule on the environment's listener that forwards to this service's target groups."""
        role = target.env.aws_role_arn
        tg_arns = {await self.target_group_arn(target, s) for s in target.slots}
        lbs = await self.call("elbv2", "describe_load_balancers", role, Names=[target.env.load_balancer])
        lb_arn = lbs["LoadBalancers"][0]["LoadBalancerArn"]
        listeners = await self.call("elbv2", "describe_listeners", role, LoadBalancerArn=lb_arn)
        listener = next((li for li in listeners["Listeners"] if li["Port"] == target.env.listener_port), None)
        if listener is None:
            raise CloudError(
                "ELBv2 DescribeListeners",
                f"load balancer {target.env.load_balancer} has no listener on port "
                f"{target.env.listener_port}",
            )
        rules = await self.call("elbv2", "describe_rules", role, ListenerArn=listener["ListenerArn"])
        for rule in rules["Rules"]:
            for action in rule.get("Actions", []):
                weights = _forward_weights(action)
                if weights and tg_arns & weights.keys():
                    is_rule = not rule.get("IsDefault", False)
                    arn = rule["RuleArn"] if is_rule else listener["ListenerArn"]
                    self._lb_arns[target.env.load_balancer] = lb_arn
                    return Route(arn, is_rule, weights, action)
        raise CloudError(
            "ELBv2 DescribeRules",
            f"no rule on {target.env.load_balancer}:{target.env.listener_port} forwards to "
            f"{', '.join(target.target_group(s) for s in target.slots)}",
        )

    async def slot_weights(self, target: Target, route: Route | None = None) -> dict[str, int]:
        route = route or await self.route(target)
        return {s: route.weights.get(await self.target_group_arn(target, s), 0) for s in target.slots}

    async def set_weights(self, target: Target, weights: dict[str, int], route: Route | None = None) -> None:
        """Move traffic between the slots in ONE listener/rule modification (all or nothing at the ALB)."""
        route = route or await self.route(target)
        groups = [
            {"TargetGroupArn": await self.target_group_arn(target, s), "Weight": int(w)}
            for s, w in weights.items()
        ]
        forward = {**route.action.get("ForwardConfig", {}), "TargetGroups": groups}
        action = {"Type": "forward", "ForwardConfig": forward}
        if route.is_rule:
            await self.call(
                "elbv2", "modify_rule", target.env.aws_role_arn, RuleArn=route.arn, Actions=[action]
            )
        else:
            await self.call(
                "elbv2",
                "modify_listener",
                target.env.aws_role_arn,
                ListenerArn=route.arn,
                DefaultActions=[action],
            )

    async def deregistration_delay(self, target: Target, slot: str) -> float:
        arn = await self.target_group_arn(target, slot)
        out = await self.call(
            "elbv2", "describe_target_group_attributes", target.env.aws_role_arn, TargetGroupArn=arn
        )
        for attr in out.get("Attributes", []):
            if attr["Key"] == "deregistration_delay.timeout_seconds":
                return float(attr["Value"])
        return 300.0  # AWS's default

    async def metric_dimensions(self, target: Target, slot: str) -> list[dict[str, str]]:
        from bot.cloud.metrics import alb_dimensions

        if target.env.load_balancer not in self._lb_arns:
            await self.route(target)
        return alb_dimensions(
            await self.target_group_arn(target, slot), self._lb_arns[target.env.load_balancer]
        )

    async def live_slot(self, target: Target) -> str:
        """The slot taking (most of) the traffic; the only slot for single-slot services."""
        if len(target.slots) == 1:
            return target.slots[0]
        route = await self.route(target)
        by_slot = {s: route.weights.get(await self.target_group_arn(target, s), 0) for s in target.slots}
        return max(target.slots, key=lambda s: (by_slot[s], s == target.slots[0]))


def _forward_weights(action: dict) -> dict[str, int]:
    if action.get("Type") != "forward":
        return {}
    groups = action.get("ForwardConfig", {}).get("TargetGroups")
    if groups:
        return {g["TargetGroupArn"]: int(g.get("Weight", 1)) for g in groups}
    if action.get("TargetGroupArn"):
        return {action["TargetGroupArn"]: 1}
    return {}
