"""Every workflow type a Slipway worker runs; the worker and `slipway replay` both use it."""

from __future__ import annotations

from collections.abc import Sequence

from workflows.canary import CanaryWorkflow
from workflows.environment.workflow import EnvironmentWorkflow
from workflows.monitor import MonitorWorkflow
from workflows.pipeline.workflow import PipelineWorkflow
from workflows.rollback import RollbackWorkflow

__all__ = ["WORKFLOWS"]

WORKFLOWS: Sequence[type] = (
    PipelineWorkflow,
    CanaryWorkflow,
    MonitorWorkflow,
    EnvironmentWorkflow,
    # Kept for manual rollbacks started before environment workflows took them over.
    RollbackWorkflow,
)
