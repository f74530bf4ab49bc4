"""Blocking backend calls inside activities: progress notes, and what cancellation does to the
thread doing the work (it is stopped and waited for, never left running behind)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import pytest
from temporalio import activity
from temporalio.testing import ActivityEnvironment

from activities.helpers.blocking import WorkCancelledError, run_blocking

Progress = Callable[[str], None]


async def cancel_soon(env: ActivityEnvironment, started: threading.Event) -> None:
    await asyncio.to_thread(started.wait, 5)
    env.cancel()


async def test_a_cancelled_call_stops_at_its_next_progress_note() -> None:
    started = threading.Event()
    ended: list[BaseException | None] = []

    def rollout_wait(progress: Progress) -> str:
        started.set()
        try:
            for i in range(500):  # ~25 s if nothing stops it
                progress(f"waiting for rollout, {i} polls")
                time.sleep(0.05)
        except BaseException as err:
            ended.append(err)
            raise
        ended.append(None)
        return "rolled out"

    @activity.defn
    async def deploy() -> str:
        return await run_blocking(rollout_wait)

    env = ActivityEnvironment()
    begun = time.monotonic()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.gather(env.run(deploy), cancel_soon(env, started))
    # The work saw the cancellation and stopped well before its 25 s, and had stopped by
    # the time the activity said "cancelled".
    assert len(ended) == 1
    assert isinstance(ended[0], WorkCancelledError)
    assert time.monotonic() - begun < 5


async def test_a_call_that_cannot_be_interrupted_is_waited_for() -> None:
    started = threading.Event()
    finished = threading.Event()

    def api_call(progress: Progress) -> str:
        started.set()
        time.sleep(0.5)  # one blocking request: no progress note to stop at
        finished.set()
        return "applied"

    @activity.defn
    async def set_weight() -> str:
        try:
            return await run_blocking(api_call)
        except asyncio.CancelledError:
            assert finished.is_set(), "activity reported cancelled while its call still ran"
            raise

    env = ActivityEnvironment()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.gather(env.run(set_weight), cancel_soon(env, started))
    assert finished.is_set()


async def test_progress_notes_are_heartbeated_and_the_result_returned() -> None:
    beats: list[str] = []

    def build(progress: Progress) -> str:
        progress("compiling")
        time.sleep(2.5)  # longer than one heartbeat period
        return "sha256:abc"

    @activity.defn
    async def build_activity() -> str:
        return await run_blocking(build)

    env = ActivityEnvironment()
    env.on_heartbeat = lambda *details: beats.append(str(details[0]))
    assert await env.run(build_activity) == "sha256:abc"
    assert beats == ["compiling"]
