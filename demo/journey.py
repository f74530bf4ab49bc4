"""`make demo`: the HEAL7 system's whole journey on this machine, twice.

Starts the Temporal dev server (db under .demo/, UI on :8233), a Prometheus (the canary judges
the backend's own `saju_calculations_total`), a worker on the local platform (Traefik + real
processes), makes a throwaway git repo of examples/heal7 and runs pipelines/demo.yaml for two
commits:
  1. 0.1.0 (backend and frontend, two artifacts) goes all the way to production: the
     backend's unit suite, its integration suite against a real PostgreSQL 16 and Redis 7,
     the frontend's npm build, ESLint, type check, unit and component suites (80% coverage),
     one wheel each, dev, staging (load, DAST, the frontend's browser tests driving a
     calculation through the backend, Lighthouse and WCAG AA) and one joint canary
     (approvals given with `slipway approve`, signed with SSH keys
     the demo generates: the demo worker's policy requires signed production decisions, as
     docs/production.md does);
  2. 0.2.0 fails a third of its calculations: its tests and smoke checks pass, the canary's
     checks (success rate, errors, calculations per second) catch it, traffic goes back to
     0.1.0, which production still serves.
In every environment the backend serves from its own PostgreSQL and Redis (the environment's
resources), its schema created by its release phase (`python -m app.migrate`). After 0.1.0 the
demo stores a few calculations through production's entry point; after 0.2.0's rollback it
reads them back from production.
Prints a summary and stops every process it started, the resources' servers included (they
outlive a worker by design; a crashed demo's are deleted when the next one starts).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from temporalio.client import Client, WorkflowFailureError
from temporalio.service import RPCError

from contracts.messages import CanaryResult, CanaryStep, EnvironmentState, PipelineResult
from contracts.naming import canary_id, environment_id, pipeline_id
from demo.localstack import (
    ROOT,
    DevServer,
    WorkerProcess,
    commit_backend_fault,
    connect_to,
    make_heal7_repo,
    production_version,
    wait_for_gate,
)
from demo.prometheus import INSTALL_HINT, DemoPrometheus
from starters.runs import pipeline_outcome, run_url
from workflows.environment.workflow import EnvironmentWorkflow

APPROVERS = {"staging": ["alice"], "production": ["carol", "dave"]}
AUTHOR = "erin"
DEFINITION = ROOT / "pipelines" / "demo.yaml"
SERVICE = "heal7"
"""The run's name; its deployables are the platform services heal7-backend and heal7-frontend."""
BACKEND, FRONTEND = f"{SERVICE}-backend", f"{SERVICE}-frontend"
FAULT = {"error_rate": 0.34}
"""The faulty release's knobs (backend/app/config.json): a third of the calculations fail
(every third or so: evenly spread), which its tests, making two or three each, do not see."""
# What a person watching the demo looks for in each run, in this order: the backend's and the
# frontend's CI, the frontend in development, staging's live tests, production's canary.
WATCHED_STAGES = (
    "unit_tests",
    "integration_tests",
    "frontend_build",
    "frontend_lint",
    "frontend_typecheck",
    "frontend_unit_tests",
    "frontend_component_tests",
    "quality_gate",
    "e2e_frontend_dev",
    "performance_tests",
    "security_tests",
    "browser_tests",
    "web_audit",
    "canary",
    "monitor",
)
ENVIRONMENTS = ("development", "staging", "production")
STORED = 5
"""Calculations the demo stores through production after 0.1.0, and reads back after 0.2.0."""


@dataclass
class DemoRun:
    label: str
    workflow_id: str
    result: PipelineResult
    url: str
    canary: CanaryResult | None = None


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


def demo_policy(home: Path) -> tuple[Path, dict[str, Path]]:
    """The demo worker's policy: pipelines/policy.yaml with an SSH key for each approver
    (generated once under .demo/keys) and production requiring signed decisions. Without
    ssh-keygen: the repository's policy as it is, and unsigned approvals."""
    base = ROOT / "pipelines" / "policy.yaml"
    keygen = shutil.which("ssh-keygen")
    if keygen is None:
        print("  (ssh-keygen not found: approvals are unsigned; apt-get install openssh-client)")
        return base, {}
    data = yaml.safe_load(base.read_text(encoding="utf-8"))
    keys: dict[str, Path] = {}
    (home / "keys").mkdir(parents=True, exist_ok=True)
    for person in sorted({p for people in APPROVERS.values() for p in people}):
        key = home / "keys" / f"{person}_ed25519"
        if not key.exists():
            subprocess.run(
                [keygen, "-q", "-t", "ed25519", "-N", "", "-C", f"{person} (demo)", "-f", str(key)],
                check=True,
            )
        keys[person] = key
        data["people"][person]["keys"] = [key.with_suffix(".pub").read_text().strip()]
    data["gates"]["production"] = {"signatures": "required"}
    policy = home / "policy.yaml"
    policy.write_text(
        "# Written by `make demo` from pipelines/policy.yaml: approvers' demo keys, production\n"
        "# decisions must be signed.\n" + yaml.safe_dump(data, sort_keys=False),
        encoding="utf-8",
    )
    return policy, keys


async def deliver(
    address: str,
    task_queue: str,
    repo: Path,
    commit: str,
    label: str,
    keys: dict[str, Path] | None = None,
    *,
    definition: Path = DEFINITION,
    service: str = SERVICE,
) -> DemoRun:
    print(f"\n== {label}: commit {commit[:12]}")
    slipway(
        address,
        task_queue,
        "start",
        "--definition",
        str(definition),
        "--repo",
        str(repo),
        "--commit",
        commit,
        "--author",
        AUTHOR,
        "--branch",
        "main",
    )
    workflow_id = pipeline_id(service, "main", commit)
    client = await connect_to(address)
    for gate, people in APPROVERS.items():
        st = await wait_for_gate(client, workflow_id, gate)
        if st.state.value != "running":
            break
        for person in people:
            key = (keys or {}).get(person)
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
                *(["--key", str(key)] if key else []),
            )
    result = await pipeline_outcome(client.get_workflow_handle(workflow_id))
    described = await client.get_workflow_handle(workflow_id).describe()
    url = run_url(client, workflow_id, described.run_id)
    return DemoRun(label, workflow_id, result, url, await _canary_result(client, workflow_id))


async def _canary_result(client: Client, workflow_id: str) -> CanaryResult | None:
    """The canary child's own result (every analysis with its measured values), when the
    run got that far."""
    try:
        handle = client.get_workflow_handle(canary_id(workflow_id, "canary"))
        raw = await handle.result()
    except (RPCError, WorkflowFailureError):
        return None
    return raw if isinstance(raw, CanaryResult) else CanaryResult.model_validate(raw)


def _get_json(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return int(resp.status), json.loads(resp.read())
    except urllib.error.HTTPError as err:
        try:
            return err.code, json.loads(err.read())
        except ValueError:
            return err.code, {}
    except (OSError, ValueError) as err:
        return 0, {"error": str(err)}


@dataclass
class StoredData:
    """Calculations stored through production's entry point, and what production answered
    for them later."""

    stored: dict[int, dict[str, Any]] = field(default_factory=dict)
    """Calculation id → the pillars answered when it was stored."""
    stored_by: str = ""
    found: int = 0
    """Read back later with the same pillars, stored by `stored_by`."""
    problems: list[str] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
    """The backend's /api/stats when read back: counts by release, the servers used."""


def store_calculations(port: int, count: int = STORED) -> StoredData:
    """Ask production for `count` calculations no one asked before (so none is answered
    from the cache): each is stored, and its id comes back."""
    data = StoredData()
    draw = random.Random()
    for _ in range(count):
        moment = datetime(1930, 1, 1) + timedelta(minutes=draw.randrange(80 * 365 * 24 * 60))
        birth = moment.strftime("%Y-%m-%dT%H:%M")
        code, body = _get_json(f"http://127.0.0.1:{port}/api/saju?birth={birth}&tz=Asia/Seoul")
        if code == 200 and isinstance(body.get("id"), int):
            data.stored[body["id"]] = body["pillars"]
            data.stored_by = str(body.get("version", ""))
        else:
            data.problems.append(f"storing {birth}: {code} {body.get('error', body)}")
    return data


def read_back(port: int, data: StoredData) -> StoredData:
    """Ask production for each stored calculation by id, and for its storage summary."""
    for calculation_id, pillars in data.stored.items():
        code, body = _get_json(f"http://127.0.0.1:{port}/api/calculations/{calculation_id}")
        if code == 200 and (body.get("pillars"), body.get("stored_by")) == (
            pillars,
            data.stored_by,
        ):
            data.found += 1
        else:
            data.problems.append(f"calculation {calculation_id}: {code} {body}")
    code, data.stats = _get_json(f"http://127.0.0.1:{port}/api/stats")
    if code != 200:
        data.problems.append(f"/api/stats: {code} {data.stats}")
    return data


async def environment_records(address: str, service: str = SERVICE) -> list[EnvironmentState]:
    """Each environment's record (`slipway env heal7`): its releases, and what each one's
    release phase did there."""
    client = await connect_to(address)
    states = []
    for environment in ENVIRONMENTS:
        handle = client.get_workflow_handle(environment_id(service, environment))
        try:
            states.append(await handle.query(EnvironmentWorkflow.state))
        except RPCError:
            continue
    return states


def release_phase_lines(
    states: list[EnvironmentState], versions: dict[str, str] | None = None
) -> list[str]:
    """Per environment, each release in its record (by version where `versions` names its
    commit) with what its release phase did there, and how it ended."""
    lines = []
    for state in states:
        shown = []
        for entry in state.releases:
            name = next(
                (v for c, v in (versions or {}).items() if entry.commit.startswith(c)), None
            )
            if name is None and versions:
                continue  # an earlier demo's (the dev server's db file is kept)
            name = name or entry.commit[:12]
            if entry.release is None:  # a canary never promoted: it has no release record
                shown.append(f"{name} ({entry.outcome})")
            else:
                phase = entry.release.release_phase or "no release command"
                shown.append(f"{name} {phase} ({entry.outcome})")
        lines.append(f"{state.environment}: {'; '.join(shown) or 'no release'}")
    return lines


def deploy_phases(result: PipelineResult) -> dict[str, str]:
    """What this run's release phase did in each environment it deployed to, by deploy
    stage (`dev` for deploy_dev), from their summaries: a canary rolled back included."""
    shown = {}
    for stage in result.stages:
        _, found, phase = stage.summary.partition("; release phase: ")
        if found and stage.name.startswith("deploy"):
            shown[stage.name.removeprefix("deploy_")] = phase.split("; config: ")[0]
    return shown


def _measured(step: CanaryStep) -> str:
    values = step.sample.values if step.sample else {}
    shown = ", ".join(
        f"{k} {v:.3g}" if v is not None else f"{k} no data" for k, v in values.items()
    )
    return f"{'passed' if step.passed else 'FAILED'}: {shown}"


def frontend_health(port: int) -> dict[str, Any]:
    """What the frontend behind production's entry point says on /health (the backend owns
    the bare entry point; the frontend is reached by its Host name, as a browser would)."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/health", headers={"Host": f"{FRONTEND}.localhost"}
    )
    try:
        with urllib.request.urlopen(request, timeout=3) as resp:
            data: dict[str, Any] = json.loads(resp.read())
            return data
    except (OSError, ValueError) as err:
        return {"error": str(err)}


def _summary(
    runs: list[DemoRun],
    now: dict[str, object],
    frontend: dict[str, Any],
    data: StoredData | None,
    records: list[EnvironmentState],
    versions: dict[str, str],
) -> None:
    print("\n== summary")
    for run in runs:
        r = run.result
        where = ", ".join(f"{e}={d[7:19]}" for e, d in r.deployed.items()) or "nowhere"
        print(f"  {run.label}: {r.state.value} (serving: {where})")
        stages = {stage.name: stage for stage in r.stages}
        for name in WATCHED_STAGES:
            stage = stages.get(name)
            if stage is not None and stage.summary:
                print(f"    {name} [{stage.state.value}]: {stage.summary}")
        ran: dict[str, list[str]] = {}
        for environment, phase in deploy_phases(r).items():
            ran.setdefault(phase, []).append(environment)
        for phase, environments in ran.items():
            print(f"    release phase in {', '.join(environments)}: {phase}")
        if run.canary is not None:
            if run.canary.preflight is not None:
                print(f"      pre-flight on stable: {_measured(run.canary.preflight)}")
            for step in run.canary.steps:
                print(f"      canary at {step.weight}%: {_measured(step)}")
        if r.rolled_back:
            print(f"    rolled back: {', '.join(r.rolled_back)}")
        if r.failure:
            print(f"    why: {r.failure}")
        print(f"    {run.url}")
    print(
        f"  production served at the end: {now.get('service')} {now.get('version')}, "
        f"{FRONTEND} {frontend.get('version', frontend)}"
    )
    if data is not None:
        stats = data.stats
        by_version = stats.get("by_version") or {}
        print(
            f"  production ({now.get('version')} after the rollback of 0.2.0) still serves "
            f"{data.found} of the {len(data.stored)} calculations stored through it by "
            f"{data.stored_by or '?'} (read back by id from its own PostgreSQL)"
        )
        print(
            f"    the backend's storage: {stats.get('storage', '?')}, cache "
            f"{stats.get('cache', '?')}; stored by release: "
            + (", ".join(f"{v} {n}" for v, n in by_version.items()) or "none")
            + " (the demo's and the canary's load)"
        )
        for problem in data.problems:
            print(f"    problem: {problem}")
    if records:
        print("  each environment's record: this demo's releases, their release phase, outcome")
        for line in release_phase_lines(records, versions):
            print(f"    {line}")


async def main_async(args: argparse.Namespace, home: Path) -> int:
    started = time.monotonic()
    if DemoPrometheus.binary() is None:
        print(
            "The demo's canary judges the backend's saju_calculations_total through a "
            f"Prometheus, and none is on PATH: {INSTALL_HINT}",
            file=sys.stderr,
        )
        return 2
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
    # Links printed by the CLI and the summary point at this server's UI (--ui-port).
    os.environ.setdefault("SLIPWAY_UI_URL", server.ui_url())
    prometheus = DemoPrometheus(home / "prometheus", home / "state" / "platform", args.base_port)
    production_port = args.base_port + 3
    policy, keys = demo_policy(home)
    worker.extra_env["SLIPWAY_POLICY_FILE"] = str(policy)
    worker.extra_env["SLIPWAY_METRICS"] = "prometheus"
    worker.extra_env["SLIPWAY_PROMETHEUS_URL"] = prometheus.url
    runs: list[DemoRun] = []
    versions: dict[str, str] = {}  # commit → the release it is
    data: StoredData | None = None
    records: list[EnvironmentState] = []
    left = worker.delete_resources()  # a crashed demo's: every run starts on empty databases
    if left:
        print(f"deleted the resources an earlier demo left: {', '.join(left)}")
    try:
        print(f"Temporal dev server on {server.address}, UI {server.ui_url()}")
        server.start()
        prometheus.start()
        print(f"Prometheus on {prometheus.url} (Traefik and every release, each second)")
        worker.start()
        print(f"worker on the local platform (log: {worker.log_file})")
        repo = home / "repo"
        good = make_heal7_repo(repo, author=AUTHOR)
        versions[good] = "0.1.0"
        runs.append(
            await deliver(server.address, "slipway-demo", repo, good, "release 0.1.0", keys)
        )
        print(f"  production now serves: {production_version(production_port)}")
        data = store_calculations(production_port)
        print(
            f"  stored {len(data.stored)} calculations through production "
            f"(ids {sorted(data.stored)}, by {data.stored_by})"
        )
        bad = commit_backend_fault(repo, version="0.2.0", author=AUTHOR, **FAULT)
        versions[bad] = "0.2.0"
        label = "release 0.2.0 (a third of the calculations fail)"
        runs.append(await deliver(server.address, "slipway-demo", repo, bad, label, keys))
        now = production_version(production_port)
        frontend = frontend_health(production_port)
        read_back(production_port, data)
        records = await environment_records(server.address)
    finally:
        worker.stop()
        worker.stop_platform()
        prometheus.stop()
        server.stop()
        deleted = worker.delete_resources()

    _summary(runs, now, frontend, data, records, versions)
    print(
        f"  demo took {time.monotonic() - started:.0f}s; all processes stopped, and the "
        f"{len(deleted)} resource servers ({', '.join(deleted) or 'none'}) deleted with their data"
    )
    print(f"  to browse the runs: make dev-server (db {server.db_file}), then {server.ui_url()}")
    expected = (
        len(runs) == 2
        and runs[0].result.state.value == "succeeded"
        and runs[1].result.state.value == "rolled_back"
        and now.get("version") == "0.1.0"
        and frontend.get("version") == "0.1.0"
        and data is not None
        and data.stored_by == "0.1.0"
        and data.found == len(data.stored) == STORED
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
