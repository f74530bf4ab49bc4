"""`ignore:` entries of a scan stage, through PipelineWorkflow on the time-skipping server with
the real scan activity: an accepted finding lets the stage pass, an expired entry fails it and
names itself."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import pytest
import yaml
from temporalio.testing import WorkflowEnvironment

from contracts.activity import Severity
from contracts.definition.loading import validate_definition
from contracts.definition.model import PipelineSpec
from contracts.messages import PipelineResult, StageState
from starters.runs import pipeline_outcome
from tests.support.memory import MemoryBackends
from tests.support.pipelines import ROOT, start
from worker import build_worker

pytestmark = pytest.mark.timeout(60)


def heal7_ignoring(entry: dict[str, Any]) -> PipelineSpec:
    file = ROOT / "pipelines" / "heal7.yaml"
    data = yaml.safe_load(file.read_text())
    (scan,) = [s for s in data["stages"] if s["name"] == "security_scan"]
    scan["ignore"] = {"bandit": [entry]}
    return validate_definition(data, str(file))


def stage(result: PipelineResult, name: str) -> tuple[StageState, str]:
    found = next(s for s in result.stages if s.name == name)
    return found.state, found.summary


async def run_with_b602(
    env: WorkflowEnvironment, memory: MemoryBackends, queue: str, spec: PipelineSpec
) -> PipelineResult:
    bandit = memory.scanners["bandit"]
    bandit.findings = [bandit.finding("bandit", Severity.HIGH, "B602")]
    async with build_worker(env.client, memory.backends(), queue):
        return await pipeline_outcome(await start(env.client, queue, spec=spec))


async def test_an_accepted_finding_lets_the_scan_stage_pass(
    time_env: WorkflowEnvironment, memory: MemoryBackends, task_queue: str
) -> None:
    later = (date.today() + timedelta(days=60)).isoformat()
    spec = heal7_ignoring({"id": "B602", "reason": "command is constant", "expires": later})

    result = await run_with_b602(time_env, memory, task_queue, spec)

    state, summary = stage(result, "security_scan")
    assert state == StageState.SUCCEEDED, summary
    assert "no findings" in summary
    assert "bandit accepted 1" in summary


async def test_an_expired_ignore_entry_fails_its_stage_and_names_itself(
    time_env: WorkflowEnvironment, memory: MemoryBackends, task_queue: str
) -> None:
    spec = heal7_ignoring({"id": "B602", "reason": "command is constant", "expires": "2025-01-31"})

    result = await run_with_b602(time_env, memory, task_queue, spec)

    state, summary = stage(result, "security_scan")
    assert state == StageState.FAILED
    assert "bandit: ignore entry 'B602' expired on 2025-01-31" in summary
    assert "command is constant" in summary
    assert memory.builder.calls == []
