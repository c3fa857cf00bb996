"""Store locations: a SQLite path or a PostgreSQL URL, told apart, and a URL's password kept out of every
log line, error and Slack message (no psycopg needed to read them)."""

from __future__ import annotations

from urllib.parse import unquote, urlsplit, urlunsplit

SCHEMES = ("postgresql://", "postgres://")  # postgres:// is what Heroku's DATABASE_URL says


def is_postgres_url(location: str) -> bool:
    return str(location).startswith(SCHEMES)


def password(location: str) -> str | None:
    """The URL's password (to be redacted wherever it could appear), None for none or a SQLite path."""
    if not is_postgres_url(location):
        return None
    try:
        secret = urlsplit(location).password
    except ValueError:
        return None
    return unquote(secret) if secret else None


def secrets(location: str) -> list[str]:
    """What to keep out of logs: the password as the URL spells it and as it is (percent-decoded)."""
    try:
        raw = urlsplit(location).password if is_postgres_url(location) else None
    except ValueError:
        raw = None
    return list(dict.fromkeys(s for s in (raw, password(location)) if s))


def redact(location: str) -> str:
    """The location with a URL's password replaced by `***`; a SQLite path as it is."""
    if not is_postgres_url(location):
        return location
    try:
        parts = urlsplit(location)
        if parts.password is None:
            return location
    except ValueError:
        return location.split("://", 1)[0] + "://***"
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


def scrub(text: str, location: str) -> str:
    """`text` (an error's message) without the location's password, should a driver have quoted it."""
    for secret in secrets(location):
        text = text.replace(secret, "***")
    return text
