"""The one duration formatter: seconds as people read them in Slack, the plans and the alerts."""

from __future__ import annotations


def duration(seconds: float) -> str:
    """45s, 90s, 2m, 2m30s, 1h05m: seconds up to two minutes, minutes (and seconds) up to two hours, then
    hours and minutes. Rounded to the second; a negative span reads as 0s."""
    whole = max(0, int(round(seconds)))
    if whole < 120:
        return f"{whole}s"
    if whole < 7200:
        minutes, rest = divmod(whole, 60)
        return f"{minutes}m{rest:02d}s" if rest else f"{minutes}m"
    hours, rest = divmod(whole, 3600)
    return f"{hours}h{rest // 60:02d}m"
