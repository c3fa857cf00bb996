"""The boto3 plumbing every AWS adapter shares: one client per (service, role), created once and shared
across threads; cross-account roles assumed and refreshed before their credentials expire; every call in a
worker thread with botocore's standard retry mode and endpoint_url from settings, so the same code talks to
AWS or to the sandbox's moto server. AWS failures surface as PlatformError with the operation and AWS's own
message."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

import boto3  # type: ignore[import-untyped]
import botocore.session  # type: ignore[import-untyped]
import botocore.utils  # type: ignore[import-untyped]
from botocore.config import Config  # type: ignore[import-untyped]
from botocore.exceptions import BotoCoreError, ClientError  # type: ignore[import-untyped]

from bot.app.ports import PlatformError
from bot.config.model import AwsSettings

Answer = dict[str, Any]  # a boto3 response: stays inside the adapters


def session() -> Any:
    """A boto3 session whose responses' timestamps are parsed by `aws_timestamp`."""
    core = botocore.session.get_session()
    core.get_component("response_parser_factory").set_parser_defaults(timestamp_parser=aws_timestamp)
    return boto3.session.Session(botocore_session=core)


def aws_timestamp(value: Any) -> datetime:
    """A response's timestamp, as botocore's own parser reads it (the same instant, timezone-aware) but
    without dateutil on the common forms: ECS answers epoch numbers (a DescribeServices of one service
    carries up to a hundred events, each with a time), and dateutil's local-timezone arithmetic on each
    was a tenth of the bot's CPU under a burst of deployments. Epochs come back in UTC (botocore: the local
    zone), ISO 8601 as written (without a zone: UTC); anything else (RFC 822 headers) goes to botocore's parser."""
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    if isinstance(value, str):
        try:
            return datetime.fromtimestamp(float(value), UTC)
        except (ValueError, OverflowError, OSError):
            pass
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
    return botocore.utils.parse_timestamp(value)  # type: ignore[no-any-return]


class Caller(Protocol):
    """What an AWS adapter needs of Aws: one call (tests script it)."""

    async def call(
        self, api: str, operation: str, role_arn: str | None = None, /, **params: Any
    ) -> Answer: ...


class CallObserver(Protocol):
    """Told of every call (bot.adapters.telemetry.Telemetry): its operation ("ECS DescribeServices"),
    wall seconds and AWS's error code (None: it succeeded)."""

    def aws_call(self, operation: str, seconds: float, error_code: str | None) -> None: ...


class Aws:
    """One per process, shared by the ECS platform and the CloudWatch metrics."""

    def __init__(self, aws: AwsSettings, observer: CallObserver | None = None, *, freeze: bool = False):
        """`freeze`: move each new client's objects out of the garbage collector's generations (a long-
        running bot: see client())."""
        self.aws = aws
        self.observer = observer
        self.freeze = freeze
        self._config = Config(
            region_name=aws.region,
            retries={"mode": "standard", "max_attempts": aws.max_attempts},
            connect_timeout=aws.connect_timeout_seconds,
            read_timeout=aws.read_timeout_seconds,
        )
        self._clients: dict[tuple[str, str | None], Any] = {}  # boto3 clients are untyped
        self._lock = threading.Lock()
        self._role_credentials: dict[str, tuple[float, dict[str, str]]] = {}

    def client(self, service: str, role_arn: str | None = None) -> Any:
        with self._lock:
            key = (service, role_arn)
            expires, _ = self._role_credentials.get(role_arn or "", (float("inf"), {}))
            if key not in self._clients or expires - time.time() < 300:
                kwargs: dict[str, Any] = {"config": self._config, "endpoint_url": self.aws.endpoint_url}
                if role_arn:
                    kwargs.update(self._assume(role_arn))
                self._clients[key] = session().client(service, **kwargs)
                if self.freeze:
                    # A client is some 40,000 objects (botocore's models) that live as long as the
                    # process: frozen, a full collection no longer walks them (0.1-0.5 s of the event
                    # loop each time on a busy machine).
                    gc.freeze()
            return self._clients[key]

    def _assume(self, role_arn: str) -> dict[str, str]:
        """Cross-account environments: credentials of the environment's role, refreshed before expiry."""
        sts = session().client("sts", config=self._config, endpoint_url=self.aws.endpoint_url)
        creds = sts.assume_role(RoleArn=role_arn, RoleSessionName="deploybot")["Credentials"]
        values = {
            "aws_access_key_id": creds["AccessKeyId"],
            "aws_secret_access_key": creds["SecretAccessKey"],
            "aws_session_token": creds["SessionToken"],
        }
        self._role_credentials[role_arn] = (creds["Expiration"].timestamp(), values)
        return values

    async def call(self, api: str, operation: str, role_arn: str | None = None, /, **params: Any) -> Answer:
        """One AWS API call, off the event loop, with AWS errors turned into PlatformError."""

        def run() -> Answer:
            method: Callable[..., Answer] = getattr(self.client(api, role_arn), operation)
            return method(**params)

        name = f"{api.upper()} {''.join(p.title() for p in operation.split('_'))}"
        began, code = time.monotonic(), None
        try:
            return await asyncio.to_thread(run)
        except ClientError as exc:
            err = exc.response.get("Error", {})
            code = str(err.get("Code", "Error"))
            raise PlatformError(
                name, f"{err.get('Code', 'Error')}: {err.get('Message', '')}".strip(), err.get("Code")
            ) from None
        except BotoCoreError as exc:
            code = type(exc).__name__
            raise PlatformError(name, str(exc)) from None
        finally:
            if self.observer is not None:
                self.observer.aws_call(name, time.monotonic() - began, code)
