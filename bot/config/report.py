"""What check-config says about a valid config beyond "OK": access per environment."""

from __future__ import annotations

from bot.config.model import Settings


def access_report(s: Settings) -> list[str]:
    """What check-config says about access, per environment: the actions its access table does not list
    (they need the roles of deploy), and warnings for an environment open to anyone or closed to all."""
    lines = []
    for name, environment in s.environments.items():
        policy = environment.policy
        if policy.access is None:
            lines.append(
                f"warning: environments.{name} has no access table: anyone may do anything there "
                f"(add [environments.{name}.access] to restrict it)"
            )
            continue
        implicit = policy.implicit_actions()
        if "deploy" not in policy.access:
            lines.append(
                f"warning: environments.{name}.access lists no deploy roles: nobody may deploy there, nor "
                f"{', '.join(implicit) or 'anything else'} (unlisted actions need deploy's roles)"
            )
        elif implicit:
            roles = " or ".join(policy.access["deploy"]) or "nobody"
            lines.append(
                f"environments.{name}.access: {', '.join(implicit)} not listed: covered by deploy ({roles})"
            )
        else:
            lines.append(f"environments.{name}.access: every action listed")
    return lines
