"""`make demo`: the whole journey on this machine, twice.

Starts the Temporal dev server (db under .demo/, UI on :8233), a worker on the local platform
(Traefik + real processes), makes a throwaway git repo of examples/hello-service and runs
pipelines/demo.yaml for two commits:
  1. hello-service 0.1.0 goes all the way to production (approvals given with `slipway approve`);
  2. 0.2.0 answers in 800 ms: its tests and smoke checks pass, the canary's p95 check
     (<= 500 ms) catches it, traffic goes back to 0.1.0, which production still serves.
Prints a summary and stops every process it started.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from starters.localstack import (
    ROOT,
    DevServer,
    WorkerProcess,
    commit_fault,
    connect_to,
    make_service_repo,
    production_version,
    wait_for_gate,
)
from starters.runs import pipeline_outcome, run_url
from workflows.messages import PipelineResult
from workflows.naming import pipeline_id

APPROVERS = {"staging": ["alice"], "production": ["carol", "dave"]}
AUTHOR = "erin"


@dataclass
class DemoRun:
    label: str
    workflow_id: str
    result: PipelineResult
    url: str


def slipway(address: str, task_queue: str, *args: str) -> str:
    """Run the CLI the way a user does, and echo what it printed."""
    env = {**os.environ, "TEMPORAL_ADDRESS": address, "SLIPWAY_TASK_QUEUE": task_queue}
    out = subprocess.run(
        [sys.executable, "-m", "starters", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    text = (out.stdout + out.stderr).strip()
    print("  $ slipway " + " ".join(args[:2]) + " ...\n    " + text.replace("\n", "\n    "))
    if out.returncode != 0:
        raise RuntimeError(f"slipway {args[0]} failed ({out.returncode}): {text}")
    return out.stdout


async def deliver(address: str, task_queue: str, repo: Path, commit: str, label: str) -> DemoRun:
    print(f"\n== {label}: commit {commit[:12]}")
    slipway(
        address,
        task_queue,
        "start",
        "--definition",
        str(ROOT / "pipelines" / "demo.yaml"),
        "--repo",
        str(repo),
        "--commit",
        commit,
        "--author",
        AUTHOR,
        "--branch",
        "main",
        "--roles",
        str(ROOT / "pipelines" / "roles.yaml"),
    )
    workflow_id = pipeline_id("hello", "main", commit)
    client = await connect_to(address)
    for gate, people in APPROVERS.items():
        st = await wait_for_gate(client, workflow_id, gate)
        if st.state.value != "running":
            break
        for person in people:
            slipway(
                address,
                task_queue,
                "approve",
                workflow_id,
                "--approver",
                person,
                "--gate",
                gate,
                "--comment",
                "demo approval",
            )
    result = await pipeline_outcome(client.get_workflow_handle(workflow_id))
    described = await client.get_workflow_handle(workflow_id).describe()
    return DemoRun(label, workflow_id, result, run_url(client, workflow_id, described.run_id))


async def main_async(args: argparse.Namespace, home: Path) -> int:
    started = time.monotonic()
    server = DevServer(
        home / "temporal.db", port=args.port, ui_port=args.ui_port, log_file=home / "temporal.log"
    )
    worker = WorkerProcess(
        server.address,
        home / "state",
        base_port=args.base_port,
        task_queue="slipway-demo",
        log_file=home / "worker.log",
    )
    production_port = args.base_port + 3
    runs: list[DemoRun] = []
    try:
        print(f"Temporal dev server on {server.address}, UI {server.ui_url()}")
        server.start()
        worker.start()
        print(f"worker on the local platform (log: {worker.log_file})")
        repo = home / "repo"
        good = make_service_repo(repo, author=AUTHOR)
        runs.append(await deliver(server.address, "slipway-demo", repo, good, "release 0.1.0"))
        print(f"  production now serves: {production_version(production_port)}")
        bad = commit_fault(repo, version="0.2.0", author=AUTHOR, extra_latency_ms=800)
        runs.append(
            await deliver(server.address, "slipway-demo", repo, bad, "release 0.2.0 (800 ms slow)")
        )
        now = production_version(production_port)
    finally:
        worker.stop()
        worker.stop_platform()
        server.stop()

    print("\n== summary")
    for run in runs:
        r = run.result
        where = ", ".join(f"{e}={d[7:19]}" for e, d in r.deployed.items())
        print(f"  {run.label}: {r.state.value} ({where})")
        if r.failure:
            print(f"    why: {r.failure}")
        print(f"    {run.url}")
    print(
        f"  production served at the end: version {now.get('version')} "
        f"digest {str(now.get('digest', ''))[7:19]}"
    )
    print(f"  demo took {time.monotonic() - started:.0f}s; all processes stopped")
    print(f"  to browse the runs: make dev-server (db {server.db_file}), then {server.ui_url()}")
    expected = (
        len(runs) == 2
        and runs[0].result.state.value == "succeeded"
        and runs[1].result.state.value == "rolled_back"
        and now.get("version") == "0.1.0"
    )
    return 0 if expected else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--dir", default=str(ROOT / ".demo"))
    parser.add_argument("--port", type=int, default=7233)
    parser.add_argument("--ui-port", type=int, default=8233)
    parser.add_argument("--base-port", type=int, default=18080)
    args = parser.parse_args()
    home = Path(args.dir).resolve()
    home.mkdir(parents=True, exist_ok=True)
    sys.exit(asyncio.run(main_async(args, home)))


if __name__ == "__main__":
    main()
