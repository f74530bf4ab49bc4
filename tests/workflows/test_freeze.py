"""Freeze windows: the cron reading (pure) and a deploy that waits for a window's end or for
the freeze gate's approval (time-skipping server)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from temporalio.testing import WorkflowEnvironment

from contracts.definition.freeze import CronError, frozen_until, parse_cron
from contracts.definition.loading import validate_definition
from contracts.definition.model import DefinitionError, PipelineSpec
from contracts.messages import PipelineState, StageState
from starters.runs import pipeline_outcome
from tests.support.memory import MemoryBackends
from tests.support.pipelines import heal7, run_context, start, wait_for_gate, wait_for_stage
from tests.workflows.test_pipeline import approve, reach_production_gate
from worker import build_worker

pytestmark = pytest.mark.timeout(60)
SEOUL_WEEKEND = ("0 18 * * FRI", timedelta(hours=62), "Asia/Seoul")


@pytest.mark.parametrize(
    ("now", "frozen"),
    [
        (datetime(2026, 11, 27, 8, 59, tzinfo=UTC), None),  # Friday 17:59 in Seoul
        (datetime(2026, 11, 27, 9, 0, tzinfo=UTC), datetime(2026, 11, 29, 23, 0, tzinfo=UTC)),
        (datetime(2026, 11, 29, 22, 59, tzinfo=UTC), datetime(2026, 11, 29, 23, 0, tzinfo=UTC)),
        (datetime(2026, 11, 29, 23, 0, tzinfo=UTC), None),  # Monday 08:00: open again
    ],
)
def test_a_weekend_freeze_in_seoul(now: datetime, frozen: datetime | None) -> None:
    found = frozen_until([SEOUL_WEEKEND], now)
    assert (found[0] if found else None) == frozen


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("0 18 * *", "has 4 fields; cron needs 5"),
        ("61 * * * *", "minute: 61 is outside 0-59"),
        ("0 18 * * FUNDAY", "day of week: 'FUNDAY' is not a number or a name"),
        ("0 5-1 * * *", "hour: range '5-1' runs backwards"),
        ("*/0 * * * *", "minute: step '0' must be a positive number"),
    ],
)
def test_bad_cron_is_refused_with_the_field(expression: str, message: str) -> None:
    with pytest.raises(CronError, match=message):
        parse_cron(expression)


def test_cron_ranges_steps_and_names() -> None:
    cron = parse_cron("*/15 9-17 * JAN-MAR MON-FRI")
    assert cron.minutes == frozenset({0, 15, 30, 45})
    assert cron.months == frozenset({1, 2, 3})
    assert cron.weekdays == frozenset({1, 2, 3, 4, 5})


def frozen_production(now: datetime, roles: list[str]) -> PipelineSpec:
    """HEAL7 with production frozen from an hour before `now`, for three hours."""
    start_at = now - timedelta(hours=1)
    window = {"cron": f"{start_at.minute} {start_at.hour} * * *", "duration": "3h"}
    data = heal7().model_dump(mode="json", by_alias=True, exclude={"source"})
    data["environments"]["production"]["freeze"] = [window]
    data["environments"]["production"]["freeze_override_roles"] = roles
    return validate_definition(data, "frozen.yaml")


def test_a_bad_freeze_window_names_the_field() -> None:
    data = heal7().model_dump(mode="json", by_alias=True, exclude={"source"})
    data["environments"]["production"]["freeze"] = [{"cron": "0 18 * *", "duration": "1h"}]
    data["environments"]["staging"]["freeze"] = [
        {"cron": "0 18 * * FRI", "duration": "1h", "timezone": "Mars/Olympus"}
    ]
    with pytest.raises(DefinitionError) as refused:
        validate_definition(data, "frozen.yaml")
    text = str(refused.value)
    assert "environments.production.freeze.0.cron" in text
    assert "has 4 fields" in text
    assert "unknown time zone 'Mars/Olympus'" in text


async def test_a_deploy_in_a_freeze_waits_for_its_end(
    time_env: WorkflowEnvironment, memory: MemoryBackends, task_queue: str
) -> None:
    spec = frozen_production(datetime.now(UTC), roles=[])
    async with build_worker(time_env.client, memory.backends(), task_queue):
        handle = await start(time_env.client, task_queue, spec, run_context())
        await reach_production_gate(handle)
        await approve(handle, "carol", "production")
        await approve(handle, "dave", "production")
        st = await wait_for_stage(handle, "deploy_production", StageState.WAITING)
        waiting = next(s for s in st.stages if s.name == "deploy_production")
        result = await pipeline_outcome(handle)  # time skips to the window's end
    assert waiting.summary.startswith("production is frozen until ")
    assert result.state == PipelineState.SUCCEEDED
    deployed = next(s for s in result.stages if s.name == "deploy_production")
    assert deployed.ended_at is not None
    assert deployed.started_at is not None
    assert deployed.ended_at - deployed.started_at >= timedelta(hours=1, minutes=50)


async def test_the_freeze_gate_lets_a_deploy_through(
    time_env: WorkflowEnvironment, memory: MemoryBackends, task_queue: str
) -> None:
    spec = frozen_production(datetime.now(UTC), roles=["cto"])
    async with build_worker(time_env.client, memory.backends(), task_queue):
        handle = await start(time_env.client, task_queue, spec, run_context())
        await reach_production_gate(handle)
        await approve(handle, "carol", "production")
        await approve(handle, "dave", "production")
        st = await wait_for_gate(handle, "production-freeze")
        await approve(handle, "carol", "production-freeze")
        await wait_for_stage(handle, "deploy_production", StageState.SUCCEEDED)
        result = await pipeline_outcome(handle)
    waiting = next(s for s in st.stages if s.name == "deploy_production")
    assert "one of ['cto'] approves gate 'production-freeze'" in waiting.summary
    assert result.state == PipelineState.SUCCEEDED
    assert ("carol", "production-freeze") in [(a.approver, a.gate) for a in result.approvals]
