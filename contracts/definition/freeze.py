"""Freeze windows: when an environment takes no deploys (pure, deterministic).

A window is a 5-field cron expression (minute hour day-of-month month day-of-week, with `*`,
lists, ranges, steps and the names JAN..DEC, SUN..SAT) marking when it starts, a duration,
and the time zone the expression is read in: `{cron: "0 18 * * FRI", duration: 62h,
timezone: Asia/Seoul}` freezes Friday 18:00 to Monday 08:00 in Seoul.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["Cron", "CronError", "frozen_until", "parse_cron", "time_zone"]

_MONTH_NAMES = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
_MONTHS = {m: i for i, m in enumerate(_MONTH_NAMES, 1)}
_DAYS = {d: i for i, d in enumerate(["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"])}
_FIELDS: tuple[tuple[str, int, int, dict[str, int]], ...] = (
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day of month", 1, 31, {}),
    ("month", 1, 12, _MONTHS),
    ("day of week", 0, 7, _DAYS),
)
MAX_WINDOW = timedelta(days=31)
"""A longer freeze is a policy, not a window: looking back further is refused."""


class CronError(ValueError):
    """The expression cannot be read; the message says which field and why."""


@dataclass(frozen=True)
class Cron:
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    any_day: bool
    any_weekday: bool

    def matches(self, at: datetime) -> bool:
        if at.minute not in self.minutes or at.hour not in self.hours:
            return False
        if at.month not in self.months:
            return False
        weekday = (at.weekday() + 1) % 7  # cron: 0 = Sunday
        day_ok, weekday_ok = at.day in self.days, weekday in self.weekdays
        if self.any_day or self.any_weekday:  # cron: both restricted means either
            return day_ok and weekday_ok
        return day_ok or weekday_ok


def _value(text: str, name: str, low: int, high: int, names: dict[str, int]) -> int:
    token = text.upper()
    if token in names:
        return names[token]
    if not token.isdigit():
        raise CronError(f"{name}: {text!r} is not a number or a name")
    number = int(token)
    if not low <= number <= high:
        raise CronError(f"{name}: {number} is outside {low}-{high}")
    return number


def _field(text: str, name: str, low: int, high: int, names: dict[str, int]) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        base, _, step_text = part.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) == 0:
                raise CronError(f"{name}: step {step_text!r} must be a positive number")
            step = int(step_text)
        if base == "*":
            start, end = low, high
        elif "-" in base:
            first, _, last = base.partition("-")
            start = _value(first, name, low, high, names)
            end = _value(last, name, low, high, names)
            if end < start:
                raise CronError(f"{name}: range {base!r} runs backwards")
        else:
            start = end = _value(base, name, low, high, names)
            if step_text:
                end = high
        values.update(range(start, end + 1, step))
    return frozenset(values)


def parse_cron(expression: str) -> Cron:
    parts = expression.split()
    if len(parts) != 5:
        raise CronError(
            f"{expression!r} has {len(parts)} fields; cron needs 5: minute hour "
            "day-of-month month day-of-week"
        )
    fields = [
        _field(p, n, lo, hi, names) for p, (n, lo, hi, names) in zip(parts, _FIELDS, strict=True)
    ]
    weekdays = frozenset(d % 7 for d in fields[4])  # 7 is Sunday too
    return Cron(
        fields[0], fields[1], fields[2], fields[3], weekdays, parts[2] == "*", parts[4] == "*"
    )


def time_zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise CronError(f"unknown time zone {name!r}; use an IANA name like Asia/Seoul") from None


def frozen_until(
    windows: Sequence[tuple[str, timedelta, str]], now: datetime
) -> tuple[datetime, str] | None:
    """If `now` falls in a window (cron, duration, time zone), when the freeze ends (UTC) and
    which window it is; the latest end when windows overlap."""
    found: tuple[datetime, str] | None = None
    for expression, duration, zone in windows:
        cron, tz = parse_cron(expression), time_zone(zone)
        local = now.astimezone(tz).replace(second=0, microsecond=0)
        span = min(duration, MAX_WINDOW)
        for minutes in range(int(span.total_seconds() // 60) + 1):
            start = local - timedelta(minutes=minutes)
            if cron.matches(start):
                end = (start + duration).astimezone(UTC)
                if end > now and (found is None or end > found[0]):
                    found = (end, f"{expression} ({zone}, {duration})")
                break
    return found
