"""The bench worker process: `worker.build_worker` (every Slipway workflow, the real activity
classes, the production cache size and sandbox passthrough) over in-memory backends with the
bench's scripted delays, plus `BaselineWorkflow` and an interceptor that timestamps each
activity start.

    python -m tests.bench.worker --address 127.0.0.1:7233 --task-queue bench --stamps FILE

Exactly the production worker configuration unless `--max-cached-workflows` (a what-if) says
otherwise.
Prints `ready <pid>` once polling, and shuts down gracefully on SIGTERM/SIGINT. Each stamp is a
line `<time.time()>\t<workflow id>\t<activity type>` written when the worker begins executing
the activity (before its backend runs), line-buffered so the driver can tail the file.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import time
from collections.abc import Mapping
from typing import Any, TextIO

from temporalio import activity
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import ActivityInboundInterceptor, ExecuteActivityInput, Interceptor

from activities.wiring.backends import Backends
from activities.wiring.observability import configure_logging
from contracts.activity import CheckoutRequest, Workspace
from tests.bench.baseline import BaselineWorkflow
from tests.bench.definitions import CHECKOUT_DELAYS, POLICY, SCANNER_DELAYS, TEST_DELAYS
from tests.bench.lease_cycle import LeaseCycleWorkflow
from tests.support.memory import MemoryBackends
from tests.support.memory_platform import MemoryScanner, MemorySource
from worker import build_worker

__all__ = ["RepoDelaySource", "StampInterceptor", "bench_backends"]


class RepoDelaySource(MemorySource):
    """`MemorySource` whose clone delay depends on the repository, so one worker serves both
    the no-op runs and the slow-checkout DAG runs."""

    def __init__(self, delays: Mapping[str, float]) -> None:
        super().__init__(delay_s=0.0)
        self._delays = dict(delays)

    def ensure(self, request: CheckoutRequest) -> Workspace:
        time.sleep(self._delays.get(request.repo, 0.0))
        return super().ensure(request)


def bench_backends() -> Backends:
    memory = MemoryBackends()
    # Many services at once (7a): each keeps its own environments on the memory platform.
    memory.platform.per_service = True
    memory.source = RepoDelaySource(CHECKOUT_DELAYS)
    memory.tests.delays = dict(TEST_DELAYS)
    for name, delay in SCANNER_DELAYS.items():
        memory.scanners[name] = MemoryScanner(name, delay_s=delay)
    return memory.backends()


class _StampActivity(ActivityInboundInterceptor):
    def __init__(self, next: ActivityInboundInterceptor, sink: TextIO) -> None:
        super().__init__(next)
        self._sink = sink

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        info = activity.info()
        self._sink.write(f"{time.time():.6f}\t{info.workflow_id}\t{info.activity_type}\n")
        return await super().execute_activity(input)


class StampInterceptor(Interceptor):
    """Timestamps every activity start into `sink` (wall clock, shared with the driver)."""

    def __init__(self, sink: TextIO) -> None:
        self._sink = sink

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _StampActivity(next, self._sink)


async def serve(
    address: str, namespace: str, task_queue: str, sink: TextIO, what_if: dict[str, Any]
) -> None:
    client = await Client.connect(
        address, namespace=namespace, data_converter=pydantic_data_converter
    )
    backends = bench_backends()
    # The production worker, as `worker.main` builds it with default settings, plus the
    # baseline workflow and the stamping interceptor (one file write per activity start).
    worker = build_worker(
        client,
        backends,
        task_queue,
        extra_workflows=[BaselineWorkflow, LeaseCycleWorkflow],
        interceptors=[StampInterceptor(sink)],
        policy_file=POLICY,
        **what_if,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with worker:
        print(f"ready {os.getpid()}", flush=True)
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--address", required=True)
    parser.add_argument("--namespace", default="default")
    parser.add_argument("--task-queue", required=True)
    parser.add_argument("--stamps", required=True)
    parser.add_argument("--log-level", default="WARNING")
    # What-if option (not Slipway's worker configuration): see run.py --help.
    parser.add_argument("--max-cached-workflows", type=int)
    parser.add_argument("--max-concurrent-activities", type=int)
    args = parser.parse_args()
    configure_logging(args.log_level)
    what_if: dict[str, Any] = {}
    if args.max_cached_workflows is not None:
        what_if["max_cached_workflows"] = args.max_cached_workflows
    if args.max_concurrent_activities is not None:
        what_if["max_concurrent_activities"] = args.max_concurrent_activities
    with open(args.stamps, "a", buffering=1, encoding="utf-8") as sink:
        asyncio.run(serve(args.address, args.namespace, args.task_queue, sink, what_if))


if __name__ == "__main__":
    main()
