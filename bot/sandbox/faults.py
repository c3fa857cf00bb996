"""Fault injection for the sandbox's AWS: a WSGI middleware in front of moto's server that fails some of the
bot's AWS calls with errors shaped as AWS sends them, so the real botocore parser raises the ClientError a
real outage would (ECS JSON, ELBv2 query XML, CloudWatch JSON in its query-compatible form), or holds a call
past the bot's read timeout (botocore's ReadTimeoutError), or adds latency.

Whose calls: every request signed with an access key other than the sandbox's own (the emulators,
provisioning and snapshots use `exempt_keys`), so the bot's key and the credentials it gets from STS
AssumeRole are both faulted. Which service: the SigV4 credential scope's (`Credential=KEY/DATE/REGION/
SERVICE/aws4_request`); which operation: `X-Amz-Target`'s part after the dot (JSON protocols) or the form's
`Action=` (query protocol). botocore here speaks JSON to CloudWatch (the first of its protocols botocore
supports; moto has no CBOR), so there is no CBOR shape.

A rule lasts `seconds` of the sandbox's (virtual) clock, or until cleared; each has its own seeded
random.Random, so a run with the same seeds fails the same attempts. botocore retries (standard mode): a
rule counts attempts, and a rate of 1.0 fails every one of them. With no rule active a request goes
straight to moto (no parsing, no lock)."""

from __future__ import annotations

import io
import itertools
import json
import random
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs
from xml.sax.saxutils import escape

# The names a rule uses -> the SigV4 signing names of the services (ELBv2 signs as elasticloadbalancing).
SERVICES = {"ecs": "ecs", "elbv2": "elasticloadbalancing", "cloudwatch": "monitoring"}
SERVICE_NAMES = {signing: name for name, signing in SERVICES.items()}
ERRORS = ("500", "503", "throttle", "timeout")
KEYS = ("service", "operations", "rate", "error", "seconds", "latency_ms", "seed")
TIMEOUT_MARGIN = 1.0  # a "timeout" holds a request this long past the bot's read timeout

# (HTTP status, code, fault type) per error; the JSON protocols name exceptions per service.
_QUERY_CODES = {
    "500": (500, "InternalFailure", "Receiver"),
    "503": (503, "ServiceUnavailable", "Receiver"),
    "throttle": (400, "Throttling", "Sender"),
    "timeout": (504, "RequestTimeout", "Receiver"),
}
_JSON_CODES = {
    "ecs": {
        "500": "ServerException",
        "503": "ServiceUnavailableException",
        "throttle": "ThrottlingException",
        "timeout": "RequestTimeoutException",
    },
    # CloudWatch is awsQueryCompatible: its JSON __type, and the query code in x-amzn-query-error, which
    # botocore reports as the error's Code (InternalServiceFault is the modeled 500 of CloudWatch).
    "cloudwatch": {
        "500": "InternalServiceFault",
        "503": "ServiceUnavailableException",
        "throttle": "ThrottlingException",
        "timeout": "RequestTimeoutException",
    },
}
_QUERY_COMPATIBLE_CODES = {"InternalServiceFault": "InternalServiceError"}
_OPERATION = re.compile(r"[A-Z][A-Za-z0-9]*")
_CREDENTIAL = re.compile(r"Credential=([^/,\s]+)/[^/,\s]*/[^/,\s]*/([^/,\s]+)/aws4_request")

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
WsgiApp = Callable[[Environ, StartResponse], Iterable[bytes]]


# ------------------------------------------------------------------------------------------------ rules


@dataclass
class FaultRule:
    id: int
    service: str  # ecs | elbv2 | cloudwatch | *
    operations: tuple[str, ...] | None
    rate: float
    error: str
    seconds: float | None
    latency_ms: float
    seed: int
    expires_at: float | None  # sandbox clock time; None: until cleared
    rng: random.Random = field(repr=False)
    failed: int = 0
    passed: int = 0

    def matches(self, service: str, operation: str | None) -> bool:
        if self.service != "*" and self.service != service:
            return False
        return self.operations is None or operation in self.operations

    def describe(self, now: float) -> dict[str, Any]:
        return {
            "id": self.id,
            "service": self.service,
            "operations": list(self.operations) if self.operations is not None else None,
            "rate": self.rate,
            "error": self.error,
            "seconds": self.seconds,
            "remaining_seconds": None if self.expires_at is None else max(0.0, self.expires_at - now),
            "latency_ms": self.latency_ms,
            "seed": self.seed,
            "failed": self.failed,
            "passed": self.passed,
        }


def _number(body: Mapping[str, Any], key: str, default: float | None) -> float | None:
    value = body.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{key} must be a number, got {value!r}")
    return float(value)


def _operations(value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = [v for v in value.split(",") if v]
    if not isinstance(value, list | tuple) or not value or not all(isinstance(v, str) for v in value):
        raise ValueError(f"operations must be a non-empty list of AWS operation names, got {value!r}")
    for name in value:
        if not _OPERATION.fullmatch(name):
            raise ValueError(
                f"operations are AWS operation names such as UpdateService or ModifyRule, got {name!r}"
            )
    return tuple(value)


def parse_rule(body: Any) -> dict[str, Any]:
    """A fault request's fields, checked (ValueError says what is wrong); defaults: rate 1, error 500, no
    end, no latency, a random seed (reported, so the run can be replayed)."""
    if not isinstance(body, Mapping):
        raise ValueError(f"a fault is a JSON object, got {body!r}")
    unknown = sorted(set(body) - set(KEYS))
    if unknown:
        raise ValueError(f"unknown key {unknown[0]!r}; a fault has {', '.join(KEYS)}")
    service = body.get("service")
    if service not in (*SERVICES, "*"):
        raise ValueError(f"service must be one of {', '.join(SERVICES)} or *, got {service!r}")
    error = str(body.get("error", "500"))
    if error not in ERRORS:
        raise ValueError(f"error must be one of {', '.join(ERRORS)}, got {body.get('error')!r}")
    rate = _number(body, "rate", 1.0)
    if rate is None or not 0 <= rate <= 1:
        raise ValueError(f"rate must be within 0..1, got {body.get('rate')!r}")
    seconds = _number(body, "seconds", None)
    if seconds is not None and seconds <= 0:
        raise ValueError(
            f"seconds must be > 0 (omit it for a fault that lasts until cleared), got {seconds:g}"
        )
    latency = _number(body, "latency_ms", 0.0) or 0.0
    if latency < 0:
        raise ValueError(f"latency_ms must be >= 0, got {latency:g}")
    seed = body.get("seed")
    if seed is None:
        seed = random.SystemRandom().randrange(2**31)
    elif isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    return {
        "service": service,
        "operations": _operations(body.get("operations")),
        "rate": rate,
        "error": error,
        "seconds": seconds,
        "latency_ms": latency,
        "seed": seed,
    }


# ------------------------------------------------------------------------------------------------ errors


def error_response(
    error: str, service: str, operation: str | None, environ: Environ
) -> tuple[str, list[tuple[str, str]], bytes]:
    """(status line, headers, body) of an AWS error in the request's protocol: JSON when it came with
    X-Amz-Target (with x-amzn-query-error for query-compatible services), query XML otherwise."""
    status, query_code, kind = _QUERY_CODES[error]
    request_id = str(uuid.uuid4())
    message = f"deploybot sandbox fault injection: {error} for {service} {operation or ''}".rstrip()
    headers = [("x-amzn-RequestId", request_id)]
    if environ.get("HTTP_X_AMZ_TARGET"):
        code = _JSON_CODES.get(service, _JSON_CODES["ecs"])[error]
        content_type = environ.get("CONTENT_TYPE") or "application/x-amz-json-1.1"
        headers.append(("Content-Type", content_type))
        if str(environ.get("HTTP_X_AMZN_QUERY_MODE", "")).lower() == "true":
            headers.append(("x-amzn-query-error", f"{_QUERY_COMPATIBLE_CODES.get(code, query_code)};{kind}"))
        body = json.dumps({"__type": code, "message": message}).encode()
    else:
        headers.append(("Content-Type", "text/xml"))
        body = (
            "<ErrorResponse><Error>"
            f"<Type>{kind}</Type><Code>{query_code}</Code><Message>{escape(message)}</Message>"
            f"</Error><RequestId>{request_id}</RequestId></ErrorResponse>"
        ).encode()
    headers.append(("Content-Length", str(len(body))))
    return f"{status} {HTTPStatus(status).phrase}", headers, body


# ------------------------------------------------------------------------------------------------ requests


def identify(environ: Environ) -> tuple[str, str] | None:
    """(access key id, signing service) of a SigV4-signed request; None when it is not signed."""
    found = _CREDENTIAL.search(str(environ.get("HTTP_AUTHORIZATION", "")))
    return (found.group(1), found.group(2)) if found else None


def operation_of(environ: Environ) -> str | None:
    """The AWS operation: X-Amz-Target's part after the dot, or the query protocol's Action (in the form
    body, which is read and put back for moto, or in the query string)."""
    target = environ.get("HTTP_X_AMZ_TARGET")
    if target:
        return str(target).rsplit(".", 1)[-1]
    action = parse_qs(str(environ.get("QUERY_STRING", ""))).get("Action")
    if action:
        return action[0]
    if str(environ.get("CONTENT_TYPE", "")).startswith("application/x-www-form-urlencoded"):
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length > 0 else b""
        environ["wsgi.input"] = io.BytesIO(body)
        action = parse_qs(body.decode(errors="replace")).get("Action")
        if action:
            return action[0]
    return None


class FaultInjector:
    """The active fault rules, and the WSGI middleware that applies them (wrap()). Thread-safe: moto's
    server handles each request in a thread of its own. `now` reads the sandbox clock; a "timeout" holds a
    request `timeout_seconds` of wall time (the bot's read timeout plus a margin), or until clear()."""

    def __init__(
        self,
        now: Callable[[], float],
        *,
        exempt_keys: Iterable[str] = ("sandbox",),
        timeout_seconds: float = 30.0 + TIMEOUT_MARGIN,
    ):
        self.now = now
        self.exempt_keys = frozenset(exempt_keys)
        self.timeout_seconds = timeout_seconds
        self._rules: list[FaultRule] = []
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._release = threading.Event()  # set by clear(): held requests are let go

    # --- the rules --------------------------------------------------------------------------------------
    def add(self, body: Any) -> dict[str, Any]:
        """Add a rule from a request body (ValueError if it is bad); returns it as listed."""
        fields = parse_rule(body)
        now = self.now()
        seconds = fields["seconds"]
        with self._lock:
            rule = FaultRule(
                id=next(self._ids),
                expires_at=None if seconds is None else now + seconds,
                rng=random.Random(fields["seed"]),
                **fields,
            )
            self._rules = [*self._rules, rule]  # a new list: the lock-free fast path reads the old one whole
            return rule.describe(now)

    def rules(self) -> list[dict[str, Any]]:
        """The active rules (expired ones are dropped), with their counts of attempts failed and passed."""
        now = self.now()
        with self._lock:
            self._expire(now)
            return [r.describe(now) for r in self._rules]

    def clear(self) -> int:
        """Remove every rule and let go of the requests a timeout holds; returns how many rules there were."""
        with self._lock:
            count, self._rules = len(self._rules), []
            release, self._release = self._release, threading.Event()
        release.set()
        return count

    def _expire(self, now: float) -> None:
        if any(r.expires_at is not None and r.expires_at <= now for r in self._rules):
            self._rules = [r for r in self._rules if r.expires_at is None or r.expires_at > now]

    def decide(self, service: str, operation: str | None) -> tuple[float, FaultRule | None]:
        """For one attempt: the latency (ms) of every matching rule added up, and the first matching rule
        whose dice say fail (each matching rule rolls its own and counts the attempt)."""
        latency, failing = 0.0, None
        with self._lock:
            self._expire(self.now())
            for rule in self._rules:
                if not rule.matches(service, operation):
                    continue
                latency += rule.latency_ms
                if rule.rng.random() < rule.rate:
                    rule.failed += 1
                    if failing is None:
                        failing = rule
                else:
                    rule.passed += 1
        return latency, failing

    # --- the middleware ---------------------------------------------------------------------------------
    def wrap(self, app: WsgiApp) -> WsgiApp:
        def middleware(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
            if not self._rules:
                return app(environ, start_response)
            signed = identify(environ)
            if signed is None or signed[0] in self.exempt_keys:
                return app(environ, start_response)
            service = SERVICE_NAMES.get(signed[1], signed[1])
            operation = operation_of(environ)
            latency_ms, rule = self.decide(service, operation)
            release = self._release
            if latency_ms > 0:
                time.sleep(latency_ms / 1000)
            if rule is None:
                return app(environ, start_response)
            if rule.error == "timeout":
                release.wait(self.timeout_seconds)
            status, headers, body = error_response(rule.error, service, operation, environ)
            start_response(status, headers)
            return [body]

        return middleware
