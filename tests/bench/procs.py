"""Processes the benchmark drives: the bench worker subprocess and its activity-start stamps."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

__all__ = ["ROOT", "Stamps", "WorkerProcess", "rss_kb"]

ROOT = Path(__file__).resolve().parents[2]


def rss_kb(pid: int, field: str = "VmRSS") -> int:
    """A memory figure of a process from /proc/<pid>/status, in kB."""
    for line in Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/{pid}/status")


class Stamps:
    """Tails the worker's stamp file: (workflow id, activity type) → its start times, in
    order (an activity type can start more than once in a run: a gate's `approval.waiting`
    notification, then the notify stage after it)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.starts: dict[tuple[str, str], list[float]] = {}
        self._offset = 0

    def poll(self) -> None:
        if not self.path.exists():
            return
        with self.path.open("rb") as f:
            f.seek(self._offset)
            chunk = f.read()
        end = chunk.rfind(b"\n")
        if end < 0:
            return
        self._offset += end + 1
        for line in chunk[: end + 1].decode().splitlines():
            ts, workflow_id, activity_type = line.split("\t")
            self.starts.setdefault((workflow_id, activity_type), []).append(float(ts))

    def started(
        self, workflow_id: str, activity_type: str, after: float | None = None
    ) -> float | None:
        """The first start of `activity_type` in `workflow_id` (at or after `after`)."""
        self.poll()
        times = self.starts.get((workflow_id, activity_type), [])
        return next((t for t in times if after is None or t >= after), None)

    async def wait_for(
        self,
        workflow_id: str,
        activity_type: str,
        timeout_s: float = 10.0,
        *,
        after: float | None = None,
    ) -> float:
        deadline = time.monotonic() + timeout_s
        while True:
            found = self.started(workflow_id, activity_type, after)
            if found is not None:
                return found
            if time.monotonic() > deadline:
                raise TimeoutError(f"{activity_type} of {workflow_id} never started")
            await asyncio.sleep(0.002)


class WorkerProcess:
    """`python -m tests.bench.worker` as a child process; its stdout is forwarded to stderr."""

    def __init__(self, proc: asyncio.subprocess.Process, pid: int) -> None:
        self.proc = proc
        self.pid = pid
        self._drain: asyncio.Task[None] | None = None

    @classmethod
    async def start(
        cls,
        address: str,
        namespace: str,
        task_queue: str,
        stamps: Path,
        extra_args: Sequence[str] = (),
    ) -> WorkerProcess:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.bench.worker",
            "--address",
            address,
            "--namespace",
            namespace,
            "--task-queue",
            task_queue,
            "--stamps",
            str(stamps),
            *extra_args,
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
        )
        assert proc.stdout is not None
        try:
            async with asyncio.timeout(60):
                while True:
                    raw = await proc.stdout.readline()
                    if not raw:
                        raise RuntimeError(f"bench worker exited with {await proc.wait()}")
                    line = raw.decode().strip()
                    if line.startswith("ready "):
                        break
                    print(f"[worker] {line}", file=sys.stderr)
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            raise
        self = cls(proc, int(line.split()[1]))
        self._drain = asyncio.create_task(self._forward())
        return self

    async def _forward(self) -> None:
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            print(f"[worker] {raw.decode().rstrip()}", file=sys.stderr)

    def rss_kb(self, field: str = "VmRSS") -> int:
        return rss_kb(self.pid, field)

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 40)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        if self._drain is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._drain
