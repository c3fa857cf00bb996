"""Time, injected. Everything that waits or reads the time takes a Clock, so the sandbox can run a
five-minute bake in five seconds (ScaledClock) and unit tests can step time by hand (ManualClock).

Virtual time is epoch seconds. A ScaledClock shared by two processes (the sandbox and the bot it runs)
agrees on "now" because both are built from the same (speed, origin, start) triple: see ScaledClock.spec().
A clock may be pinned to a start instant and held there until begin(): the sandbox holds its clock while
the bot boots, so a slow start-up eats no virtual time and a test's window opens when the test said."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime


class Clock:
    """Real time."""

    speed: float = 1.0

    def now(self) -> float:
        return time.time()

    def utcnow(self) -> datetime:
        return datetime.fromtimestamp(self.now(), UTC)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))

    def real_seconds(self, seconds: float) -> float:
        """How long `seconds` of this clock's time last on the wall."""
        return seconds / self.speed

    def spec(self) -> str:
        return "1"


class ScaledClock(Clock):
    """Time running `speed` times faster than the wall. It reads `start` (virtual epoch seconds) at the wall
    instant `origin` (epoch seconds). Without a start it reads the wall time at its origin; with `held` it
    reads `start` and stands still until begin() gives it its origin."""

    def __init__(
        self, speed: float, origin: float | None = None, start: float | None = None, *, held: bool = False
    ):
        if speed <= 0:
            raise ValueError(f"speed must be > 0, got {speed}")
        self.speed = float(speed)
        self.origin: float | None = None
        self.start = None if start is None else float(start)
        if not held:
            self.begin(origin)

    @property
    def held(self) -> bool:
        return self.origin is None

    def begin(self, origin: float | None = None) -> None:
        """Let a held clock run from wall instant `origin` (default: now)."""
        self.origin = time.time() if origin is None else float(origin)
        if self.start is None:
            self.start = self.origin

    def now(self) -> float:
        if self.origin is None:
            return self.start if self.start is not None else time.time()
        start = self.origin if self.start is None else self.start
        return start + (time.time() - self.origin) * self.speed

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds) / self.speed)

    def spec(self) -> str:
        """'SPEED@ORIGIN@START' (running), or 'SPEED@held@START' (held until begin())."""
        origin = "held" if self.origin is None else repr(self.origin)
        return f"{self.speed!r}@{origin}@{self.start!r}"

    @classmethod
    def from_spec(cls, spec: str) -> Clock:
        """'1' -> real time; '60@1764000000.5' -> 60x from that origin; '60' -> 60x from now;
        '60@1764000000.5@1765000000' -> 60x, reading 1765000000 at that origin;
        '60@held@1765000000' -> held at 1765000000 until begin()."""
        try:
            speed, *rest = spec.split("@")
            if len(rest) > 2:
                raise ValueError("too many '@'")
            origin = rest[0] if rest else ""
            start = float(rest[1]) if len(rest) > 1 else None
            if float(speed) == 1.0 and not rest:
                return Clock()
            if origin == "held":
                if start is None:
                    raise ValueError("a held clock needs its start")
                return cls(float(speed), start=start, held=True)
            return cls(float(speed), float(origin) if origin else None, start)
        except ValueError as exc:
            raise ValueError(
                f"clock spec {spec!r} is not SPEED, SPEED@ORIGIN, SPEED@ORIGIN@START or SPEED@held@START "
                f"({exc})"
            ) from None


class ManualClock(Clock):
    """Time that moves only when told: sleep() waits until advance() has moved time past its deadline."""

    def __init__(self, start: float = 1_767_225_600.0):  # 2026-01-01T00:00:00Z
        self._now = start
        self._cond: asyncio.Condition | None = None

    def now(self) -> float:
        return self._now

    def _condition(self) -> asyncio.Condition:
        if self._cond is None:
            self._cond = asyncio.Condition()
        return self._cond

    async def sleep(self, seconds: float) -> None:
        deadline = self._now + max(0.0, seconds)
        cond = self._condition()
        async with cond:
            await cond.wait_for(lambda: self._now >= deadline)

    async def advance(self, seconds: float) -> None:
        cond = self._condition()
        async with cond:
            self._now += seconds
            cond.notify_all()
        await asyncio.sleep(0)
