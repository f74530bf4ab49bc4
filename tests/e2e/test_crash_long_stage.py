"""Crash safety in one long stage, end to end on real processes (its own stack: Temporal dev
server, a worker subprocess on the local platform), so that it runs beside `test_crash.py`.

Run C: a test stage that sleeps 20 s and allows two attempts; the worker is SIGKILLed five
times while it runs, restarted ~1 s later each time. A lost worker is not a verdict: each cut
execution ends `timed_out` on its heartbeat and is started again without counting an attempt,
so the sixth execution completes and the run succeeds.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from contracts.definition.loading import validate_definition
from contracts.messages import PipelineState, RunContext
from demo.localstack import make_service_repo
from starters.runs import start_pipeline
from tests.e2e.crashkit import (
    AUTHOR,
    RUN_TIMEOUT_S,
    Shared,
    Timeline,
    activity_runs,
    crash_worker,
    diagnostics,
    outcome,
    pending_activity,
    poll,
)
from tests.support.devstack import DEMO_ROLES, running_stack

pytestmark = [pytest.mark.e2e, pytest.mark.realserver]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def shared(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Shared]:
    async with running_stack(tmp_path_factory.mktemp("crash-long"), "crash-long") as stack:
        yield Shared(stack, stack.client)


SLOW_STAGE_S = 20
SLOW = {
    "name": "slow",
    "service": {"name": "hello"},
    "stages": [
        {"name": "checkout", "kind": "checkout"},
        {
            "name": "slow_tests",
            "kind": "test",
            "needs": ["checkout"],
            # A test suite that takes a while, then reports one passing test.
            "command": [
                "python",
                "-c",
                f"import time, pathlib; time.sleep({SLOW_STAGE_S}); "
                "pathlib.Path('junit-slow.xml').write_text('<testsuite tests=\"1\" "
                'failures="0" errors="0" skipped="0"><testcase name="t"/></testsuite>\')',
            ],
            "junit": "junit-slow.xml",
            "retry": {"max_attempts": 2},
        },
    ],
}


async def test_worker_sigkilled_five_times_in_one_long_stage_is_not_a_verdict(
    shared: Shared,
) -> None:
    """Five worker deaths during one stage allowed two attempts: each lost worker is retried
    without counting, so the stage (and the run) still succeed."""
    client, stack = shared.client, shared.stack
    timeline = Timeline("run C")
    spec = validate_definition(SLOW, "slow.yaml")
    repo = stack.home / "repo-slow"
    commit = make_service_repo(repo)
    run = RunContext(service="hello", repo=str(repo), commit=commit, author=AUTHOR, branch="slow")
    started = await start_pipeline(client, spec, run, DEMO_ROLES, stack.worker.task_queue)
    workflow_id = started.workflow_id
    with diagnostics(stack, timeline):
        for kill in range(1, 6):

            async def running(n: int = kill) -> bool | None:
                runs = await activity_runs(client, workflow_id)
                mine = [r for r in runs if r.activity_id == "slow_tests"]
                found = await pending_activity(client, workflow_id, "slow_tests")
                return True if len(mine) >= n and found is not None and found.started else None

            await poll(f"attempt {kill} of slow_tests running", running, 120)
            await asyncio.sleep(3)
            await crash_worker(stack, timeline, f"during slow_tests (kill {kill})")
        result = await outcome(client, workflow_id, RUN_TIMEOUT_S)
        timeline.mark(f"run ended {result.state.value}")
        runs = [
            r for r in await activity_runs(client, workflow_id) if r.activity_id == "slow_tests"
        ]
    assert result.state == PipelineState.SUCCEEDED, result.failure
    assert [r.ended for r in runs] == ["timed_out"] * 5 + ["completed"]
    summary = next(s.summary for s in result.stages if s.name == "slow_tests")
    assert summary.startswith("1 tests, 0 failed")
