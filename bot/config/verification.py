"""[environments.NAME] verify_seconds and rollback_during_verify: how long a succeeded deployment's live
version is watched (bot.app.verification) and whether a regression then rolls back by itself."""

from __future__ import annotations

from typing import Any

from bot.config.model import Target
from bot.config.tables import ConfigError, _Table

# The watched period after success when an environment does not say: 15 minutes in production, none
# elsewhere (staging's deploys are watched by the people trying them).
DEFAULT_VERIFY_SECONDS = {"production": 900.0}


def verification_settings(t: _Table, env_name: str) -> dict[str, Any]:
    """The Environment fields of one [environments.NAME] table (ConfigError naming the key when wrong)."""
    seconds = float(
        t.get(
            "verify_seconds",
            (int, float),
            DEFAULT_VERIFY_SECONDS.get(env_name, 0.0),
            lambda v: not isinstance(v, bool) and 0 <= v <= 7 * 86400,
            "a number of seconds from 0 to 604800 (a week)",
        )
    )
    automatic = t.get("rollback_during_verify", bool, False)
    if automatic and seconds == 0:
        raise ConfigError(
            t.path,
            t.key("rollback_during_verify"),
            "is true but verify_seconds is 0: there is no verification to roll back during "
            "(set verify_seconds, e.g. 900)",
        )
    return {"verify_seconds": seconds, "rollback_during_verify": automatic}


def defers_scale_down(target: Target) -> bool:
    """Whether the old slot is kept warm through verification and scaled down when it ends, instead of by
    the plan's last step (so the keep-warm period covers the verification): where a regression rolls back
    by itself (rollback_during_verify), on a two-slot strategy."""
    env = target.env
    return (
        env.rollback_during_verify
        and env.verify_seconds > 0
        and len(target.slots) == 2
        and target.strategy != "rolling"
    )
