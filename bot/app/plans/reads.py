"""Reads the steps share: a version from an image reference, and what is wrong with a slot's targets."""

from __future__ import annotations

from bot.app.plans.steps import StepContext


def image_tag(image: str) -> str:
    """'registry/web:v2' -> 'v2' (a digest or untagged image gives the whole reference)."""
    name = image.rsplit("/", 1)[-1]
    return name.split(":", 1)[1] if ":" in name else image


async def unhealthy_targets(ctx: StepContext, slot: str) -> str | None:
    """None when the slot's targets are all healthy and enough; else what is wrong, in words."""
    health = await ctx.platform.target_health(ctx.target, slot)
    wanted = int(ctx.data.get("desired_count", 0))
    healthy = [t for t in health if t.state == "healthy"]
    bad = [t for t in health if t.state not in ("healthy", "draining")]
    if not bad and len(healthy) >= wanted:
        return None
    reasons = sorted({t.reason or t.state for t in bad})
    return (
        f"{len(bad)} of {len(health)} targets unhealthy in {ctx.target.target_group(slot)}"
        f"{' (' + ', '.join(reasons) + ')' if reasons else ''}; {len(healthy)}/{wanted} healthy"
    )
