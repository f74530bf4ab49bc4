"""Run a blocking backend call from an async activity without blocking the event loop.

The SDKs behind our backends block. We run them in a thread and heartbeat from the event loop
while they work, forwarding the latest progress note the backend reported. A dead worker is
then noticed within the activity's heartbeat timeout instead of its start-to-close timeout.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

from temporalio import activity

T = TypeVar("T")

HEARTBEAT_EVERY_S = 2.0


async def run_blocking(call: Callable[[Callable[[str], None]], T]) -> T:
    """Run `call(progress)` in a thread, heartbeating every few seconds with the last note."""
    note: list[str] = ["started"]

    def progress(message: str) -> None:
        note[0] = message

    task = asyncio.ensure_future(asyncio.to_thread(call, progress))
    while True:
        done, _ = await asyncio.wait({task}, timeout=HEARTBEAT_EVERY_S)
        if done:
            return task.result()
        if activity.in_activity():
            activity.heartbeat(note[0])
