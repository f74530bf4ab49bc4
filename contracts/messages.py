"""Inputs and outputs of the workflows and of their signals, updates and queries.

One pydantic model per message: the Web UI's "Send a Signal / Update" dialog sends exactly one
JSON object, and adding a field with a default never breaks a run already in history.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from contracts.activity import Artifact, MetricsSample, ReleaseConfig, ReleaseSpec, Strategy
from contracts.definition.model import CanaryStage, FreezeWindow, MonitorStage, PipelineSpec
from contracts.judgments import Judgment

__all__ = [
    "MAX_PULL_REQUEST",
    "AbortRequest",
    "ActionRecord",
    "ApprovalRecord",
    "CanaryControl",
    "CanaryInput",
    "CanaryResult",
    "CanaryStatus",
    "CanaryStep",
    "Concurrency",
    "Decision",
    "DecisionCheck",
    "DecisionVerdict",
    "DoraDay",
    "EnvironmentAsk",
    "EnvironmentInForce",
    "EnvironmentInput",
    "EnvironmentState",
    "LeaseAnswer",
    "LeaseHolder",
    "LeaseNotice",
    "LeaseRef",
    "LeaseRelease",
    "LeaseRequest",
    "MonitorCheck",
    "MonitorInput",
    "MonitorResult",
    "PendingApproval",
    "PipelineInput",
    "PipelineResult",
    "PipelineState",
    "PipelineStatus",
    "PolicyInForce",
    "PolicyStart",
    "ReleaseEntry",
    "RollbackOrder",
    "RollbackOutcome",
    "RunContext",
    "Serving",
    "ServingReport",
    "Signed",
    "StageState",
    "StageStatus",
    "WaitingRun",
]


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Signed(_Message):
    """An optional SSH signature of a decision (`slipway approve` and the other commands
    make one with the person's key; see contracts/signed_decisions.py for what it covers). The Web
    UI and the bare `temporal` CLI send none: each gate's policy says whether that counts."""

    signed_at: datetime | None = Field(None, description="When it was signed.")
    nonce: str = Field("", description="Random, once per decision: a replay is refused.")
    signature: str = Field("", description="Armored `ssh-keygen -Y sign` output.")


MAX_PULL_REQUEST = 10**9
"""Pull-request numbers: at most 10 digits, so a PR run's id (ending `-pr-N`) never ends
in 12 hex digits, as a branch run's does (contracts.naming.pipeline_id)."""


class RunContext(_Message):
    """Which commit of which service this run carries, as CI knows it."""

    service: str
    repo: str
    commit: str = Field(min_length=7)
    author: str = Field(
        "", description="As CI says (shown only): self-approval is judged on git's author."
    )
    branch: str = "main"
    commit_time: datetime | None = Field(
        None,
        description="Unread by runs since the trusted-commit-time patch (they order and measure "
        "lead time by git's committer time, clamped to their start); kept so inputs recorded "
        "with it still load, and read by the runs recorded before.",
    )
    diff_url: str = ""
    trigger: str = Field("ci", description="Unread; kept so inputs recorded with it still load.")
    pull_request: int | None = Field(
        None,
        ge=1,
        le=MAX_PULL_REQUEST,
        description="A pull-request run's number: the run checks the PR's head commit with "
        "the stages `on.pull_request` names (never touching an environment).",
    )
    base: str = Field(
        "", max_length=64, description="The commit the changes are compared with (shown only)."
    )

    @property
    def sha12(self) -> str:
        return self.commit[:12]


class PipelineInput(_Message):
    """Everything a run needs, resolved by the starter: the workflow never reads files."""

    spec: PipelineSpec
    run: RunContext
    roles: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Person → roles, for runs from before the worker held the policy (they "
        "judge decisions by it); newer runs ignore it.",
    )
    ui_url: str = Field("", description="Unread; kept so inputs recorded with it still load.")
    runner_task_queue: str = Field(
        "",
        description="The runner's task queue: checkout, scans, tests, commands and builds "
        "(contracts.activity.RUNNER_ACTIVITIES) run there, never on the deployer's. Set by "
        "the starter (SLIPWAY_RUNNER_TASK_QUEUE, default `<task queue>-runner`); empty, as "
        "in runs recorded before the split, sends them to the run's own task queue.",
    )


class StageState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    WAITING = "waiting"  # an approval gate waiting for people
    QUEUED = "queued"  # waiting for the environment's lease behind another run
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (
            StageState.SUCCEEDED,
            StageState.FAILED,
            StageState.SKIPPED,
            StageState.CANCELLED,
        )


class StageStatus(_Message):
    name: str
    kind: str
    state: StageState = StageState.PENDING
    environment: str | None = None
    attempt: int = 0
    started_at: datetime | None = None
    ended_at: datetime | None = None
    summary: str = ""

    @property
    def duration_s(self) -> float | None:
        if self.started_at and self.ended_at:
            return (self.ended_at - self.started_at).total_seconds()
        return None


class Decision(Signed):
    """An approval decision, as typed in the Web UI, the `temporal` CLI or `slipway approve`:
    {"approver": "carol", "gate": "production", "comment": "LGTM"}."""

    approver: str = Field(description="Who decides; must be in the roles file.")
    gate: str = Field(description="The gate's name (by default its environment).")
    comment: str = ""


class ApprovalRecord(_Message):
    """Every decision, accepted or refused, with when and why."""

    gate: str
    approver: str
    decision: Literal["approve", "reject"]
    accepted: bool
    at: datetime
    comment: str = ""
    reason: str = Field("", description="Why it was refused, when it was.")
    via: Literal["update", "signal", "timeout"] = "update"
    signature: str = Field("", description="The decision's SSH signature, if it had one.")
    signed_at: datetime | None = None
    nonce: str = ""
    signer_key: str = Field("", description="Fingerprint of the key that signed it.")
    run_id: str = Field("", description="The run it was decided on (what the signature covers).")


class ActionRecord(_Message):
    """An operator's action (promote, pause, resume, abort, rollback), accepted or refused."""

    action: str
    by: str
    accepted: bool
    at: datetime
    reason: str = Field("", description="The operator's reason, or why it was refused.")
    via: Literal["update", "signal"] = "signal"
    signature: str = ""
    signed_at: datetime | None = None
    nonce: str = ""
    signer_key: str = ""
    run_id: str = ""
    comment: str = Field("", description="What the operator wrote (abort's reason).")


class DecisionCheck(_Message):
    """What the worker checks a decision against its policy with (the `check_decision`
    activity): who, on which gate or action, signed or not, and the facts of the run."""

    namespace: str
    workflow_id: str
    run_id: str
    subject: str = Field(description="'gate:production' or 'action:promote'.")
    gate: str = ""
    environment: str = ""
    decision: str = Field(description="approve, reject, promote, pause, resume, abort, rollback.")
    by: str
    comment: str = ""
    signed: Signed = Field(default_factory=Signed)
    author: str = Field("", description="The commit's author as git names it.")
    definition_roles: list[str] = Field(
        default_factory=list, description="The gate's roles in the run's definition."
    )
    definition_allows_self_approval: bool = False
    via: str = "update"


class DecisionVerdict(_Message):
    accepted: bool
    reason: str = ""
    roles: list[str] = Field(default_factory=list, description="What the person holds now.")
    gate_roles: list[str] = Field(
        default_factory=list, description="Roles the gate needs under the policy in force."
    )
    gate_quorum: int | None = None
    signer_key: str = ""
    policy_hash: str = ""


class GateAsk(_Message):
    """An approval gate of the run's definition, as the worker's policy is asked about it."""

    gate: str
    environment: str
    roles: list[str]
    quorum: int | None = None
    times_out: bool = True


class EnvironmentAsk(_Message):
    """What a run's definition says of an environment's concurrency and freeze windows."""

    concurrency: Literal["queue", "supersede"] | None = None
    freeze: list[FreezeWindow] = Field(default_factory=list)
    freeze_override_roles: list[str] = Field(default_factory=list)


class EnvironmentInForce(_Message):
    """An environment's concurrency and freeze as the worker's policy makes them for a run:
    the policy's, made stricter by the definition (never weaker)."""

    concurrency: Literal["queue", "supersede"] | None = None
    freeze: list[FreezeWindow] = Field(default_factory=list)
    freeze_override_roles: list[str] = Field(default_factory=list)


class PolicyStart(_Message):
    """What a run asks the worker's policy at its start."""

    workflow_id: str
    gated: dict[str, bool] = Field(
        default_factory=dict,
        description="Environment this run changes (deploy, canary, monitor) → every stage "
        "changing it waits for an approval gate of that environment.",
    )
    ungated: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Environment → the stages changing it with no approval of it before them.",
    )
    gates: list[GateAsk] = Field(
        default_factory=list,
        description="Its approval gates: each must be one the policy's people can meet.",
    )
    environments: dict[str, EnvironmentAsk] = Field(
        default_factory=dict,
        description="What the definition says of each environment it names.",
    )


class PolicyInForce(_Message):
    hash: str
    path: str = ""
    problems: list[str] = Field(default_factory=list)
    environments: dict[str, EnvironmentInForce] = Field(
        default_factory=dict,
        description="Environments whose concurrency and freeze the policy sets (absent: the "
        "definition's, as recorded before the policy had a say).",
    )


class PendingApproval(_Message):
    """What an approver is asked to approve."""

    gate: str
    environment: str
    roles: list[str]
    quorum: int
    approved_by: list[str]
    deadline: datetime | None
    service: str
    commit: str
    author: str
    diff_url: str
    digest: str | None
    evidence: dict[str, str] = Field(
        default_factory=dict, description="Stage → outcome summary (tests, scans, gates)."
    )


class AbortRequest(Signed):
    """Stop the run and roll back what it deployed: {"by": "dave", "reason": "..."}."""

    by: str
    reason: str = ""


class CanaryControl(Signed):
    """Pause, resume, promote or abort a running canary: {"by": "dave"}."""

    by: str = ""
    reason: str = ""
    token: str = Field(
        "", description="Set by the pipeline when it forwards a checked control; not for people."
    )


class CanaryOrder(_Message):
    """A checked control a pipeline sends its canary (through a deployer activity, signed)."""

    canary: str = Field(description="The canary child's workflow id.")
    action: Literal["pause", "resume", "promote", "abort"]
    control: CanaryControl
    request_id: str = Field(description="Idempotency key (the update id).")
    proof: str = Field("", description="A deployer's HMAC over the rest (deployer_proof).")


class PipelineState(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ROLLED_BACK = "rolled_back"
    ROLLBACK_FAILED = "rollback_failed"
    ABORTED = "aborted"
    SUPERSEDED = "superseded"


class PipelineStatus(_Message):
    """The `status` query."""

    state: PipelineState
    service: str
    commit: str
    pull_request: int | None = Field(None, description="A pull-request run's number.")
    stages: list[StageStatus]
    pending_approvals: list[PendingApproval] = []
    artifact: Artifact | None = None
    deployed: dict[str, str] = {}


class PipelineResult(_Message):
    """What a run did: every stage's outcome, every decision, the deployed digest, timings."""

    state: PipelineState
    service: str
    commit: str
    pull_request: int | None = Field(None, description="A pull-request run's number.")
    stages: list[StageStatus]
    approvals: list[ApprovalRecord]
    actions: list[ActionRecord] = Field(
        default_factory=list, description="Operator actions, accepted and refused."
    )
    refused_not_kept: int = Field(
        0, description="Refused decisions beyond the ones kept (the result stays small)."
    )
    policy_hash: str = Field("", description="The worker policy in force at the run's start.")
    artifact: Artifact | None
    deployed: dict[str, str] = Field(
        description="Environment → this run's digest, where it serves now (rolled back: gone)."
    )
    rolled_back: list[str] = Field(default_factory=list, description="Environments restored.")
    failure: str = ""
    superseded_by: str = Field("", description="The run that superseded this one, if one did.")
    started_at: datetime
    ended_at: datetime
    lead_time_s: float | None = Field(None, description="Commit time → production serving.")


# --- canary -------------------------------------------------------------------------------


class LeaseRef(_Message):
    """The environment lease a child acts under: its fencing token and the run holding it."""

    token: int
    owner: str = Field(description="Workflow id of the pipeline run that holds the lease.")
    strategy: Strategy = "canary"


class CanaryInput(_Message):
    service: str
    stage: CanaryStage
    artifact: Artifact
    lease: LeaseRef | None = Field(None, description="None: a run from before leases.")
    control_token: str = Field(
        "", description="Controls must carry it (forwarded by the pipeline); empty: any."
    )
    controls: Literal["signal", "update"] = Field(
        "signal",
        description="How its pipeline sends controls: 'update' (signed by a deployer; every "
        "signal refused), or 'signal' with control_token (canaries started before proofs).",
    )
    run_command: list[str] = []
    health_path: str = "/health"
    ready_path: str = "/ready"
    env: dict[str, str] = Field(default_factory=dict, description="The release's variables.")
    metric_templates: dict[str, str] = Field(
        default_factory=dict,
        description="Metric → PromQL template for the environment; empty: the provider's own.",
    )
    measured: str = Field(
        "",
        description="The platform service whose metrics are judged (a bundle's named "
        "artifact); empty: `service`.",
    )
    config: ReleaseConfig = Field(
        default_factory=ReleaseConfig,
        description="The release's configuration as its deploy resolved it (references and "
        "versions, never values): what promote runs.",
    )


class CanaryStep(_Message):
    weight: int
    at: datetime
    passed: bool
    summary: str
    judgments: list[Judgment] = []
    sample: MetricsSample | None = None


class CanaryStatus(_Message):
    weight: int
    paused: bool
    failed_checks: int
    steps: list[CanaryStep]


class CanaryResult(_Message):
    outcome: Literal["promoted", "aborted"]
    reason: str
    failed_checks: int
    steps: list[CanaryStep]
    rollback: RollbackOutcome | None = Field(None, description="What the abort's rollback did.")
    preflight: CanaryStep | None = Field(
        None, description="The queries against the stable version before the first step."
    )
    ignored_controls: list[str] = Field(
        default_factory=list,
        description="Controls sent straight to the canary, not through its pipeline (the last "
        "few): ignored, since nothing checked them against the worker's policy.",
    )


# --- monitor ------------------------------------------------------------------------------


class MonitorInput(_Message):
    service: str
    stage: MonitorStage
    lease: LeaseRef | None = Field(None, description="None: a run from before leases.")
    elapsed_s: float = Field(0, description="Carried across continue-as-new.")
    transient: int = 0
    checks: int = 0
    metric_templates: dict[str, str] = Field(
        default_factory=dict,
        description="Metric → PromQL template for the environment; empty: the provider's own.",
    )
    violations: list[MonitorCheck] = Field(
        default_factory=list, description="Carried across continue-as-new (the latest ones)."
    )
    measured: str = Field(
        "",
        description="The platform service whose metrics are judged (a bundle's named "
        "artifact); empty: `service`.",
    )


class MonitorCheck(_Message):
    at: datetime
    passed: bool
    summary: str
    rechecked: bool = False


class MonitorResult(_Message):
    outcome: Literal["healthy", "rolled_back"]
    reason: str
    checks: int
    transient_violations: int
    violations: list[MonitorCheck] = []
    rollback: RollbackOutcome | None = Field(None, description="What its rollback did.")


# --- environments -------------------------------------------------------------------------

Concurrency = Literal["queue", "supersede"]


class Serving(_Message):
    """What an environment serves, and the run that put it there."""

    release: ReleaseSpec
    run: str
    commit: str
    commit_time: datetime | None = None
    since: datetime
    before: Serving | None = Field(
        None, description="What served before this run changed the environment (one level)."
    )


class ReleaseEntry(_Message):
    """One line of an environment's release history."""

    release: ReleaseSpec | None = Field(None, description="None: a canary never promoted.")
    run: str
    commit: str
    commit_time: datetime | None = None
    at: datetime = Field(description="When it started serving (or was restored).")
    until: datetime | None = None
    outcome: Literal["serving", "replaced", "rolled_back", "restored"]
    reason: str = ""

    @property
    def digest(self) -> str:
        return self.release.digest if self.release else ""


class LeaseRequest(_Message):
    """A pipeline run asks for an environment: granted now, queued, or superseded."""

    service: str
    environment: str
    run: str = Field(description="The pipeline's workflow id.")
    run_id: str = Field(description="Its run id: a reset run asks again.")
    commit: str
    commit_time: datetime | None = None
    policy: Concurrency = "queue"
    request_id: str = Field(description="Idempotency key (the update id).")
    components: list[str] = Field(
        default_factory=list, description="The run's deployables (`artifacts:`); empty: one."
    )
    proof: str = Field("", description="A deployer's HMAC over the rest (deployer_proof).")


class LeaseAnswer(_Message):
    """`pending`: the environment took the request and answers by signal (LeaseNotice)."""

    status: Literal["granted", "queued", "superseded", "pending"]
    token: int = 0
    holder: str = Field("", description="Queued behind this run.")
    position: int = 0
    by: str = Field("", description="Superseded by this run.")
    reason: str = ""


class LeaseNotice(_Message):
    """Sent by the environment to a pipeline: the lease it waited for, or that it lost it."""

    environment: str
    run_id: str
    status: Literal["granted", "superseded"]
    token: int = 0
    by: str = ""
    reason: str = ""


class LeaseCheck(_Message):
    """What a lease notice said, to be checked against the environment's own state: a signal
    can come from anyone, the environment's state only from the environment."""

    service: str
    environment: str
    run: str
    run_id: str
    status: Literal["granted", "superseded"]
    token: int = 0


class ServingReport(_Message):
    """The lease holder says its release now serves the environment."""

    service: str
    environment: str
    run: str
    run_id: str
    token: int
    release: ReleaseSpec
    commit: str
    commit_time: datetime | None = None
    request_id: str
    proof: str = Field("", description="A deployer's HMAC over the rest (deployer_proof).")

    @property
    def digest(self) -> str:
        return self.release.digest


class LeaseRelease(_Message):
    """A run is done with an environment (or withdraws from its queue)."""

    service: str
    environment: str
    run: str
    run_id: str = ""
    reason: str = ""
    request_id: str
    token: int = Field(0, description="The lease's token (0: leaving the queue).")
    proof: str = Field("", description="A deployer's HMAC over the rest (deployer_proof).")


class RollbackOrder(_Message):
    """Put back what served before `run` first changed the environment."""

    service: str
    environment: str
    run: str = Field(description="The pipeline run whose release is rolled back.")
    reason: str = ""
    strategy: Strategy = "rolling"
    request_id: str
    run_id: str = Field("", description="That run's run id (a retried run is another).")
    token: int = Field(0, description="The lease token under which it changed the environment.")
    proof: str = Field("", description="A deployer's HMAC over the rest (deployer_proof).")


class RollbackOutcome(_Message):
    environment: str
    status: Literal["rolled_back", "unchanged", "not_owner", "failed"]
    restored_digest: str | None = None
    reason: str = ""
    repeat: bool = Field(False, description="An earlier request already did it.")


class LeaseHolder(_Message):
    run: str
    run_id: str
    commit: str
    commit_time: datetime | None = None
    token: int
    order: int
    granted_at: datetime
    baseline: Serving | None = Field(None, description="What served when it was granted.")
    rolled_back: bool = False


class WaitingRun(_Message):
    run: str
    run_id: str
    commit: str
    commit_time: datetime | None = None
    order: int
    requested_at: datetime


class DoraDay(_Message):
    """One UTC day's production changes (by the day each started serving): pipeline releases
    and canaries that never promoted; restores are not changes."""

    changes: int = 0
    failed: int = Field(0, description="Changes rolled back.")
    lead_s: float = Field(0.0, description="Commit to serving, summed over delivered changes.")
    leads: int = Field(0, description="Delivered changes with a commit time.")
    restore_s: float = Field(0.0, description="Failed change serving to its rollback, summed.")
    restores: int = 0


class EnvironmentState(_Message):
    """The `state` query of an environment workflow, and what it carries across
    continue-as-new."""

    service: str
    environment: str
    token: int = Field(0, description="The last fencing token handed out.")
    seq: int = Field(0, description="Requests seen; breaks commit-time ties.")
    serving: Serving | None = None
    holder: LeaseHolder | None = None
    queue: list[WaitingRun] = []
    releases: list[ReleaseEntry] = Field(default_factory=list, description="Oldest first.")
    rollbacks: dict[str, RollbackOutcome] = Field(
        default_factory=dict, description="Run → its rollback here (one per run)."
    )
    refused: list[ActionRecord] = Field(
        default_factory=list, description="Refused manual rollbacks, the last few."
    )
    refused_not_kept: int = 0
    nonces: list[str] = Field(
        default_factory=list, description="Nonces of signed rollbacks taken (the last ones)."
    )
    lease_requests: list[str] = Field(
        default_factory=list,
        description="Request ids of the last lease requests taken: one copied out of a history "
        "and sent again is refused.",
    )
    components: list[str] = Field(
        default_factory=list,
        description="The deployables the last lease holder named: fenced and restored together.",
    )
    dora: dict[str, DoraDay] | None = Field(
        None,
        description="Changes per UTC day (ISO date), kept for 10 years beyond the bounded "
        "`releases` (contracts/dora.py); None until the first release after they were added.",
    )


class EnvironmentInput(_Message):
    service: str
    environment: str
    state: EnvironmentState | None = None


Serving.model_rebuild()
CanaryResult.model_rebuild()
MonitorResult.model_rebuild()
