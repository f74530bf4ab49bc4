"""Pure judgments: metric thresholds, scan and test gates, quality gates, approvals.

Every function returns a verdict with a reason a human can read; none does I/O. "No data" is
never a pass (the argo-rollouts lesson: rollouts that passed because every measurement
errored).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import StrEnum
from fnmatch import fnmatchcase

from pydantic import BaseModel, ConfigDict

from contracts.activity import (
    LoadTestReport,
    MetricsSample,
    ScannerReport,
    ScanReport,
    Severity,
    SuiteReport,
)
from contracts.definition.model import (
    ApprovalStage,
    LoadTestStage,
    MetricCheck,
    QualityGateStage,
    ScanStage,
    SuiteStage,
)

__all__ = [
    "Analysis",
    "ApprovalVote",
    "GateVerdict",
    "Judgment",
    "Verdict",
    "analyse",
    "approval_refusal",
    "approval_state",
    "branch_matches",
    "gate_refusal",
    "judge",
    "judge_load",
    "judge_scan",
    "judge_tests",
    "quality_gate",
]


class Verdict(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    NO_DATA = "no_data"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Judgment(_Frozen):
    """One metric against one bound."""

    metric: str
    verdict: Verdict
    observed: float | None
    bound: str
    reason: str


def judge(check: MetricCheck, observed: float | None) -> Judgment:
    """Judge one observed value (None = no data) against a check's min or max."""
    if check.min is not None:
        bound = f">= {check.min:g}"
        ok = observed is not None and observed >= check.min
    else:
        assert check.max is not None
        bound = f"<= {check.max:g}"
        ok = observed is not None and observed <= check.max
    if observed is None or observed != observed:  # NaN is no data too
        return Judgment(
            metric=check.metric,
            verdict=Verdict.NO_DATA,
            observed=None,
            bound=bound,
            reason=f"{check.metric}: no data",
        )
    verdict = Verdict.PASS if ok else Verdict.FAIL
    return Judgment(
        metric=check.metric,
        verdict=verdict,
        observed=observed,
        bound=bound,
        reason=f"{check.metric} {observed:.4g} {'meets' if ok else 'violates'} {bound}",
    )


class Analysis(_Frozen):
    """All checks of one analysis run. `passed` is False on any failure, and on no data
    unless the definition says no-data is ignored."""

    passed: bool
    judgments: list[Judgment]
    summary: str


def analyse(
    checks: Sequence[MetricCheck], sample: MetricsSample, no_data: str = "fail"
) -> Analysis:
    judgments = [judge(c, sample.values.get(c.metric)) for c in checks]
    failing = [
        j
        for j in judgments
        if j.verdict == Verdict.FAIL or (j.verdict == Verdict.NO_DATA and no_data != "ignore")
    ]
    summary = "; ".join(j.reason for j in (failing or judgments))
    return Analysis(passed=not failing, judgments=judgments, summary=summary)


# --- CI gates -----------------------------------------------------------------------------


class GateVerdict(_Frozen):
    passed: bool
    reasons: list[str]
    warnings: list[str] = []

    @property
    def summary(self) -> str:
        if self.passed:
            return "passed" + (f" ({'; '.join(self.warnings)})" if self.warnings else "")
        return "; ".join(self.reasons)


def judge_scan(
    report: ScanReport, fail_on: Severity, unavailable: str = "fail", label: str = "scan"
) -> GateVerdict:
    """Findings at or above `fail_on` fail; an unavailable scanner fails closed unless the
    stage says `unavailable: warn`."""
    reasons: list[str] = []
    warnings: list[str] = []
    for r in report.reports:
        if not r.available:
            text = f"{r.scanner} unavailable: {r.reason}"
            (warnings if unavailable == "warn" else reasons).append(text)
        reasons.extend(f"{r.scanner}: {entry}" for entry in r.expired_ignores)
    # Counted, not listed: a capped report keeps only some findings but counts all of them.
    blocking = report.count_at_least(fail_on)
    if blocking:
        kept = [f for r in report.reports for f in r.findings if f.severity.rank >= fail_on.rank]
        example = (
            f", e.g. {kept[0].scanner} {kept[0].rule} ({kept[0].severity.value}) "
            f"{kept[0].location}".rstrip()
            if kept
            else ""
        )
        reasons.append(f"{blocking} finding(s) at or above {fail_on.value}{example}")
    if not report.reports:
        reasons.append(f"{label}: no scanner ran")
    return GateVerdict(passed=not reasons, reasons=reasons, warnings=warnings)


def judge_load(report: LoadTestReport, stage: LoadTestStage) -> GateVerdict:
    """A load test's figures against the stage's thresholds; a tool that could not run fails
    closed unless the stage says `unavailable: warn`, and a run that sent nothing fails."""
    if not report.available:
        text = f"{report.tool} unavailable: {report.reason}"
        if stage.unavailable == "warn":
            return GateVerdict(passed=True, reasons=[], warnings=[text])
        return GateVerdict(passed=False, reasons=[text])
    if report.requests == 0:
        return GateVerdict(passed=False, reasons=[f"{report.tool} sent no request"])
    limits = stage.thresholds
    reasons: list[str] = []
    measured = {"p95_ms": report.p95_ms, "p99_ms": report.p99_ms}
    for name, bound in (("p95_ms", limits.p95_ms), ("p99_ms", limits.p99_ms)):
        value = measured[name]
        if bound is not None and (value is None or value > bound):
            shown = "no data" if value is None else f"{value:g}"
            reasons.append(f"{name} {shown} violates <= {bound:g}")
    error_rate = report.error_rate or 0.0
    if limits.error_rate is not None and error_rate > limits.error_rate:
        reasons.append(f"error_rate {error_rate:.2f}% violates <= {limits.error_rate:g}%")
    if limits.min_rps is not None and report.rps < limits.min_rps:
        reasons.append(f"rps {report.rps:.1f} violates >= {limits.min_rps:g}")
    if reasons and report.failure_examples:
        reasons.append(f"e.g. {report.failure_examples[0]}")
    return GateVerdict(passed=not reasons, reasons=reasons)


def judge_tests(report: SuiteReport, stage: SuiteStage) -> GateVerdict:
    reasons: list[str] = []
    failed = report.failures + report.errors
    if failed > stage.max_failures:
        shown = ", ".join(report.failed_tests[:3])
        reasons.append(f"{failed} test(s) failed" + (f": {shown}" if shown else ""))
    if report.tests == 0:
        reasons.append("no tests ran")
    if stage.min_coverage is not None:
        if report.coverage_pct is None:
            reasons.append(f"coverage report missing (need >= {stage.min_coverage:g}%)")
        elif report.coverage_pct < stage.min_coverage:
            reasons.append(f"coverage {report.coverage_pct:.1f}% below {stage.min_coverage:g}%")
    # Failures the stage tolerates explain a non-zero exit (pytest exits 1 on any failure).
    if report.exit_code != 0 and not reasons and failed == 0:
        reasons.append(f"test command exited {report.exit_code}")
    return GateVerdict(passed=not reasons, reasons=reasons)


def quality_gate(
    gate: QualityGateStage,
    tests: Mapping[str, SuiteReport],
    scans: Mapping[str, ScanReport],
    scan_stages: Mapping[str, ScanStage],
    test_durations: Mapping[str, float],
) -> GateVerdict:
    """HEAL7's quality gate over the results of earlier stages. A missing report is an
    error, and any error fails the gate."""
    reasons: list[str] = []
    for name, minimum in gate.min_coverage.items():
        report = tests.get(name)
        if report is None:
            reasons.append(f"coverage of {name!r}: report missing")
        elif report.coverage_pct is None:
            reasons.append(f"coverage of {name!r}: no coverage in the report")
        elif report.coverage_pct < minimum:
            reasons.append(f"coverage of {name!r} {report.coverage_pct:.1f}% < {minimum:g}%")
    if gate.require_scan and not scans:
        reasons.append("security: a scan is required and none ran")
    for severity, allowed in sorted(gate.max_findings.items(), key=lambda kv: -kv[0].rank):
        found = sum(r.counts()[severity] for s in scans.values() for r in s.reports)
        if found > allowed:
            reasons.append(f"security: {found} {severity.value} finding(s), allowed {allowed}")
    for name, scan in scans.items():
        policy = scan_stages.get(name)
        fail_closed = policy is None or policy.unavailable == "fail"
        for r in scan.reports:
            if not r.available and fail_closed:
                reasons.append(f"security: {r.scanner} in {name!r} could not run ({r.reason})")
    reports = [r for s in scans.values() for r in s.reports]
    metrics = {k: v for r in reports for k, v in r.metrics.items()}
    per_function = [r for r in reports if r.complexity_counts]
    for key, limit in (
        ("duplication_pct", gate.max_duplication_pct),
        ("complexity", gate.max_complexity),
    ):
        if limit is None:
            continue
        if key == "complexity" and per_function:
            reasons += _complexity_reasons(per_function, limit)
            continue
        # Reports without per-function figures (SonarQube's project sum, before it was
        # kept as `complexity_total`) are judged as they were when their runs started.
        value = metrics.get(key)
        if value is None:
            reasons.append(f"code quality: no scanner reported {key}")
        elif value > limit:
            reasons.append(f"code quality: {key} {value:g} > {limit:g}")
    if gate.max_test_duration is not None:
        limit_s = gate.max_test_duration.total_seconds()
        for name, seconds in test_durations.items():
            if seconds > limit_s:
                reasons.append(f"performance: {name!r} took {seconds:.0f}s > {limit_s:.0f}s")
    return GateVerdict(passed=not reasons, reasons=reasons)


def _complexity_reasons(reports: Sequence[ScannerReport], limit: float) -> list[str]:
    """`max_complexity` is per function: how many functions exceed it, and the worst."""
    over = sum(n for r in reports for c, n in r.complexity_counts.items() if c > limit)
    if not over:
        return []
    measured = sum(n for r in reports for n in r.complexity_counts.values())
    worst = max(
        (f for r in reports for f in r.worst_functions), key=lambda f: f.complexity, default=None
    )
    named = f"; worst {worst.function} ({worst.complexity})" if worst is not None else ""
    return [f"code quality: {over} of {measured} function(s) have complexity > {limit:g}{named}"]


def branch_matches(branch: str, patterns: Sequence[str]) -> bool:
    """Empty patterns match every branch; patterns are shell globs ('release/*')."""
    return not patterns or any(fnmatchcase(branch, p) for p in patterns)


# --- approvals ----------------------------------------------------------------------------


class ApprovalVote(_Frozen):
    """An accepted decision on a gate."""

    gate: str
    approver: str
    approve: bool
    roles: list[str] = []
    """The roles the person held when deciding (runs under the worker's policy)."""


def approval_refusal(
    gate: ApprovalStage | None,
    *,
    gate_name: str,
    approver: str,
    approve: bool,
    roles: Mapping[str, Sequence[str]],
    author: str,
    votes: Sequence[ApprovalVote],
    decided: bool,
) -> str | None:
    """Why this decision must be refused, or None if it is accepted. `gate` is the open gate
    with that name (None when no such gate is open); `decided` says the gate already has its
    outcome (it may still be open for the instant before the run moves on)."""
    if not approver.strip():
        return "approver is empty"
    if approver not in roles:
        return f"unknown approver {approver!r}: not in the roles file"
    if decided:
        return f"gate {gate_name!r} is already decided"
    if gate is None:
        return f"no approval gate named {gate_name!r} is open"
    held = set(roles[approver])
    if not held & set(gate.roles):
        return (
            f"{approver!r} holds {sorted(held) or 'no roles'}; gate {gate_name!r} needs one of "
            f"{sorted(gate.roles)}"
        )
    if not gate.allow_self_approval and approver == author:
        return f"{approver!r} authored this commit and may not approve or reject it"
    if any(v.approver == approver and v.gate == gate_name for v in votes):
        return f"{approver!r} has already decided on gate {gate_name!r}"
    return None


def gate_refusal(
    gate: ApprovalStage | None,
    *,
    gate_name: str,
    approver: str,
    votes: Sequence[ApprovalVote],
    decided: bool,
) -> str | None:
    """What refuses a decision before the worker's policy is asked (who holds which role
    is the policy's to say): nobody named, no such gate open, decided, already voted."""
    if not approver.strip():
        return "approver is empty"
    if decided:
        return f"gate {gate_name!r} is already decided"
    if gate is None:
        return f"no approval gate named {gate_name!r} is open"
    if any(v.approver == approver and v.gate == gate_name for v in votes):
        return f"{approver!r} has already decided on gate {gate_name!r}"
    return None


def approval_state(
    gate: ApprovalStage, votes: Sequence[ApprovalVote], roles: Mapping[str, Sequence[str]]
) -> str:
    """'approved', 'rejected' or 'pending'. One rejection rejects; approval needs every
    required role covered by a distinct approver and `quorum` distinct approvers."""
    mine = [v for v in votes if v.gate == gate.gate_name]
    if any(not v.approve for v in mine):
        return "rejected"
    approvers = [v.approver for v in mine if v.approve]
    if len(set(approvers)) < gate.required_quorum:
        return "pending"
    if _covers_roles(gate.roles, approvers, roles):
        return "approved"
    return "pending"


def _covers_roles(
    required: Sequence[str], approvers: Sequence[str], roles: Mapping[str, Sequence[str]]
) -> bool:
    """Each required role matched to a different approver (small bipartite matching)."""
    assignment: dict[str, str] = {}  # approver -> role

    def place(role: str, tried: set[str]) -> bool:
        for person in approvers:
            if role in roles.get(person, ()) and person not in tried:
                tried.add(person)
                if person not in assignment or place(assignment[person], tried):
                    assignment[person] = role
                    return True
        return False

    return all(place(role, set()) for role in dict.fromkeys(required))
