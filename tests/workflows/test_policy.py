"""Pure judgments: metrics (no data is never a pass), scan/test/quality gates, approvals."""

from __future__ import annotations

import math
from typing import Any

import pytest

from contracts.activity import (
    Finding,
    FunctionComplexity,
    MetricsSample,
    ScannerReport,
    ScanReport,
    Severity,
    SuiteReport,
)
from contracts.definition.loading import load_pipeline
from contracts.definition.model import (
    ApprovalStage,
    CanaryStage,
    MetricCheck,
    QualityGateStage,
    ScanStage,
    SuiteStage,
)
from contracts.judgments import (
    ApprovalVote,
    Verdict,
    analyse,
    approval_refusal,
    approval_state,
    branch_matches,
    judge,
    judge_scan,
    judge_tests,
    quality_gate,
)
from tests.support.pipelines import HEAL7_BACKEND
from tests.support.pipelines import ROLES as PIPELINE_ROLES

HEAL7 = HEAL7_BACKEND  # the one-deployable journey the engine tests drive


@pytest.fixture(scope="module")
def canary() -> CanaryStage:
    stage = load_pipeline(HEAL7).stage("canary")
    assert isinstance(stage, CanaryStage)
    return stage


# --- metrics ------------------------------------------------------------------------------


def test_judge_min_bound() -> None:
    check = MetricCheck(metric="success_rate", min=99)
    passed = judge(check, 99.5)
    assert (passed.verdict, passed.observed, passed.bound) == (Verdict.PASS, 99.5, ">= 99")
    assert passed.reason == "success_rate 99.5 meets >= 99"
    assert judge(check, 99).verdict == Verdict.PASS  # the bound itself passes
    failed = judge(check, 98.2)
    assert failed.verdict == Verdict.FAIL
    assert failed.reason == "success_rate 98.2 violates >= 99"


def test_judge_max_bound() -> None:
    check = MetricCheck(metric="p95_latency_ms", max=500)
    assert judge(check, 420).verdict == Verdict.PASS
    assert judge(check, 500).verdict == Verdict.PASS
    failed = judge(check, 650)
    assert failed.verdict == Verdict.FAIL
    assert "650" in failed.reason
    assert "<= 500" in failed.reason


@pytest.mark.parametrize("observed", [None, math.nan])
def test_judge_without_data_is_no_data_not_a_pass(observed: float | None) -> None:
    for check in (
        MetricCheck(metric="error_rate", max=1),
        MetricCheck(metric="success_rate", min=0),
    ):
        judgment = judge(check, observed)
        assert judgment.verdict == Verdict.NO_DATA
        assert judgment.observed is None
        assert judgment.reason == f"{check.metric}: no data"


def test_the_heal7_thresholds_judge_their_metric() -> None:
    def verdict(metric: str, observed: float | None, **bound: float) -> Verdict:
        return judge(MetricCheck(metric=metric, **bound), observed).verdict

    assert verdict("success_rate", 99.2, min=99) == Verdict.PASS
    assert verdict("success_rate", 98.9, min=99) == Verdict.FAIL
    assert verdict("error_rate", 1.5, max=1) == Verdict.FAIL
    assert verdict("error_rate", 0.2, max=1) == Verdict.PASS
    assert verdict("p95_latency_ms", 501, max=500) == Verdict.FAIL
    assert verdict("p95_latency_ms", None, max=500) == Verdict.NO_DATA


def sample(**values: float | None) -> MetricsSample:
    return MetricsSample(values=values, requests=100)


def test_analyse_passes_when_every_heal7_check_passes(canary: CanaryStage) -> None:
    result = analyse(canary.metrics, sample(success_rate=99.6, p95_latency_ms=310, error_rate=0.4))
    assert result.passed
    assert [j.verdict for j in result.judgments] == [Verdict.PASS] * 3


def test_analyse_fails_on_one_violation_and_says_which(canary: CanaryStage) -> None:
    result = analyse(canary.metrics, sample(success_rate=99.6, p95_latency_ms=650, error_rate=0.4))
    assert not result.passed
    assert result.summary == "p95_latency_ms 650 violates <= 500"


def test_analyse_no_data_fails_by_default(canary: CanaryStage) -> None:
    result = analyse(canary.metrics, sample(success_rate=99.9, p95_latency_ms=100))
    assert not result.passed
    assert result.summary == "error_rate: no data"
    assert not analyse(canary.metrics, MetricsSample(values={})).passed


def test_analyse_nan_counts_as_no_data(canary: CanaryStage) -> None:
    nan = sample(success_rate=99.9, p95_latency_ms=100, error_rate=math.nan)
    assert not analyse(canary.metrics, nan).passed
    assert analyse(canary.metrics, nan, no_data="ignore").passed


def test_analyse_ignores_no_data_only_when_told(canary: CanaryStage) -> None:
    partial = sample(success_rate=99.9, p95_latency_ms=None, error_rate=0.1)
    assert analyse(canary.metrics, partial, no_data="ignore").passed
    assert not analyse(canary.metrics, partial, no_data="fail").passed
    # Anything but "ignore" (a typo, an unknown policy) fails closed.
    assert not analyse(canary.metrics, partial, no_data="warn").passed


def test_analyse_ignoring_no_data_still_fails_a_violation(canary: CanaryStage) -> None:
    result = analyse(canary.metrics, sample(success_rate=97, p95_latency_ms=None), no_data="ignore")
    assert not result.passed
    assert result.summary == "success_rate 97 violates >= 99"


# --- scans --------------------------------------------------------------------------------


def finding(severity: Severity, scanner: str = "bandit", rule: str = "B101") -> Finding:
    return Finding(scanner=scanner, rule=rule, severity=severity, message="x", location="app.py:3")


def scan(*findings: Finding, **metrics: float) -> ScanReport:
    return ScanReport(
        reports=[ScannerReport(scanner="bandit", findings=list(findings), metrics=metrics)]
    )


def measured(duplication_pct: float, **functions: int) -> ScanReport:
    """A lizard report: each function's complexity, worst first, as the scanner gives it."""
    worst = sorted(functions.items(), key=lambda kv: -kv[1])
    counts: dict[int, int] = {}
    for value in functions.values():
        counts[value] = counts.get(value, 0) + 1
    return ScanReport(
        reports=[
            ScannerReport(
                scanner="lizard",
                metrics={"duplication_pct": duplication_pct, "complexity": float(worst[0][1])},
                complexity_counts=counts,
                worst_functions=[
                    FunctionComplexity(function=f"app/x.py:1 {name}", complexity=value)
                    for name, value in worst
                ],
            )
        ]
    )


def unavailable(scanner: str = "pip-audit") -> ScannerReport:
    return ScannerReport(scanner=scanner, available=False, reason="no network")


def test_judge_scan_fails_at_or_above_fail_on() -> None:
    assert judge_scan(scan(finding(Severity.MEDIUM)), Severity.HIGH).passed
    at = judge_scan(scan(finding(Severity.HIGH, rule="B602")), Severity.HIGH)
    assert not at.passed
    assert at.reasons == ["1 finding(s) at or above high, e.g. bandit B602 (high) app.py:3"]
    above = judge_scan(
        scan(finding(Severity.CRITICAL), finding(Severity.HIGH), finding(Severity.LOW)),
        Severity.HIGH,
    )
    assert not above.passed
    assert above.reasons[0].startswith("2 finding(s) at or above high")
    assert not judge_scan(scan(finding(Severity.LOW)), Severity.LOW).passed


def test_judge_scan_with_no_findings_passes() -> None:
    verdict = judge_scan(scan(), Severity.HIGH)
    assert verdict.passed
    assert verdict.summary == "passed"


def test_an_unavailable_scanner_fails_closed() -> None:
    report = ScanReport(reports=[*scan().reports, unavailable()])
    verdict = judge_scan(report, Severity.HIGH)
    assert not verdict.passed
    assert verdict.reasons == ["pip-audit unavailable: no network"]
    # Only "warn" turns it into a warning; an unknown policy still fails closed.
    assert not judge_scan(report, Severity.HIGH, unavailable="ignore").passed


def test_an_unavailable_scanner_warns_when_the_stage_says_so() -> None:
    report = ScanReport(reports=[*scan().reports, unavailable()])
    verdict = judge_scan(report, Severity.HIGH, unavailable="warn")
    assert verdict.passed
    assert verdict.warnings == ["pip-audit unavailable: no network"]
    assert verdict.summary == "passed (pip-audit unavailable: no network)"
    # Warning about one scanner does not excuse another's findings.
    blocked = ScanReport(reports=[*scan(finding(Severity.CRITICAL)).reports, unavailable()])
    assert not judge_scan(blocked, Severity.HIGH, unavailable="warn").passed


def test_no_scanner_ran_is_a_failure() -> None:
    verdict = judge_scan(ScanReport(reports=[]), Severity.HIGH, label="security_scan")
    assert not verdict.passed
    assert verdict.summary == "security_scan: no scanner ran"


# --- tests --------------------------------------------------------------------------------


def suite(**fields: Any) -> SuiteStage:
    return SuiteStage.model_validate(
        {"name": "unit", "kind": "test", "command": ["pytest"], **fields}
    )


def report(**fields: Any) -> SuiteReport:
    base: dict[str, Any] = {"exit_code": 0, "tests": 40, "failures": 0, "errors": 0, "skipped": 1}
    return SuiteReport.model_validate({**base, **fields})


def test_judge_tests_passes_a_green_run() -> None:
    verdict = judge_tests(report(coverage_pct=91), suite(min_coverage=85))
    assert verdict.passed
    assert verdict.reasons == []


def test_judge_tests_fails_on_failures_and_names_them() -> None:
    failed = report(
        exit_code=1, failures=3, errors=1, failed_tests=["t::a", "t::b", "t::c", "t::d"]
    )
    verdict = judge_tests(failed, suite())
    assert not verdict.passed
    assert verdict.reasons == ["4 test(s) failed: t::a, t::b, t::c"]


def test_judge_tests_tolerates_max_failures() -> None:
    # pytest exits 1 whenever a test fails; tolerated failures must not fail the stage.
    flaky = report(exit_code=1, failures=2, failed_tests=["t::a", "t::b"])
    assert judge_tests(flaky, suite(max_failures=2)).passed
    assert not judge_tests(report(exit_code=1, failures=3), suite(max_failures=2)).passed


def test_judge_tests_fails_when_no_test_ran() -> None:
    verdict = judge_tests(report(tests=0, skipped=0), suite())
    assert not verdict.passed
    assert verdict.reasons == ["no tests ran"]


def test_judge_tests_fails_on_missing_coverage() -> None:
    verdict = judge_tests(report(coverage_pct=None), suite(min_coverage=85))
    assert not verdict.passed
    assert verdict.reasons == ["coverage report missing (need >= 85%)"]
    # Without a threshold, no coverage report is fine.
    assert judge_tests(report(coverage_pct=None), suite()).passed


def test_judge_tests_fails_on_coverage_below_the_minimum() -> None:
    verdict = judge_tests(report(coverage_pct=84.94), suite(min_coverage=85))
    assert not verdict.passed
    assert verdict.reasons == ["coverage 84.9% below 85%"]
    assert judge_tests(report(coverage_pct=85), suite(min_coverage=85)).passed


def test_judge_tests_fails_on_a_crash_without_failures() -> None:
    verdict = judge_tests(report(exit_code=2), suite())
    assert not verdict.passed
    assert verdict.reasons == ["test command exited 2"]


# --- quality gate -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gate() -> QualityGateStage:
    stage = load_pipeline(HEAL7).stage("quality_gate")
    assert isinstance(stage, QualityGateStage)
    return stage


def good_tests() -> dict[str, SuiteReport]:
    return {"unit_tests": report(coverage_pct=90), "integration_tests": report(coverage_pct=75)}


def good_scans() -> dict[str, ScanReport]:
    return {
        "code_quality": ScanReport(
            reports=[
                *scan(finding(Severity.LOW)).reports,
                # A project of many functions: their sum (SonarQube's `complexity`) is far
                # above 10, each one is not.
                *measured(1.5, **{f"f{i}": 1 + i % 10 for i in range(40)}).reports,
            ]
        ),
        "security_scan": scan(finding(Severity.MEDIUM)),
    }


SCAN_STAGES = {
    "security_scan": ScanStage(name="security_scan", kind="scan", scanners=["bandit"]),
}


def test_quality_gate_passes_the_heal7_thresholds(gate: QualityGateStage) -> None:
    verdict = quality_gate(gate, good_tests(), good_scans(), SCAN_STAGES, {"unit_tests": 120})
    assert verdict.passed, verdict.reasons


def test_quality_gate_missing_test_report_is_an_error(gate: QualityGateStage) -> None:
    tests = good_tests()
    del tests["integration_tests"]
    verdict = quality_gate(gate, tests, good_scans(), SCAN_STAGES, {})
    assert not verdict.passed
    assert verdict.reasons == ["coverage of 'integration_tests': report missing"]


def test_quality_gate_report_without_coverage_is_an_error(gate: QualityGateStage) -> None:
    tests = {**good_tests(), "unit_tests": report(coverage_pct=None)}
    verdict = quality_gate(gate, tests, good_scans(), SCAN_STAGES, {})
    assert verdict.reasons == ["coverage of 'unit_tests': no coverage in the report"]


def test_quality_gate_coverage_below(gate: QualityGateStage) -> None:
    tests = {**good_tests(), "unit_tests": report(coverage_pct=84.5)}
    verdict = quality_gate(gate, tests, good_scans(), SCAN_STAGES, {})
    assert not verdict.passed
    assert verdict.reasons == ["coverage of 'unit_tests' 84.5% < 85%"]


def test_quality_gate_requires_a_scan(gate: QualityGateStage) -> None:
    verdict = quality_gate(gate, good_tests(), {}, SCAN_STAGES, {})
    assert not verdict.passed
    assert "security: a scan is required and none ran" in verdict.reasons
    relaxed = QualityGateStage(name="g", kind="quality_gate", require_scan=False)
    assert quality_gate(relaxed, {}, {}, {}, {}).passed


@pytest.mark.parametrize("severity", [Severity.HIGH, Severity.CRITICAL])
def test_quality_gate_refuses_high_and_critical_findings(
    gate: QualityGateStage, severity: Severity
) -> None:
    scans = {**good_scans(), "image_scan": scan(finding(severity, scanner="trivy"))}
    verdict = quality_gate(gate, good_tests(), scans, SCAN_STAGES, {})
    assert not verdict.passed
    assert verdict.reasons == [f"security: 1 {severity.value} finding(s), allowed 0"]


def test_quality_gate_counts_findings_per_severity() -> None:
    gate = QualityGateStage.model_validate(
        {"name": "g", "kind": "quality_gate", "max_findings": {"high": 1, "medium": 2}}
    )
    one_high = {"s": scan(finding(Severity.HIGH), finding(Severity.MEDIUM), finding(Severity.LOW))}
    assert quality_gate(gate, {}, one_high, {}, {}).passed
    many = {
        "s": scan(finding(Severity.HIGH), *[finding(Severity.MEDIUM)] * 3),
        "t": scan(finding(Severity.HIGH)),
    }
    verdict = quality_gate(gate, {}, many, {}, {})
    assert verdict.reasons == [
        "security: 2 high finding(s), allowed 1",
        "security: 3 medium finding(s), allowed 2",
    ]
    # Severities the gate does not bound are not counted.
    assert quality_gate(gate, {}, {"s": scan(*[finding(Severity.LOW)] * 9)}, {}, {}).passed


def test_quality_gate_unavailable_scanner_follows_the_scan_policy(gate: QualityGateStage) -> None:
    scans = {
        **good_scans(),
        "security_scan": ScanReport(reports=[*scan().reports, unavailable()]),
    }
    closed = quality_gate(gate, good_tests(), scans, SCAN_STAGES, {})
    assert closed.reasons == ["security: pip-audit in 'security_scan' could not run (no network)"]
    # A scan with no known stage fails closed too.
    assert not quality_gate(gate, good_tests(), scans, {}, {}).passed
    warn = {
        "security_scan": ScanStage(
            name="security_scan", kind="scan", scanners=["bandit"], unavailable="warn"
        )
    }
    assert quality_gate(gate, good_tests(), scans, warn, {}).passed


def test_quality_gate_missing_duplication_or_complexity_is_an_error(
    gate: QualityGateStage,
) -> None:
    scans = {**good_scans(), "code_quality": scan()}
    verdict = quality_gate(gate, good_tests(), scans, SCAN_STAGES, {})
    assert verdict.reasons == [
        "code quality: no scanner reported duplication_pct",
        "code quality: no scanner reported complexity",
    ]


def test_quality_gate_duplication_and_complexity_above(gate: QualityGateStage) -> None:
    code = measured(3.5, main=12, route=11, parse=10, small=2)
    scans = {**good_scans(), "code_quality": code}
    verdict = quality_gate(gate, good_tests(), scans, SCAN_STAGES, {})
    assert verdict.reasons == [
        "code quality: duplication_pct 3.5 > 3",
        "code quality: 2 of 4 function(s) have complexity > 10; worst app/x.py:1 main (12)",
    ]
    at_limit = {**good_scans(), "code_quality": measured(3, main=10, route=10, small=1)}
    assert quality_gate(gate, good_tests(), at_limit, SCAN_STAGES, {}).passed


def test_quality_gate_complexity_is_per_function_not_the_projects_sum(
    gate: QualityGateStage,
) -> None:
    # 300 functions of complexity 3 to 10: SonarQube's project `complexity` would be 1,950.
    many = measured(0, **{f"f{i}": 3 + i % 8 for i in range(300)})
    sonar = ScannerReport(scanner="sonarqube", metrics={"complexity_total": 1950})
    scans = {**good_scans(), "code_quality": ScanReport(reports=[sonar, *many.reports])}
    assert quality_gate(gate, good_tests(), scans, SCAN_STAGES, {}).passed
    # A report from before per-function figures (a run started then) is judged as it was.
    old = {**good_scans(), "code_quality": scan(duplication_pct=1, complexity=12)}
    assert quality_gate(gate, good_tests(), old, SCAN_STAGES, {}).reasons == [
        "code quality: complexity 12 > 10"
    ]


def test_quality_gate_test_duration(gate: QualityGateStage) -> None:
    durations = {"unit_tests": 600.0, "integration_tests": 901.0}
    verdict = quality_gate(gate, good_tests(), good_scans(), SCAN_STAGES, durations)
    assert verdict.reasons == ["performance: 'integration_tests' took 901s > 900s"]
    assert quality_gate(gate, good_tests(), good_scans(), SCAN_STAGES, {"x": 900}).passed


def test_quality_gate_reports_every_error_at_once(gate: QualityGateStage) -> None:
    verdict = quality_gate(gate, {}, {}, SCAN_STAGES, {"unit_tests": 2000})
    assert not verdict.passed
    assert len(verdict.reasons) == 6  # two coverages, the scan, dup, complexity, duration
    assert verdict.summary == "; ".join(verdict.reasons)


# --- approvals ----------------------------------------------------------------------------

ROLES: dict[str, list[str]] = {**PIPELINE_ROLES, "nobody": []}


def approval(environment: str, *roles: str, **fields: Any) -> ApprovalStage:
    return ApprovalStage.model_validate(
        {
            "name": f"approve_{environment}",
            "kind": "approval",
            "environment": environment,
            "roles": list(roles),
            **fields,
        }
    )


PRODUCTION = approval("production", "cto", "devops_lead")
STAGING = approval("staging", "team_lead")


def refusal(
    gate: ApprovalStage | None = PRODUCTION,
    *,
    approver: str = "carol",
    gate_name: str = "production",
    author: str = "erin",
    votes: tuple[ApprovalVote, ...] = (),
    decided: bool = False,
    approve: bool = True,
) -> str | None:
    return approval_refusal(
        gate,
        gate_name=gate_name,
        approver=approver,
        approve=approve,
        roles=ROLES,
        author=author,
        votes=votes,
        decided=decided,
    )


def vote(approver: str, gate: str = "production", approve: bool = True) -> ApprovalVote:
    return ApprovalVote(gate=gate, approver=approver, approve=approve)


def test_a_valid_decision_is_accepted() -> None:
    assert refusal() is None
    assert refusal(approver="dave", votes=(vote("carol"),)) is None
    assert refusal(approver="dave", approve=False) is None
    assert refusal(STAGING, gate_name="staging", approver="alice") is None


@pytest.mark.parametrize("approver", ["", "   "])
def test_refuses_an_empty_approver(approver: str) -> None:
    assert refusal(approver=approver) == "approver is empty"


def test_refuses_an_unknown_approver() -> None:
    assert refusal(approver="mallory") == "unknown approver 'mallory': not in the roles file"


def test_refuses_a_gate_that_is_not_open() -> None:
    assert refusal(None, gate_name="prod") == "no approval gate named 'prod' is open"


def test_refuses_a_decided_gate() -> None:
    assert refusal(decided=True) == "gate 'production' is already decided"


def test_refuses_the_wrong_role() -> None:
    reason = refusal(approver="alice")
    assert reason is not None
    assert "'alice' holds ['team_lead']" in reason
    assert "['cto', 'devops_lead']" in reason
    assert refusal(approver="nobody") == (
        "'nobody' holds no roles; gate 'production' needs one of ['cto', 'devops_lead']"
    )


def test_refuses_self_approval_and_self_rejection() -> None:
    reason = refusal(approver="carol", author="carol")
    assert reason == "'carol' authored this commit and may not approve or reject it"
    assert refusal(approver="carol", author="carol", approve=False) == reason
    allowed = approval("production", "cto", "devops_lead", allow_self_approval=True)
    assert refusal(allowed, approver="carol", author="carol") is None


def test_refuses_a_second_decision_by_the_same_person() -> None:
    reason = refusal(approver="carol", votes=(vote("carol"),))
    assert reason == "'carol' has already decided on gate 'production'"
    # A decision on another gate does not count.
    assert refusal(approver="carol", votes=(vote("carol", gate="staging"),)) is None


def test_approval_state_production_needs_the_cto_and_the_devops_lead() -> None:
    assert approval_state(PRODUCTION, [], ROLES) == "pending"
    assert approval_state(PRODUCTION, [vote("carol")], ROLES) == "pending"
    assert approval_state(PRODUCTION, [vote("carol"), vote("dave")], ROLES) == "approved"


def test_approval_state_one_person_holding_both_roles_is_not_enough() -> None:
    assert approval_state(PRODUCTION, [vote("frank")], ROLES) == "pending"
    one = approval("production", "cto", "devops_lead", quorum=1)
    assert approval_state(one, [vote("frank")], ROLES) == "pending"
    assert approval_state(PRODUCTION, [vote("frank"), vote("dave")], ROLES) == "approved"


def test_approval_state_matches_roles_to_distinct_people() -> None:
    # frank voted first and could take either role; carol can only be the CTO.
    assert approval_state(PRODUCTION, [vote("frank"), vote("carol")], ROLES) == "approved"
    # Two CTOs do not make a DevOps lead.
    roles = {**ROLES, "cto2": ["cto"]}
    assert approval_state(PRODUCTION, [vote("carol"), vote("cto2")], roles) == "pending"


def test_approval_state_one_rejection_rejects() -> None:
    votes = [vote("carol"), vote("dave", approve=False)]
    assert approval_state(PRODUCTION, votes, ROLES) == "rejected"
    assert approval_state(STAGING, [vote("alice", "staging", False)], ROLES) == "rejected"


def test_approval_state_counts_only_its_own_gate() -> None:
    votes = [vote("alice", "staging", False), vote("carol"), vote("dave")]
    assert approval_state(PRODUCTION, votes, ROLES) == "approved"
    assert approval_state(STAGING, votes, ROLES) == "rejected"
    assert approval_state(STAGING, [vote("alice")], ROLES) == "pending"


def test_approval_state_quorum_of_distinct_people() -> None:
    gate = approval("staging", "team_lead", quorum=2)
    assert approval_state(gate, [vote("alice", "staging")], ROLES) == "pending"
    twice = [vote("alice", "staging"), vote("alice", "staging")]
    assert approval_state(gate, twice, ROLES) == "pending"
    both = [vote("alice", "staging"), vote("bob", "staging")]
    assert approval_state(gate, both, ROLES) == "approved"
    # Quorum counts people; the roles still have to be covered.
    three = approval("staging", "team_lead", "cto", quorum=3)
    leads = [vote("alice", "staging"), vote("bob", "staging"), vote("erin", "staging")]
    assert approval_state(three, leads, ROLES) == "pending"
    with_cto = [vote("alice", "staging"), vote("erin", "staging"), vote("carol", "staging")]
    assert approval_state(three, with_cto, ROLES) == "approved"


# --- branches -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("branch", "patterns", "expected"),
    [
        ("anything", [], True),
        ("main", ["main"], True),
        ("develop", ["develop", "main"], True),
        ("feature/x", ["develop", "main"], False),
        ("release/1.2", ["release/*"], True),
        ("release", ["release/*"], False),
        ("hotfix-7", ["release/*", "hotfix-?"], True),
        ("Main", ["main"], False),
        ("mainline", ["main"], False),
    ],
)
def test_branch_matches_globs(branch: str, patterns: list[str], expected: bool) -> None:
    assert branch_matches(branch, patterns) is expected
