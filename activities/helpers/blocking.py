"""Run a blocking backend call from an async activity without blocking the event loop.

The SDKs behind our backends block. We run them in a thread and heartbeat from the event loop
while they work, forwarding the latest progress note the backend reported. A dead worker is
then noticed within the activity's heartbeat timeout instead of its start-to-close timeout.

Cancellation never abandons the thread, which cannot be killed: a cancelled call is asked to
stop (its next progress note raises `WorkCancelledError`), and the activity reports cancelled
only once the thread has returned. The worker's slot and a graceful shutdown then account for
work that is really still running, and a long call (a load interval, a rollout wait, a test
run) stops within a heartbeat instead of running to its end.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import TypeVar

from temporalio import activity

__all__ = ["HEARTBEAT_EVERY_S", "WorkCancelledError", "run_blocking"]

T = TypeVar("T")

HEARTBEAT_EVERY_S = 2.0


class WorkCancelledError(Exception):
    """Raised from a backend's progress callback once its activity has been cancelled."""


async def run_blocking(call: Callable[[Callable[[str], None]], T]) -> T:
    """Run `call(progress)` in a thread, heartbeating every few seconds with the last note."""
    note: list[str] = ["started"]
    cancelled = threading.Event()

    def progress(message: str) -> None:
        if cancelled.is_set():
            raise WorkCancelledError(f"cancelled at: {message}")
        note[0] = message

    task = asyncio.ensure_future(asyncio.to_thread(call, progress))
    while True:
        try:
            done, _ = await asyncio.wait({task}, timeout=HEARTBEAT_EVERY_S)
        except asyncio.CancelledError:
            cancelled.set()
            await _until_returned(task, note)
            raise
        if done:
            return task.result()
        _heartbeat(note[0])


async def _until_returned(task: asyncio.Future[T], note: list[str]) -> None:
    """Wait for a cancelled call's thread to return, heartbeating so the activity is not
    timed out meanwhile; further cancellations cannot shorten the wait."""
    while not task.done():
        try:
            await asyncio.wait({task}, timeout=HEARTBEAT_EVERY_S)
        except asyncio.CancelledError:
            continue
        _heartbeat(f"stopping after cancellation: {note[0]}")
    if not task.cancelled() and task.exception() is not None:
        # The call's own error (often WorkCancelledError) is superseded by the cancellation.
        activity.logger.info("cancelled call ended with %r", task.exception())


def _heartbeat(note: str) -> None:
    if activity.in_activity():
        activity.heartbeat(note)
