"""Pipeline definitions: HEAL7's values in heal7.yaml/demo.yaml, `extends:` merging, and
every refusal naming the file, the stage and the field (all problems reported at once)."""

from __future__ import annotations

import copy
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from contracts.activity import Severity
from contracts.definition.loading import load_pipeline, validate_definition
from contracts.definition.model import (
    STAGE_KINDS,
    ApprovalStage,
    BrowserStage,
    CanaryStage,
    CommandStage,
    DefinitionError,
    MonitorStage,
    PipelineSpec,
    Problem,
    QualityGateStage,
    ScanStage,
    SuiteStage,
    WebAuditStage,
    parse_duration,
)

PIPELINES = Path(__file__).resolve().parents[2] / "pipelines"
HEAL7 = PIPELINES / "heal7.yaml"
HELLO = PIPELINES / "hello.yaml"
DEMO = PIPELINES / "demo.yaml"


# --- helpers ------------------------------------------------------------------------------


def valid() -> dict[str, Any]:
    """A small definition that loads: CI, build, dev, approval, production canary, rollback."""
    return {
        "name": "shop",
        "service": {"name": "shop"},
        "environments": {
            "development": {},
            "production": {"requires_approval": True, "strategy": "canary"},
        },
        "stages": [
            {"name": "checkout", "kind": "checkout"},
            {"name": "unit", "kind": "test", "needs": ["checkout"], "command": ["pytest"]},
            {"name": "build", "kind": "build", "needs": ["unit"]},
            {
                "name": "deploy_dev",
                "kind": "deploy",
                "needs": ["build"],
                "environment": "development",
            },
            {
                "name": "approve",
                "kind": "approval",
                "needs": ["deploy_dev"],
                "environment": "production",
                "roles": ["cto", "devops_lead"],
            },
            {
                "name": "deploy_prod",
                "kind": "deploy",
                "needs": ["approve"],
                "environment": "production",
                "on_failure": "rollback",
            },
            {
                "name": "canary",
                "kind": "canary",
                "needs": ["deploy_prod"],
                "environment": "production",
                "metrics": [{"metric": "success_rate", "min": 99}],
                "on_failure": "rollback",
            },
            {"name": "rollback", "kind": "rollback", "environment": "production"},
        ],
    }


def stage_of(data: dict[str, Any], name: str) -> dict[str, Any]:
    for stage in data["stages"]:
        if stage.get("name") == name:
            assert isinstance(stage, dict)
            return stage
    raise KeyError(name)


def write(tmp_path: Path, data: Any, name: str = "pipeline.yaml") -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data), encoding="utf-8")
    return path


def refuse(path: Path) -> DefinitionError:
    with pytest.raises(DefinitionError) as info:
        load_pipeline(path)
    return info.value


def only_problem(tmp_path: Path, data: Any) -> tuple[str, Problem]:
    """Load `data` from a file; it must be refused with exactly one problem, which is returned
    with the file's name."""
    path = write(tmp_path, data)
    error = refuse(path)
    assert len(error.problems) == 1, error
    problem = error.problems[0]
    assert problem.file == str(path)
    return str(path), problem


def assert_names(problem: Problem, file: str, stage: str | None, field: str | None) -> None:
    """What a user reads names the file, the stage and the field."""
    assert (problem.file, problem.stage, problem.field) == (file, stage, field), problem
    text = str(problem)
    assert text.startswith(file)
    if stage is not None:
        assert f"stage {stage!r}" in text
    if field is not None:
        assert f"field {field!r}" in text


def test_the_helper_definition_is_valid(tmp_path: Path) -> None:
    spec = load_pipeline(write(tmp_path, valid()))
    assert [s.name for s in spec.stages] == [s["name"] for s in valid()["stages"]]
    assert spec.source == str(tmp_path / "pipeline.yaml")


# --- HEAL7's values --------------------------------------------------------------------


@pytest.fixture(scope="module")
def heal7() -> PipelineSpec:
    return load_pipeline(HEAL7)


@pytest.fixture(scope="module")
def hello() -> PipelineSpec:
    return load_pipeline(HELLO)


@pytest.fixture(scope="module")
def demo() -> PipelineSpec:
    return load_pipeline(DEMO)


def test_heal7_canary_has_the_heal7_values(heal7: PipelineSpec) -> None:
    canary = heal7.stage("canary")
    assert isinstance(canary, CanaryStage)
    assert canary.environment == "production"
    assert canary.interval == timedelta(minutes=1)
    assert canary.threshold == 5
    assert (canary.max_weight, canary.step_weight) == (50, 10)
    assert canary.weights == [10, 20, 30, 40, 50]
    assert canary.progress_deadline == timedelta(seconds=60)
    assert canary.no_data == "fail"
    bounds = {(m.metric, m.min, m.max, m.window.total_seconds()) for m in canary.metrics}
    assert bounds == {
        ("success_rate", 99, None, 60),
        ("p95_latency_ms", None, 500, 30),
        ("error_rate", None, 1, 30),
    }
    # The service's own metric is PromQL of the definition, over the backend's counter.
    assert (
        "saju_calculations_total" in heal7.metric_templates("production")["saju_calculations_per_s"]
    )


def test_heal7_monitor_has_the_heal7_values(heal7: PipelineSpec) -> None:
    monitor = heal7.stage("monitor")
    assert isinstance(monitor, MonitorStage)
    assert monitor.needs == ["canary"]
    assert monitor.duration == timedelta(minutes=15)
    assert monitor.interval == timedelta(seconds=60)
    assert monitor.recheck == timedelta(seconds=30)
    assert monitor.on_failure == "rollback"
    criteria = [(c.metric, c.min, c.max, c.window.total_seconds()) for c in monitor.criteria]
    assert criteria == [
        ("error_rate", None, 5, 300),
        ("p95_latency_ms", None, 2000, 300),
        ("success_rate", 95, None, 180),
        ("cpu_percent", None, 90, 600),
    ]


def test_heal7_approvals_and_environments(heal7: PipelineSpec) -> None:
    staging = heal7.stage("approve_staging")
    production = heal7.stage("approve_production")
    assert isinstance(staging, ApprovalStage)
    assert isinstance(production, ApprovalStage)
    assert (staging.environment, staging.roles) == ("staging", ["team_lead"])
    assert (production.environment, production.roles) == ("production", ["cto", "devops_lead"])
    assert production.required_quorum == 2
    assert production.gate_name == "production"
    assert production.timeout == timedelta(hours=24)
    assert not production.allow_self_approval
    envs = heal7.environments
    assert envs["development"].strategy == "rolling"
    assert not envs["development"].requires_approval
    assert (envs["staging"].strategy, envs["staging"].requires_approval) == ("blue_green", True)
    assert envs["staging"].auto_rollback is False
    assert envs["production"].strategy == "canary"
    assert envs["production"].requires_approval
    assert envs["production"].branches == ["main"]


def test_heal7_quality_gate_and_ci(heal7: PipelineSpec) -> None:
    gate = heal7.stage("quality_gate")
    assert isinstance(gate, QualityGateStage)
    assert gate.needs == [
        "code_quality",
        "security_scan",
        "unit_tests",
        "integration_tests",
        "frontend_lint",
        "frontend_typecheck",
        "frontend_unit_tests",
        "frontend_component_tests",
    ]
    # HEAL7: backend ≥ 85%, integration ≥ 70%, frontend ≥ 80%.
    assert gate.min_coverage == {
        "unit_tests": 85,
        "integration_tests": 70,
        "frontend_unit_tests": 80,
        "frontend_component_tests": 80,
    }
    assert gate.max_findings == {Severity.CRITICAL: 0, Severity.HIGH: 0}
    assert gate.require_scan
    assert (gate.max_duplication_pct, gate.max_complexity) == (3, 10)
    assert gate.max_test_duration == timedelta(minutes=15)
    scan = heal7.stage("security_scan")
    assert isinstance(scan, ScanStage)
    assert scan.scanners == ["bandit", "pip-audit", "detect-secrets"]
    assert (scan.fail_on, scan.unavailable) == (Severity.HIGH, "fail")
    build = heal7.stage("build")
    assert build.kind == "build"
    assert (build.max_duration, build.max_size_mb) == (timedelta(minutes=10), 500)
    assert heal7.stage("rollback_production").kind == "rollback"
    assert heal7.stage("deploy_production").on_failure == "rollback"


def test_heal7_ships_both_deployables_and_the_frontends_checks(heal7: PipelineSpec) -> None:
    assert heal7.service.name == "heal7"
    assert {n: a.path for n, a in heal7.artifacts.items()} == {
        "backend": "backend",
        "frontend": "frontend",
    }
    # The backend's scans and suites name it (the frontend's node_modules are not scanned).
    for name in ("code_quality", "security_scan", "unit_tests", "integration_tests"):
        assert getattr(heal7.stage(name), "artifact", None) == "backend", name
    # The frontend: npm ci and the build once, then lint, type check and the two suites on it,
    # each suite's JUnit and Cobertura read by the test stage, with no Python packages.
    build = heal7.stage("frontend_build")
    assert isinstance(build, CommandStage)
    assert build.command[-1].startswith("npm ci ")
    assert build.env == {"HEAL7_API_BASE": ""}
    for name, script in (("frontend_lint", "lint"), ("frontend_typecheck", "typecheck")):
        stage = heal7.stage(name)
        assert isinstance(stage, CommandStage)
        assert (stage.artifact, stage.command, stage.needs) == (
            "frontend",
            ["npm", "run", script],
            ["frontend_build"],
        )
    for name, suite in (
        ("frontend_unit_tests", "unit"),
        ("frontend_component_tests", "components"),
    ):
        stage = heal7.stage(name)
        assert isinstance(stage, SuiteStage)
        assert stage.command == ["npm", "run", f"test:{suite}"]
        assert stage.junit == f"junit-{suite}.xml"
        assert stage.coverage == f"coverage/{suite}/cobertura-coverage.xml"
        assert (stage.artifact, stage.extras, stage.needs) == ("frontend", [], ["frontend_build"])
    # Staging proves the frontend in a browser and by Lighthouse and axe, beside load and DAST,
    # before production's approval.
    browser = heal7.stage("browser_tests")
    assert isinstance(browser, BrowserStage)
    assert (browser.environment, browser.artifact, browser.tests) == (
        "staging",
        "frontend",
        ["e2e"],
    )
    audit = heal7.stage("web_audit")
    assert isinstance(audit, WebAuditStage)
    assert (audit.environment, audit.artifact, audit.paths) == (
        "staging",
        "frontend",
        ["/", "/about.html"],
    )
    assert audit.lighthouse is not None
    assert audit.lighthouse.minimums() == {
        "performance": 90,
        "accessibility": 90,
        "best-practices": 90,
        "seo": 90,
    }
    assert (audit.wcag, audit.fail_on) == ("AA", Severity.HIGH)
    assert heal7.stage("approve_production").needs == [
        "performance_tests",
        "security_tests",
        "uat",
        "browser_tests",
        "web_audit",
    ]
    assert heal7.stage("approve_staging").needs == ["e2e_dev", "e2e_frontend_dev"]


def test_hello_is_the_backend_journey_for_one_deployable(hello: PipelineSpec) -> None:
    demo = hello  # the hello-service variant the end-to-end tests deliver
    assert (demo.name, demo.service.name) == ("hello", "hello")
    assert demo.source == str(HELLO)
    assert demo.artifacts == {}
    # HEAL7's stages without the frontend's.
    assert [s.name for s in demo.stages] == [
        "checkout",
        "code_quality",
        "security_scan",
        "unit_tests",
        "integration_tests",
        "quality_gate",
        "build",
        "image_scan",
        "publish",
        "deploy_dev",
        "e2e_dev",
        "approve_staging",
        "deploy_staging",
        "performance_tests",
        "security_tests",
        "uat",
        "approve_production",
        "deploy_production",
        "canary",
        "monitor",
        "rollback_production",
        "announce",
    ]
    code_quality = demo.stage("code_quality")
    assert isinstance(code_quality, ScanStage)
    assert code_quality.scanners == ["detect-secrets"]
    assert code_quality.needs == ["checkout"]
    security = demo.stage("security_scan")
    assert isinstance(security, ScanStage)
    assert (security.unavailable, security.fail_on) == ("warn", Severity.HIGH)
    unit = demo.stage("unit_tests")
    assert isinstance(unit, SuiteStage)
    assert unit.coverage is None
    assert unit.junit == "junit-unit.xml"
    assert unit.timeout == timedelta(minutes=5)
    gate = demo.stage("quality_gate")
    assert isinstance(gate, QualityGateStage)
    assert gate.min_coverage == {}
    assert (gate.max_duplication_pct, gate.max_complexity) == (None, None)
    assert gate.max_findings == {Severity.CRITICAL: 0, Severity.HIGH: 0}
    canary = demo.stage("canary")
    assert isinstance(canary, CanaryStage)
    assert canary.weights == [25, 50]
    assert (canary.interval, canary.threshold) == (timedelta(seconds=3), 2)
    assert canary.on_failure == "rollback"
    monitor = demo.stage("monitor")
    assert isinstance(monitor, MonitorStage)
    assert [c.metric for c in monitor.criteria] == [
        "error_rate",
        "p95_latency_ms",
        "success_rate",
    ]
    assert monitor.duration == timedelta(seconds=24)
    approval = demo.stage("approve_production")
    assert isinstance(approval, ApprovalStage)
    assert approval.roles == ["cto", "devops_lead"]
    assert approval.timeout == timedelta(minutes=10)
    production = demo.environments["production"]
    assert production.branches == []
    assert (production.requires_approval, production.strategy) == (True, "canary")
    assert demo.environments["staging"].strategy == "blue_green"


def test_demo_delivers_heal7_with_its_checks_and_seconds_for_timings(
    heal7: PipelineSpec, demo: PipelineSpec
) -> None:
    assert (demo.name, demo.service.name) == ("demo", "heal7")
    assert {n: a.path for n, a in demo.artifacts.items()} == {
        "backend": "backend",
        "frontend": "frontend",
    }
    # Every stage of the base in its order; none added: demo.yaml only overrides.
    assert [s.name for s in demo.stages] == [s.name for s in heal7.stages]
    # What makes it HEAL7's system and not a stand-in: its own suites and coverage
    # thresholds, PostgreSQL and Redis for the integration tests, the frontend's npm build.
    integration = demo.stage("integration_tests")
    assert isinstance(integration, SuiteStage)
    assert integration.services == ["postgres:16", "redis:7"]
    assert {"DATABASE_URL", "REDIS_URL"} <= set(integration.env)
    gate = demo.stage("quality_gate")
    assert isinstance(gate, QualityGateStage)
    heal7_gate = heal7.stage("quality_gate")
    assert isinstance(heal7_gate, QualityGateStage)
    assert gate.min_coverage == heal7_gate.min_coverage
    # The pages ask the backend on the local platform's bare entry point, at their own port.
    build = demo.stage("frontend_build")
    assert isinstance(build, CommandStage)
    assert build.env == {"HEAL7_API_BASE": "http://localhost:{port}"}
    assert demo.artifacts["backend"].env["ALLOWED_ORIGIN"] == "*"
    assert demo.artifacts["backend"].release == ["python", "-m", "app.migrate"]  # inherited
    for name in ("browser_tests", "web_audit"):
        assert getattr(demo.stage(name), "unavailable", None) == "warn", name
    # The canary sends calculations and judges the service's own metric beside HEAL7's.
    canary = demo.stage("canary")
    assert isinstance(canary, CanaryStage)
    assert canary.load is not None
    assert canary.load.path.startswith("/api/saju?")
    heal7_canary = heal7.stage("canary")
    assert isinstance(heal7_canary, CanaryStage)
    assert {m.metric for m in canary.metrics} == {
        *(m.metric for m in heal7_canary.metrics),
        "saju_calculations_per_s",
    }
    assert canary.interval == timedelta(seconds=5)


# --- extends: -----------------------------------------------------------------------------


def test_extends_deep_merges_stages_by_name_and_appends_new_ones(tmp_path: Path) -> None:
    base = valid()
    stage_of(base, "unit")["retry"] = {"max_attempts": 5, "backoff": 3}
    write(tmp_path, base, "lib/base.yaml")
    child = {
        "extends": "lib/base.yaml",
        "name": "child",
        "stages": [
            {"name": "unit", "retry": {"max_attempts": 2}, "timeout": "7m"},
            {
                "name": "announce",
                "kind": "notify",
                "needs": ["canary"],
                "message": "shipped",
            },
        ],
    }
    spec = load_pipeline(write(tmp_path, child, "child.yaml"))
    assert spec.name == "child"
    assert spec.service.name == "shop"  # inherited
    assert [s.name for s in spec.stages] == [*(s["name"] for s in base["stages"]), "announce"]
    unit = spec.stage("unit")
    assert isinstance(unit, SuiteStage)
    assert unit.command == ["pytest"]
    assert unit.timeout == timedelta(minutes=7)
    assert unit.retry is not None
    assert (unit.retry.max_attempts, unit.retry.backoff) == (2, 3)


def test_extends_empty_mapping_clears_the_inherited_value(tmp_path: Path) -> None:
    base = valid()
    base["stages"].insert(
        2,
        {
            "name": "gate",
            "kind": "quality_gate",
            "needs": ["unit"],
            "min_coverage": {"unit": 90},
            "max_findings": {"critical": 0, "high": 2},
        },
    )
    stage_of(base, "build")["needs"] = ["gate"]
    write(tmp_path, base, "base.yaml")
    inherited = load_pipeline(
        write(tmp_path, {"extends": "base.yaml", "name": "kept"}, "kept.yaml")
    ).stage("gate")
    assert isinstance(inherited, QualityGateStage)
    assert inherited.min_coverage == {"unit": 90}

    child = {
        "extends": "base.yaml",
        "stages": [{"name": "gate", "min_coverage": {}, "max_findings": {"high": 0}}],
    }
    gate = load_pipeline(write(tmp_path, child, "child.yaml")).stage("gate")
    assert isinstance(gate, QualityGateStage)
    assert gate.min_coverage == {}
    # A non-empty mapping merges key by key instead.
    assert gate.max_findings == {Severity.CRITICAL: 0, Severity.HIGH: 0}


def test_extends_is_relative_to_the_file(tmp_path: Path) -> None:
    write(tmp_path, valid(), "svc/lib/base.yaml")
    path = write(tmp_path, {"extends": "lib/base.yaml", "name": "svc"}, "svc/p.yaml")
    assert load_pipeline(path).name == "svc"


def test_extends_outside_the_tree_needs_an_allowed_root(tmp_path: Path) -> None:
    write(tmp_path, valid(), "shared/base.yaml")
    path = write(tmp_path, {"extends": "../shared/base.yaml", "name": "svc"}, "svc/p.yaml")
    problem = refuse(path).problems[0]
    assert_names(problem, str(path), None, "extends")
    assert "outside" in problem.message
    assert load_pipeline(path, extends_roots=[tmp_path / "shared"]).name == "svc"


def test_extends_cycle_is_reported(tmp_path: Path) -> None:
    write(tmp_path, {**valid(), "extends": "b.yaml"}, "a.yaml")
    b = write(tmp_path, {"extends": "a.yaml", "name": "b"}, "b.yaml")
    error = refuse(tmp_path / "a.yaml")
    assert len(error.problems) == 1, error
    problem = error.problems[0]
    assert_names(problem, str(b), None, "extends")
    assert "extends itself" in problem.message
    assert "a.yaml" in problem.message


def test_extends_itself_is_reported(tmp_path: Path) -> None:
    file, problem = only_problem(tmp_path, {**valid(), "extends": "pipeline.yaml"})
    assert_names(problem, file, None, "extends")
    assert "extends itself" in problem.message


def test_extends_a_missing_base_names_the_base(tmp_path: Path) -> None:
    path = write(tmp_path, {**valid(), "extends": "nowhere.yaml"})
    error = refuse(path)
    assert [(p.file, p.message) for p in error.problems] == [
        (str(tmp_path / "nowhere.yaml"), "file not found")
    ]


def test_extends_with_a_non_list_stages_is_reported_not_a_crash(tmp_path: Path) -> None:
    write(tmp_path, valid(), "base.yaml")
    file, problem = only_problem(tmp_path, {"extends": "base.yaml", "stages": 5})
    assert_names(problem, file, None, "stages")


# --- refusals: the graph ------------------------------------------------------------------


def test_cycle_is_refused_naming_the_cycle(tmp_path: Path) -> None:
    data = valid()
    stage_of(data, "checkout")["needs"] = ["build"]
    file, problem = only_problem(tmp_path, data)
    assert problem.field == "needs"
    assert problem.stage in {"checkout", "unit", "build"}
    assert_names(problem, file, problem.stage, "needs")
    # In run order: each stage runs before the next, and the path closes on itself.
    path = problem.message.removeprefix("cycle: ").split(" -> ")
    assert problem.message.startswith("cycle: ")
    assert path[0] == path[-1] == problem.stage
    assert sorted(path[:-1]) == ["build", "checkout", "unit"]
    order = ["checkout", "unit", "build", "checkout", "unit", "build"]
    start = order.index(path[0])
    assert path == order[start : start + 4]


def test_a_stage_needing_itself_is_refused(tmp_path: Path) -> None:
    data = valid()
    stage_of(data, "unit")["needs"] = ["checkout", "unit"]
    file, problem = only_problem(tmp_path, data)
    assert_names(problem, file, "unit", "needs")
    assert "itself" in problem.message


def test_unknown_needs_is_refused(tmp_path: Path) -> None:
    data = valid()
    stage_of(data, "build")["needs"] = ["unit", "lint"]
    file, problem = only_problem(tmp_path, data)
    assert_names(problem, file, "build", "needs")
    assert "'lint'" in problem.message
    assert "unknown" in problem.message


def test_duplicate_names_are_refused(tmp_path: Path) -> None:
    data = valid()
    data["stages"].append({"name": "unit", "kind": "test", "command": ["tox"]})
    file, problem = only_problem(tmp_path, data)
    assert_names(problem, file, "unit", "name")
    assert "duplicate" in problem.message


def test_unknown_kind_is_refused_listing_the_valid_kinds(tmp_path: Path) -> None:
    data = valid()
    data["stages"].append({"name": "lint", "kind": "linter", "needs": ["checkout"]})
    file, problem = only_problem(tmp_path, data)
    assert_names(problem, file, "lint", "kind")
    assert "'linter'" in problem.message
    for kind in STAGE_KINDS:
        assert kind in problem.message


def test_missing_kind_is_refused(tmp_path: Path) -> None:
    data = valid()
    data["stages"].append({"name": "lint", "needs": ["checkout"]})
    file, problem = only_problem(tmp_path, data)
    assert_names(problem, file, "lint", "kind")


def test_depending_on_a_rollback_stage_is_unreachable(tmp_path: Path) -> None:
    data = valid()
    data["stages"].append(
        {"name": "tell", "kind": "notify", "needs": ["rollback"], "message": "rolled back"}
    )
    data["stages"].append({"name": "after", "kind": "notify", "needs": ["tell"], "message": "x"})
    path = write(tmp_path, data)
    error = refuse(path)
    assert [(p.stage, p.field) for p in error.problems] == [("tell", "needs"), ("after", "needs")]
    for problem in error.problems:
        assert_names(problem, str(path), problem.stage, "needs")
        assert "unreachable" in problem.message
        assert "'rollback'" in problem.message


# --- refusals: policy ---------------------------------------------------------------------


def test_production_deploy_without_the_required_approval_is_refused(tmp_path: Path) -> None:
    data = valid()
    data["stages"] = [s for s in data["stages"] if s["name"] != "approve"]
    stage_of(data, "deploy_prod")["needs"] = ["deploy_dev"]
    file, problem = only_problem(tmp_path, data)
    assert_names(problem, file, "deploy_prod", "needs")
    assert "'production' requires approval" in problem.message


def test_an_approval_for_another_environment_does_not_count(tmp_path: Path) -> None:
    data = valid()
    stage_of(data, "approve")["environment"] = "development"
    file, problem = only_problem(tmp_path, data)
    assert_names(problem, file, "deploy_prod", "needs")
    assert "requires approval" in problem.message


def test_an_approval_beside_the_deploy_rather_than_before_it_does_not_count(
    tmp_path: Path,
) -> None:
    data = valid()
    stage_of(data, "approve")["needs"] = ["deploy_dev"]
    stage_of(data, "deploy_prod")["needs"] = ["deploy_dev"]
    file, problem = only_problem(tmp_path, data)
    assert_names(problem, file, "deploy_prod", "needs")


def test_an_environment_that_does_not_require_approval_needs_none(tmp_path: Path) -> None:
    data = valid()
    data["environments"]["production"]["requires_approval"] = False
    data["stages"] = [s for s in data["stages"] if s["name"] != "approve"]
    stage_of(data, "deploy_prod")["needs"] = ["deploy_dev"]
    load_pipeline(write(tmp_path, data))


def test_a_deploy_needs_a_build_before_it(tmp_path: Path) -> None:
    data = valid()
    stage_of(data, "deploy_dev")["needs"] = ["unit"]  # beside the build, not after it
    stage_of(data, "approve")["needs"] = ["deploy_dev", "build"]
    file, problem = only_problem(tmp_path, data)
    assert_names(problem, file, "deploy_dev", "needs")
    assert "needs a build stage before it" in problem.message


def test_a_canary_needs_a_deploy_to_its_environment_before_it(tmp_path: Path) -> None:
    data = valid()
    stage_of(data, "canary")["needs"] = ["approve"]
    stage_of(data, "deploy_prod")["needs"] = ["canary"]
    file, problem = only_problem(tmp_path, data)
    assert_names(problem, file, "canary", "needs")
    assert "deploy to 'production'" in problem.message


def test_a_canary_deploy_without_a_canary_stage_is_refused(tmp_path: Path) -> None:
    data = valid()
    data["stages"] = [s for s in data["stages"] if s["name"] != "canary"]
    file, problem = only_problem(tmp_path, data)
    assert_names(problem, file, "deploy_prod", "strategy")
    assert "no canary stage" in problem.message


@pytest.mark.parametrize(
    ("steps", "field"),
    [
        ({"maxWeight": 50, "stepWeight": 15}, "stepWeight"),
        ({"maxWeight": 50, "stepWeight": 60}, "stepWeight"),
        ({"max_weight": 30, "step_weight": 20}, "step_weight"),
        ({"maxWeight": 45}, "step_weight"),  # the default step of 10 does not reach 45
    ],
)
def test_a_canary_whose_steps_do_not_reach_max_weight_is_refused(
    tmp_path: Path, steps: dict[str, int], field: str
) -> None:
    data = valid()
    stage_of(data, "canary").update(steps)
    file, problem = only_problem(tmp_path, data)
    assert_names(problem, file, "canary", field)
    assert "does not reach max_weight" in problem.message


def test_canary_weights_follow_the_steps(tmp_path: Path) -> None:
    data = valid()
    stage_of(data, "canary").update({"maxWeight": 100, "stepWeight": 25})
    canary = load_pipeline(write(tmp_path, data)).stage("canary")
    assert isinstance(canary, CanaryStage)
    assert canary.weights == [25, 50, 75, 100]


@pytest.mark.parametrize(
    ("check", "words"),
    [
        ({"metric": "success_rate", "min": 101}, "0..100"),
        ({"metric": "error_rate", "max": 150}, "0..100"),
        ({"metric": "cpu_percent", "max": -1}, "0..100"),
        ({"metric": "p95_latency_ms", "max": -5}, "> 0 ms"),
        ({"metric": "p95_latency_ms", "max": 0}, "> 0 ms"),
        ({"metric": "error_rate", "min": 0, "max": 1}, "exactly one of"),
        ({"metric": "error_rate"}, "exactly one of"),
        ({"metric": "error_rate", "max": 1, "window": "0s"}, "positive"),
    ],
)
def test_thresholds_out_of_range_are_refused(
    tmp_path: Path, check: dict[str, Any], words: str
) -> None:
    data = valid()
    stage_of(data, "canary")["metrics"] = [{"metric": "success_rate", "min": 99}, check]
    file, problem = only_problem(tmp_path, data)
    assert problem.field is not None
    assert problem.field.startswith("metrics.1")
    assert_names(problem, file, "canary", problem.field)
    assert words in problem.message


def test_monitor_thresholds_and_interval_are_checked(tmp_path: Path) -> None:
    data = valid()
    data["stages"].append(
        {
            "name": "watch",
            "kind": "monitor",
            "needs": ["canary"],
            "environment": "production",
            "duration": "1m",
            "interval": "2m",
            "criteria": [{"metric": "success_rate", "min": 95}, {"metric": "cpu_percent"}],
        }
    )
    path = write(tmp_path, data)
    error = refuse(path)
    assert sorted((p.stage, p.field) for p in error.problems) == [
        ("watch", "criteria.1"),
        ("watch", "interval"),
    ]
    for problem in error.problems:
        assert_names(problem, str(path), "watch", problem.field)


def test_coverage_above_100_is_refused(tmp_path: Path) -> None:
    data = valid()
    data["stages"].insert(
        2,
        {"name": "gate", "kind": "quality_gate", "needs": ["unit"], "min_coverage": {"unit": 150}},
    )
    stage_of(data, "build")["needs"] = ["gate"]
    file, problem = only_problem(tmp_path, data)
    assert_names(problem, file, "gate", "min_coverage.unit")


def test_quality_gate_coverage_of_a_stage_that_is_no_test_or_not_before_it(
    tmp_path: Path,
) -> None:
    data = valid()
    data["stages"].insert(
        2,
        {
            "name": "gate",
            "kind": "quality_gate",
            "needs": ["checkout"],
            "min_coverage": {"unit": 80, "checkout": 80},
        },
    )
    path = write(tmp_path, data)
    error = refuse(path)
    by_field = {p.field: p for p in error.problems}
    assert set(by_field) == {"min_coverage.unit", "min_coverage.checkout"}
    assert "must run before the gate" in by_field["min_coverage.unit"].message
    assert "is not a test stage" in by_field["min_coverage.checkout"].message
    for problem in error.problems:
        assert_names(problem, str(path), "gate", problem.field)


def test_unknown_environment_is_refused(tmp_path: Path) -> None:
    data = valid()
    stage_of(data, "deploy_dev")["environment"] = "moon"
    file, problem = only_problem(tmp_path, data)
    assert_names(problem, file, "deploy_dev", "environment")
    assert "'moon'" in problem.message
    assert "development, production" in problem.message


@pytest.mark.parametrize("value", ["5 minutes", "10x", "1m30", "soon", "-5s", "0s", -3, "1 h m"])
def test_invalid_durations_are_refused(tmp_path: Path, value: Any) -> None:
    data = valid()
    stage_of(data, "unit")["timeout"] = value
    file, problem = only_problem(tmp_path, data)
    assert_names(problem, file, "unit", "timeout")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("30s", 30),
        ("1m", 60),
        ("15m", 900),
        ("4h", 14400),
        ("1d", 86400),
        ("1.5m", 90),
        (" 2 h ", 7200),
        (45, 45),
        ("PT2M", 120),
    ],
)
def test_durations_are_read(tmp_path: Path, text: Any, seconds: float) -> None:
    data = valid()
    stage_of(data, "unit")["timeout"] = text
    unit = load_pipeline(write(tmp_path, data)).stage("unit")
    assert unit.timeout == timedelta(seconds=seconds)


def test_parse_duration_reads_short_forms_and_iso_8601() -> None:
    assert parse_duration("10m") == timedelta(minutes=10)
    assert parse_duration(2.5) == timedelta(seconds=2.5)
    assert parse_duration("P1D") == timedelta(days=1)
    assert parse_duration(True) is True


def test_missing_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    error = refuse(path)
    assert [(p.file, p.stage, p.field, p.message) for p in error.problems] == [
        (str(path), None, None, "file not found")
    ]
    assert str(path) in str(error)


def test_bad_yaml_is_refused_with_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "name: x\nstages:\n  - {name: a, kind: checkout\n")
    error = refuse(path)
    assert len(error.problems) == 1
    problem = error.problems[0]
    assert problem.file == str(path)
    assert problem.message.startswith("not valid YAML")
    assert "line 3" in problem.message


@pytest.mark.parametrize("text", ["", "- a\n- b\n", "just words\n"])
def test_a_file_that_is_not_a_mapping_is_refused(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text)
    error = refuse(path)
    assert [(p.file, p.message) for p in error.problems] == [
        (str(path), "expected a mapping at the top level")
    ]


def test_missing_stages_and_header_fields_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path, {"name": "x", "service": {"name": "Not A Valid Name"}})
    error = refuse(path)
    fields = sorted(str(p.field) for p in error.problems)
    assert fields == ["service.name", "stages"]
    for problem in error.problems:
        assert problem.file == str(path)
        assert problem.stage is None


def test_stage_field_errors_name_the_stage_and_field(tmp_path: Path) -> None:
    data = valid()
    stage_of(data, "unit")["command"] = []
    stage_of(data, "unit")["max_failures"] = -1
    stage_of(data, "checkout")["colour"] = "blue"
    path = write(tmp_path, data)
    error = refuse(path)
    assert sorted((str(p.stage), str(p.field)) for p in error.problems) == [
        ("checkout", "colour"),
        ("unit", "command"),
        ("unit", "max_failures"),
    ]


def test_a_stage_without_a_name_is_named_by_position(tmp_path: Path) -> None:
    data = valid()
    data["stages"].append({"kind": "notify", "message": "hi", "needs": ["canary"]})
    data["stages"].append("not a stage")
    path = write(tmp_path, data)
    error = refuse(path)
    stages = {(p.stage, p.field) for p in error.problems}
    assert ("#9", "name") in stages
    assert ("#10", None) in stages


def test_several_problems_are_all_reported_at_once(tmp_path: Path) -> None:
    data = valid()
    stage_of(data, "checkout")["needs"] = ["build"]  # cycle
    stage_of(data, "unit")["timeout"] = "forever"  # duration
    stage_of(data, "deploy_dev")["environment"] = "moon"  # environment
    stage_of(data, "canary")["stepWeight"] = 7  # steps
    stage_of(data, "canary")["metrics"] = [{"metric": "success_rate", "min": 120}]  # range
    data["stages"].append({"name": "deploy_dev", "kind": "deploy", "environment": "development"})
    data["stages"].append({"name": "lint", "kind": "lint"})  # kind
    data["stages"].append({"name": "tell", "kind": "notify", "needs": ["ghost"], "message": "x"})
    path = write(tmp_path, data)
    error = refuse(path)
    found = {(p.stage, p.field) for p in error.problems}
    expected = {
        ("unit", "timeout"),
        ("canary", "stepWeight"),
        ("canary", "metrics.0"),
        ("lint", "kind"),
        ("deploy_dev", "name"),
        ("tell", "needs"),
        ("deploy_dev", "environment"),
    }
    assert expected <= found
    assert any(p.message.startswith("cycle: ") for p in error.problems)
    assert all(p.file == str(path) for p in error.problems)
    text = str(error)
    assert f"({len(error.problems)} problems)" in text
    for problem in error.problems:
        assert f"  - {problem}" in text


def test_a_broken_stage_does_not_blame_the_stages_after_it(tmp_path: Path) -> None:
    """Only the broken stage is reported: the deploys after an invalid build are not told
    they lack a build, nor is the monitor after an invalid canary told it lacks a deploy."""
    data = yaml.safe_load(HEAL7.read_text(encoding="utf-8"))
    broken = copy.deepcopy(data)
    stage_of(broken, "build")["max_duration"] = "ten minutes"
    stage_of(broken, "canary")["stepWeight"] = 15
    stage_of(broken, "approve_production")["roles"] = []
    error = refuse(write(tmp_path, broken))
    assert sorted((str(p.stage), str(p.field)) for p in error.problems) == [
        ("approve_production", "roles"),
        ("build", "max_duration"),
        ("canary", "stepWeight"),
    ]


@pytest.mark.parametrize("needs", [5, "checkout", [["checkout"]], [{"a": 1}]])
def test_needs_that_is_not_a_list_of_names_is_reported_not_a_crash(
    tmp_path: Path, needs: Any
) -> None:
    data = valid()
    stage_of(data, "unit")["needs"] = needs
    file, problem = only_problem(tmp_path, data)
    assert problem.field is not None
    assert problem.field.startswith("needs")
    assert_names(problem, file, "unit", problem.field)


def test_validate_definition_takes_parsed_data_and_keeps_earlier_problems() -> None:
    spec = validate_definition(valid(), "inline.yaml")
    assert spec.source == "inline.yaml"
    assert spec.stage("canary").kind == "canary"
    earlier = Problem(file="base.yaml", field="extends", message="earlier")
    with pytest.raises(DefinitionError) as info:
        validate_definition(valid(), "inline.yaml", [earlier])
    assert info.value.problems == [earlier]


def test_templates_with_unknown_placeholders_are_refused(tmp_path: Path) -> None:
    # Found at validation, not when a run formats them (that would wedge the workflow task).
    path = tmp_path / "templates.yaml"
    path.write_text(
        "name: t\nservice: {name: svc}\nstages:\n"
        "  - {name: checkout, kind: checkout}\n"
        "  - {name: build, kind: build, needs: [checkout]}\n"
        "  - {name: publish, kind: publish, needs: [build], tags: ['{branch}-{build_id}']}\n"
        "  - {name: tell, kind: notify, needs: [publish], message: 'done {oops'}\n",
        encoding="utf-8",
    )
    with pytest.raises(DefinitionError) as info:
        load_pipeline(path)
    text = str(info.value)
    assert "stage 'publish', field 'tags.0'" in text
    assert "unknown placeholder {build_id}" in text
    assert "stage 'tell', field 'message'" in text
    assert "is not a valid template" in text
