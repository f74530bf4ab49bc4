"""The workflow sandbox: nondeterministic calls in workflow code are caught, our workflow
modules run inside it, and `slipway replay` judges histories in the worker's own sandbox."""

from __future__ import annotations

import asyncio
import dataclasses
import pkgutil
import sys
import types
import uuid
import warnings
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import WorkflowInstance, WorkflowInstanceDetails
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

import plumbing.sandbox as sandbox_module
import workflows
from plumbing.sandbox import PASSTHROUGH, restrictions
from starters.runs import pipeline_outcome, replayer
from tests.histories.record import approve_everything
from tests.support.clock_workflow import ClockReadingWorkflow
from tests.support.memory import MemoryBackends
from tests.support.pipelines import start
from worker import build_worker

pytestmark = pytest.mark.timeout(60)


async def _first_task_done(handle: Any) -> None:
    for _ in range(200):
        async for event in handle.fetch_history_events():
            if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
                return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{handle.id}: no workflow task completed")


async def _first_task_failure(client: Client, workflow_id: str) -> tuple[str, str]:
    """(type, message) of the first failed workflow task."""
    handle = client.get_workflow_handle(workflow_id)
    for _ in range(100):
        async for event in handle.fetch_history_events():
            if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED:
                failure = event.workflow_task_failed_event_attributes.failure
                return failure.application_failure_info.type, failure.message
        await asyncio.sleep(0.1)
    raise AssertionError(f"{workflow_id}: no workflow task failed")


async def test_datetime_now_in_workflow_code_is_caught(
    time_env: WorkflowEnvironment, memory: MemoryBackends, task_queue: str
) -> None:
    client = time_env.client
    worker = build_worker(
        client, memory.backends(), task_queue, extra_workflows=[ClockReadingWorkflow]
    )
    async with worker:
        handle = await client.start_workflow(
            ClockReadingWorkflow.run, id=f"clock-{uuid.uuid4()}", task_queue=task_queue
        )
        kind, message = await _first_task_failure(client, handle.id)
        await handle.terminate("test over")
    assert kind == "RestrictedWorkflowAccessError"
    assert "Cannot access datetime.datetime.now" in message


def test_only_contracts_and_pure_libraries_pass_through() -> None:
    passthrough = restrictions().passthrough_modules
    assert "contracts" in passthrough
    names = {f"workflows.{m.name}" for m in pkgutil.walk_packages(workflows.__path__, "")}
    assert {"workflows.pipeline", "workflows.environment", "workflows.stages"} <= names
    for name in sorted(names):
        parents = {name[:i] for i in range(len(name)) if name[i] == "."} | {name}
        assert not parents & passthrough, f"{name} would run outside the sandbox's checks"
    assert {"workflows", "activities", "plumbing", "starters"}.isdisjoint(passthrough)
    assert set(PASSTHROUGH) <= passthrough


async def test_replay_uses_the_workers_runner_and_workflows(
    time_env: WorkflowEnvironment, memory: MemoryBackends, task_queue: str
) -> None:
    # The worker is built only to read its configuration; it never polls.
    worker = build_worker(time_env.client, memory.backends(), task_queue).config()
    replay = replayer().config()
    assert replay["workflows"] == worker["workflows"]
    runners: list[Any] = [replay["workflow_runner"], worker["workflow_runner"]]
    assert all(isinstance(r, SandboxedWorkflowRunner) for r in runners)
    assert runners[0].restrictions == runners[1].restrictions == restrictions()
    assert runners[0].runner_class is runners[1].runner_class


OURS = ("workflows", "activities", "plumbing", "starters", "worker")

PIPELINE_SANDBOX = {
    # The packages on the way (their __init__ holds a docstring only).
    "workflows",
    "workflows.pipeline",
    "workflows.stages",
    # The workflow and its parts.
    "workflows.pipeline.workflow",
    "workflows.pipeline.gates",
    "workflows.pipeline.rollbacks",
    "workflows.pipeline.visibility",
    # What its stages run: one module per family of kinds, their shared state and dispatch.
    "workflows.stages.run_state",
    "workflows.stages.dispatch",
    "workflows.stages.source",
    "workflows.stages.artifacts",
    "workflows.stages.environments",
    "workflows.stages.web",
    # What the run calls: activities by name, decisions, gate notices, its leases, metrics.
    "workflows.calls",
    "workflows.decision_desk",
    "workflows.gate_notices",
    "workflows.run_leases",
    "workflows.telemetry",
}
"""Every module of ours a pipeline run's sandbox imports again: the pipeline's own workflow
code, nothing of the environment, canary or monitor workflows (children and environments run
in sandboxes of their own; a pipeline names them, it does not import them) and nothing of
activities, plumbing or starters."""


@dataclasses.dataclass(frozen=True)
class _RecordingRunner(SandboxedWorkflowRunner):
    """The worker's sandboxed runner, keeping each run's sandbox to look into afterwards."""

    made: list[tuple[str, Any]] = dataclasses.field(default_factory=list)

    def create_instance(self, det: WorkflowInstanceDetails) -> WorkflowInstance:
        instance = super().create_instance(det)
        if det.info.workflow_id != "sandbox-validate-workflow_id":  # not the start-up check
            self.made.append((det.defn.name or "", instance))
        return instance


def shares_code(module: Any, other: Any) -> bool:
    """Whether the functions and methods written in `module`'s file run `other`'s code
    objects (and there is at least one: a module of constants proves nothing). Methods a
    dataclass generates are compiled per class, so they are not compared."""
    pairs = []
    for name, value in vars(module).items():
        if getattr(value, "__module__", None) != module.__name__:
            continue
        if isinstance(value, types.FunctionType):
            pairs.append((value, getattr(other, name)))
        elif isinstance(value, type):
            pairs += [
                (f, vars(getattr(other, name))[n])
                for n, f in vars(value).items()
                if isinstance(f, types.FunctionType)
            ]
    written = [(f, o) for f, o in pairs if f.__code__.co_filename == module.__file__]
    return bool(written) and all(f.__code__ is o.__code__ for f, o in written)


def reimported(instance: Any) -> dict[str, Any]:
    """Modules the sandbox of one run holds that it imported itself (not passed through)."""
    importer = instance.importer
    return {
        name: module
        for name, module in importer.new_modules.items()
        if not importer.module_configured_passthrough(name)
    }


@pytest.mark.timeout(120)
async def test_a_pipeline_sandbox_imports_only_the_pipelines_workflow_modules(
    time_env: WorkflowEnvironment,
    memory: MemoryBackends,
    task_queue: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A HEAL7 run to production (gates, canary and monitor children, leases on three
    environments) in the worker's own sandbox: its sandbox re-imports exactly
    PIPELINE_SANDBOX of our modules (18, within a budget of 20), shares every `contracts`
    module with the host, and imports no module of ours after it was loaded."""
    runners: list[_RecordingRunner] = []

    def recording(**kwargs: Any) -> _RecordingRunner:
        runners.append(_RecordingRunner(**kwargs))
        return runners[-1]

    # The worker's own `workflow_runner()`, with a runner that keeps each run's sandbox.
    monkeypatch.setattr(sandbox_module, "SandboxedWorkflowRunner", recording)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # the sandbox warns of a late import (its default)
        async with build_worker(time_env.client, memory.backends(), task_queue):
            handle = await start(time_env.client, task_queue)
            await approve_everything(handle)
            result = await pipeline_outcome(handle)
    assert result.state.value == "succeeded", result.failure
    late = [str(w.message) for w in caught if "after initial workflow load" in str(w.message)]
    assert not [m for m in late if m.split()[1].split(".")[0] in OURS], late
    (runner,) = runners
    pipelines = [i for name, i in runner.made if name == "PipelineWorkflow"]
    assert pipelines, "no pipeline sandbox was made"
    ours: set[str] = set()
    for instance in pipelines:
        modules = reimported(instance)
        ours |= {n for n in modules if n.split(".", 1)[0] in OURS}
        shared = {
            n: m for n, m in instance.importer.new_modules.items() if n.split(".")[0] == "contracts"
        }
        assert shared, "the pipeline imports contracts: the reader is broken"
        assert all(m is sys.modules[n] for n, m in shared.items()), "contracts re-imported"
    assert ours == PIPELINE_SANDBOX
    assert len(ours) <= 20  # the budget: a new module here is a choice, not a drift
    others = {name for name, _ in runner.made} - {"PipelineWorkflow"}
    assert {"EnvironmentWorkflow", "CanaryWorkflow", "MonitorWorkflow"} <= others


async def test_each_run_has_its_own_workflow_modules_on_code_compiled_once(
    time_env: WorkflowEnvironment,
    memory: MemoryBackends,
    task_queue: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two runs, two sandboxes: each imports the pipeline's modules again (its own module
    objects and globals, where the sandbox's checks apply), but both run the same code
    objects, compiled once per process (`plumbing.sandbox.share_workflow_code`), not once per
    run in the cache."""
    runners: list[_RecordingRunner] = []

    def recording(**kwargs: Any) -> _RecordingRunner:
        runners.append(_RecordingRunner(**kwargs))
        return runners[-1]

    monkeypatch.setattr(sandbox_module, "SandboxedWorkflowRunner", recording)
    async with build_worker(time_env.client, memory.backends(), task_queue):
        for _ in range(2):
            handle = await start(time_env.client, task_queue)
            await _first_task_done(handle)  # the worker has made the run's sandbox
            await handle.terminate("two sandboxes were all this test needed")
    (runner,) = runners
    first, second = [reimported(i) for n, i in runner.made if n == "PipelineWorkflow"][:2]
    compared = 0
    for name, module in first.items():
        if name.split(".", 1)[0] != "workflows" or name not in PIPELINE_SANDBOX:
            continue
        assert module is not second[name]
        if not name.endswith(("workflows", "pipeline", "stages")):  # not the packages
            assert shares_code(module, second[name]), name
            compared += 1
    assert compared == len(PIPELINE_SANDBOX) - 3
