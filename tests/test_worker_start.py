"""The worker refuses to start with one sentence, not a traceback, when what it needs is not
there."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support.ports import free_port_block


def test_the_worker_stops_with_one_sentence_when_its_backends_cannot_start(
    tmp_path: Path,
) -> None:
    """A Docker engine for backing services that does not answer: no traceback on stderr's
    last line, the engine named, exit 1."""
    root = Path(__file__).resolve().parents[1]
    env = {
        **os.environ,
        "PYTHONPATH": str(root),
        "TEMPORAL_ADDRESS": "127.0.0.1:1",
        "SLIPWAY_STATE_DIR": str(tmp_path / "state"),
        "SLIPWAY_BACKING_SERVICES": "docker",
        "SLIPWAY_DOCKER_HOST": "tcp://127.0.0.1:1",
        # Never the demo's ports, should anything of the platform start.
        "SLIPWAY_BASE_PORT": str(free_port_block(8)),
    }
    done = subprocess.run(
        [sys.executable, "worker.py"], cwd=root, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("worker: its backends did not start: The Docker engine that runs "), last


def test_a_runner_needs_no_policy_platform_or_notifier_settings(tmp_path: Path) -> None:
    """`--role runner` with no policy file, a kubernetes platform without namespaces and Slack
    without a webhook: none of it is the runner's, so it gets as far as connecting to
    Temporal. The deployer stops at the policy."""
    root = Path(__file__).resolve().parents[1]
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SLIPWAY_")},
        "PYTHONPATH": str(root),
        "TEMPORAL_ADDRESS": "127.0.0.1:1",
        "SLIPWAY_STATE_DIR": str(tmp_path / "state"),
        "SLIPWAY_POLICY_FILE": str(tmp_path / "absent" / "policy.yaml"),
        "SLIPWAY_PLATFORM": "kubernetes",
        "SLIPWAY_METRICS": "prometheus",
        "SLIPWAY_NOTIFIER": "slack",
    }

    def start(role: str) -> str:
        done = subprocess.run(
            [sys.executable, "worker.py", "--role", role],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode != 0
        return done.stderr.strip().splitlines()[-1]

    assert "Failed client connect" in start("runner")
    assert start("deployer").startswith("worker: invalid worker settings: ")
    env |= {
        "SLIPWAY_PLATFORM": "local",
        "SLIPWAY_METRICS": "traefik",
        "SLIPWAY_NOTIFIER": "log",
    }
    assert "policy file not found" in start("deployer")
