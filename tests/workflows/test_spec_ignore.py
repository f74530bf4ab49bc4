"""Definition checks of a scan stage's `ignore:` and `skip:` entries: every mistake is a
problem naming the file, the stage and the field."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import pytest
import yaml

from contracts.definition.loading import load_pipeline
from contracts.definition.model import DefinitionError, ImageScanStage, ScanStage

STAGES: list[dict[str, Any]] = [
    {"name": "checkout", "kind": "checkout"},
    {"name": "scan", "kind": "scan", "needs": ["checkout"], "scanners": ["bandit", "trivy"]},
    {"name": "build", "kind": "build", "needs": ["checkout"]},
    {"name": "image_scan", "kind": "image_scan", "needs": ["build"]},
]


def write(tmp_path: Path, scan: dict[str, Any], image_scan: dict[str, Any] | None = None) -> Path:
    stages = [dict(s) for s in STAGES]
    stages[1].update(scan)
    stages[3].update(image_scan or {})
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump({"name": "svc", "service": {"name": "svc"}, "stages": stages}))
    return path


def problems(path: Path) -> str:
    with pytest.raises(DefinitionError) as info:
        load_pipeline(path)
    return str(info.value)


def test_ignore_and_skip_are_read(tmp_path: Path) -> None:
    entry = {"id": "CVE-2024-1", "reason": "not reachable", "expires": "2027-01-31"}
    spec = load_pipeline(
        write(
            tmp_path,
            {"ignore": {"trivy": [entry]}, "skip": {"bandit": ["B101"]}},
            # A copy: the same dict twice would be dumped as a YAML alias, which is refused.
            {"ignore": [dict(entry)]},
        )
    )

    scan = spec.by_name["scan"]
    image_scan = spec.by_name["image_scan"]
    assert isinstance(scan, ScanStage)
    assert isinstance(image_scan, ImageScanStage)
    assert scan.ignore["trivy"][0].expires == date(2027, 1, 31)
    assert scan.skip == {"bandit": ["B101"]}
    assert image_scan.ignore[0].id == "CVE-2024-1"


@pytest.mark.parametrize(
    ("entry", "field", "says"),
    [
        ({"id": "B101", "reason": "asserts in tests", "expires": "soon"}, "expires", "date"),
        ({"id": "B101", "reason": "asserts in tests", "expires": "2027-02-30"}, "expires", "date"),
        ({"id": "", "reason": "asserts in tests", "expires": "2027-01-31"}, "id", "at least 1"),
        ({"id": "B101", "expires": "2027-01-31"}, "reason", "required"),
        ({"id": "B101", "reason": "  ", "expires": "2027-01-31"}, "reason", "must not be blank"),
        (
            {"id": "B101", "reason": "x", "expires": "2027-01-31", "until": "x"},
            "until",
            "not permitted",
        ),
    ],
)
def test_a_bad_ignore_entry_is_refused_naming_its_field(
    tmp_path: Path, entry: dict[str, Any], field: str, says: str
) -> None:
    text = problems(write(tmp_path, {"ignore": {"bandit": [entry]}}))

    assert "stage 'scan'" in text
    assert f"ignore.bandit.0.{field}" in text
    assert says in text


def test_ignore_for_a_scanner_the_stage_does_not_run_is_refused(tmp_path: Path) -> None:
    entry = {"id": "x", "reason": "y", "expires": "2027-01-31"}

    text = problems(write(tmp_path, {"ignore": {"detect-secrets": [entry]}}))

    assert "stage 'scan'" in text
    assert "'detect-secrets' is not one of this stage's scanners (bandit, trivy)" in text
