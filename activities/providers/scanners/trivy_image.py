"""`trivy image` over a pushed image, read by the same parser as source scans."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from activities.providers.scanners.scanner_process import (
    ScannerUnavailableError,
    find_binary,
    last_line,
    run_scanner,
    unavailable_report,
)
from activities.providers.scanners.trivy_report import parse_trivy
from contracts.activity import ScannerReport

__all__ = ["scan_image"]

SCANNER = "trivy"


def scan_image(
    uri: str,
    credentials: dict[str, str] | None,
    insecure: bool,
    timeout_s: float,
) -> ScannerReport:
    """Findings of `trivy image` on `uri` (pulled from its registry with `credentials`), or an
    unavailable report when trivy is missing or fails: never an empty pass."""
    trivy = find_binary("trivy")
    if trivy is None:
        return unavailable_report(
            SCANNER, "trivy is not installed on this worker, so the image was not scanned"
        )
    env: dict[str, str] = {}
    if credentials and "username" in credentials and "password" in credentials:
        env["TRIVY_USERNAME"] = credentials["username"]
        env["TRIVY_PASSWORD"] = credentials["password"]
    if insecure:
        env["TRIVY_INSECURE"] = "true"  # a loopback registry speaks plain HTTP
    with tempfile.TemporaryDirectory(prefix="slipway-trivy-") as out_dir:
        output = Path(out_dir) / "report.json"
        argv = [str(trivy), "image", "--quiet", "--format", "json", "--output", str(output), uri]
        try:
            run = run_scanner(argv, Path(out_dir), timeout_s, env, writable=[Path(out_dir)])
        except ScannerUnavailableError as exc:
            return unavailable_report(SCANNER, exc)
        if run.exit_code != 0 or not output.is_file():
            return unavailable_report(
                SCANNER, f"trivy exited {run.exit_code}: {last_line(run.stderr or run.stdout)}"
            )
        try:
            report = json.loads(output.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            return unavailable_report(SCANNER, f"trivy wrote unreadable JSON: {error}")
    return ScannerReport(scanner=SCANNER, findings=parse_trivy(report))
