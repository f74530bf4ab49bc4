"""With a codec key, failures are encrypted too: the raw history (what the Web UI or the
`temporal` CLI shows without the key) holds no failure message or stack trace, while the
CLI's own reading (with the key) still shows them."""

from __future__ import annotations

import asyncio
import base64
import os

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.api.failure.v1 import Failure
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from contracts.messages import PipelineState
from plumbing.connection import data_converter
from starters.runs import pipeline_outcome
from tests.support.memory import MemoryBackends
from tests.support.pipelines import start
from worker import build_worker

pytestmark = pytest.mark.timeout(60)

ENCODED = "Encoded failure"


async def test_activity_and_run_failures_are_not_in_clear(
    time_env: WorkflowEnvironment,
    memory: MemoryBackends,
    task_queue: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SLIPWAY_CODEC_KEY", base64.b64encode(os.urandom(32)).decode())
    # A whole run (children, environment workflows, signals, updates) with no payload in clear.
    monkeypatch.setenv("SLIPWAY_CODEC_REQUIRE_ENCRYPTED", "1")
    config = time_env.client.config()
    config["data_converter"] = data_converter()
    keyed = Client(**config)
    memory.platform.fail_deploy = {"development"}
    async with build_worker(keyed, memory.backends(), task_queue):
        handle = await start(keyed, task_queue)
        result = await pipeline_outcome(handle)
    # With the key: the CLI's outcome carries the activity's message.
    assert result.state == PipelineState.FAILED
    assert "development: scripted failure" in (result.failure or "")

    # Without the key: the history as the server stores it.
    raw = await time_env.client.get_workflow_handle(handle.id).fetch_history()
    assert "scripted failure" not in raw.to_json()
    failed = [
        e.activity_task_failed_event_attributes.failure
        for e in raw.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED
    ]
    assert failed
    for failure in failed:
        assert failure.message == ENCODED
        assert failure.stack_trace == ""
        assert failure.HasField("encoded_attributes")
        # The key holder decodes message and stack trace back.
        decoded = await keyed.data_converter.decode_failure(failure)
        assert "development: scripted failure" in str(decoded)
    (run_failed,) = [
        e.workflow_execution_failed_event_attributes.failure
        for e in raw.events
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED
    ]
    assert run_failed.message == ENCODED


async def test_a_worker_that_requires_encryption_refuses_plaintext_input(
    time_env: WorkflowEnvironment,
    memory: MemoryBackends,
    task_queue: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SLIPWAY_CODEC_KEY", base64.b64encode(os.urandom(32)).decode())
    monkeypatch.setenv("SLIPWAY_CODEC_REQUIRE_ENCRYPTED", "1")
    config = time_env.client.config()
    config["data_converter"] = data_converter()
    keyed = Client(**config)
    async with build_worker(keyed, memory.backends(), task_queue):
        # A client without the key: its input reaches history in clear.
        handle = await start(time_env.client, task_queue)
        failures: list[Failure] = []
        for _ in range(100):
            failures = [
                event.workflow_task_failed_event_attributes.failure
                async for event in handle.fetch_history_events()
                if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED
            ]
            if failures:
                break
            await asyncio.sleep(0.1)
        await handle.terminate("test over")
    assert failures, "the worker ran the plaintext input"
    # The refusal itself is encrypted like any failure; the key holder reads it.
    refusal = await keyed.data_converter.decode_failure(failures[0])
    assert "refusing a payload that is not encrypted" in str(refusal)
    assert memory.source.calls == []
