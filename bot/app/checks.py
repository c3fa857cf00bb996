"""The checklist's automatic items: each looks at AWS, an HTTP endpoint or the store and answers
(done, evidence) — the evidence is what people see on the deployment's message and in the audit."""

from __future__ import annotations

import aiohttp

from bot.adapters.store.aio import AsyncStore
from bot.cloud import Cloud, CloudError
from bot.config.model import Target
from bot.domain.checklist import Item
from bot.domain.model import Deployment
from bot.strategies.rolling import image_tag


async def run_check(
    item: Item, d: Deployment, target: Target, cloud: Cloud, store: AsyncStore
) -> tuple[bool, str]:
    """Never raises: an AWS or HTTP failure is a failed check whose evidence says what happened."""
    try:
        if item.check == "rollback_target":
            return await _rollback_target(target, cloud)
        if item.check == "no_alarms":
            return await _no_alarms(item, target, cloud)
        if item.check == "promoted_from":
            return await _promoted_from(item, d, store)
        if item.check == "targets_healthy":
            return await _targets_healthy(target, cloud)
        if item.check == "http_status":
            return await _http_status(item, d, target)
    except CloudError as exc:
        return False, str(exc)
    return False, f"unknown check {item.check!r}"


async def _rollback_target(target: Target, cloud: Cloud) -> tuple[bool, str]:
    slot = await cloud.live_slot(target)
    svc = await cloud.service(target, slot)
    if not svc.get("taskDefinition") or svc.get("desiredCount", 0) == 0:
        return False, f"{target.ecs_service(slot)} runs nothing: there is no version to roll back to"
    td = await cloud.task_definition(target, svc["taskDefinition"])
    images = [c["image"] for c in td["containerDefinitions"] if c["name"] == target.service.container]
    if not images:
        return False, f"{svc['taskDefinition']} has no container {target.service.container!r}"
    return True, f"{image_tag(images[0])} runs now on {target.ecs_service(slot)}: rollback returns to it"


async def _no_alarms(item: Item, target: Target, cloud: Cloud) -> tuple[bool, str]:
    names = [
        a.format(service=target.service.name, env=target.env.name) for a in item.params.get("alarms", [])
    ]
    if not names:
        return False, "no CloudWatch alarms are configured for this item: monitoring is not in place"
    out = await cloud.call("cloudwatch", "describe_alarms", target.env.aws_role_arn, AlarmNames=names)
    found = {a["AlarmName"]: a for a in out.get("MetricAlarms", []) + out.get("CompositeAlarms", [])}
    missing = [n for n in names if n not in found]
    if missing:
        return (
            False,
            f"alarm{'s' if len(missing) > 1 else ''} {', '.join(missing)} not found: create them first",
        )
    firing = [
        f"{n} ({found[n].get('StateReason', '')[:120]})" for n in names if found[n]["StateValue"] == "ALARM"
    ]
    if firing:
        return False, "in ALARM: " + "; ".join(firing)
    return (
        True,
        f"{len(names)} alarm{'s' if len(names) > 1 else ''} watching, none in ALARM: {', '.join(names)}",
    )


async def _promoted_from(item: Item, d: Deployment, store: AsyncStore) -> tuple[bool, str]:
    source = item.params.get("source_env", "staging")
    last = await store.last_succeeded(d.service, source)
    if last is None:
        return False, f"{d.service} has never succeeded in {source}"
    if d.version and last.version != d.version:
        return False, f"{source} last succeeded with {last.version} (#{last.id}), not {d.version}"
    return True, f"{last.version} succeeded in {source} (#{last.id})"


async def _targets_healthy(target: Target, cloud: Cloud) -> tuple[bool, str]:
    slot = await cloud.live_slot(target)
    health = await cloud.target_health(target, slot)
    bad = [t for t in health if t.state != "healthy"]
    if not health:
        return False, f"no targets registered in {target.target_group(slot)}"
    if bad:
        return False, f"{len(bad)} of {len(health)} targets not healthy in {target.target_group(slot)}"
    return True, f"{len(health)} targets healthy in {target.target_group(slot)}"


async def _http_status(item: Item, d: Deployment, target: Target) -> tuple[bool, str]:
    url = str(item.params.get("url", "")).format(service=d.service, env=d.env, version=d.version or "")
    want = int(item.params.get("expect_status", 200))
    expect_body = item.params.get("expect_body")
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s, s.get(url) as resp:
            body = await resp.text()
    except (aiohttp.ClientError, TimeoutError) as exc:
        return False, f"GET {url}: {type(exc).__name__}"
    if resp.status != want or (expect_body and str(expect_body) not in body):
        return False, f"GET {url} → {resp.status} {body[:100]!r} (wanted {want})"
    return True, f"GET {url} → {resp.status}"
