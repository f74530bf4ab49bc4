"""The web stages against the real tools: axe (npm axe-core, through Playwright) and
Lighthouse in Debian's Chromium auditing a tiny static site on 127.0.0.1, and a service's
own pytest-playwright tests, one project that passes and one that fails and leaves its
screenshot and trace where the report says.

Loopback only, bounded: two pages, one Lighthouse run (about 15 s, marked slow), one venv
with pytest-playwright built for the module and shared by both projects."""

from __future__ import annotations

import os
import tempfile
import textwrap
from datetime import date, timedelta
from pathlib import Path

import pytest

from activities.providers.live.browser_tests import PlaywrightBrowserTester
from activities.providers.live.browsers import browser_target, find_chromium
from activities.providers.live.web_audit import AXE_SCRIPT_CANDIDATES, WebAuditor
from activities.web_tests import WebTestActivities
from contracts.activity import (
    BrowserTestRequest,
    Endpoint,
    IgnoreEntry,
    Severity,
    WebAuditRequest,
)
from contracts.definition.model import STAGE_ADAPTER, BrowserStage, WebAuditStage
from contracts.web_judgments import judge_browser, judge_web_audit
from tests.support.binaries import missing, require_binary
from tests.support.stub_http import serving

GOOD = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Good</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="description" content="An accessible page"></head>
<body><main><h1>Welcome</h1><p>Plain text on a plain page.</p>
<img src="/dot.png" alt="A dot" width="1" height="1"></main></body></html>"""
BAD = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Bad</title></head>
<body><main><h1>Photos</h1><img src="/dot.png" width="1" height="1"></main></body></html>"""
DOT = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
)


def _site() -> type:
    from http.server import BaseHTTPRequestHandler

    class Site(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            pages = {
                "/": ("text/html; charset=utf-8", GOOD.encode()),
                "/bad": ("text/html; charset=utf-8", BAD.encode()),
                "/dot.png": ("image/png", DOT),
                "/robots.txt": ("text/plain", b"User-agent: *\nAllow: /\n"),
            }
            kind, body = pages.get(self.path, ("text/plain", b"not found"))
            self.send_response(200 if self.path in pages else 404)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "max-age=31536000")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            """Quiet."""

    return Site


def _need_browser_tools() -> None:
    if find_chromium() is None:
        missing("chromium not found: apt-get install chromium")
    if not any(p.is_file() for p in AXE_SCRIPT_CANDIDATES):
        missing("axe-core not found: npm install -g axe-core")


def _audit_stage(**fields: object) -> WebAuditStage:
    stage = STAGE_ADAPTER.validate_python(
        {"name": "a11y", "kind": "web_audit", "environment": "staging", **fields}
    )
    assert isinstance(stage, WebAuditStage)
    return stage


def _browser_stage(**fields: object) -> BrowserStage:
    stage = STAGE_ADAPTER.validate_python(
        {"name": "e2e_browser", "kind": "browser", "environment": "staging", **fields}
    )
    assert isinstance(stage, BrowserStage)
    return stage


async def test_axe_passes_the_accessible_page_and_names_the_violation_of_the_other() -> None:
    _need_browser_tools()
    stage = _audit_stage(lighthouse=None, paths=["/", "/bad"])
    live = WebTestActivities(None, WebAuditor())
    with serving(_site()) as url:
        good = await live.web_audit(
            WebAuditRequest(endpoint=Endpoint(base_url=url), paths=["/"], lighthouse=False)
        )
        both = await live.web_audit(
            WebAuditRequest(endpoint=Endpoint(base_url=url), paths=["/", "/bad"], lighthouse=False)
        )
        accepted = await live.web_audit(
            WebAuditRequest(
                endpoint=Endpoint(base_url=url),
                paths=["/bad"],
                lighthouse=False,
                ignore=[
                    IgnoreEntry(
                        id="image-alt",
                        reason="a decorative dot",
                        expires=date.today() + timedelta(days=30),
                    )
                ],
            )
        )
    assert good.available, good.reason
    assert good.axe is not None
    assert good.axe.available, good.axe.reason
    assert good.axe.findings == []
    assert good.tools.get("axe-core", "").startswith("4.")
    assert judge_web_audit(good, _audit_stage(lighthouse=None)).passed
    assert both.axe is not None
    [violation] = both.axe.findings
    assert violation.rule == "image-alt"
    assert violation.severity == Severity.CRITICAL
    assert violation.location == "/bad img"
    verdict = judge_web_audit(both, stage)
    assert not verdict.passed
    assert "image-alt (critical) on /bad img" in verdict.summary
    assert "1 WCAG 2 AA violation(s) of impact serious or worse" in verdict.summary
    # An accepted rule is counted, not judged.
    assert accepted.axe is not None
    assert accepted.axe.accepted == 1
    assert judge_web_audit(accepted, stage).passed


@pytest.mark.slow
async def test_lighthouse_scores_the_accessible_page_against_the_seed_minimums() -> None:
    _need_browser_tools()
    require_binary("lighthouse", "npm install -g lighthouse")
    with serving(_site()) as url:
        # The Host-header mapping a local entrypoint needs: *.localhost reaches loopback.
        endpoint = Endpoint(base_url=url, headers={"Host": "site.localhost"})
        report = await WebTestActivities(None, WebAuditor()).web_audit(
            WebAuditRequest(endpoint=endpoint, paths=["/"], axe=False, form_factor="desktop")
        )
    assert report.available, report.reason
    [page] = report.pages
    assert page.error == "", page.error
    assert set(page.scores) == {"performance", "accessibility", "best-practices", "seo"}
    assert report.tools["lighthouse"].startswith("12.")
    stage = _audit_stage(wcag=None, form_factor="desktop")
    verdict = judge_web_audit(report, stage)
    assert verdict.passed, (verdict.summary, page.scores)
    # A minimum the page cannot reach fails, naming the category, score and page.
    strict = _audit_stage(wcag=None, lighthouse={"performance": None, "best_practices": 100.0})
    if (page.scores["best-practices"] or 0) < 100:
        assert "best-practices" in judge_web_audit(report, strict).summary


def test_missing_tools_and_a_silent_target_are_unavailable(tmp_path: Path) -> None:
    request = WebAuditRequest(endpoint=Endpoint(base_url="http://127.0.0.1:9"), paths=["/"])
    no_browser = WebAuditor(chromium=tmp_path / "no-chromium").audit(request, print)
    assert not no_browser.available
    assert "apt-get install chromium" in no_browser.reason
    fail = judge_web_audit(no_browser, _audit_stage())
    warn = judge_web_audit(no_browser, _audit_stage(unavailable="warn"))
    assert not fail.passed
    assert "web audit unavailable" in fail.summary
    assert warn.passed
    assert "apt-get install chromium" in warn.summary
    _need_browser_tools()
    silent = WebAuditor(request_timeout_s=1).audit(
        request.model_copy(update={"lighthouse": False}), print
    )
    assert not silent.available
    assert "does not answer" in silent.reason


def test_a_browser_reaches_a_local_entrypoints_service_by_its_localhost_name() -> None:
    local = Endpoint(base_url="http://127.0.0.1:8081", headers={"Host": "heal7-frontend.localhost"})
    assert browser_target(local) == ("http://heal7-frontend.localhost:8081", {})
    ingress = Endpoint(base_url="https://staging.example.com", headers={"X-Canary": "always"})
    assert browser_target(ingress) == ("https://staging.example.com", {"X-Canary": "always"})


# --- the service's own Playwright tests ---------------------------------------------------


PROJECT = """
[project]
name = "site"
version = "1.0"
dependencies = []

[project.optional-dependencies]
test = ["pytest>=8", "pytest-playwright>=0.5"]
"""
PASSING = """
def test_the_home_page_welcomes(page):
    page.goto("/")
    assert page.title() == "Good"
    assert page.locator("h1").inner_text() == "Welcome"
"""
FAILING = """
from playwright.sync_api import expect


def test_the_home_page_welcomes(page):
    page.goto("/")
    assert page.title() == "Good"


def test_the_photos_page_has_a_caption(page):
    page.goto("/bad")
    expect(page.locator("figcaption")).to_have_text("A dot", timeout=1000)
"""


def _project(root: Path, tests: str) -> Path:
    (root / "tests" / "e2e").mkdir(parents=True)
    (root / "pyproject.toml").write_text(textwrap.dedent(PROJECT))
    (root / "tests" / "e2e" / "test_site.py").write_text(textwrap.dedent(tests))
    return root


@pytest.fixture(scope="module")
def tester(tmp_path_factory: pytest.TempPathFactory) -> PlaywrightBrowserTester:
    # The venv (pytest-playwright, ~35 s to build) is kept between runs: the cache checks
    # every venv's manifest at each use, so a reused one is the one that was built.
    return PlaywrightBrowserTester(
        venv_root=Path(tempfile.gettempdir()) / f"slipway-test-browser-venvs-{os.getuid()}",
        results_root=tmp_path_factory.mktemp("browser-results"),
    )


def test_the_services_playwright_tests_pass_in_debians_chromium(
    tmp_path: Path, tester: PlaywrightBrowserTester
) -> None:
    _need_browser_tools()
    project = _project(tmp_path / "passing", PASSING)
    with serving(_site()) as url:
        report = tester.run(
            BrowserTestRequest(
                path=str(project), endpoint=Endpoint(base_url=url), tests=["tests/e2e"]
            ),
            lambda note: None,
        )
    assert report.available, report.reason
    assert (report.tests, report.failures, report.errors) == (1, 0, 0), report.output_tail
    assert report.results_dir == ""
    assert judge_browser(report, _browser_stage()).passed


def test_a_failing_browser_test_leaves_its_screenshot_and_trace_where_the_report_says(
    tmp_path: Path, tester: PlaywrightBrowserTester
) -> None:
    _need_browser_tools()
    project = _project(tmp_path / "failing", FAILING)
    with serving(_site()) as url:
        report = tester.run(
            BrowserTestRequest(
                path=str(project), endpoint=Endpoint(base_url=url), tests=["tests/e2e"]
            ),
            lambda note: None,
        )
    assert report.available, report.reason
    assert (report.tests, report.failures) == (2, 1), report.output_tail
    assert report.failed_tests == [
        "tests.e2e.test_site::test_the_photos_page_has_a_caption[chromium]"
    ]
    kept = Path(report.results_dir)
    assert kept.is_dir()
    assert (kept / "junit.xml").is_file()
    assert any(name.endswith(".png") for name in report.kept), report.kept
    assert any(name.endswith("trace.zip") for name in report.kept), report.kept
    for name in report.kept:
        assert (kept / name).is_file()
    verdict = judge_browser(report, _browser_stage())
    assert not verdict.passed
    assert "1 browser test(s) failed: tests.e2e.test_site::test_the_photos_page" in verdict.summary
    assert f"traces and screenshots in {kept}" in verdict.summary
    assert judge_browser(report, _browser_stage(max_failures=1)).passed
    # The checkout itself was never written (the run had a copy).
    assert sorted(p.name for p in project.iterdir()) == ["pyproject.toml", "tests"]


def test_no_chromium_is_unavailable_and_the_stage_decides(tmp_path: Path) -> None:
    project = _project(tmp_path / "p", PASSING)
    report = PlaywrightBrowserTester(chromium=tmp_path / "no-chromium").run(
        BrowserTestRequest(
            path=str(project), endpoint=Endpoint(base_url="http://127.0.0.1:9"), tests=["tests/e2e"]
        ),
        lambda note: None,
    )
    assert not report.available
    assert "apt-get install chromium" in report.reason
    assert not judge_browser(report, _browser_stage()).passed
    warned = judge_browser(report, _browser_stage(unavailable="warn"))
    assert warned.passed
    assert "browser unavailable" in warned.summary


@pytest.mark.parametrize(
    ("fields", "where", "message"),
    [
        ({"kind": "browser", "args": ["--base-url=http://x"]}, "args.0", "set by the stage"),
        ({"kind": "browser", "args": ["-pfoo"]}, "args.0", "set by the stage"),
        ({"kind": "browser", "tests": ["../outside"]}, "tests.0", "inside the checkout"),
        ({"kind": "browser", "max_duration": "2h"}, "max_duration", "at most 3600s"),
        ({"kind": "browser", "env": {"PATH": "/x"}}, "env", "not a variable"),
        ({"kind": "browser", "unavailable": "ignore"}, "unavailable", "'fail' or 'warn'"),
        ({"kind": "web_audit", "lighthouse": {"seo": 101}}, "lighthouse.seo", "100"),
        ({"kind": "web_audit", "paths": ["//evil"]}, "paths.0", "single '/'"),
        ({"kind": "web_audit", "paths": []}, "paths", "at least 1"),
        ({"kind": "web_audit", "wcag": "AAA"}, "wcag", "'A' or 'AA'"),
        ({"kind": "web_audit", "lighthouse": None, "wcag": None}, "", "nothing would be audited"),
    ],
)
def test_web_stage_fields_are_refused_in_one_sentence(
    fields: dict[str, object], where: str, message: str
) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as caught:
        STAGE_ADAPTER.validate_python({"name": "s", "environment": "staging", **fields})
    [error] = caught.value.errors()
    assert ".".join(str(p) for p in error["loc"][1:]) == where
    assert message in error["msg"]
