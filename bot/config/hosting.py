"""What check-config says about where the bot runs: Heroku wipes a dyno's disk on every restart (at least
daily), so a SQLite store there loses the audit, the locks and every deployment in flight."""

from __future__ import annotations

from collections.abc import Mapping


def is_postgres(url: str) -> bool:
    return url.startswith(("postgres://", "postgresql://", "postgresql+"))


def hosting_report(env: Mapping[str, str], db: str | None = None) -> list[str]:
    """Warnings for the environment check-config runs in (`db`: the store it was given, if any)."""
    store = db or env.get("DATABASE_URL") or env.get("DEPLOYBOT_DB") or "deploybot.db"
    if env.get("DYNO") and not is_postgres(store):
        return [
            f"warning: running on Heroku (DYNO={env['DYNO']}) with the SQLite store {store}: a dyno's disk "
            "is wiped on every restart, taking the audit, the locks and in-flight deployments with it "
            "(attach Heroku Postgres and let the bot use DATABASE_URL; README: Running it)"
        ]
    return []
