"""Every compatibility path the workflows keep for runs recorded by older code, and when each
may go.

A `workflow.patched(ID)` call keeps a run recorded before the change on its old commands;
deleting it while such a run is open (or while a committed history in tests/histories needs
it) breaks that run's replay with a nondeterminism error. Temporal's way out is in two steps:
once no open run predates a patch, replace `workflow.patched(ID)` by
`workflow.deprecate_patch(ID)` and delete the old branch; once no open run predates *that*,
delete the call. "No open run predates it": `temporal workflow list --query
"ExecutionStatus='Running' AND StartTime < '<the release that added it>'"` is empty for the
workflow types named (environment workflows run for ever: they continue-as-new, and the new
run starts on the new code, so for them the question is whether the current run of each
started after the release).

tests/workflows/test_patch_register.py keeps this file and the code in step: every patch id
in the code is here and every id here is in the code; every patch marker in a committed
history is here.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["COMPATIBILITY", "PATCHES", "Compatibility", "Patch"]


@dataclass(frozen=True)
class Patch:
    id: str
    workflows: tuple[str, ...]
    before: str
    """What runs recorded before it do (the old branch)."""
    delete_when: str


@dataclass(frozen=True)
class Compatibility:
    """A path kept for old runs or old data that is not a patch marker."""

    name: str
    where: str
    needed_by: str
    delete_when: str


_NO_OPEN_RUN = "no open {} run started before this patch (then deprecate_patch, then delete)"

PATCHES: tuple[Patch, ...] = (
    Patch(
        "environment-leases",
        ("PipelineWorkflow",),
        "acts on environments without leases (legacy rollback activity, `leases is None`)",
        _NO_OPEN_RUN.format("PipelineWorkflow"),
    ),
    Patch(
        "worker-policy",
        ("PipelineWorkflow",),
        "judges decisions by the roles its starter supplied, no signatures, no action checks",
        _NO_OPEN_RUN.format("PipelineWorkflow"),
    ),
    Patch(
        "canary-controls-signed-by-deployer",
        ("PipelineWorkflow",),
        "forwards canary controls as signals carrying a token its canary's input holds",
        _NO_OPEN_RUN.format("PipelineWorkflow") + "; then CanaryInput.control_token goes",
    ),
    Patch(
        "gates-hold",
        ("PipelineWorkflow",),
        "lets an approval that continues open the way; checks only deploys at start",
        _NO_OPEN_RUN.format("PipelineWorkflow"),
    ),
    Patch(
        "trusted-commit-time",
        ("PipelineWorkflow", "EnvironmentWorkflow"),
        "orders runs by the commit time its starter supplied",
        _NO_OPEN_RUN.format("PipelineWorkflow")
        + ", and every environment workflow's current run started after it",
    ),
    Patch(
        "crash-is-not-a-verdict",
        ("PipelineWorkflow", "CanaryWorkflow", "MonitorWorkflow", "EnvironmentWorkflow"),
        "lets Temporal count a lost worker as a failed attempt",
        _NO_OPEN_RUN.format("pipeline, canary, monitor or environment"),
    ),
    Patch(
        "metrics-preflight-on-stable",
        ("CanaryWorkflow",),
        "goes to the first step without measuring the stable version first",
        _NO_OPEN_RUN.format("CanaryWorkflow"),
    ),
    Patch(
        "repeat-interval-when-load-lost",
        ("CanaryWorkflow",),
        "judges an interval whose generated load died with its worker",
        _NO_OPEN_RUN.format("CanaryWorkflow"),
    ),
    Patch(
        "repeat-preflight-when-load-lost",
        ("CanaryWorkflow",),
        "judges a pre-flight whose generated load died with its worker",
        _NO_OPEN_RUN.format("CanaryWorkflow"),
    ),
    Patch(
        "monitor-repeats-interval-when-load-lost",
        ("MonitorWorkflow",),
        "judges an interval whose generated load died with its worker",
        _NO_OPEN_RUN.format("MonitorWorkflow"),
    ),
    Patch(
        "gate-notices",
        ("PipelineWorkflow",),
        "opens approval gates and takes rejections without notifying anyone",
        _NO_OPEN_RUN.format("PipelineWorkflow"),
    ),
    Patch(
        "manual-rollback-policy",
        ("EnvironmentWorkflow",),
        "takes a manual rollback from anyone, unjudged",
        "every environment workflow's current run started after it",
    ),
    Patch(
        "rollback-once-per-run-id-and-token",
        ("EnvironmentWorkflow",),
        "remembers rollbacks per workflow id (a restarted run's rollback was answered cached)",
        "every environment workflow's current run started after it",
    ),
    Patch(
        "lease-mailbox",
        ("EnvironmentWorkflow",),
        "fences inside the acquire and release updates (a waiting activity held a slot)",
        "every environment workflow's current run started after it",
    ),
    Patch(
        "lease-answered-in-update",
        ("EnvironmentWorkflow",),
        "answers every acquire `pending` and grants by notice (which the run confirms)",
        "every environment workflow's current run started after it",
    ),
    Patch(
        "environment-work-as-local-activities",
        ("EnvironmentWorkflow",),
        "runs FENCE, RESTORE and RUN_STATUS as regular activities",
        "every environment workflow's current run started after it",
    ),
    Patch(
        "environment-fence-as-activity",
        ("EnvironmentWorkflow",),
        "fences and checks its holder with local activities, and answers an acquire to a free "
        "environment in its update (lease-answered-in-update)",
        "every environment workflow's current run started after it; with "
        "environment-work-as-local-activities' FENCE and RUN_STATUS branches and "
        "lease-answered-in-update",
    ),
    Patch(
        "environment-work-queue",
        ("EnvironmentWorkflow",),
        "runs FENCE and RUN_STATUS on the workflow's own task queue (environment-fence-as-"
        "activity) or as local activities (environment-work-as-local-activities), RESTORE as a "
        "local activity, and answers every acquire that waits for a fence with a notice",
        "every environment workflow's current run started after it; with "
        "environment-fence-as-activity and the `local` and `task_queue=None` branches of "
        "work_placement",
    ),
    Patch(
        "holder-check-timer-kept",
        ("EnvironmentWorkflow",),
        "gives each wait with a holder and a queue a HOLDER_CHECK timeout, cancelled by the "
        "change that ends the wait",
        "every environment workflow's current run started after it",
    ),
    Patch(
        "lease-messages-in-background",
        ("PipelineWorkflow",),
        "waits for each report and release before the next stage",
        _NO_OPEN_RUN.format("PipelineWorkflow"),
    ),
    Patch(
        "policy-in-force-as-local-activity",
        ("PipelineWorkflow",),
        "reads the worker's policy with a regular activity",
        _NO_OPEN_RUN.format("PipelineWorkflow"),
    ),
    Patch(
        "lease-notices-confirmed",
        ("PipelineWorkflow",),
        "takes a lease notice signal at its word (a forged grant could bypass the queue)",
        _NO_OPEN_RUN.format("PipelineWorkflow"),
    ),
    Patch(
        "policy-in-force-as-activity-again",
        ("PipelineWorkflow",),
        "reads the policy with a local activity (between policy-in-force-as-local-activity "
        "and this)",
        _NO_OPEN_RUN.format("PipelineWorkflow") + "; with policy-in-force-as-local-activity",
    ),
    Patch(
        "manual-rollback-through-environment",
        ("RollbackWorkflow",),
        "rolls back as asked, with no judgment",
        "no open RollbackWorkflow started before it; then the workflow goes (see below)",
    ),
    Patch(
        "references-checked",
        ("PipelineWorkflow",),
        "no check at start that its secrets and resources resolve: the deploy using one fails",
        _NO_OPEN_RUN.format("PipelineWorkflow"),
    ),
    Patch(
        "references-checked-when-any",
        ("PipelineWorkflow",),
        "asks the deployer to check references even when its releases name none",
        _NO_OPEN_RUN.format("PipelineWorkflow"),
    ),
    Patch(
        "pull-request-runs",
        ("PipelineWorkflow",),
        "runs every stage of its definition (no run recorded before it is a pull-request run: "
        "their inputs carry no `pull_request`, and a worker without it refuses such an input)",
        _NO_OPEN_RUN.format("PipelineWorkflow"),
    ),
)

COMPATIBILITY: tuple[Compatibility, ...] = (
    Compatibility(
        "RollbackWorkflow",
        "workflows/rollback.py, workflows/registry.py",
        "RollbackWorkflow executions started before manual rollbacks went to environments",
        "no open RollbackWorkflow: unregister it and delete the module",
    ),
    Compatibility(
        "legacy rollback activity (ActivityName.ROLLBACK, RollbackRequest)",
        "activities/deploy.py, workflows/pipeline/rollbacks.py, canary.py, monitor.py, rollback.py",
        "runs without leases (patch environment-leases) and RollbackWorkflow",
        "with patch environment-leases and RollbackWorkflow",
    ),
    Compatibility(
        "`leases is None` branches",
        "workflows/stages/, workflows/pipeline/",
        "runs recorded before patch environment-leases",
        "with patch environment-leases",
    ),
    Compatibility(
        "LEGACY_ENCODING",
        "plumbing/codec.py",
        "payloads encrypted before key ids were bound into the associated data",
        "when no history (open, retained or saved for replay) holds such payloads",
    ),
    Compatibility(
        "signal controls on CanaryWorkflow (control_token)",
        "workflows/canary.py, contracts/messages.py",
        "canaries started before patch canary-controls-signed-by-deployer",
        "with patch canary-controls-signed-by-deployer",
    ),
    Compatibility(
        "RunContext.commit_time",
        "contracts/messages.py, starters/cli.py (--commit-time, ignored)",
        "inputs recorded with it, and runs before patch trusted-commit-time",
        "with patch trusted-commit-time; the CLI flag one release after",
    ),
    Compatibility(
        "empty PipelineInput.runner_task_queue",
        "contracts/messages.py, workflows/stages/run_state.py",
        "runs started before the runner queue: every activity on their own queue",
        "no open PipelineWorkflow started before runner queues",
    ),
)
