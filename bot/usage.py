"""What the CLI and the composition root share: the one-line usage error (exit 2) and the default
database path."""

from __future__ import annotations

import os


class UsageError(Exception):
    """A bad argument, a missing secret or setting, said in one line; the CLI exits 2."""


def db_default() -> str:
    """$DEPLOYBOT_DB, else $DATABASE_URL when it names PostgreSQL (Heroku's), else deploybot.db (SQLite)."""
    url = os.environ.get("DATABASE_URL", "")
    fallback = url if url.startswith(("postgresql://", "postgres://")) else "deploybot.db"
    return os.environ.get("DEPLOYBOT_DB", fallback)
