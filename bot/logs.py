"""Logging set-up with a filter that masks every secret value, whatever logger or library logs it; as
text, or (`json`) one JSON object a line carrying the deployment, service and environment a line is about
when it is known: a deployment's task binds them (`bind_deployment`, a contextvar, so every line logged
while it runs, in any module, carries them)."""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

_deployment: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "deploybot_deployment", default=None
)


def bind_deployment(deployment_id: int, service: str, env: str) -> None:
    """From here on in this task (and the tasks it starts), log lines name this deployment."""
    _deployment.set({"deployment_id": deployment_id, "service": service, "environment": env})


def deployment_context() -> dict[str, Any]:
    return dict(_deployment.get() or {})


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time (UTC, ISO 8601), level, logger, message, the deployment's context,
    and the traceback as `exc_info` when there is one (after the secrets filter has masked it)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update(deployment_context())
        for key in ("deployment_id", "service", "environment"):  # extra={...} on the call wins
            if key in record.__dict__:
                line[key] = record.__dict__[key]
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exc_info"] = record.exc_text
        return json.dumps(line, default=str, ensure_ascii=False)


class RedactSecrets(logging.Filter):
    def __init__(self, secrets: list[str]):
        super().__init__()
        self.secrets = [s for s in secrets if len(s) >= 6]

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            message = record.getMessage()
            if any(s in message for s in self.secrets):
                for s in self.secrets:
                    message = message.replace(s, "[redacted]")
                record.msg, record.args = message, None
            if record.exc_info and not record.exc_text:
                record.exc_text = logging.Formatter().formatException(record.exc_info)
            if record.exc_text:
                for s in self.secrets:
                    record.exc_text = record.exc_text.replace(s, "[redacted]")
        return True


def setup_logging(secrets: list[str], level: str = "INFO", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactSecrets(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("botocore", "boto3", "urllib3", "aiohttp.access", "apscheduler"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
