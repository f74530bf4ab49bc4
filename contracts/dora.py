"""DORA counts an environment keeps beyond its bounded release list: per UTC day, the changes
(pipeline releases; a canary that never promoted too), those rolled back, lead times and
times to restore. Pure functions on the environment's state: no commands, so runs recorded
before them replay unchanged; the counts ride continue-as-new with the rest of the state.

A change is counted on the day it started serving; its failure (a rollback, possibly days
later) on that same day, its time to restore being from when it started serving until the
rollback put the release before it back (the next healthy one).
"""

from __future__ import annotations

from datetime import UTC, date, datetime

from contracts.messages import DoraDay, EnvironmentState, ReleaseEntry

__all__ = ["DAYS_KEPT", "closed", "day_of", "in_window", "record", "recorded"]

DAYS_KEPT = 3660
"""Ten years of days (`slipway dora --days` goes up to 3650)."""


def day_of(at: datetime) -> str:
    return at.astimezone(UTC).date().isoformat()


def is_change(entry: ReleaseEntry) -> bool:
    return entry.run.startswith("pipeline-") and entry.outcome != "restored"


def _days(state: EnvironmentState) -> dict[str, DoraDay]:
    """The counts, seeded from the release list the first time (an environment recorded
    before counts were kept)."""
    if state.dora is None:
        state.dora = {}
        for entry in state.releases:
            _count(state.dora, entry)
    return state.dora


def _count(days: dict[str, DoraDay], entry: ReleaseEntry) -> None:
    if not is_change(entry):
        return
    day = days.setdefault(day_of(entry.at), DoraDay())
    day.changes += 1
    if entry.outcome == "rolled_back":
        day.failed += 1
        if entry.until is not None:
            day.restore_s += (entry.until - entry.at).total_seconds()
            day.restores += 1
    elif entry.commit_time is not None:
        day.lead_s += (entry.at - entry.commit_time).total_seconds()
        day.leads += 1


def _uncount(days: dict[str, DoraDay], entry: ReleaseEntry) -> None:
    """Take back what `_count` added for `entry` (before it is counted again, changed)."""
    day = days.get(day_of(entry.at))
    if day is None or not is_change(entry):
        return
    day.changes -= 1
    if entry.outcome == "rolled_back":
        day.failed -= 1
        if entry.until is not None:
            day.restore_s -= (entry.until - entry.at).total_seconds()
            day.restores -= 1
    elif entry.commit_time is not None:
        day.lead_s -= (entry.at - entry.commit_time).total_seconds()
        day.leads -= 1


def recorded(state: EnvironmentState, entry: ReleaseEntry) -> None:
    """`entry` joins the release list (call before appending it)."""
    days = _days(state)
    _count(days, entry)
    for old in sorted(days)[:-DAYS_KEPT]:
        del days[old]


def closed(state: EnvironmentState, before: ReleaseEntry, after: ReleaseEntry) -> None:
    """An entry of the release list changed (its outcome, when it stopped serving): call
    before replacing it."""
    days = _days(state)
    _uncount(days, before)
    _count(days, after)


def record(state: EnvironmentState, entry: ReleaseEntry, kept: int) -> None:
    """Append `entry` to the release list, keep its last `kept`, count it."""
    recorded(state, entry)
    state.releases.append(entry)
    del state.releases[:-kept]


def in_window(state: EnvironmentState, since: date) -> DoraDay:
    """The counts of the days from `since` on (whole UTC days), summed."""
    total = DoraDay()
    for key, day in (state.dora or {}).items():
        if key >= since.isoformat():
            total.changes += day.changes
            total.failed += day.failed
            total.lead_s += day.lead_s
            total.leads += day.leads
            total.restore_s += day.restore_s
            total.restores += day.restores
    return total
