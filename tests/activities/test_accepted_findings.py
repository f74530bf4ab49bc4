"""Accepted findings, with the real scanners where the scanner itself honours them:
detect-secrets' `.secrets.baseline`, bandit's `# nosec`, and a stage's `skip:` and `ignore:`
entries applied by the scan activity."""

from __future__ import annotations

import json
import subprocess
from datetime import date, timedelta
from pathlib import Path

import pytest

from activities.helpers.accepted_findings import apply_accepted
from activities.providers.scanners.tools import BanditScanner, DetectSecretsScanner, find_binary
from activities.scan import ScanActivities
from contracts.activity import (
    Finding,
    IgnoreEntry,
    ScannerReport,
    ScanReport,
    ScanRequest,
    Severity,
)
from contracts.judgments import judge_scan
from tests.support.binaries import require_binary

# The kind of line issue 11 is about: a framework's development default key, committed on purpose.
DEV_SETTINGS = 'SECRET_KEY = "django-insecure-8f3k2j4h5g6f7d8s9a0p1o2i3u4y5t6r"\n'
SHELL_CALL = 'import subprocess\nsubprocess.call("ls -l", shell=True)'


def _baseline(root: Path) -> None:
    """The baseline a team would commit: `detect-secrets scan > .secrets.baseline`."""
    binary = find_binary("detect-secrets")
    assert binary is not None
    out = subprocess.run(
        [str(binary), "scan", "--all-files", "."], cwd=root, capture_output=True, check=True
    )
    (root / ".secrets.baseline").write_bytes(out.stdout)


@pytest.fixture
def secrets_tree(tmp_path: Path) -> Path:
    require_binary("detect-secrets", "pip install detect-secrets")
    (tmp_path / "settings.py").write_text(DEV_SETTINGS)
    return tmp_path


def test_secrets_in_the_baseline_are_accepted_and_counted(secrets_tree: Path) -> None:
    assert DetectSecretsScanner().scan(str(secrets_tree)).findings  # flagged without one

    _baseline(secrets_tree)
    report = DetectSecretsScanner().scan(str(secrets_tree))

    assert report.available, report.reason
    assert report.findings == []
    assert report.accepted >= 1


def test_a_secret_added_after_the_baseline_is_still_found(secrets_tree: Path) -> None:
    _baseline(secrets_tree)
    (secrets_tree / "deploy.py").write_text('password = "Zq8#new-prod-password-9xk2"\n')

    report = DetectSecretsScanner().scan(str(secrets_tree))

    assert [f.location for f in report.findings] == ["deploy.py:1"]
    assert report.accepted >= 1


def test_a_baseline_entry_audited_as_a_real_secret_still_fails(secrets_tree: Path) -> None:
    _baseline(secrets_tree)
    path = secrets_tree / ".secrets.baseline"
    baseline = json.loads(path.read_text())
    for secret in baseline["results"]["settings.py"]:
        secret["is_secret"] = True  # what `detect-secrets audit` records for "yes, rotate it"
    path.write_text(json.dumps(baseline))

    report = DetectSecretsScanner().scan(str(secrets_tree))

    assert report.findings
    assert all(f.location == "settings.py:1" for f in report.findings)
    assert report.accepted == 0


def test_a_broken_baseline_makes_the_scanner_unavailable(secrets_tree: Path) -> None:
    (secrets_tree / ".secrets.baseline").write_text("not json")

    report = DetectSecretsScanner().scan(str(secrets_tree))

    assert not report.available
    assert ".secrets.baseline" in report.reason


def test_bandit_honours_nosec_for_the_named_test(tmp_path: Path) -> None:
    require_binary("bandit", "pip install bandit")
    (tmp_path / "flagged.py").write_text(SHELL_CALL + "\n")
    (tmp_path / "accepted.py").write_text(SHELL_CALL + "  # nosec B602\n")

    report = BanditScanner().scan(str(tmp_path))

    b602 = [f.location for f in report.findings if f.rule == "B602"]
    assert b602 == ["flagged.py:2"]


async def test_skip_and_ignore_remove_findings_through_the_scan_activity(tmp_path: Path) -> None:
    require_binary("bandit", "pip install bandit")
    (tmp_path / "app.py").write_text(SHELL_CALL + '\npassword = "hunter2"\n')
    activities = ScanActivities({"bandit": BanditScanner()})
    plain = await activities.scan(ScanRequest(path=str(tmp_path), scanners=["bandit"]))
    rules = {f.rule for f in plain.reports[0].findings}
    assert {"B602", "B105"} <= rules

    later = date.today() + timedelta(days=30)
    report = await activities.scan(
        ScanRequest(
            path=str(tmp_path),
            scanners=["bandit"],
            skip={"bandit": ["B105"]},
            ignore={"bandit": [IgnoreEntry(id="B602", reason="fixed command", expires=later)]},
        )
    )

    left = {f.rule for f in report.reports[0].findings}
    assert left == rules - {"B602", "B105"}
    assert report.reports[0].accepted == len(plain.reports[0].findings) - len(
        report.reports[0].findings
    )
    assert report.reports[0].expired_ignores == []


def _report(*rules: str) -> ScannerReport:
    return ScannerReport(
        scanner="trivy",
        findings=[
            Finding(scanner="trivy", rule=r, severity=Severity.HIGH, message="m") for r in rules
        ],
    )


def test_an_entry_is_honoured_through_its_expiry_date_and_not_after() -> None:
    entry = IgnoreEntry(id="CVE-2024-1", reason="not reachable", expires=date(2026, 3, 1))

    on_the_day = apply_accepted(_report("CVE-2024-1"), [entry], [], date(2026, 3, 1))
    day_after = apply_accepted(_report("CVE-2024-1"), [entry], [], date(2026, 3, 2))

    assert on_the_day.findings == []
    assert on_the_day.expired_ignores == []
    assert [f.rule for f in day_after.findings] == ["CVE-2024-1"]  # counts again
    verdict = judge_scan(ScanReport(reports=[day_after]), Severity.CRITICAL)
    assert not verdict.passed  # even below fail_on, the expired entry fails the gate
    assert "'CVE-2024-1' expired on 2026-03-01" in verdict.summary
    assert "not reachable" in verdict.summary
