"""Time, injected. Everything that waits or reads the time takes a Clock, so the sandbox can run a
five-minute bake in five seconds (ScaledClock) and unit tests can step time by hand (ManualClock).

Virtual time is epoch seconds. A ScaledClock shared by two processes (the sandbox and the bot it runs)
agrees on "now" because both are built from the same (speed, origin) pair: see ScaledClock.spec()."""

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
    """Time running `speed` times faster than the wall, from a shared origin (epoch seconds)."""

    def __init__(self, speed: float, origin: float | None = None):
        if speed <= 0:
            raise ValueError(f"speed must be > 0, got {speed}")
        self.speed = float(speed)
        self.origin = time.time() if origin is None else float(origin)

    def now(self) -> float:
        return self.origin + (time.time() - self.origin) * self.speed

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds) / self.speed)

    def spec(self) -> str:
        return f"{self.speed}@{self.origin}"

    @classmethod
    def from_spec(cls, spec: str) -> Clock:
        """'1' -> real time; '60@1764000000.5' -> 60x from that origin; '60' -> 60x from now."""
        speed, _, origin = spec.partition("@")
        if float(speed) == 1.0 and not origin:
            return Clock()
        return cls(float(speed), float(origin) if origin else None)


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
