"""Secret values never leave the deployer: a whole HEAL7 run whose every environment has a
secret from the local store, on the time-skipping server, then every history it wrote (the
pipeline, its canary and monitor, each environment workflow), its result, the worker's log
lines and the notifications sent are searched for each value."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import logging
import uuid
from pathlib import Path
from typing import Any

import pytest
from temporalio.testing import WorkflowEnvironment

from activities.helpers.secrets import SecretResolver
from contracts.definition.model import PipelineSpec, SecretRefSpec
from contracts.messages import PipelineState
from contracts.naming import canary_id, environment_id, monitor_id
from plumbing.secret_store import LocalSecretStore
from starters.runs import pipeline_outcome
from tests.support.memory import MemoryBackends
from tests.support.pipelines import heal7, run_context, start
from tests.workflows.test_pipeline import approve_all
from worker import build_worker

pytestmark = pytest.mark.timeout(90)


def readable(history_json: str) -> str:
    """A history's JSON with every payload's base64 `data` decoded: what anyone who may read
    the history (the Web UI, `temporal workflow show`) can read."""
    decoded: list[str] = [history_json]

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "data" and isinstance(value, str):
                    with contextlib.suppress(ValueError):
                        decoded.append(base64.b64decode(value).decode(errors="replace"))
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(json.loads(history_json))
    return "\n".join(decoded)


def with_secrets(spec: PipelineSpec, service: str) -> PipelineSpec:
    envs = {
        name: env.model_copy(
            update={
                "settings": {"LOG_LEVEL": "info"},
                "secrets": {
                    "DB_PASSWORD": SecretRefSpec.model_validate(
                        {"from": "local", "name": f"{service}/{name}/db", "key": "password"}
                    )
                },
            }
        )
        for name, env in spec.environments.items()
    }
    return spec.model_copy(
        update={
            "environments": envs,
            "service": spec.service.model_copy(update={"name": service}),
        }
    )


async def test_no_secret_value_reaches_history_logs_or_notifications(
    time_env: WorkflowEnvironment,
    memory: MemoryBackends,
    task_queue: str,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    service = f"svc{uuid.uuid4().hex[:8]}"
    spec = with_secrets(heal7(), service)
    store = LocalSecretStore(tmp_path / "secrets")
    values = {}
    for env in spec.environments:
        values[env] = f"pw-{env}-{uuid.uuid4().hex}"
        store.set(f"{service}/{env}/db", f'{{"password": "{values[env]}"}}')
    backends = dataclasses.replace(memory.backends(), secrets=SecretResolver({"local": store}))
    async with build_worker(time_env.client, backends, task_queue):
        handle = await start(time_env.client, task_queue, spec, run_context())
        await approve_all(handle)
        result = await pipeline_outcome(handle)
        ids = [
            handle.id,
            canary_id(handle.id, "canary"),
            monitor_id(handle.id, "monitor"),
            *(environment_id(service, env) for env in spec.environments),
        ]
        histories = [
            readable((await time_env.client.get_workflow_handle(i).fetch_history()).to_json())
            for i in ids
        ]
    assert result.state == PipelineState.SUCCEEDED
    # The references and their versions are what history keeps.
    assert all(f"{service}/{env}/db" in "".join(histories) for env in values)
    out, err = capfd.readouterr()
    searched = {
        "history": "\n".join(histories),
        "result": result.model_dump_json(),
        "log": out + err + caplog.text,
        "notifications": "\n".join(n.model_dump_json() for n in memory.notifier.sent),
    }
    leaks = [
        f"{env}'s value in the {where}"
        for env, value in values.items()
        for where, text in searched.items()
        if value in text
    ]
    assert leaks == []
