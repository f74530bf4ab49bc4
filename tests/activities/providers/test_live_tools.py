"""Live tests against real tools: locust loading a real HTTP service on 127.0.0.1, wapiti
scanning a small vulnerable stub, and both reporting `unavailable` when the tool is missing.

Loopback only, bounded: a few seconds of load from a few users, a scan of seconds."""

from __future__ import annotations

import threading
import urllib.parse
from datetime import date, timedelta
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from activities.live_tests import LiveTestActivities
from activities.providers.live.locust_load import LocustLoadTester
from activities.providers.live.wapiti_scan import WapitiScanner, parse_wapiti, rule_of
from contracts import judgments as policy
from contracts.activity import (
    Endpoint,
    IgnoreEntry,
    LiveScanRequest,
    LoadTestPath,
    LoadTestRequest,
    Severity,
)
from contracts.definition.model import LoadTestStage
from tests.support.binaries import require_binary
from tests.support.stub_http import serving


class _Shop(BaseHTTPRequestHandler):
    """`/` links to `/search?q=…`, which echoes `q` unescaped (reflected XSS); `/slow`
    answers after 50 ms; `/broken` answers 500; every request is counted, with its Host."""

    protocol_version = "HTTP/1.1"
    hits: list[str] = []
    lock = threading.Lock()

    def do_GET(self) -> None:
        with self.lock:
            self.hits.append(f"{self.headers.get('Host')} {self.path}")
        url = urllib.parse.urlsplit(self.path)
        status, body = 200, ""
        if url.path == "/":
            body = '<html><body><a href="/search?q=shoes">search</a></body></html>'
        elif url.path == "/search":
            query = urllib.parse.parse_qs(url.query).get("q", [""])[0]
            body = f"<html><body>Results for {query}</body></html>"
        elif url.path == "/slow":
            threading.Event().wait(0.05)
            body = "slow"
        elif url.path == "/broken":
            status, body = 500, "broken"
        else:
            status, body = 404, "not found"
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


def _stage(**fields: object) -> LoadTestStage:
    return LoadTestStage.model_validate(
        {"name": "perf", "kind": "load_test", "environment": "staging", **fields}
    )


def test_locust_loads_a_real_service_and_the_figures_are_judged() -> None:
    require_binary("locust", "pip install locust")
    _Shop.hits = []
    with serving(_Shop) as url:
        report = LocustLoadTester().run(
            LoadTestRequest(
                endpoint=Endpoint(base_url=url, headers={"Host": "shop.localhost"}),
                users=4,
                rate=40,
                duration_s=3,
                ramp_s=1,
                paths=[LoadTestPath(path="/", weight=3), LoadTestPath(path="/broken")],
            ),
            lambda note: None,
        )
    assert report.available, report.reason
    # Locust's stats are written every second: the last moments' requests (and those in
    # flight when it stops) reach the service but may miss the report (seen: 80 of 104).
    assert len(_Shop.hits) > 20
    assert 0.6 * len(_Shop.hits) <= report.requests <= len(_Shop.hits)
    # Paced at 40 req/s at most (a little over, for the ramp's rounding), a quarter broken.
    assert report.rps <= 48
    assert 0.1 < report.failures / report.requests < 0.45
    assert report.p95_ms is not None
    assert report.p95_ms < 1000
    assert all(hit.startswith("shop.localhost ") for hit in _Shop.hits)
    assert "500" in report.failure_examples[0]
    # The stage's thresholds judge those figures.
    verdict = policy.judge_load(report, _stage(thresholds={"error_rate": 1, "p95_ms": 1000}))
    assert not verdict.passed
    assert "error_rate" in verdict.summary
    assert "violates <= 1%" in verdict.summary
    relaxed = _stage(thresholds={"error_rate": 50, "min_rps": 5})
    assert policy.judge_load(report, relaxed).passed


def test_a_missing_load_tool_is_unavailable_and_the_stage_decides(tmp_path: Path) -> None:
    report = LocustLoadTester(binary=tmp_path / "no-locust").run(
        LoadTestRequest(
            endpoint=Endpoint(base_url="http://127.0.0.1:9"),
            users=1,
            duration_s=1,
            paths=[LoadTestPath()],
        ),
        lambda note: None,
    )
    assert not report.available
    assert "pip install locust" in report.reason
    fail = policy.judge_load(report, _stage(thresholds={"p95_ms": 100}))
    warn = policy.judge_load(report, _stage(thresholds={"p95_ms": 100}, unavailable="warn"))
    assert not fail.passed
    assert "locust unavailable" in fail.summary
    assert warn.passed
    assert "locust unavailable" in warn.summary


def _scan(url: str, **fields: object) -> LiveScanRequest:
    return LiveScanRequest.model_validate(
        {
            "endpoint": Endpoint(base_url=url),
            "modules": ["xss", "http_headers"],
            "max_scan_s": 15,
            "depth": 3,
            **fields,
        }
    )


async def test_wapiti_finds_the_reflected_xss_of_a_vulnerable_stub() -> None:
    require_binary("wapiti", "apt-get install wapiti")
    _Shop.hits = []
    with serving(_Shop) as url:
        live = LiveTestActivities(None, {"wapiti": WapitiScanner()})
        today = date.today()
        result = await live.live_scan(
            _scan(
                url,
                ignore=[
                    IgnoreEntry(
                        id="http-secure-headers", reason="TLS ends at the edge", expires=today
                    )
                ],
            )
        )
    [report] = result.reports
    assert report.available, report.reason
    xss = [f for f in report.findings if f.rule == "cross-site-scripting"]
    assert xss
    assert xss[0].severity == Severity.MEDIUM
    assert xss[0].location == "GET /search (q)"
    # The headers' findings are accepted (counted), not listed.
    assert report.accepted >= 1
    assert not any(f.rule == "http-secure-headers" for f in report.findings)
    # Scope: every request went to the stub (nothing outside it was asked).
    assert any("/search" in hit for hit in _Shop.hits)
    # Judged like every scan: medium fails `fail_on: medium`, passes `fail_on: high`.
    assert not policy.judge_scan(result, Severity.MEDIUM).passed
    assert policy.judge_scan(result, Severity.HIGH).passed


async def test_an_expired_ignore_entry_fails_the_live_scan() -> None:
    require_binary("wapiti", "apt-get install wapiti")
    with serving(_Shop) as url:
        live = LiveTestActivities(None, {"wapiti": WapitiScanner()})
        expired = date.today() - timedelta(days=1)
        result = await live.live_scan(
            _scan(
                url,
                modules=["http_headers"],
                ignore=[IgnoreEntry(id="http-secure-headers", reason="old", expires=expired)],
            )
        )
    verdict = policy.judge_scan(result, Severity.HIGH)
    assert not verdict.passed
    assert "expired" in verdict.summary


def test_a_missing_scanner_or_a_silent_target_is_unavailable(tmp_path: Path) -> None:
    missing = WapitiScanner(binary=tmp_path / "no-wapiti").scan(
        _scan("http://127.0.0.1:9"), lambda note: None
    )
    assert not missing.available
    assert "apt-get install wapiti" in missing.reason
    require_binary("wapiti", "apt-get install wapiti")
    silent = WapitiScanner(request_timeout_s=1).scan(_scan("http://127.0.0.1:9"), print)
    assert not silent.available
    assert "does not answer" in silent.reason


def test_wapiti_levels_and_categories_become_findings() -> None:
    report = parse_wapiti(
        {
            "vulnerabilities": {
                "Command execution": [
                    {"method": "GET", "path": "/run", "info": "exec", "level": 4, "parameter": "c"}
                ]
            },
            "anomalies": {"Internal Server Error": [{"path": "/x", "info": "500", "level": 3}]},
            "additionals": {"Fingerprint web technology": [{"path": "/", "info": "nginx"}]},
        }
    )
    got = {(f.rule, f.severity) for f in report.findings}
    assert got == {
        ("command-execution", Severity.CRITICAL),
        ("internal-server-error", Severity.HIGH),
        ("fingerprint-web-technology", Severity.INFO),
    }
    assert rule_of("Cross Site Scripting") == "cross-site-scripting"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"thresholds": {}}, "give at least one of p95_ms"),
        ({"thresholds": {"p95_ms": 1}, "users": 0}, "greater than or equal to 1"),
        ({"thresholds": {"p95_ms": 1}, "duration": "2h"}, "at most 3600s"),
        ({"thresholds": {"p95_ms": 1}, "duration": "5s", "ramp": "5s"}, "shorter than duration"),
        ({"thresholds": {"error_rate": 101}}, "less than or equal to 100"),
        ({"thresholds": {"p95_ms": 1}, "paths": [{"path": "//evil"}]}, "single '/'"),
    ],
)
def test_load_test_fields_are_refused_in_one_sentence(
    fields: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        _stage(**fields)
