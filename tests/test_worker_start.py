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
