"""Process slots against real hello-service processes (no router needed)."""

from __future__ import annotations

import os
import signal
from typing import Any

import pytest
from temporalio.exceptions import ApplicationError

from activities.platforms.local import SlotManager, _proc
from contracts.activity import DeployRequest
from contracts.errors import ErrorType
from plumbing.proctools import pid_alive
from tests.activities.platforms.local.helpers import (
    SERVICE,
    Wheel,
    deploy_request,
    get_json,
    no_heartbeat,
)


def test_deploy_runs_the_release_healthy_and_is_idempotent(
    slots: SlotManager, wheel: Wheel
) -> None:
    artifact = wheel("1.0.0")
    first = slots.deploy(deploy_request(artifact, "development"), no_heartbeat)
    assert first.changed
    assert first.digest == artifact.digest
    body = get_json(first.endpoint + "/")
    assert body["version"] == "1.0.0"
    assert body["digest"] == artifact.digest
    assert body["slot"] == "stable"

    again = slots.deploy(deploy_request(artifact, "development"), no_heartbeat)
    assert not again.changed
    assert again.endpoint == first.endpoint


def test_new_release_replaces_the_old_process_and_records_history(
    slots: SlotManager, wheel: Wheel
) -> None:
    v1, v2 = wheel("1.0.0"), wheel("2.0.0")
    slots.deploy(deploy_request(v1, "development"), no_heartbeat)
    old = slots.state(SERVICE, "development", "stable")
    result = slots.deploy(deploy_request(v2, "development"), no_heartbeat)
    assert result.previous_digest == v1.digest
    assert get_json(result.endpoint + "/")["version"] == "2.0.0"
    assert old.pid is not None
    assert not pid_alive(old.pid, old.pid_start)
    state = slots.state(SERVICE, "development", "stable")
    assert [r.digest for r in state.history] == [v1.digest]


def test_state_on_disk_survives_a_new_manager(slots: SlotManager, wheel: Wheel) -> None:
    artifact = wheel("1.0.0")
    slots.deploy(deploy_request(artifact, "development"), no_heartbeat)
    restarted = SlotManager(slots.state_dir)
    assert not restarted.deploy(deploy_request(artifact, "development"), no_heartbeat).changed
    assert restarted.healthy(restarted.state(SERVICE, "development", "stable"))


def test_a_dead_process_is_redeployed(slots: SlotManager, wheel: Wheel) -> None:
    artifact = wheel("1.0.0")
    slots.deploy(deploy_request(artifact, "development"), no_heartbeat)
    pid = slots.state(SERVICE, "development", "stable").pid
    assert pid is not None
    os.killpg(pid, signal.SIGKILL)
    result = slots.deploy(deploy_request(artifact, "development"), no_heartbeat)
    assert result.changed
    assert get_json(result.endpoint + "/")["version"] == "1.0.0"


class WorkerKilled(BaseException):
    """Stands for a SIGKILL of the worker: nothing after it runs."""


def test_a_process_whose_worker_died_before_recording_it_is_stopped_by_the_retry(
    slots: SlotManager, wheel: Wheel, monkeypatch: pytest.MonkeyPatch
) -> None:
    artifact = wheel("1.0.0")
    orphans: list[int] = []

    def spawn_then_die(*args: Any, **kwargs: Any) -> int:
        orphans.append(_proc.spawn(*args, **kwargs))
        raise WorkerKilled  # between spawning and writing the pid down

    with monkeypatch.context() as patch:
        patch.setattr("activities.platforms.local.slots.spawn", spawn_then_die)
        with pytest.raises(WorkerKilled):
            slots.deploy(deploy_request(artifact, "development"), no_heartbeat)
    (orphan,) = orphans
    assert pid_alive(orphan)
    assert slots.state(SERVICE, "development", "stable").pid is None

    retried = slots.deploy(deploy_request(artifact, "development"), no_heartbeat)

    assert not pid_alive(orphan)
    state = slots.state(SERVICE, "development", "stable")
    assert state.pid is not None
    assert state.pid != orphan
    assert state.launching == []
    assert get_json(retried.endpoint + "/")["version"] == "1.0.0"


def test_a_release_that_crashes_is_a_deploy_failed_verdict_with_its_output(
    slots: SlotManager, wheel: Wheel
) -> None:
    request = DeployRequest(
        service=SERVICE,
        environment="development",
        slot="stable",
        artifact=wheel("1.0.0"),
        run_command=["python", "-c", "import sys; sys.exit('boom: no database')"],
    )
    with pytest.raises(ApplicationError) as raised:
        slots.deploy(request, no_heartbeat)
    assert raised.value.type == ErrorType.DEPLOY_FAILED
    assert raised.value.non_retryable
    assert "boom: no database" in str(raised.value)
    assert slots.state(SERVICE, "development", "stable").current is None


def test_a_release_never_ready_times_out_and_keeps_the_old_one(
    slots: SlotManager, wheel: Wheel
) -> None:
    good = slots.deploy(deploy_request(wheel("1.0.0"), "development"), no_heartbeat)
    impatient = SlotManager(slots.state_dir, ready_timeout_s=1.5)
    never_ready = deploy_request(wheel("2.0.0"), "development").model_copy(
        update={"ready_path": "/not-there"}
    )
    with pytest.raises(ApplicationError, match="not ready within") as raised:
        impatient.deploy(never_ready, no_heartbeat)
    assert raised.value.type == ErrorType.DEPLOY_FAILED
    assert "listening on" in str(raised.value)  # the process's own output
    assert get_json(good.endpoint + "/")["version"] == "1.0.0"


def test_missing_artifact_is_a_verdict(slots: SlotManager, wheel: Wheel) -> None:
    missing = {"uri": "/nonexistent/x.whl", "digest": "sha256:" + "ab" * 32}
    artifact = wheel("1.0.0").model_copy(update=missing)
    with pytest.raises(ApplicationError, match="not found") as raised:
        slots.deploy(deploy_request(artifact, "development"), no_heartbeat)
    assert raised.value.type == ErrorType.ARTIFACT_MISSING


def test_stop_all_stops_every_slot(slots: SlotManager, wheel: Wheel) -> None:
    artifact = wheel("1.0.0")
    slots.deploy(deploy_request(artifact, "development"), no_heartbeat)
    slots.deploy(deploy_request(artifact, "production", slot="canary"), no_heartbeat)
    pids = [s.pid for s in slots.states()]
    assert slots.stop_all() == 2
    assert all(pid is not None and not pid_alive(pid) for pid in pids)
    assert slots.stop_all() == 0
