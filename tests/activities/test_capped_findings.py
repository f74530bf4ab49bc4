"""A scan with 10,000 findings still completes: the activity result stays under Temporal's
2 MB payload limit, and the counts the gates use are the full ones."""

from __future__ import annotations

import random

from activities.scan import ScanActivities
from contracts.activity import Finding, ScanRequest, Severity
from contracts.judgments import judge_scan
from plumbing.connection import data_converter
from tests.support.memory_platform import MemoryScanner

PAYLOAD_LIMIT = 2 * 1024 * 1024  # Temporal's default limit on one payload


def _findings(total: int) -> tuple[list[Finding], dict[Severity, int]]:
    """`total` trivy-like findings in shuffled severities, with realistic long descriptions."""
    rng = random.Random(7)
    findings: list[Finding] = []
    expected = dict.fromkeys(Severity, 0)
    for n in range(total):
        severity = rng.choice(list(Severity))
        expected[severity] += 1
        findings.append(
            Finding(
                scanner="trivy",
                rule=f"CVE-2024-{n:05d}",
                severity=severity,
                message=f"libexample 1.{n}: " + "a long advisory description " * 40,
                location="app (debian 12)",
            )
        )
    return findings, expected


def _size(value: object) -> int:
    (payload,) = data_converter().payload_converter.to_payloads([value])
    return payload.ByteSize()


async def test_a_10000_finding_scan_fits_one_payload_with_the_counts_kept() -> None:
    findings, expected = _findings(10_000)
    scan = ScanActivities({"trivy": MemoryScanner("trivy", findings=findings)})

    report = await scan.scan(ScanRequest(path="/src", scanners=["trivy"]))

    (trivy,) = report.reports
    assert _size(report) < PAYLOAD_LIMIT
    assert _size(trivy.model_copy(update={"findings": findings})) > PAYLOAD_LIMIT  # uncapped
    assert trivy.counts() == expected
    assert len(trivy.findings) + trivy.omitted == 10_000
    assert report.listing_note() == f"trivy lists {len(trivy.findings)}, and {trivy.omitted:,} more"
    # The most severe findings are the ones listed.
    ranks = [f.severity.rank for f in trivy.findings]
    assert ranks == sorted(ranks, reverse=True)
    assert trivy.findings[0].severity == Severity.CRITICAL

    high_or_worse = expected[Severity.HIGH] + expected[Severity.CRITICAL]
    assert report.count_at_least(Severity.HIGH) == high_or_worse
    verdict = judge_scan(report, Severity.HIGH)
    assert f"{high_or_worse} finding(s) at or above high" in verdict.summary


async def test_a_report_that_survived_serialization_keeps_its_counts() -> None:
    findings, expected = _findings(1_000)
    scan = ScanActivities({"trivy": MemoryScanner("trivy", findings=findings)})
    report = await scan.scan(ScanRequest(path="/src", scanners=["trivy"]))
    converter = data_converter().payload_converter

    (back,) = converter.from_payloads(converter.to_payloads([report]), [type(report)])

    assert back.reports[0].counts() == expected
    assert back.counts() == {s.value: n for s, n in expected.items()}
