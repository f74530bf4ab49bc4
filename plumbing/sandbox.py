"""The workflow sandbox that the worker and `slipway replay` both run workflow code in.

Modules passed through are shared with the host instead of being imported again inside each
run's sandbox, and their code runs unchecked: a `datetime.now()`, `os.environ` or `random`
call in a passed-through module is not caught. So only modules that are pure (no I/O, no
clock, no per-run state) pass: third-party libraries the data models need, and the data
contracts that cross the workflow/activity boundary, by exact module name. Our workflow
modules are always imported inside the sandbox, where such calls fail the workflow task.
"""

from __future__ import annotations

from temporalio.worker import WorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

__all__ = ["PASSTHROUGH", "restrictions", "workflow_runner"]

PASSTHROUGH = (
    # Data contracts: pydantic models, enums and error types. The workflow side's contracts
    # (definitions, messages, and the judgments messages carry) pass too: re-importing their
    # pydantic models in every run's sandbox costs ~500 ms of CPU per workflow started or
    # replayed (measured on the committed pipeline history: 650 ms vs 150 ms).
    "contracts.activity",
    "contracts.errors",
    # Holds the worker's deployer key, installed once per process: validators verify with it
    # (a module imported again inside a run's sandbox would hold none).
    "contracts.deployer_proof",
    "contracts.metric_presets",
    "contracts.service_templates",
    "workflows.spec",
    "workflows.messages",
    "workflows.policy",
    # Pure (callers pass the time in), and it must build its ZoneInfo objects on the host:
    # inside the sandbox zoneinfo hands out proxied zones, which datetime refuses.
    "workflows.freeze",
    # Third-party pure libraries behind the models (pydantic itself passes by default).
    "annotated_types",
    "typing_inspection",
    "yaml",
)


def restrictions() -> SandboxRestrictions:
    """Temporal's default restrictions, with our passthrough list."""
    return SandboxRestrictions.default.with_passthrough_modules(*PASSTHROUGH)


def workflow_runner() -> WorkflowRunner:
    """The runner of the worker and of `slipway replay`, so replay judges exactly what the
    worker runs."""
    return SandboxedWorkflowRunner(restrictions=restrictions())
