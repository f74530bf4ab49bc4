"""examples/hello-service as the pipeline sees it: its own test suite, and a real wheel built
from its pyproject that the local platform runs."""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from activities.platforms.local import SlotManager
from contracts.activity import Artifact
from plumbing.files import file_sha256
from tests.activities.platforms.local.helpers import (
    HELLO_DIR,
    deploy_request,
    get_json,
    no_heartbeat,
)


def test_hello_service_suite_passes_and_writes_junit(tmp_path: Path) -> None:
    junit = tmp_path / "junit.xml"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}"],
        cwd=HELLO_DIR,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None
    assert int(suite.get("tests", "0")) >= 10
    assert suite.get("failures") == "0"
    assert suite.get("errors") == "0"


def test_a_wheel_built_from_the_pyproject_runs_in_a_slot(
    tmp_path: Path, slots: SlotManager
) -> None:
    # Build from a copy: setuptools writes build/ and *.egg-info next to the sources.
    source = tmp_path / "src"
    subprocess.run(["cp", "-r", str(HELLO_DIR), str(source)], check=True)
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "-q",
            "-w",
            str(tmp_path / "dist"),
            ".",
        ],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    if built.returncode != 0:
        pytest.fail(f"pip wheel failed (needs setuptools from the index):\n{built.stderr}")
    (wheel,) = (tmp_path / "dist").glob("hello_service-*.whl")
    artifact = Artifact(digest="sha256:" + file_sha256(wheel), uri=str(wheel), version="0.1.0")
    result = slots.deploy(deploy_request(artifact, "development"), no_heartbeat)
    body = get_json(result.endpoint + "/")
    # The version comes from the wheel's own metadata, config.json from inside the wheel.
    assert body["version"] == "0.1.0"
    assert body["greeting"] == "Hello from Slipway"
    assert get_json(result.endpoint + "/ready")["ready"] is True
