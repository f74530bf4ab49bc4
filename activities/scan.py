"""Security and quality scanners over source trees and built artifacts."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime

from temporalio import activity

from activities.helpers.accepted_findings import apply_accepted
from activities.helpers.blocking import run_blocking
from activities.helpers.capped_findings import capped
from activities.wiring.backends import CommitScanner, Registry, Scanner
from activities.wiring.observability import activity_log
from contracts.activity import (
    ActivityName,
    ImageScanRequest,
    ScannerReport,
    ScanReport,
    ScanRequest,
)


def today() -> date:
    """The date ignore entries expire against (UTC, like every date in a definition)."""
    return datetime.now(UTC).date()


class ScanActivities:
    """Runs the scanners a stage names. A scanner the worker does not have is reported as
    unavailable (the stage's policy decides), not skipped."""

    def __init__(self, scanners: Mapping[str, Scanner], registry: Registry | None = None) -> None:
        self._scanners = dict(scanners)
        self._registry = registry

    def _scan_all(self, request: ScanRequest) -> ScanReport:
        reports: list[ScannerReport] = []
        for name in request.scanners:
            scanner = self._scanners.get(name)
            if scanner is None:
                reports.append(
                    ScannerReport(
                        scanner=name,
                        available=False,
                        reason=f"scanner {name!r} is not configured on this worker "
                        f"(have: {', '.join(sorted(self._scanners)) or 'none'})",
                    )
                )
                continue
            if isinstance(scanner, CommitScanner) and request.commit:
                scanned = scanner.scan_commit(request.path, request.commit, request.branch)
            else:
                scanned = scanner.scan(request.path)
            report = apply_accepted(
                scanned,
                request.ignore.get(name, []),
                request.skip.get(name, []),
                today(),
            )
            reports.append(capped(report))
        return ScanReport(reports=reports)

    @activity.defn(name=ActivityName.SCAN)
    async def scan(self, request: ScanRequest) -> ScanReport:
        activity_log(scanners=request.scanners).info("scan")
        return await run_blocking(lambda _progress: self._scan_all(request))

    @activity.defn(name=ActivityName.SCAN_IMAGE)
    async def scan_image(self, request: ImageScanRequest) -> ScanReport:
        activity_log(digest=request.artifact.digest).info("scan_image")
        registry = self._registry
        if registry is None:
            return ScanReport(
                reports=[
                    ScannerReport(
                        scanner=request.scanner,
                        available=False,
                        reason="no registry/image scanner is configured on this worker",
                    )
                ]
            )

        def scan() -> ScanReport:
            report = registry.scan(request.artifact)
            accepted = apply_accepted(report, request.ignore, [], today())
            return ScanReport(reports=[capped(accepted)])

        return await run_blocking(lambda _progress: scan())
