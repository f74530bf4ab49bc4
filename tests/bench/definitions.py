"""The pipeline definitions the benchmark runs, built in code from `contracts.definition.model`
models and validated by `validate_definition`, plus the scripted delays the bench worker applies.

Shared by the driver (which starts runs and computes the critical path) and the worker (which
sleeps the delays), so both agree on what each stage costs.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from contracts.definition.loading import validate_definition
from contracts.definition.model import (
    ApprovalStage,
    BuildStage,
    CheckoutStage,
    DeployStage,
    NotifyStage,
    PipelineSpec,
    PublishStage,
    QualityGateStage,
    ScanStage,
    SmokeStage,
    SuiteStage,
)
from contracts.messages import PipelineInput, RunContext

__all__ = [
    "APPROVER",
    "AUTHOR",
    "CHECKOUT_DELAYS",
    "DAG_DURATIONS",
    "DAG_REPO",
    "GATE",
    "INTEGRATION_COMMAND",
    "PUBLISH_TAGS",
    "REPO",
    "ROLES",
    "SCANNER_DELAYS",
    "SERVICE",
    "SERVICE_PATH",
    "TEST_DELAYS",
    "UNIT_COMMAND",
    "dag_spec",
    "gate_spec",
    "overhead_spec",
    "pipeline_input",
]

SERVICE = "bench-svc"
SERVICE_PATH = "app"
REPO = "memory://bench"
DAG_REPO = "memory://bench-dag"  # the worker delays checkouts of this repository only
AUTHOR = "bob"
APPROVER = "ann"
GATE = "prod"
ROLES: dict[str, list[str]] = {APPROVER: ["lead"], AUTHOR: ["developer"]}
POLICY = Path(__file__).with_name("policy.yaml")
"""The bench worker's policy: the people above, unsigned decisions count, no environment
demands a gate (the overhead definition deploys straight to production)."""

# --- the 15-stage no-op definition (and the baseline workflow's constants) ---------------
SAST_SCANNERS = ["bandit"]
SECRETS_SCANNERS = ["detect-secrets"]
UNIT_COMMAND = ["pytest", "tests/unit"]
INTEGRATION_COMMAND = ["pytest", "tests/integration"]
PUBLISH_TAGS = ["{branch}", "{branch}-{sha12}"]
ENVIRONMENTS = ("development", "staging", "production")

# --- scripted delays (seconds) for the DAG-fidelity definition ----------------------------
# Stages of 1-3 s, like quick real ones: the fixed cost per workflow task (a few ms of SDK
# code and server hand-offs) stays small beside them, so the figure is about scheduling the
# DAG, while five runs still fit in half a minute. Branch B ends 0.5 s before A, so the
# critical path is unambiguous.
CHECKOUT_DELAYS: dict[str, float] = {DAG_REPO: 1.0}
SCANNER_DELAYS: dict[str, float] = {"slow-sast": 1.5, "slow-secrets": 1.5}
TEST_DELAYS: dict[str, float] = {"dag-unit": 3.0, "dag-integration": 2.5, "dag-lint": 1.0}
DAG_DURATIONS: dict[str, float] = {
    "checkout": CHECKOUT_DELAYS[DAG_REPO],
    "sast": SCANNER_DELAYS["slow-sast"],
    "unit_tests": TEST_DELAYS["dag-unit"],
    "integration_tests": TEST_DELAYS["dag-integration"],
    "secrets_scan": SCANNER_DELAYS["slow-secrets"],
    "lint": TEST_DELAYS["dag-lint"],
}
"""Stage → known duration; every other stage is a no-op (0 s) for the critical path."""


def _validated(name: str, stages: Sequence[BaseModel]) -> PipelineSpec:
    data: dict[str, Any] = {
        "name": name,
        "service": {"name": SERVICE, "path": SERVICE_PATH},
        "environments": {env: {"strategy": "rolling"} for env in ENVIRONMENTS},
        "stages": [s.model_dump(exclude_unset=True) for s in stages],
    }
    return validate_definition(data, f"tests/bench:{name}")


def overhead_spec() -> PipelineSpec:
    """checkout → (sast, unit, integration, secrets) → quality_gate → build → publish →
    deploy dev → smoke → deploy staging → smoke → deploy prod (rolling) → smoke → notify."""
    fan_out = ["sast", "unit_tests", "integration_tests", "secrets_scan"]
    stages: list[BaseModel] = [
        CheckoutStage(name="checkout", kind="checkout"),
        ScanStage(name="sast", kind="scan", needs=["checkout"], scanners=SAST_SCANNERS),
        SuiteStage(name="unit_tests", kind="test", needs=["checkout"], command=UNIT_COMMAND),
        SuiteStage(
            name="integration_tests",
            kind="test",
            needs=["checkout"],
            command=INTEGRATION_COMMAND,
        ),
        ScanStage(name="secrets_scan", kind="scan", needs=["checkout"], scanners=SECRETS_SCANNERS),
        QualityGateStage(
            name="quality_gate",
            kind="quality_gate",
            needs=fan_out,
            min_coverage={"unit_tests": 80.0},
        ),
        BuildStage(name="build", kind="build", needs=["quality_gate"]),
        PublishStage(name="publish", kind="publish", needs=["build"], tags=PUBLISH_TAGS),
    ]
    previous = "publish"
    for env, short in zip(ENVIRONMENTS, ("dev", "staging", "prod"), strict=True):
        stages.append(
            DeployStage(
                name=f"deploy_{short}",
                kind="deploy",
                needs=[previous],
                environment=env,
                strategy="rolling",
            )
        )
        stages.append(
            SmokeStage(
                name=f"smoke_{short}", kind="smoke", needs=[f"deploy_{short}"], environment=env
            )
        )
        previous = f"smoke_{short}"
    stages.append(
        NotifyStage(
            name="notify", kind="notify", needs=[previous], message="{service} {sha12} shipped"
        )
    )
    spec = _validated("bench-overhead", stages)
    assert len(spec.stages) == 15, len(spec.stages)
    return spec


def dag_spec() -> PipelineSpec:
    """Branches of known, different lengths after a slow checkout:
    A: sast 1.5 s → unit 3.0 s; B: integration 2.5 s → secrets 1.5 s; C: lint 1.0 s;
    then quality_gate → build → notify (no-ops). Critical path 1.0 + 4.5 = 5.5 s."""
    stages: list[BaseModel] = [
        CheckoutStage(name="checkout", kind="checkout"),
        ScanStage(name="sast", kind="scan", needs=["checkout"], scanners=["slow-sast"]),
        SuiteStage(name="unit_tests", kind="test", needs=["sast"], command=["dag-unit"]),
        SuiteStage(
            name="integration_tests", kind="test", needs=["checkout"], command=["dag-integration"]
        ),
        ScanStage(
            name="secrets_scan",
            kind="scan",
            needs=["integration_tests"],
            scanners=["slow-secrets"],
        ),
        SuiteStage(name="lint", kind="test", needs=["checkout"], command=["dag-lint"]),
        QualityGateStage(
            name="quality_gate",
            kind="quality_gate",
            needs=["unit_tests", "secrets_scan", "lint"],
            inputs=["sast", "unit_tests", "integration_tests", "secrets_scan", "lint"],
        ),
        BuildStage(name="build", kind="build", needs=["quality_gate"]),
        NotifyStage(name="notify", kind="notify", needs=["build"], message="{service} built"),
    ]
    return _validated("bench-dag", stages)


def gate_spec() -> PipelineSpec:
    """checkout → approval (gate 'prod', role lead) → notify: a run that parks at the gate."""
    stages: list[BaseModel] = [
        CheckoutStage(name="checkout", kind="checkout"),
        ApprovalStage(
            name="approve_prod",
            kind="approval",
            needs=["checkout"],
            environment="production",
            gate=GATE,
            roles=["lead"],
        ),
        NotifyStage(
            name="notify", kind="notify", needs=["approve_prod"], message="{service} approved"
        ),
    ]
    return _validated("bench-gate", stages)


def pipeline_input(
    spec: PipelineSpec, repo: str = REPO, roles: Mapping[str, list[str]] | None = None
) -> PipelineInput:
    """A run of `spec` for a fresh commit by AUTHOR (who holds no approving role)."""
    commit = uuid.uuid4().hex
    run = RunContext(service=SERVICE, repo=repo, commit=commit, author=AUTHOR)
    return PipelineInput(spec=spec, run=run, roles=dict(roles if roles is not None else ROLES))
