"""What the CLI and the composition root share: the one-line usage error (exit 2) and the default
database path."""

from __future__ import annotations

import os


class UsageError(Exception):
    """A bad argument, a missing secret or setting, said in one line; the CLI exits 2."""


def db_default() -> str:
    return os.environ.get("DEPLOYBOT_DB", "deploybot.db")
