"""The monitor's violation records survive continue-as-new: a run continued with records
(as `_maybe_continue_as_new` passes them) reports them in its result, after its own."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from temporalio.testing import WorkflowEnvironment

from tests.support.memory import MemoryBackends
from worker import build_worker
from workflows.messages import MonitorCheck, MonitorInput
from workflows.monitor import MonitorWorkflow
from workflows.spec import MonitorStage

pytestmark = pytest.mark.timeout(60)


async def test_a_continued_monitor_reports_the_violations_it_carried(
    time_env: WorkflowEnvironment, memory: MemoryBackends, task_queue: str
) -> None:
    earlier = MonitorCheck(
        at=datetime(2026, 11, 1, tzinfo=UTC),
        passed=True,
        summary="error_rate 7.0 > 5 (cleared on re-check)",
        rechecked=True,
    )
    stage = MonitorStage.model_validate(
        {
            "name": "monitor",
            "kind": "monitor",
            "environment": "production",
            "duration": "3m",
            "interval": "1m",
            "criteria": [{"metric": "error_rate", "max": 5}],
        }
    )
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
