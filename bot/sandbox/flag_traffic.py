"""The sandbox's flag traffic: simulated users of an application that reads its flags from the bot over
OFREP's bulk route, and the per-variant CloudWatch metrics that application publishes (requests, errors,
latency per flag, variant and environment), so a flag rollout's analysis has something to judge.

Users: per environment the same `users` targeting keys (user-0000, ...), each with a `region` drawn from
three regions and a `plan` (free / pro / beta / staff: the shipped `beta` segment matches beta and staff),
drawn from a seeded random.Random, so every run has the same population.

Evaluation: each user's last answer is kept with its ETag (the bot's hashes the environment's flags and
the context). A tick re-asks a few users (a rotating probe, with If-None-Match: 304 while nothing changed)
plus users waiting for re-evaluation; a probe answered 200 means the flags changed, so every user waits
for re-evaluation (a bounded batch a tick, so a tick stays short and the metrics keep flowing while the
new answers spread, as they do through real applications). The steady state is a handful of 304s a tick.

Metrics: per tick, for the virtual time since the last one, `requests_per_minute` requests per environment
split across each flag's variants by the users' answers, with each variant's error rate and latency:
a healthy baseline, or what POST /_sandbox/inject asked for that variant.

The bot down or restarting (connection refused, a timeout) skips the tick and logs once; it carries on
when the bot answers again, at whatever URL it then has."""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import aiohttp

from bot.adapters.metrics.cloudwatch import flag_scope
from bot.config.flags import FlagMetrics

log = logging.getLogger(__name__)

REGIONS = ("us-east-1", "eu-west-1", "eu-central-1")
PLANS = ("free", "pro", "beta", "staff")  # the shipped `beta` segment is plan in [beta, staff]: 15%
PLAN_WEIGHTS = (60, 25, 10, 5)
INJECT_KEYS = ("flag", "variant", "error_rate", "latency_ms", "env", "clear")
BULK_PATH = "/ofrep/v1/evaluate/flags"
CONTEXT_FREE = frozenset({"DISABLED", "STATIC"})  # OFREP reasons that do not depend on the context


@dataclass(frozen=True)
class SimUser:
    """One simulated user: the evaluation context the application sends for them."""

    key: str
    region: str
    plan: str

    def context(self) -> dict[str, str]:
        return {"targetingKey": self.key, "region": self.region, "plan": self.plan}


def simulated_users(count: int, seed: int = 11) -> list[SimUser]:
    """`count` users with stable keys and attributes (the same for the same seed)."""
    rng = random.Random(seed)
    width = max(4, len(str(count - 1)))
    return [
        SimUser(f"user-{i:0{width}d}", rng.choice(REGIONS), rng.choices(PLANS, PLAN_WEIGHTS)[0])
        for i in range(count)
    ]


@dataclass(frozen=True)
class VariantBehaviour:
    """How requests served by one variant of a flag behave."""

    error_rate: float = 0.01
    latency_ms: float = 80.0


HEALTHY = VariantBehaviour()


@dataclass(frozen=True)
class Answer:
    """A user's last bulk answer: the ETag it came with (None: the answer is another user's, see
    `context_free`), each flag's variant, each flag's error. `context_free`: every flag answered DISABLED or
    STATIC, which OFREP defines as no evaluation of the context: every user gets this same answer."""

    etag: str | None
    variants: Mapping[str, str]
    errors: Mapping[str, str]
    context_free: bool = False

    def same(self, other: Answer | None) -> bool:
        return other is not None and (self.variants, self.errors) == (other.variants, other.errors)


@dataclass(frozen=True)
class EnvKey:
    """What the simulator needs of one environment: its OFREP API key and where its metrics go."""

    api_key: str
    metrics: FlagMetrics = FlagMetrics()


class Unreachable(Exception):
    """The bot did not answer (down, restarting, not yet started)."""


@dataclass
class _Env:
    name: str
    key: EnvKey
    answers: list[Answer | None]
    waiting: dict[int, None] = field(default_factory=dict)  # users to (re-)evaluate, in order
    probe_at: int = 0
    own: dict[int, None] = field(default_factory=dict)  # users whose answer came with their own ETag
    refused: int | None = None  # the status of the last refusal (401/403), logged once
    # No answer yet, or the last tick got none: one request a tick until one comes (a bot without OFREP,
    # or refusing the key, is asked once a tick, not 2,000 times).
    failing: bool = True
    warned: bool = False  # the failure is logged once
    _counts: dict[str, Counter[str]] | None = None

    def counts(self) -> dict[str, Counter[str]]:
        """flag -> variant -> users answered it (cached until an answer changes)."""
        if self._counts is None:
            counts: dict[str, Counter[str]] = {}
            for answer in self.answers:
                if answer is None:
                    continue
                for flag, variant in answer.variants.items():
                    counts.setdefault(flag, Counter())[variant] += 1
            self._counts = counts
        return self._counts

    def error_counts(self) -> dict[str, Counter[str]]:
        errors: dict[str, Counter[str]] = {}
        for answer in self.answers:
            for flag, code in (answer.errors if answer else {}).items():
                errors.setdefault(flag, Counter())[code] += 1
        return errors


@dataclass
class Stats:
    """What the simulator asked and got, since it started."""

    ticks: int = 0
    requests: int = 0
    answered: int = 0  # 200
    not_modified: int = 0  # 304
    refused: int = 0  # 401 / 403
    failed: int = 0  # anything else (429, 5xx, a bad body)
    unreachable_ticks: int = 0
    busy_skips: int = 0  # a tick came while the previous one still ran
    changes_seen: int = 0  # a probe answered 200, not 304: every user asked again
    last_tick_ms: float = 0.0
    datapoints: int = 0


class FlagTraffic:
    """`bot_url()` is the bot's base URL now (None while it is down); `envs` each environment's key and
    metrics; `declared` each declared flag's variants (for checking injections); `now()` the sandbox's
    virtual clock; `publish(namespace, datapoints)` puts metric data (the AWS world's CloudWatch)."""

    def __init__(
        self,
        bot_url: Callable[[], str | None],
        envs: Mapping[str, EnvKey],
        declared: Mapping[str, Sequence[str]],
        now: Callable[[], float],
        publish: Callable[[str, list[dict[str, Any]]], None],
        *,
        users: int = 2000,
        requests_per_minute: float = 3000.0,
        interval_seconds: float = 10.0,
        min_wall_seconds: float = 0.2,
        probes: int = 4,
        batch: int = 500,
        concurrency: int = 8,
        timeout_seconds: float = 5.0,
        seed: int = 11,
    ):
        self.bot_url, self.now, self.publish = bot_url, now, publish
        self.declared = {k: tuple(v) for k, v in declared.items()}
        self.users = simulated_users(users, seed)
        self.requests_per_minute = float(requests_per_minute)
        self.interval_seconds, self.min_wall_seconds = float(interval_seconds), float(min_wall_seconds)
        self.probes, self.batch, self.concurrency = probes, batch, concurrency
        self.timeout_seconds = timeout_seconds
        self.rng = random.Random(seed + 1)
        self.envs = {
            name: _Env(name, key, [None] * users, dict.fromkeys(range(users))) for name, key in envs.items()
        }
        self.injections: dict[tuple[str | None, str, str], VariantBehaviour] = {}
        self.stats = Stats()
        self._carry: dict[tuple[str, ...], float] = {}
        self._last_published: float | None = None
        self._last_kick_virtual: float | None = None
        self._last_kick_wall = 0.0
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._down_since: float | None = None  # logged once per outage
        self._closed = False

    # --- running ------------------------------------------------------------------------------------------
    def kick(self) -> None:
        """From the AWS world's tick: start a flag tick in the background when one is due (every
        interval_seconds of virtual time, at least min_wall_seconds of wall time apart) and none runs.
        Never waits: the AWS tick stays as cheap as it was."""
        now, wall = self.now(), time.monotonic()
        if self._closed:
            return
        if self._task is not None and not self._task.done():
            self.stats.busy_skips += 1
            return
        if self._last_kick_virtual is not None and (
            now - self._last_kick_virtual < self.interval_seconds
            or wall - self._last_kick_wall < self.min_wall_seconds
        ):
            return
        self._last_kick_virtual, self._last_kick_wall = now, wall
        self._task = asyncio.get_running_loop().create_task(self._guarded_tick(), name="flag-traffic")

    async def _guarded_tick(self) -> None:
        try:
            await self.tick()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("sandbox flag traffic tick failed")

    async def close(self) -> None:
        """Stop: the running tick is cancelled, no other starts."""
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.concurrency),
                timeout=aiohttp.ClientTimeout(total=self.timeout_seconds, sock_connect=1.0),
            )
        return self._session

    async def tick(self) -> bool:
        """One tick: ask the bot (probes and waiting users, each environment), then publish the metrics for
        the virtual time since the last tick. False when the bot did not answer (nothing published)."""
        started = time.perf_counter()
        self.stats.ticks += 1
        url = self.bot_url()
        try:
            if not url:
                raise Unreachable("the bot is not running")
            base = url.rstrip("/")
            done = await asyncio.gather(
                *(self._evaluate(base, env) for env in self.envs.values()), return_exceptions=True
            )
            for outcome in done:
                if isinstance(outcome, BaseException) and not isinstance(outcome, Unreachable):
                    raise outcome
            unreachable = next((o for o in done if isinstance(o, Unreachable)), None)
            if unreachable is not None:
                raise unreachable
        except Unreachable as exc:
            self.stats.unreachable_ticks += 1
            if self._down_since is None:
                self._down_since = self.now()
                log.warning("sandbox flag traffic: %s; skipping ticks until it answers", exc)
            self._last_published = self.now()  # an outage is a gap, not a burst afterwards
            self.stats.last_tick_ms = (time.perf_counter() - started) * 1000
            return False
        if self._down_since is not None:
            log.info("sandbox flag traffic: the bot answers again at %s", url)
            self._down_since = None
        now = self.now()
        last = self._last_published
        elapsed = self.interval_seconds if last is None else min(max(now - last, 0.0), 60.0)
        self._last_published = now
        by_namespace = self.datapoints(now, elapsed)
        if by_namespace:
            await asyncio.to_thread(self._publish_all, by_namespace)
        self.stats.last_tick_ms = (time.perf_counter() - started) * 1000
        return True

    def _publish_all(self, by_namespace: dict[str, list[dict[str, Any]]]) -> None:
        for namespace, data in by_namespace.items():
            for i in range(0, len(data), 500):
                self.publish(namespace, data[i : i + 500])
            self.stats.datapoints += len(data)

    # --- evaluation ---------------------------------------------------------------------------------------
    def _pick(self, env: _Env) -> tuple[list[int], list[int]]:
        """(probes, waiting users) to ask this tick: probes rotate over users with an answer. After a
        tick that got no answer at all (401, 404, 429, 5xx), one request, until one is answered again."""
        if env.failing:
            first = next(iter(env.waiting), None)
            return ([], [first]) if first is not None else (self._probes(env, set(), 1), [])
        waiting = list(env.waiting)[: self.batch]
        return self._probes(env, set(waiting), self.probes), waiting

    def _probes(self, env: _Env, chosen: set[int], count: int) -> list[int]:
        """Users with an ETag of their own, in turn (each snapshot change changes every ETag, so any of them
        sees it); a bot that sends no ETags: any user with an answer."""
        pool = [i for i in env.own if i not in chosen] or [
            i for i, a in enumerate(env.answers) if a is not None and i not in chosen
        ]
        if not pool:
            return []
        start, env.probe_at = env.probe_at, env.probe_at + count
        return sorted({pool[(start + k) % len(pool)] for k in range(min(count, len(pool)))})

    async def _evaluate(self, url: str, env: _Env) -> None:
        probes, waiting = self._pick(env)
        if not probes and not waiting:
            return
        gate = asyncio.Semaphore(self.concurrency)
        session = self._http()

        async def ask(i: int) -> tuple[int, int, Answer | None]:
            async with gate:
                return (i, *await self._ask(session, url, env, i))

        results = await asyncio.gather(*(ask(i) for i in [*probes, *waiting]), return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException) and not isinstance(r, Unreachable):
                raise r
        self._absorb(env, set(probes), [r for r in results if not isinstance(r, BaseException)])
        unreachable = next((r for r in results if isinstance(r, Unreachable)), None)
        if unreachable is not None:
            raise unreachable

    def _absorb(self, env: _Env, probes: set[int], results: list[tuple[int, int, Answer | None]]) -> None:
        """Keep the answers. A probe answered 200 although it sent its ETag means the environment's flags
        changed (the bot's ETag hashes its flags and the context, and a user's context never changes):
        every other user is asked again, with its own ETag. A context-free answer (every flag DISABLED or
        STATIC) is every waiting user's answer: nobody needs asking while no flag looks at the context."""
        changed = False
        fresh: set[int] = set()
        uniform: Answer | None = None
        statuses: Counter[int] = Counter()
        for i, status, answer in results:
            statuses[status] += 1
            if status == 304:
                env.waiting.pop(i, None)
            if status != 200 or answer is None:
                continue
            before = env.answers[i]
            self._keep(env, i, answer)
            fresh.add(i)
            if answer.context_free:
                uniform = answer
            if i in probes and before is not None and (before.etag is not None or not answer.same(before)):
                changed = True  # (a server without ETags: only an answer that moved says so)
        if changed:
            self.stats.changes_seen += 1
            for j in range(len(env.answers)):
                if j not in fresh:
                    env.waiting[j] = None
        if uniform is not None and env.waiting:
            shared = replace(uniform, etag=None)
            for j in list(env.waiting):
                self._keep(env, j, shared)
        self._note(env, statuses)

    @staticmethod
    def _note(env: _Env, statuses: Counter[int]) -> None:
        """A refused key, or a tick with no answer at all: logged once, and one request a tick after."""
        refused = next((s for s in (401, 403) if statuses[s]), None)
        if refused is not None and env.refused != refused:
            log.warning("sandbox flag traffic: the bot refuses %s's OFREP key (HTTP %s)", env.name, refused)
        env.refused = refused
        if statuses:
            env.failing = not (statuses[200] or statuses[304])
            if env.failing and not env.warned:
                log.warning(
                    "sandbox flag traffic: %s's evaluations get HTTP %s; one request a tick until answered",
                    env.name,
                    ", ".join(str(s) for s in sorted(statuses)),
                )
            env.warned = env.failing

    def _keep(self, env: _Env, i: int, answer: Answer) -> None:
        env.answers[i] = answer
        env.waiting.pop(i, None)
        if answer.etag is not None:
            env.own[i] = None
        else:
            env.own.pop(i, None)
        env._counts = None

    async def _ask(
        self, session: aiohttp.ClientSession, url: str, env: _Env, i: int
    ) -> tuple[int, Answer | None]:
        user, cached = self.users[i], env.answers[i]
        headers = {"Authorization": f"Bearer {env.key.api_key}"}
        if cached is not None and cached.etag:
            headers["If-None-Match"] = cached.etag
        self.stats.requests += 1
        try:
            async with session.post(
                url + BULK_PATH, json={"context": user.context()}, headers=headers
            ) as resp:
                if resp.status == 304:
                    self.stats.not_modified += 1
                    return 304, None
                if resp.status in (401, 403):
                    self.stats.refused += 1
                    return resp.status, None
                if resp.status != 200:
                    self.stats.failed += 1
                    return resp.status, None
                body = await resp.json(content_type=None)
                etag = resp.headers.get("ETag")
        except (aiohttp.ClientConnectionError, TimeoutError) as exc:
            raise Unreachable(f"the bot does not answer at {url} ({type(exc).__name__})") from None
        except ValueError:  # not JSON
            self.stats.failed += 1
            return 0, None
        answer = parse_bulk(body, etag)
        if answer is None:
            self.stats.failed += 1
            return 0, None
        self.stats.answered += 1
        return 200, answer

    # --- metrics ------------------------------------------------------------------------------------------
    def behaviour(self, env: str, flag: str, variant: str) -> VariantBehaviour:
        return (
            self.injections.get((env, flag, variant)) or self.injections.get((None, flag, variant)) or HEALTHY
        )

    def _whole(self, key: tuple[str, ...], amount: float) -> int:
        """Whole requests/errors this tick; the fractions carry over so the long-run totals are exact."""
        total = self._carry.get(key, 0.0) + amount
        whole = math.floor(total + 1e-9)
        self._carry[key] = total - whole
        return whole

    def datapoints(self, now: float, seconds: float) -> dict[str, list[dict[str, Any]]]:
        """namespace -> the metric data of `seconds` of traffic ending at `now`, per flag and variant."""
        timestamp = datetime.fromtimestamp(now, UTC)
        out: dict[str, list[dict[str, Any]]] = {}
        requests = self.requests_per_minute * seconds / 60
        for env in self.envs.values():
            m = env.key.metrics
            counts = env.counts()
            for flag in sorted(counts):
                total = sum(counts[flag].values())
                for variant in sorted(counts[flag]):
                    key = (env.name, flag, variant)
                    count = self._whole(("requests", *key), requests * counts[flag][variant] / total)
                    if count <= 0:
                        continue
                    b = self.behaviour(*key)
                    errors = min(count, self._whole(("errors", *key), count * b.error_rate))
                    latency = round(b.latency_ms * self.rng.uniform(0.95, 1.05), 3)
                    dims = [{"Name": k, "Value": v} for k, v in flag_scope(m, flag, variant, env.name).labels]
                    data = out.setdefault(m.namespace, [])
                    for name, value, unit in (
                        (m.requests, count, "Count"),
                        (m.errors, errors, "Count"),
                        (m.latency, latency, "Milliseconds"),
                    ):
                        data.append(
                            {
                                "MetricName": name,
                                "Dimensions": dims,
                                "Value": value,
                                "Unit": unit,
                                "Timestamp": timestamp,
                            }
                        )
        return out

    # --- control ------------------------------------------------------------------------------------------
    def inject(self, body: Any) -> dict[str, Any]:
        """POST /_sandbox/inject with a "flag": make a variant misbehave in `env` (default: every
        environment), or `clear` it (without a variant: every injection of the flag). Fields left out keep
        their value. ValueError says what is wrong. Returns view()."""
        env, flag, variant, clear = self._injection_target(body)
        if clear:
            if "error_rate" in body or "latency_ms" in body:
                raise ValueError("clear takes no error_rate or latency_ms")
            for k in list(self.injections):
                if k[1] == flag and variant in (None, k[2]) and env in (None, k[0]):
                    del self.injections[k]
            return self.view()
        assert variant is not None
        error_rate = _number(body, "error_rate")
        latency_ms = _number(body, "latency_ms")
        if error_rate is None and latency_ms is None:
            raise ValueError("an injection sets error_rate (0..1), latency_ms (>= 0) or both; or clear: true")
        if error_rate is not None and not 0 <= error_rate <= 1:
            raise ValueError(f"error_rate must be within 0..1, got {error_rate:g}")
        if latency_ms is not None and not 0 <= latency_ms <= 600_000:
            raise ValueError(f"latency_ms must be within 0..600000, got {latency_ms:g}")
        current = self.injections.get((env, flag, variant)) or self.behaviour(env or "", flag, variant)
        self.injections[(env, flag, variant)] = VariantBehaviour(
            error_rate=current.error_rate if error_rate is None else error_rate,
            latency_ms=current.latency_ms if latency_ms is None else latency_ms,
        )
        return self.view()

    def _injection_target(self, body: Any) -> tuple[str | None, str, str | None, bool]:
        """(env or None, flag, variant or None, clear) of an injection request, checked."""
        if not isinstance(body, Mapping):
            raise ValueError(f"an injection is a JSON object, got {body!r}")
        unknown = sorted(set(body) - set(INJECT_KEYS))
        if unknown:
            raise ValueError(f"unknown key {unknown[0]!r}; a flag injection has {', '.join(INJECT_KEYS)}")
        flag = body.get("flag")
        if not isinstance(flag, str) or flag not in self.declared:
            raise ValueError(
                f"flag must be a declared flag ({', '.join(sorted(self.declared))}), got {flag!r}"
            )
        clear = body.get("clear", False)
        if not isinstance(clear, bool):
            raise ValueError(f"clear must be true or false, got {clear!r}")
        variant = body.get("variant")
        variants = self.declared[flag]
        if (variant is not None or not clear) and (not isinstance(variant, str) or variant not in variants):
            raise ValueError(
                f"variant must be one of {flag}'s variants ({', '.join(variants)}), got {variant!r}"
            )
        env = body.get("env")
        if env is not None and (not isinstance(env, str) or env not in self.envs):
            raise ValueError(f"env must be one of {', '.join(self.envs)} (omit it for all), got {env!r}")
        return env, flag, variant, clear

    def view(self, only_env: str | None = None) -> dict[str, Any]:
        """GET /_sandbox/flags: per environment each flag's share of the users per variant, the users
        still waiting for an answer; the active injections; the simulator's counts."""
        if only_env is not None and only_env not in self.envs:
            raise ValueError(f"env must be one of {', '.join(self.envs)}, got {only_env!r}")
        environments: dict[str, Any] = {}
        for env in self.envs.values():
            if only_env is not None and env.name != only_env:
                continue
            counts, errors = env.counts(), env.error_counts()
            flags = {}
            for flag in sorted(set(counts) | set(errors)):
                users = dict(sorted(counts.get(flag, Counter()).items()))
                answered = sum(users.values()) + sum(errors.get(flag, Counter()).values())
                flags[flag] = {
                    "shares": {v: round(n / answered, 4) for v, n in users.items()},
                    "users": users,
                    "errors": dict(sorted(errors.get(flag, Counter()).items())),
                }
            environments[env.name] = {
                "users": len(self.users),
                "evaluated": sum(a is not None for a in env.answers),
                # of which answered for them by a context-free answer (every flag DISABLED or STATIC)
                "inferred": sum(a is not None and a.etag is None for a in env.answers),
                "waiting": len(env.waiting),
                "refused": env.refused,
                "flags": flags,
            }
        injections = [
            {"flag": f, "variant": v, "env": e, **vars(b)}
            for (e, f, v), b in sorted(
                self.injections.items(), key=lambda kv: (kv[0][1], kv[0][2], kv[0][0] or "")
            )
        ]
        return {
            "environments": environments,
            "injections": injections,
            "healthy": vars(HEALTHY),
            "bot_answering": self._down_since is None,
            "stats": vars(self.stats).copy(),
        }


def _number(body: Mapping[str, Any], key: str) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{key} must be a number, got {value!r}")
    return float(value)


def parse_bulk(body: Any, etag: str | None) -> Answer | None:
    """An OFREP bulk answer ({"flags": [{"key", "variant", ...} | {"key", "errorCode"}]}) as an Answer;
    None when it is not one."""
    if not isinstance(body, Mapping) or not isinstance(body.get("flags"), list):
        return None
    variants: dict[str, str] = {}
    errors: dict[str, str] = {}
    context_free = True
    for item in body["flags"]:
        if not isinstance(item, Mapping) or not isinstance(item.get("key"), str):
            return None
        if item.get("errorCode"):
            errors[item["key"]] = str(item["errorCode"])
            context_free = False
        else:
            variant = item.get("variant")
            variants[item["key"]] = str(variant) if variant is not None else str(item.get("value"))
            context_free = context_free and item.get("reason") in CONTEXT_FREE
    return Answer(etag, variants, errors, context_free)
