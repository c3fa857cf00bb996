"""Who may do what: an action is allowed when one of the person's roles is allowed it in the environment;
every refusal is recorded in the audit trail with what it was about."""

from __future__ import annotations

from bot.app.storage import Storage
from bot.config.model import Settings
from bot.domain.errors import Forbidden
from bot.domain.model import Deployment

BUTTON_ACCESS = {
    "abort": "rollback",
    "promote": "promote",
    "retry_rollback": "rollback",
    "all_to_stable": "rollback",
}  # pause, resume, cancel: deploy
# A flag rollout's buttons: stopping it is the kill switch's role, everything else the flag role's.
FLAG_BUTTON_ACCESS = {"abort": "kill_flag", "kill": "kill_flag"}


def button_role(action: str, d: Deployment) -> str:
    """The access action a button on deployment `d` needs."""
    if d.strategy == "flag":
        return FLAG_BUTTON_ACCESS.get(action, "flag")
    return BUTTON_ACCESS.get(action, "deploy")


# Actions checked against another action's roles, with words of their own in a refusal.
SAME_ROLE_AS = {"freeze": "override_freeze", "emergency_rollback": "emergency"}
ACTION_WORDS = {
    "deploy": "deploy",
    "approve": "approve deployments",
    "promote": "promote",
    "rollback": "roll back",
    "lock": "lock or unlock services",
    "override_freeze": "override a freeze",
    "freeze": "freeze or unfreeze",  # the same role as override_freeze; the words of /deploy freeze
    "emergency": "deploy with --emergency",
    "emergency_rollback": "roll back with --emergency",
    "flag": "change feature flags",
    "kill_flag": "kill feature flags",
}


class Access:
    def __init__(self, settings: Settings, store: Storage):
        self.settings, self.store = settings, store

    async def check(
        self,
        action: str,
        env: str,
        user: str,
        roles: frozenset[str] | set[str],
        *,
        service: str | None = None,
        deployment: Deployment | None = None,
    ) -> None:
        """Raise Forbidden (and record the refusal, with what it was about) unless `roles` may do
        `action` in `env`."""
        policy = self.settings.environments[env].policy
        role_action = SAME_ROLE_AS.get(action, action)  # one role, words of their own
        if policy.allowed(role_action, roles):
            return
        needed = " or ".join(policy.needed_roles(role_action))
        words = ACTION_WORDS.get(action, action)
        message = (
            f"You need the {needed} role to {words} in {env}."
            if needed
            else f"Nobody may {words} in {env}: [environments.{env}.access] names no role for it or for deploy."
        )
        await self.refused(action, env, user, message, service=service, deployment=deployment)
        raise Forbidden(message, action, env)

    async def refused(
        self,
        action: str,
        env: str | None,
        user: str,
        reason: str,
        *,
        service: str | None = None,
        deployment: Deployment | None = None,
    ) -> None:
        """Record a refusal in the audit trail with everything known about it: the deployment it names (so
        `/deploy audit ID` shows it), the service and environment (so `deploybot audit --service` does)."""
        if deployment is not None:
            service, env = deployment.service, deployment.env
        details = {"action": action, "env": env, "service": service, "reason": reason}
        await self.store.record(deployment.id if deployment else None, user, "refused", details)
