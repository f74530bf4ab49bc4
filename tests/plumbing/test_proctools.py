"""The process toolkit against real processes: a zombie is dead, a pid another process
reused is not ours, and a stopped group leaves nothing running."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from plumbing import proctools
from plumbing.proctools import (
    free_port,
    pid_alive,
    port_free,
    port_open,
    process_group,
    process_start_ticks,
    start_group,
    stop_group,
)

# A shell that forks a child sleeping in the background, prints the child's pid, and sleeps.
FORKS = "sleep 60 & echo $!; exec sleep 60"


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def _running(pid: int) -> bool:
    return _state(pid) not in ("gone", "Z", "X")


def test_a_zombie_counts_as_dead_and_is_reaped() -> None:
    # Popen without the toolkit: nothing reaps the exited child but pid_alive.
    child = subprocess.Popen(["true"])
    deadline = time.monotonic() + 10
    while _state(child.pid) != "Z" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _state(child.pid) == "Z"

    assert process_start_ticks(child.pid) is None
    assert not pid_alive(child.pid)
    assert _state(child.pid) == "gone"  # reaped
    child.wait()


def test_a_pid_reused_by_another_process_is_not_ours() -> None:
    with process_group(["sleep", "60"]) as process:
        ticks = process_start_ticks(process.pid)
        assert ticks is not None
        assert pid_alive(process.pid, ticks)
        # Same pid, another start time: what a later process holding the pid looks like.
        assert not pid_alive(process.pid, ticks + 1)
        assert not stop_group(process.pid, ticks + 1, timeout_s=1)
        assert _running(process.pid)  # left alone
    assert not pid_alive(process.pid, ticks)


def test_a_stopped_group_leaves_no_process() -> None:
    leader = start_group(["sh", "-c", FORKS], stdout=subprocess.PIPE, text=True)
    assert leader.stdout is not None
    child = int(leader.stdout.readline())
    ticks = process_start_ticks(leader.pid)
    assert _running(child)

    assert stop_group(leader.pid, ticks, timeout_s=5)

    assert not pid_alive(leader.pid)
    assert leader.returncode == -signal.SIGTERM
    deadline = time.monotonic() + 5
    while _running(child) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not _running(child)
    assert leader.pid not in proctools._CHILDREN
    leader.stdout.close()


def test_a_group_that_ignores_sigterm_is_killed_after_the_timeout() -> None:
    ignores = "trap '' TERM; echo ready; sleep 60 & wait"
    leader = start_group(["sh", "-c", ignores], stdout=subprocess.PIPE, text=True)
    assert leader.stdout is not None
    assert leader.stdout.readline() == "ready\n"
    ticks = process_start_ticks(leader.pid)
    started = time.monotonic()

    assert stop_group(leader.pid, ticks, timeout_s=0.5)

    assert time.monotonic() - started < 5
    assert leader.returncode == -signal.SIGKILL
    leader.stdout.close()


def test_what_is_left_of_a_group_whose_leader_died_is_stopped() -> None:
    leader = start_group(["sh", "-c", FORKS], stdout=subprocess.PIPE, text=True)
    assert leader.stdout is not None
    child = int(leader.stdout.readline())
    ticks = process_start_ticks(leader.pid)
    os.kill(leader.pid, signal.SIGKILL)
    leader.wait()

    assert not stop_group(leader.pid, ticks)  # nothing of its own left to stop...

    deadline = time.monotonic() + 5
    while _running(child) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not _running(child)  # ...but its child went with the group
    leader.stdout.close()


def test_a_block_that_raises_leaves_no_process_behind() -> None:
    pids: list[int] = []
    try:
        with process_group(["sh", "-c", FORKS], stdout=subprocess.PIPE, text=True) as leader:
            assert leader.stdout is not None
            pids += [leader.pid, int(leader.stdout.readline())]
            leader.stdout.close()
            raise KeyboardInterrupt
    except KeyboardInterrupt:
        pass
    deadline = time.monotonic() + 5
    while any(_running(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not any(_running(pid) for pid in pids)


def test_stopping_what_never_ran_is_false() -> None:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    assert not stop_group(int(done.stdout), timeout_s=0.1)


def test_ports() -> None:
    port = free_port()
    assert port_free(port)
    assert not port_open(port)
    with socket.socket() as server:
        server.bind((proctools.LOOPBACK, port))
        server.listen()
        assert port_open(port)
        assert not port_free(port)
