"""Feature flags served over OFREP, the OpenFeature Remote Evaluation Protocol (open-feature/protocol,
service/openapi.yaml): `POST /ofrep/v1/evaluate/flags/{key}` evaluates one flag, `POST
/ofrep/v1/evaluate/flags` every flag of the environment, with an ETag and If-None-Match → 304.

The API key (`Authorization: Bearer KEY`, or `X-API-Key: KEY`) names the environment. Answers come from
that environment's in-memory snapshot (FlagBook.snapshot), never from the database per request.

Status codes, as the spec and the OFREP provider read them: 200 an evaluation; 400 a body that is not a
JSON object (PARSE_ERROR), a context that is not one (INVALID_CONTEXT), a split flag asked without a
targetingKey (TARGETING_KEY_MISSING); 404 an undeclared flag (FLAG_NOT_FOUND); 401 no or a wrong key; 413
a body over MAX_BODY_BYTES; 503 an environment with no snapshot yet. Any input gets one of these, never a
500 (a bug in evaluation gets the spec's 500 body, and a log line without the request's content)."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web

from bot.domain.flags import (
    FLAG_NOT_FOUND,
    INVALID_CONTEXT,
    PARSE_ERROR,
    FlagSnapshot,
    context_error,
)

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024  # an evaluation context is a few attributes; this is generous
SINGLE = "/ofrep/v1/evaluate/flags/{key:.+}"  # `.+`: a key with a slash is still answered FLAG_NOT_FOUND
BULK = "/ofrep/v1/evaluate/flags"
_JSON = "application/json"
_UNAUTHORIZED = b'{"errorDetails":"a valid API key is required (Authorization: Bearer KEY or X-API-Key)"}'
_AUTH_HEADERS = {"WWW-Authenticate": 'Bearer realm="ofrep"'}


class _BadRequest(Exception):
    def __init__(self, code: str, details: str, status: int = 400):
        super().__init__(details)
        self.code, self.details, self.status = code, details, status


def mount_ofrep(
    app: web.Application,
    snapshot: Callable[[str], FlagSnapshot | None],
    keys: Mapping[str, str],
) -> None:
    """Add the two OFREP routes to `app`. `snapshot`: the environment's flags now (FlagBook.snapshot);
    `keys`: environment -> its API key (Secrets.ofrep_keys; an environment without one is not served)."""
    server = _Ofrep(snapshot, keys)
    app.router.add_post(BULK, server.bulk)
    app.router.add_post(SINGLE, server.single)
    served = sorted(env for env, key in keys.items() if key)
    log.info(
        "OFREP: serving the flags of %s",
        ", ".join(served) if served else "no environment (set DEPLOYBOT_OFREP_KEY_<ENV> to serve one)",
    )


class _Ofrep:
    def __init__(self, snapshot: Callable[[str], FlagSnapshot | None], keys: Mapping[str, str]):
        self.snapshot = snapshot
        # Keys are compared as SHA-256 digests: the same length whatever was sent, so neither the
        # comparison's time nor its length tells anything about a key.
        self.keys = [(env, _digest(key)) for env, key in keys.items() if key]
        seen: dict[bytes, str] = {}
        for env, digest in self.keys:
            if digest in seen:
                log.warning(
                    "OFREP: environments %s and %s have the same API key; it is served as %s",
                    seen[digest],
                    env,
                    seen[digest],
                )
            seen.setdefault(digest, env)

    # ------------------------------------------------------------------------------------- routes

    async def single(self, request: web.Request) -> web.Response:
        snap = self._authorized(request)
        if isinstance(snap, web.Response):
            return snap
        key = request.match_info["key"]
        try:
            context = await _context(request)
            answer = snap.evaluate(key, context)
        except _BadRequest as bad:
            return _json({"key": key, "errorCode": bad.code, "errorDetails": bad.details}, bad.status)
        except Exception:
            return _internal("evaluating a flag")
        if answer.ok:
            return _json(answer.to_ofrep())
        return _json(answer.to_ofrep(), 404 if answer.error_code == FLAG_NOT_FOUND else 400)

    async def bulk(self, request: web.Request) -> web.Response:
        snap = self._authorized(request)
        if isinstance(snap, web.Response):
            return snap
        try:
            context = await _context(request)
            problem = context_error(context)
            if problem is not None:
                raise _BadRequest(INVALID_CONTEXT, problem)
            etag = _bulk_etag(snap.etag, context)
            if _matches(request.headers.get("If-None-Match"), etag):
                return web.Response(status=304, headers={"ETag": etag})
            flags = [e.to_ofrep() for e in snap.evaluate_all(context)]
        except _BadRequest as bad:
            return _json({"errorCode": bad.code, "errorDetails": bad.details}, bad.status)
        except Exception:
            return _internal("evaluating the flags")
        return _json({"flags": flags}, headers={"ETag": etag})

    # ------------------------------------------------------------------------------------- pieces

    def _authorized(self, request: web.Request) -> FlagSnapshot | web.Response:
        """The snapshot of the environment the request's key names, or the answer to give instead."""
        env = self._env(_presented_key(request))
        if env is None:
            log.warning("refused an OFREP request to %r: no or unknown API key", request.path[:100])
            return web.Response(status=401, body=_UNAUTHORIZED, content_type=_JSON, headers=_AUTH_HEADERS)
        snap = self.snapshot(env)
        if snap is None:
            return _json(
                {"errorDetails": f"the flags of {env} are not loaded yet; try again shortly"},
                503,
                headers={"Retry-After": "1"},
            )
        return snap

    def _env(self, presented: str | None) -> str | None:
        if not presented:
            return None
        digest = _digest(presented)
        found = None
        for env, key in self.keys:  # every key, whichever matches: the time says nothing of which
            if hmac.compare_digest(digest, key) and found is None:
                found = env
        return found


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


def _presented_key(request: web.Request) -> str | None:
    auth = request.headers.get("Authorization", "")
    scheme, _, token = auth.strip().partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.headers.get("X-API-Key", "").strip() or None


async def _context(request: web.Request) -> dict[str, Any]:
    """The request's evaluation context: `{"context": {...}}`; a body without one is an empty context
    (the OFREP provider sends `{}` when the application gave no context)."""
    raw = await _body(request)
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):  # not JSON, not UTF-8, nested too deep, a number too long
        raise _BadRequest(PARSE_ERROR, 'the body must be a JSON object: {"context": {...}}') from None
    if not isinstance(body, dict):
        raise _BadRequest(PARSE_ERROR, 'the body must be a JSON object: {"context": {...}}')
    context = body.get("context")
    if context is None:
        return {}
    if not isinstance(context, dict):
        raise _BadRequest(INVALID_CONTEXT, "the context must be a JSON object")
    return context


async def _body(request: web.Request) -> bytes:
    too_big = _BadRequest(PARSE_ERROR, f"the body is over {MAX_BODY_BYTES} bytes", 413)
    if request.content_length is not None:  # the parser holds the body to its length
        if request.content_length > MAX_BODY_BYTES:
            raise too_big
        return await request.read()
    chunks, size = [], 0
    async for chunk in request.content.iter_any():  # also bounds a chunked body, which has no length
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise too_big
        chunks.append(chunk)
    return b"".join(chunks)


def _bulk_etag(snapshot_etag: str, context: Mapping[str, Any]) -> str:
    """The same flags and the same context give the same answers: the ETag is a hash of both."""
    canonical = json.dumps(context, sort_keys=True, separators=(",", ":"))  # ASCII: any string encodes
    digest = hashlib.sha256(f"{snapshot_etag}\n{canonical}".encode()).hexdigest()[:32]
    return f'"{digest}"'


def _matches(if_none_match: str | None, etag: str) -> bool:
    """If-None-Match compares weakly (RFC 9110 13.1.2): W/"x" matches "x"; `*` matches any."""
    if not if_none_match:
        return False
    for tag in if_none_match.split(","):
        tag = tag.strip()
        if tag == "*" or tag.removeprefix("W/") == etag:
            return True
    return False


def _json(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=json.dumps(body).encode(), content_type=_JSON, headers=headers)


def _internal(doing: str) -> web.Response:
    log.exception("OFREP: %s failed", doing)  # the traceback, not the request's context or key
    return _json({"errorDetails": "internal error; the server's log has the details"}, 500)
