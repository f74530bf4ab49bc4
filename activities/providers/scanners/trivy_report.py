"""The one reader of trivy's JSON report, for `trivy fs` (source scans) and `trivy image`
(built images) alike, so the same findings are gated the same way whichever builder made them.

Severity mapping. Trivy's CRITICAL/HIGH/MEDIUM/LOW are kept. UNKNOWN means no data source has
rated the issue yet (typically a fresh CVE): that is not evidence of harmlessness, so it counts
as MEDIUM, visible in every report and caught by a stage that sets `fail_on: medium`, but below
the default HIGH gate, which would otherwise block on every unrated advisory. ECR's UNDEFINED and
UNTRIAGED are mapped the same way. Anything trivy may add later falls back to MEDIUM too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from contracts.activity import Finding, Severity

__all__ = ["TRIVY_SEVERITY", "parse_trivy"]

TRIVY_SEVERITY = {
    "CRITICAL": Severity.CRITICAL,
    "HIGH": Severity.HIGH,
    "MEDIUM": Severity.MEDIUM,
    "LOW": Severity.LOW,
    "NEGLIGIBLE": Severity.INFO,
    "UNKNOWN": Severity.MEDIUM,
}


def parse_trivy(report: object) -> list[Finding]:
    """Findings of a trivy JSON report: vulnerabilities, failed misconfiguration checks and
    secrets (an image layer can carry a secret as well as a source tree) of every result.
    Accepts the current format (`{"SchemaVersion": 2, "Results": [...]}`) and the old bare
    list of results; entries that are not JSON objects are skipped."""
    results = report.get("Results") if isinstance(report, Mapping) else report
    if not isinstance(results, Sequence) or isinstance(results, str):
        return []
    findings: list[Finding] = []
    for result in results:
        if isinstance(result, Mapping):
            findings += _findings_of(result)
    return findings


def _findings_of(result: Mapping[str, Any]) -> list[Finding]:
    target = str(result.get("Target", ""))
    findings: list[Finding] = []
    for vuln in _objects(result.get("Vulnerabilities")):
        fixed = vuln.get("FixedVersion") or "no fix yet"
        findings.append(
            Finding(
                scanner="trivy",
                rule=str(vuln.get("VulnerabilityID", "?")),
                severity=_severity(vuln),
                message=f"{vuln.get('PkgName', '?')} {vuln.get('InstalledVersion', '?')}: "
                f"{vuln.get('Title') or vuln.get('Description', '')} (fixed in {fixed})",
                location=target,
            )
        )
    for check in _objects(result.get("Misconfigurations")):
        if str(check.get("Status", "FAIL")).upper() != "FAIL":
            continue
        findings.append(
            Finding(
                scanner="trivy",
                rule=str(check.get("ID") or check.get("AVDID") or "?"),
                severity=_severity(check),
                message=str(check.get("Message") or check.get("Title") or ""),
                location=target,
            )
        )
    for secret in _objects(result.get("Secrets")):
        findings.append(
            Finding(
                scanner="trivy",
                rule=str(secret.get("RuleID", "?")),
                severity=_severity(secret),
                # The match itself is never repeated: the report may be stored and shown.
                message=f"possible secret: {secret.get('Title', secret.get('Category', ''))}",
                location=f"{target}:{secret.get('StartLine', 0)}",
            )
        )
    return findings


def _objects(items: object) -> list[Mapping[str, Any]]:
    if not isinstance(items, list):
        return []
    return [item for item in items if isinstance(item, Mapping)]


def _severity(item: Mapping[str, Any]) -> Severity:
    return TRIVY_SEVERITY.get(str(item.get("Severity", "")).upper(), Severity.MEDIUM)
