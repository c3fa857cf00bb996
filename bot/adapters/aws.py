"""The boto3 plumbing every AWS adapter shares: one client per (service, role), created once and shared
across threads; cross-account roles assumed and refreshed before their credentials expire; every call in a
worker thread, or in a worker process (`[aws] processes`), with botocore's standard retry mode and
endpoint_url from settings, so the same code talks to AWS or to the sandbox's moto server. AWS failures
surface as PlatformError with the operation and AWS's own message.

Why a worker process: boto3 is CPU work (building, signing and parsing every call) under the GIL. A burst of
deployments starting at once had the bot's worker threads parsing AWS answers for some 40% of the GIL's
time, and Slack's acks of the people typing /deploy waited behind them (benchmarks/ack_latency.py). In a
process of their own, the calls leave the event loop its GIL."""

from __future__ import annotations

import asyncio
import gc
import os
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, Protocol

import boto3  # type: ignore[import-untyped]
import botocore.session  # type: ignore[import-untyped]
import botocore.utils  # type: ignore[import-untyped]
from botocore.config import Config  # type: ignore[import-untyped]
from botocore.exceptions import BotoCoreError, ClientError  # type: ignore[import-untyped]

from bot.adapters.aws_worker import WorkerDied, Workers
from bot.app.foreground import FOREGROUND
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
        self._pool: Workers | None = None

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
        name = f"{api.upper()} {''.join(p.title() for p in operation.split('_'))}"
        await FOREGROUND.background_turn()
        began, code = time.monotonic(), None
        try:
            if self.aws.processes:
                outcome = await self._in_process(api, operation, role_arn, params)
            else:
                outcome = await asyncio.to_thread(
                    lambda: _outcome(self.client(api, role_arn), operation, params)
                )
            kind, first, second = outcome
            if kind == "ok":
                return first  # type: ignore[no-any-return]
            code = first
            if kind == "client":
                raise PlatformError(name, f"{first}: {second}".strip(), first)
            raise PlatformError(name, second)
        finally:
            if self.observer is not None:
                self.observer.aws_call(name, time.monotonic() - began, code)

    async def _in_process(
        self, api: str, operation: str, role_arn: str | None, params: dict[str, Any]
    ) -> Outcome:
        try:
            return await asyncio.wrap_future(self._workers().submit(api, operation, role_arn, params))  # type: ignore[no-any-return]
        except WorkerDied:
            # Killed or out of memory mid-call: whether AWS did it is unknown, as after a lost connection.
            # The next call gets a new worker; this one is an error its caller handles.
            return "error", "WorkerDied", "the AWS worker process died during the call"

    def _workers(self) -> Workers:
        with self._lock:
            if self._pool is None:
                self._pool = Workers(self.aws.processes, _worker_start, (self.aws, _aws_environment()))
            return self._pool

    def start(self) -> None:
        """Start the worker processes now (`[aws] processes`), not at the first deployment's first call:
        called first thing, while this process has one thread, they are forks of it."""
        if self.aws.processes:
            self._workers().submit(None, "ready", None, {}).result(timeout=60)

    def close(self) -> None:
        """Stop the worker processes (calls in flight finish first); a later call starts new ones."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()


# ("ok", answer, None) | ("client", AWS's error code, its message) | ("error", a name, what happened):
# picklable, so a worker process can send it back (botocore's exceptions do not all survive pickling)
Outcome = tuple[str, Any, Any]


def _outcome(client: Any, operation: str, params: dict[str, Any]) -> Outcome:
    try:
        return "ok", getattr(client, operation)(**params), None
    except ClientError as exc:
        err = exc.response.get("Error", {})
        return "client", str(err.get("Code", "Error")), str(err.get("Message", ""))
    except BotoCoreError as exc:
        return "error", type(exc).__name__, str(exc)


def _aws_environment() -> dict[str, str | None]:
    """This process's AWS_* variables (credentials, profile, region) as they are now, for a new worker:
    the forkserver it starts from has the environment of its own start."""
    keys = {k for k in os.environ if k.startswith("AWS_")} | set(_AWS_KEYS)
    return {k: os.environ.get(k) for k in keys}


_AWS_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE")


def _worker_start(settings: AwsSettings, environment: dict[str, str | None]) -> Callable[..., Outcome]:
    """In a worker process: its clients, made with the bot's AWS_* environment of the worker's start."""
    for key, value in environment.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    aws = Aws(replace(settings, processes=0), freeze=True)

    def call(api: str | None, operation: str, role_arn: str | None, params: dict[str, Any]) -> Outcome:
        if api is None:  # start(): the worker is up
            return "ok", operation, None
        return _outcome(aws.client(api, role_arn), operation, params)

    return call
