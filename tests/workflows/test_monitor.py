"""The monitor on its own: its violation records survive continue-as-new, and an interval
whose generated load died with its worker is watched again instead of judged."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from temporalio.testing import WorkflowEnvironment

from contracts.definition.model import MonitorStage
from contracts.messages import MonitorCheck, MonitorInput
from tests.support.memory import MemoryBackends
from tests.workflows.test_pipeline import FlakyLoad
from worker import build_worker
from workflows.monitor import MonitorWorkflow

pytestmark = pytest.mark.timeout(60)


def watch(**extra: object) -> MonitorStage:
    return MonitorStage.model_validate(
        {
            "name": "monitor",
            "kind": "monitor",
            "environment": "production",
            "duration": "3m",
            "interval": "1m",
            "criteria": [{"metric": "error_rate", "max": 5}],
            **extra,
        }
    )


async def test_a_continued_monitor_reports_the_violations_it_carried(
    time_env: WorkflowEnvironment, memory: MemoryBackends, task_queue: str
) -> None:
    earlier = MonitorCheck(
        at=datetime(2026, 11, 1, tzinfo=UTC),
        passed=True,
        summary="error_rate 7.0 > 5 (cleared on re-check)",
        rechecked=True,
    )
    stage = watch()
    carried = MonitorInput(
        service="shop",
        stage=stage,
        elapsed_s=60,
        checks=1,
        transient=1,
        violations=[earlier],
    )
    async with build_worker(time_env.client, memory.backends(), task_queue):
        result = await time_env.client.execute_workflow(
            MonitorWorkflow.run,
            carried,
            id=f"monitor-{uuid.uuid4().hex[:8]}",
            task_queue=task_queue,
        )
    assert result.outcome == "healthy"
    assert result.checks == 3  # one carried, two in the remaining two minutes
    assert result.transient_violations == 1
    assert result.violations == [earlier]


async def test_an_interval_whose_load_died_is_watched_again_not_judged(
    time_env: WorkflowEnvironment, memory: MemoryBackends, task_queue: str
) -> None:
    load = FlakyLoad()
    # Without its traffic an interval has no data, which this monitor counts as a violation.
    memory.metrics.script = lambda q, n: {"error_rate": 0.0} if load.calls >= 2 else {}
    backends = memory.backends()
    backends.load = load
    async with build_worker(time_env.client, backends, task_queue):
        result = await time_env.client.execute_workflow(
            MonitorWorkflow.run,
            MonitorInput(service="shop", stage=watch(load={"rps": 10}, no_data="fail")),
            id=f"monitor-{uuid.uuid4().hex[:8]}",
            task_queue=task_queue,
        )
    assert result.outcome == "healthy"
    # The lost first minute was watched again, within the three: two checks, no violation.
    assert (result.checks, result.transient_violations) == (2, 0)
    assert load.calls == 3
