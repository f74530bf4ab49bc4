"""The workflow sandbox that the worker and `slipway replay` both run workflow code in.

Modules passed through are shared with the host instead of being imported again inside each
run's sandbox, and their code runs unchecked: a `datetime.now()`, `os.environ` or `random`
call in a passed-through module is not caught. So only modules that are pure (no I/O, no
clock, no per-run state) pass: third-party libraries the data models need, and the data
contracts that cross the workflow/activity boundary, by exact module name. Our workflow
modules are always imported inside the sandbox, where such calls fail the workflow task; a
pipeline run's sandbox imports 17 of them, its own (tests/plumbing/test_sandbox.py keeps that
list exact: no environment, canary or monitor module, nothing of activities or plumbing).
"""

from __future__ import annotations

from temporalio.worker import WorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

__all__ = ["PASSTHROUGH", "restrictions", "workflow_runner"]

PASSTHROUGH = (
    # The pure layer as a whole: data contracts (pydantic models, enums, errors), the
    # definition language, the messages between workflows and activities, naming and the
    # pure judgments. Re-importing their pydantic models in every run's sandbox costs ~500 ms
    # of CPU per workflow started or replayed (measured on the committed pipeline history:
    # 650 ms vs 150 ms). Two more reasons: `contracts.deployer_proof` holds the worker's
    # deployer key, installed once per process (a module imported again inside a run's
    # sandbox would hold none); `contracts.definition.freeze` must build its ZoneInfo objects
    # on the host (inside the sandbox zoneinfo hands out proxied zones, which datetime
    # refuses). `tests/test_import_direction.py` keeps `contracts` free of our other packages
    # and of clocks, randomness and the environment.
    "contracts",
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
