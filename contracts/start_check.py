"""What a run's definition asks of the worker's policy at its start, as one message: the
environments it changes with and without a gate before, its gates, and the concurrency and
freeze it asks for. The pipeline sends it to the worker (activities/decisions.py judges it);
`slipway validate --policy` judges the same message against a policy file, so both say the
same thing of a definition. Pure: no I/O, no clock."""

from __future__ import annotations

from contracts.definition import dag
from contracts.definition.model import ApprovalStage, PipelineSpec
from contracts.definition.rules import CHANGES_ENVIRONMENT
from contracts.messages import EnvironmentAsk, GateAsk, PolicyStart

__all__ = ["policy_start"]


def policy_start(spec: PipelineSpec, workflow_id: str, *, gates_hold: bool = True) -> PolicyStart:
    """The start check's question for `spec`. `gates_hold=False`: what runs recorded before
    GATES_HOLD asked (deploys only, no environments)."""
    stages = spec.stages
    kinds = CHANGES_ENVIRONMENT if gates_hold else frozenset({"deploy"})
    gated: dict[str, bool] = {}
    ungated: dict[str, list[str]] = {}
    for stage in stages:
        env = stage.environment_name
        if stage.kind not in kinds or env is None:
            continue
        before = set(dag.ancestors(stages, stage.name))
        has_gate = any(
            isinstance(s, ApprovalStage) and s.environment == env and s.name in before
            for s in stages
        )
        gated[env] = gated.get(env, True) and has_gate
        if not has_gate:
            ungated.setdefault(env, []).append(stage.name)
    environments: dict[str, EnvironmentAsk] = {}
    if gates_hold:
        named = [*spec.environments, *(s.environment_name for s in stages)]
        for env in dict.fromkeys(n for n in named if n is not None):
            declared = spec.environments.get(env)
            environments[env] = EnvironmentAsk(
                concurrency=declared.concurrency if declared else None,
                freeze=list(declared.freeze) if declared else [],
                freeze_override_roles=list(declared.freeze_override_roles) if declared else [],
            )
    return PolicyStart(
        workflow_id=workflow_id,
        gated=gated,
        ungated=ungated if gates_hold else {},
        gates=[
            GateAsk(
                gate=s.gate_name,
                environment=s.environment,
                roles=s.roles,
                quorum=s.quorum,
                times_out=s.timeout is not None,
            )
            for s in stages
            if isinstance(s, ApprovalStage)
        ],
        environments=environments,
    )
