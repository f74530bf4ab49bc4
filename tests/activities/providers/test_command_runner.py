"""Command stages: a real command, the allow-listed environment, exit codes as data."""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.exceptions import ApplicationError

from activities.providers.testing.command_runner import SubprocessCommandRunner
from contracts.activity import CommandRequest
from tests.support.binaries import require_binary
from tests.support.thirdparty import write_service


def test_a_command_sees_its_stage_env_and_no_worker_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-secret-value")
    monkeypatch.setenv("SLIPWAY_CODEC_KEY", "c2VjcmV0LWtleS0xNi1ieXRlcw==")
    monkeypatch.setenv("PIP_INDEX_URL", "https://index.example/simple")
    request = CommandRequest(
        path=str(tmp_path),
        command=["sh", "-c", "env > seen.txt"],
        env={"NODE_ENV": "production"},
    )

    report = SubprocessCommandRunner(cache_root=tmp_path / "cache").run(request, lambda _n: None)

    lines = (tmp_path / "seen.txt").read_text().splitlines()
    seen = dict(line.split("=", 1) for line in lines if "=" in line)
    assert report.exit_code == 0
    assert seen["NODE_ENV"] == "production"
    assert "AWS_SECRET_ACCESS_KEY" not in seen
    assert "SLIPWAY_CODEC_KEY" not in seen
    assert seen["PIP_INDEX_URL"] == "https://index.example/simple"  # installing needs it
    assert seen["HOME"] != str(Path.home())


def test_a_failing_command_is_reported_with_its_output(tmp_path: Path) -> None:
    request = CommandRequest(
        path=str(tmp_path), command=["sh", "-c", "echo 'npm ERR! missing script'; exit 3"]
    )

    report = SubprocessCommandRunner(cache_root=tmp_path / "cache").run(request, lambda _n: None)

    assert report.exit_code == 3
    assert "npm ERR! missing script" in report.output_tail


def test_a_command_that_cannot_start_names_it(tmp_path: Path) -> None:
    request = CommandRequest(path=str(tmp_path), command=["no-such-builder-xyz", "build"])

    with pytest.raises(ApplicationError) as caught:
        SubprocessCommandRunner(cache_root=tmp_path / "cache").run(request, lambda _n: None)

    assert "no-such-builder-xyz" in caught.value.message


def test_npm_ci_and_build_run_as_a_command_stage(tmp_path: Path) -> None:
    require_binary("npm", "apt-get install npm")

    service = write_service(tmp_path / "svc")
    request = CommandRequest(
        path=str(service),
        command=["sh", "-c", "cd frontend && npm ci --no-audit --no-fund && npm run build"],
    )

    report = SubprocessCommandRunner(cache_root=tmp_path / "cache").run(request, lambda _n: None)

    assert report.exit_code == 0, report.output_tail
    page = service / "greeter_app" / "static" / "index.html"
    assert page.read_text() == "<h1>greeter frontend</h1>"
