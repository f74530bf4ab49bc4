"""Pipeline metrics, emitted through the SDK's replay-safe workflow metric meter (exported by
the worker's Prometheus endpoint when SLIPWAY_METRICS_PORT is set): stage durations and
outcomes, pipeline outcomes, rollbacks, approval wait, lead time."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

__all__ = ["approval_waited", "pipeline_finished", "rolled_back", "stage_finished"]


def stage_finished(service: str, stage: str, kind: str, state: str, took: timedelta) -> None:
    workflow.metric_meter().create_histogram_timedelta(
        "slipway_stage_duration", "Time a pipeline stage took", "ms"
    ).record(took, {"service": service, "stage": stage, "kind": kind, "state": state})


def pipeline_finished(service: str, state: str, lead_time: timedelta | None) -> None:
    meter = workflow.metric_meter()
    meter.create_counter("slipway_pipelines", "Finished pipeline runs").add(
        1, {"service": service, "state": state}
    )
    if lead_time is not None:
        meter.create_histogram_timedelta(
            "slipway_lead_time", "Commit to production (DORA lead time)", "ms"
        ).record(lead_time, {"service": service})


def rolled_back(service: str, environment: str) -> None:
    workflow.metric_meter().create_counter("slipway_rollbacks", "Environments restored").add(
        1, {"service": service, "environment": environment}
    )


def approval_waited(service: str, gate: str, waited: timedelta, outcome: str) -> None:
    workflow.metric_meter().create_histogram_timedelta(
        "slipway_approval_wait", "Time an approval gate waited for people", "ms"
    ).record(waited, {"service": service, "gate": gate, "outcome": outcome})
