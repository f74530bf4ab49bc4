"""The soak: many commits in flight on the local platform while workers and the server die.

    .venv/bin/python -m tests.soak.run                  # small: 12 pipelines
    .venv/bin/python -m tests.soak.run --scale medium   # 40 pipelines, 5 server restarts (~10 min)
    .venv/bin/python -m tests.soak.run --scale large    # 200 pipelines, 20 server restarts

One Temporal dev server (SQLite file), two workers on one task queue sharing one local
platform (Traefik and hello-service releases), `pipelines/hello.yaml` with a short monitor.
Commits of hello-service are started a few seconds apart, every fourth one faulty (800 ms
slower, which its canary must catch); approvals are given as gates open. Meanwhile a worker
is SIGKILLed every few seconds (and started again), and the dev server is killed and started
again on the same database file.

At the end it checks the invariants, prints what happened and exits 1 if one is broken:
- every run ended (none lost), with the verdict its commit deserves: a good commit succeeded
  or was superseded; a faulty one was rolled back or superseded; neither failed otherwise;
- production serves the newest good commit that succeeded, by its record and over HTTP;
- production's record never shows an older commit replacing a newer one (rollbacks aside);
- every commit was built once (one artifact per commit in the store).

The soak ships one service: its runs compete for the same environments.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import shutil
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from temporalio.client import Client, WorkflowExecutionStatus

from contracts.definition.model import PipelineSpec
from contracts.messages import PipelineResult, PipelineState, RunContext
from contracts.naming import environment_id
from demo.localstack import (
    DevServer,
    WorkerProcess,
    connect_to,
    git,
    make_service_repo,
    production_version,
)
from starters.runs import pipeline_outcome, start_pipeline
from tests.e2e.crashkit import approve
from tests.support.devstack import APPROVERS, DEMO_ROLES, HELLO_SPEC, stop_strays
from tests.support.ports import free_port_block
from workflows.environment.workflow import EnvironmentWorkflow
from workflows.pipeline.workflow import PipelineWorkflow


@dataclass(frozen=True)
class Scale:
    pipelines: int
    start_every_s: float
    kill_every_s: tuple[float, float]
    restarts: int
    deadline_s: float


SCALES = {
    # CI's: a dozen commits, a kill every 4-9 s, two server restarts, about three minutes.
    "small": Scale(12, 6.0, (4.0, 9.0), 2, 600.0),
    # More commits than environments can serve at once, a kill every 2-5 s, a server
    # restart about every 25 s: about ten minutes.
    "medium": Scale(40, 3.0, (2.0, 5.0), 5, 1200.0),
    # 200 commits. A kill every 6-12 s, not the 1-3 s first tried: a worker takes about 5 s
    # to start on a loaded 2-core machine, so at 1-3 s the workers were dead most of the
    # time and good commits failed their stages' own timeouts (docs/performance.md).
    "large": Scale(200, 6.0, (6.0, 12.0), 20, 4 * 3600.0),
}


@dataclass
class Commit:
    sha: str
    version: str
    faulty: bool
    at: datetime
    workflow_id: str = ""
    result: PipelineResult | None = None


@dataclass
class Tally:
    kills: int = 0
    restarts: int = 0
    problems: list[str] = field(default_factory=list)


def soak_spec() -> PipelineSpec:
    stages = [
        s.model_copy(update={"duration": timedelta(seconds=12)}) if s.kind == "monitor" else s
        for s in HELLO_SPEC.stages
    ]
    return HELLO_SPEC.model_copy(update={"stages": stages})


def make_commits(repo: Path, count: int, t0: datetime) -> list[Commit]:
    """Commit 1 is 0.1.0 (good); then every fourth is faulty: 800 ms slower."""
    commits = [Commit(make_service_repo(repo), "0.1.0", False, t0)]
    config = repo / "hello_service" / "config.json"
    pyproject = repo / "pyproject.toml"
    for n in range(2, count + 1):
        version, faulty = f"0.{n}.0", n % 4 == 0
        knobs = json.loads(config.read_text(encoding="utf-8"))
        # Slow enough for the canary's p95 check, fast enough for the smoke checks before it.
        knobs.update({"extra_latency_ms": 800.0 if faulty else 0.0})
        config.write_text(json.dumps(knobs, indent=2) + "\n", encoding="utf-8")
        text = re.sub(
            r'^version = ".*"$', f'version = "{version}"', pyproject.read_text(), flags=re.M
        )
        pyproject.write_text(text, encoding="utf-8")
        git(
            repo,
            "commit",
            "-q",
            "-am",
            f"hello-service {version}" + (" (faulty)" if faulty else ""),
        )
        commits.append(
            Commit(git(repo, "rev-parse", "HEAD"), version, faulty, t0 + timedelta(minutes=n))
        )
    return commits  # fmt: skip


async def approver(client: Client, commits: list[Commit], done: asyncio.Event) -> None:
    """Approve every open gate of every running pipeline, as people would."""
    approved: set[tuple[str, str]] = set()
    while not done.is_set():
        for commit in commits:
            if not commit.workflow_id or commit.result is not None:
                continue
            try:
                st = await client.get_workflow_handle(commit.workflow_id).query(
                    PipelineWorkflow.status
                )
                for pending in st.pending_approvals:
                    key = (commit.workflow_id, pending.gate)
                    if key not in approved and pending.gate in APPROVERS:
                        await approve(
                            client, commit.workflow_id, pending.gate, APPROVERS[pending.gate]
                        )
                        approved.add(key)
            except Exception:
                continue
        await asyncio.sleep(0.5)


async def killer(
    workers: list[WorkerProcess], scale: Scale, tally: Tally, done: asyncio.Event
) -> None:
    rng = random.Random(7)
    while not done.is_set():
        await asyncio.sleep(rng.uniform(*scale.kill_every_s))
        if done.is_set():
            break
        victim = rng.choice(workers)
        victim.kill()
        tally.kills += 1
        await asyncio.sleep(1.0)
        victim.start()


async def restarter(server: DevServer, scale: Scale, tally: Tally, done: asyncio.Event) -> None:
    every = max(scale.pipelines * scale.start_every_s / (scale.restarts + 1), 10.0)
    for _ in range(scale.restarts):
        await asyncio.sleep(every)
        if done.is_set():
            return
        server.stop(9)
        await asyncio.sleep(1.0)
        server.start()
        tally.restarts += 1


async def outcome(client: Client, commit: Commit, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            handle = client.get_workflow_handle(commit.workflow_id)
            described = await handle.describe()
            if described.status != WorkflowExecutionStatus.RUNNING:
                commit.result = await pipeline_outcome(handle)
                return
        except Exception:
            pass
        await asyncio.sleep(1.0)


def check(commits: list[Commit], prod: dict[str, object], served_version: str, store: Path,
          tally: Tally) -> None:  # fmt: skip
    problems = tally.problems
    for c in commits:
        r = c.result
        if r is None:
            problems.append(f"lost: {c.workflow_id} ({c.version}) never ended")
            continue
        allowed = (
            {PipelineState.ROLLED_BACK, PipelineState.SUPERSEDED}
            if c.faulty
            else {PipelineState.SUCCEEDED, PipelineState.SUPERSEDED}
        )
        if r.state not in allowed:
            problems.append(
                f"wrong outcome: {c.version} ({'faulty' if c.faulty else 'good'}) ended "
                f"{r.state.value}: {r.failure[:160]}"
            )
    good = [c for c in commits if c.result and c.result.state == PipelineState.SUCCEEDED]
    newest = max(good, key=lambda c: c.at) if good else None
    serving = prod.get("serving") or {}
    if (
        newest is not None
        and isinstance(serving, dict)
        and serving.get("run") != newest.workflow_id
    ):
        problems.append(
            f"production records {serving.get('run')}, not the newest good {newest.workflow_id}"
        )
    if newest is not None and served_version != newest.version:
        problems.append(f"production answers {served_version}, not {newest.version}")
    order = {c.workflow_id: c.at for c in commits}
    last: datetime | None = None
    for entry in prod.get("releases", []):  # type: ignore[attr-defined]
        if entry["outcome"] in ("serving", "replaced") and entry["run"] in order:
            at = order[entry["run"]]
            if last is not None and at < last:
                problems.append(
                    f"an older commit replaced a newer one in production: {entry['run']}"
                )
            last = at
    index = store / "index" / "hello"
    built = sorted(p.stem for p in index.glob("*.json")) if index.exists() else []
    wheels = len(list((store / "sha256").glob("*.whl"))) if (store / "sha256").exists() else 0
    if wheels > len(built):
        problems.append(f"duplicate builds: {wheels} wheels for {len(built)} commits")
    tally.problems = problems  # fmt: skip


async def soak(scale: Scale, home: Path) -> Tally:
    tally = Tally()
    base = free_port_block(16)
    server = DevServer(
        home / "temporal.db", port=base, ui_port=base + 1, log_file=home / "temporal.log"
    )
    queue = f"soak-{uuid.uuid4().hex[:8]}"
    workers = [
        WorkerProcess(server.address, home / "state", base_port=base + 4, task_queue=queue,
                      log_file=home / f"worker-{i}.log")
        for i in (1, 2)
    ]  # fmt: skip
    spec, roles = soak_spec(), DEMO_ROLES
    commits = make_commits(home / "repo", scale.pipelines, datetime.now(UTC) - timedelta(days=1))
    done = asyncio.Event()
    try:
        server.start()
        for w in workers:
            w.start()
        client = await connect_to(server.address)
        chaos = [
            asyncio.ensure_future(approver(client, commits, done)),
            asyncio.ensure_future(killer(workers, scale, tally, done)),
            asyncio.ensure_future(restarter(server, scale, tally, done)),
        ]
        deadline = time.monotonic() + scale.deadline_s
        for c in commits:
            run = RunContext(service="hello", repo=str(home / "repo"), commit=c.sha, author="erin",
                             branch="main")  # fmt: skip
            for _ in range(60):  # the server may be restarting
                try:
                    c.workflow_id = (
                        await start_pipeline(client, spec, run, roles, queue)
                    ).workflow_id
                    break
                except Exception:
                    await asyncio.sleep(1.0)
            print(
                f"started {c.version}{' (faulty)' if c.faulty else ''}: {c.workflow_id}", flush=True
            )
            await asyncio.sleep(scale.start_every_s)
        await asyncio.gather(*(outcome(client, c, deadline) for c in commits))
        done.set()
        await asyncio.gather(*chaos, return_exceptions=True)
        for w in workers:  # a settled platform to read: no half-started worker
            if w.proc is None or w.proc.poll() is not None:
                w.start()
        prod = (await client.get_workflow_handle(environment_id("hello", "production")).query(
            EnvironmentWorkflow.state)).model_dump(mode="json")  # fmt: skip
        served = str(production_version(base + 4 + 3).get("version", "?"))
        check(commits, prod, served, home / "state" / "artifacts", tally)
        for c in commits:
            state = c.result.state.value if c.result else "LOST"
            print(f"  {c.version:>7} {'faulty' if c.faulty else 'good  '} {state}")
    finally:
        done.set()
        for w in workers:
            w.stop()
        workers[0].stop_platform()
        server.stop()
        stop_strays(home / "state" / "platform")
    return tally


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", choices=sorted(SCALES), default="small")
    parser.add_argument("--keep", action="store_true", help="keep the soak's directory")
    args = parser.parse_args()
    scale = SCALES[args.scale]
    home = Path(tempfile.mkdtemp(prefix="slipway-soak-"))
    started = time.monotonic()
    tally = asyncio.run(soak(scale, home))
    took = time.monotonic() - started
    lost = sum(1 for p in tally.problems if p.startswith("lost"))
    wrong = sum(1 for p in tally.problems if p.startswith("wrong"))
    dupes = sum(1 for p in tally.problems if p.startswith("duplicate"))
    print(f"soak {args.scale}: {scale.pipelines} runs, {tally.kills} worker kills, "
          f"{tally.restarts} server restarts, {lost} lost runs, {wrong} wrong outcomes, "
          f"{dupes} duplicate builds, {took:.0f} s")  # fmt: skip
    for problem in tally.problems:
        print(f"  PROBLEM {problem}")
    if not args.keep:
        shutil.rmtree(home, ignore_errors=True)
    else:
        print(f"kept {home}")
    sys.exit(1 if tally.problems else 0)


if __name__ == "__main__":
    main()
