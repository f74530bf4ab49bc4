"""The demo's two releases of the HEAL7 system, end to end on real processes: the Temporal dev
server, a Prometheus, a worker subprocess on the local platform (Traefik + heal7-backend
processes; PostgreSQL and Redis for the integration suite, and each environment's own for the
backend, its schema made by its release phase), approvals through the `slipway` CLI. Asserted
as a person watching the demo sees it: from the workflow results and from outside (HTTP to
production's entry point, Traefik's own API)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from activities.platforms.local import LocalPlatform
from activities.providers.backing_services.resources import LocalResources
from contracts.activity import WeightRequest
from contracts.messages import PipelineResult, PipelineState, StageState, StageStatus
from demo.journey import (
    BACKEND,
    ENVIRONMENTS,
    FAULT,
    STORED,
    deliver,
    deploy_phases,
    environment_records,
    frontend_health,
    read_back,
    store_calculations,
)
from demo.localstack import commit_backend_fault, make_heal7_repo, production_version
from tests.support.binaries import require_binary
from tests.support.devstack import Stack, running_stack

pytestmark = [pytest.mark.e2e, pytest.mark.realserver, pytest.mark.demo]


@pytest_asyncio.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    require_binary("npm", "install Node.js 20 or newer")
    async with running_stack(tmp_path, "e2e", demo_prometheus=True) as started:
        yield started


def _stage(result: PipelineResult, name: str) -> StageStatus:
    return next(s for s in result.stages if s.name == name)


async def test_good_release_is_promoted_and_faulty_backend_is_rolled_back(stack: Stack) -> None:
    repo = stack.repo
    address, queue = stack.server.address, stack.worker.task_queue

    first = make_heal7_repo(repo)
    good = await deliver(address, queue, repo, first, "0.1.0")
    result = good.result
    assert result.state == PipelineState.SUCCEEDED, result.failure
    assert result.artifact is not None
    digest = result.artifact.digest
    assert result.deployed == {"development": digest, "staging": digest, "production": digest}
    serving = production_version(stack.production_port)
    assert (serving["service"], serving["version"]) == (BACKEND, "0.1.0")
    # The frontend shipped with it, built by npm, served from its wheel behind the same port.
    assert frontend_health(stack.production_port) == {"status": "ok", "version": "0.1.0"}
    assert _stage(result, "e2e_frontend_dev").state == StageState.SUCCEEDED
    assert [a.approver for a in result.approvals if a.accepted] == ["alice", "carol", "dave"]
    # The backend's integration suite ran against real servers, and the frontend was built.
    integration = _stage(result, "integration_tests")
    assert integration.state == StageState.SUCCEEDED
    assert re.search(r"\d+ tests, 0 failed", integration.summary), integration.summary
    # pgserver's 16 has no contrib extensions: Debian's 15 runs instead and the note says so.
    pg_note = r"postgres (16\.\d+|16 asked, 1\d\.\d+ available \([^)]*contrib[^)]*\))"
    assert re.search(rf"services: {pg_note}, redis [67]\.", integration.summary), (
        integration.summary
    )
    assert _stage(result, "frontend_build").state == StageState.SUCCEEDED
    # The frontend's CI: ESLint, the type check, and its two suites over the 80% gate.
    for name in ("frontend_lint", "frontend_typecheck"):
        assert _stage(result, name).summary.startswith("exit 0 in "), _stage(result, name)
    for name in ("frontend_unit_tests", "frontend_component_tests"):
        suite = _stage(result, name)
        found = re.search(r"(\d+) tests, 0 failed, coverage ([\d.]+)%", suite.summary)
        assert found, suite.summary
        assert int(found[1]) >= 5, suite.summary
        assert float(found[2]) >= 80, suite.summary
    # Staging: the frontend's Playwright tests (a calculation through the backend) in
    # Chromium, and its pages' Lighthouse scores and WCAG 2 AA, both judged, not skipped.
    browser = _stage(result, "browser_tests")
    assert browser.state == StageState.SUCCEEDED, browser.summary
    assert "unavailable" not in browser.summary, browser.summary
    assert re.search(r"\b4 browser test", browser.summary), browser.summary
    audit = _stage(result, "web_audit")
    assert audit.state == StageState.SUCCEEDED, audit.summary
    assert "2 page(s); Lighthouse performance" in audit.summary, audit.summary
    assert "WCAG 2 AA violations: none" in audit.summary, audit.summary
    # The canary measured the service's own metric on the new release, not only Traefik's.
    assert good.canary is not None
    assert good.canary.outcome == "promoted"
    for step in good.canary.steps:
        assert step.sample is not None
        assert (step.sample.values["saju_calculations_per_s"] or 0) >= 12, step.summary

    # Every environment has the backend's own PostgreSQL and Redis (the frontend, whose env:
    # names none, has none), each made by the first deploy there.
    made = LocalResources(stack.platform_dir / "resources").records()
    assert {(r["service"], r["environment"], r["kind"]) for r in made} == {
        (BACKEND, e, k) for e in ENVIRONMENTS for k in ("postgres", "redis")
    }
    assert all(r["running"] for r in made)
    migrate = "backend: ran `python -m app.migrate`"
    assert deploy_phases(result) == {"dev": migrate, "staging": migrate, "production": migrate}
    # Calculations stored through production's entry point, by 0.1.0.
    data = store_calculations(stack.production_port)
    assert (len(data.stored), data.stored_by, data.problems) == (STORED, "0.1.0", [])

    faulty = commit_backend_fault(repo, version="0.2.0", author="erin", **FAULT)
    bad = await deliver(address, queue, repo, faulty, "0.2.0 faulty")
    result = bad.result
    assert result.state == PipelineState.ROLLED_BACK, result.failure
    # Its suites passed: only the canary, under traffic, sees the fault.
    assert _stage(result, "unit_tests").state == StageState.SUCCEEDED
    assert _stage(result, "integration_tests").state == StageState.SUCCEEDED
    canary = _stage(result, "canary")
    assert canary.state == StageState.FAILED
    assert "saju_calculations_per_s" in canary.summary
    assert "success_rate" in canary.summary
    assert "production" in result.rolled_back
    assert "saju_calculations_per_s" in result.failure
    # From outside: production still answers with the first release, and Traefik sends no
    # traffic to a canary any more.
    serving = production_version(stack.production_port)
    assert (serving["service"], serving["version"]) == (BACKEND, "0.1.0")
    assert frontend_health(stack.production_port)["version"] == "0.1.0"
    platform = LocalPlatform(stack.platform_dir, base_port=stack.worker.base_port)
    assert platform.router.verify_weight(
        WeightRequest(service=BACKEND, environment="production", canary_weight=0)
    )
    # 0.2.0 ran its release phase too (the schema was already there: nothing to do), in
    # production before its canary took traffic.
    assert deploy_phases(result)["production"] == migrate
    # What 0.1.0 stored is still served by production after the rollback, from the
    # environment's PostgreSQL; the backend names the servers it uses.
    read_back(stack.production_port, data)
    assert (data.found, data.problems) == (STORED, [])
    assert data.stats["storage"].startswith("postgresql "), data.stats
    assert data.stats["cache"].startswith("redis "), data.stats
    assert data.stats["by_version"].get("0.1.0", 0) >= STORED
    # Each environment's record says what every release's release phase did there.
    records = {r.environment: r for r in await environment_records(address)}
    assert set(records) == set(ENVIRONMENTS)
    production = records["production"]
    assert production.serving is not None
    assert production.serving.commit == first
    assert production.serving.release.release_phase == migrate
    staging = [e.release.release_phase for e in records["staging"].releases if e.release]
    assert staging == [migrate, migrate]
