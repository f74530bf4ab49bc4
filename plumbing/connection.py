"""How every entry point (CLI, worker, demo, tests) connects to Temporal.

The connection comes from Temporal's own environment configuration: TEMPORAL_ADDRESS,
TEMPORAL_NAMESPACE, TEMPORAL_API_KEY, TEMPORAL_TLS_* or a TOML profile
(TEMPORAL_CONFIG_FILE / TEMPORAL_PROFILE). Payloads use the pydantic data converter, plus
AES-GCM encryption of payloads and failures when a codec key is set (plumbing/codec.py).
"""

from __future__ import annotations

import os
from typing import Any

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter, DefaultFailureConverterWithEncodedAttributes
from temporalio.envconfig import ClientConfig
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

from plumbing.codec import codec_from_env

__all__ = [
    "RUNNER_QUEUE_SUFFIX",
    "TASK_QUEUE",
    "connect",
    "data_converter",
    "runner_task_queue",
    "task_queue",
    "ui_base_url",
]


def data_converter() -> DataConverter:
    """pydantic models in and out; encrypted when a codec key is configured, failures too:
    their messages and stack traces (test output, rejection comments, URLs) move into an
    encrypted payload instead of sitting in history in clear."""
    codec = codec_from_env()
    if codec is None:
        return pydantic_data_converter
    return DataConverter(
        payload_converter_class=pydantic_data_converter.payload_converter_class,
        payload_codec=codec,
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )


TASK_QUEUE = "slipway"
"""Default task queue; the worker and the CLI take SLIPWAY_TASK_QUEUE to override it."""


def task_queue() -> str:
    return os.environ.get("SLIPWAY_TASK_QUEUE", TASK_QUEUE)


RUNNER_QUEUE_SUFFIX = "-runner"
"""The runner's task queue defaults to the deployer's plus this: `slipway-runner`."""


def runner_task_queue(deployer_queue: str | None = None) -> str:
    """The runner's task queue (untrusted work: checkout, scans, tests, commands, builds):
    SLIPWAY_RUNNER_TASK_QUEUE, else `<task queue>-runner`. Starters put it in the run's input,
    so workflow code never reads it from the environment; runner workers poll it."""
    configured = os.environ.get("SLIPWAY_RUNNER_TASK_QUEUE", "").strip()
    return configured or (deployer_queue or task_queue()) + RUNNER_QUEUE_SUFFIX


def ui_base_url() -> str:
    """Where the Web UI is; for the dev server, http://127.0.0.1:8233."""
    return os.environ.get("SLIPWAY_UI_URL", "http://127.0.0.1:8233").rstrip("/")


async def connect(*, metrics_port: int = 0, **overrides: Any) -> Client:
    """Connect with Temporal's env config (defaults to 127.0.0.1:7233, namespace default)."""
    config: dict[str, Any] = dict(ClientConfig.load_client_connect_config())
    config.setdefault("target_host", "127.0.0.1:7233")
    config.update(overrides)
    target = config.pop("target_host")
    if metrics_port:
        # SDK and pipeline metrics (workflows/telemetry.py) on a Prometheus endpoint.
        config["runtime"] = Runtime(
            telemetry=TelemetryConfig(
                metrics=PrometheusConfig(bind_address=f"0.0.0.0:{metrics_port}")
            )
        )
    return await Client.connect(target, data_converter=data_converter(), **config)
