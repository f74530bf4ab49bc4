"""Live tests of a running environment: load with a real load tool, a dynamic security scan.

The runner's (contracts.activity.RUNNER_ACTIVITIES): the tools read every answer of the
commit's service and need no credential, only the endpoint the deployer resolved
(`resolve_endpoint`). A scan's findings get the same accepted-findings rules and cap as
every other scan; the workflow judges both reports.
"""

from __future__ import annotations

from collections.abc import Mapping

from temporalio import activity

from activities.helpers.accepted_findings import apply_accepted
from activities.helpers.blocking import run_blocking
from activities.helpers.capped_findings import capped
from activities.scan import today
from activities.wiring.backends import Heartbeat, LiveScanner, LoadTester
from activities.wiring.observability import activity_log
from contracts.activity import (
    ActivityName,
    LiveScanRequest,
    LoadTestReport,
    LoadTestRequest,
    ScannerReport,
    ScanReport,
)

__all__ = ["LiveTestActivities"]


class LiveTestActivities:
    def __init__(
        self, load_tester: LoadTester | None, live_scanners: Mapping[str, LiveScanner]
    ) -> None:
        self._load = load_tester
        self._scanners = dict(live_scanners)

    @activity.defn(name=ActivityName.LOAD_TEST)
    async def load_test(self, request: LoadTestRequest) -> LoadTestReport:
        activity_log(url=request.endpoint.base_url, users=request.users).info("load_test")
        tester = self._load
        if tester is None:
            return LoadTestReport(
                available=False, reason="no load tool is configured on this worker"
            )
        return await run_blocking(lambda progress: tester.run(request, progress))

    @activity.defn(name=ActivityName.LIVE_SCAN)
    async def live_scan(self, request: LiveScanRequest) -> ScanReport:
        activity_log(url=request.endpoint.base_url, scanner=request.scanner).info("live_scan")
        scanner = self._scanners.get(request.scanner)
        if scanner is None:
            have = ", ".join(sorted(self._scanners)) or "none"
            return ScanReport(
                reports=[
                    ScannerReport(
                        scanner=request.scanner,
                        available=False,
                        reason=f"scanner {request.scanner!r} is not configured on this worker "
                        f"(have: {have})",
                    )
                ]
            )

        def scan(progress: Heartbeat) -> ScanReport:
            assert scanner is not None
            found = scanner.scan(request, progress)
            return ScanReport(reports=[capped(apply_accepted(found, request.ignore, [], today()))])

        return await run_blocking(scan)
