"""Many runs of different services at once (issue 19): `python -m tests.bench.lease_load`.

The 15-stage no-op definition of the overhead bench (three environments, so three leases a
run), each run under a service of its own, all started at once on one in-process worker
(`worker.build_worker`'s defaults: 20 activity slots) against the dev server. Prints how many
ended in each state and when, or how many had not ended at the deadline. Keep `--runs` small
on a shared machine (the default, 60, takes about a minute on two cores).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import time
import uuid
from typing import Any

from temporalio.client import Client, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from contracts.messages import PipelineResult
from contracts.naming import SEARCH_ATTRIBUTES
from starters.runs import pipeline_outcome
from tests.bench.definitions import POLICY, overhead_spec, pipeline_input
from tests.bench.run import temporal_binary
from tests.support.memory import MemoryBackends
from worker import build_worker
from workflows.pipeline.workflow import PipelineWorkflow


async def start(client: Client, task_queue: str, service: str) -> WorkflowHandle[Any, Any]:
    spec = overhead_spec()
    spec = spec.model_copy(update={"service": spec.service.model_copy(update={"name": service})})
    inp = pipeline_input(spec)
    inp = inp.model_copy(update={"run": inp.run.model_copy(update={"service": service})})
    return await client.start_workflow(
        PipelineWorkflow.run, inp, id=f"load-{service}", task_queue=task_queue
    )


async def main(runs: int, deadline_s: float) -> int:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_binary(),
        data_converter=pydantic_data_converter,
        search_attributes=SEARCH_ATTRIBUTES,
        dev_server_log_level="error",
    )
    try:
        client, tq, tag = env.client, f"load-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex[:6]
        memory = MemoryBackends()
        memory.platform.per_service = True
        async with build_worker(client, memory.backends(), tq, policy_file=POLICY):
            t0 = time.monotonic()
            handles = await asyncio.gather(
                *(start(client, tq, f"svc{tag}x{i}") for i in range(runs))
            )
            ended: list[tuple[float, PipelineResult]] = []

            async def watch(handle: WorkflowHandle[Any, Any]) -> None:
                result = await pipeline_outcome(handle)
                ended.append((time.monotonic() - t0, result))

            try:
                async with asyncio.timeout(deadline_s):
                    await asyncio.gather(*(watch(h) for h in handles))
            except TimeoutError:
                pass
        states = collections.Counter(r.state.value for _, r in ended)
        times = sorted(t for t, _ in ended)
        print(f"{runs} runs of {runs} services started at once; {len(ended)} ended: {dict(states)}")
        if times:
            print(f"first ended after {times[0]:.1f} s, last after {times[-1]:.1f} s")
        if len(ended) < runs:
            print(f"{runs - len(ended)} had not ended after {deadline_s:.0f} s")
            return 1
        return 0
    finally:
        await env.shutdown()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=60)
    parser.add_argument("--deadline", type=float, default=300.0, help="seconds")
    args = parser.parse_args()
    raise SystemExit(asyncio.run(main(args.runs, args.deadline)))
