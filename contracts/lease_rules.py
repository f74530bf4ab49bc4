"""Pure rules of an environment's lease: commit order, who is superseded, who goes next.

An environment serves one run's release at a time. Runs are ordered by their commit's time
(the committer time CI or the checkout reports), ties and unknown times broken by the order
the requests arrived. The rules:
- no run ever deploys a commit older than the one serving (it is superseded by it);
- `supersede` (development, staging): a newer run takes the lease from an older holder; an
  older request is superseded on arrival;
- `queue` (production): requests wait behind the holder in commit order.
"""

from __future__ import annotations

from datetime import datetime

from contracts.messages import LeaseHolder, Serving, WaitingRun

__all__ = ["behind_serving", "enqueue", "newer_than"]


def _key(when: datetime | None, order: int) -> tuple[float, int]:
    return (when.timestamp() if when is not None else float("inf"), order)


def newer_than(run: WaitingRun | LeaseHolder, other: WaitingRun | LeaseHolder) -> bool:
    """Is `run`'s commit newer than `other`'s (commit time, then arrival)?"""
    if run.commit == other.commit:
        return run.order > other.order
    if (
        run.commit_time is not None
        and other.commit_time is not None
        and run.commit_time != other.commit_time
    ):
        return run.commit_time > other.commit_time
    return run.order > other.order


def behind_serving(run: WaitingRun | LeaseHolder, serving: Serving | None) -> bool:
    """Would deploying `run` put an older commit in place of the one serving?"""
    if serving is None or run.commit == serving.commit:
        return False
    if run.commit_time is None or serving.commit_time is None:
        return False
    return run.commit_time < serving.commit_time


def enqueue(queue: list[WaitingRun], run: WaitingRun) -> list[WaitingRun]:
    """The queue with `run` in its place: commit order, arrival order among equals."""
    merged = [*queue, run]
    merged.sort(key=lambda w: _key(w.commit_time, w.order))
    return merged
