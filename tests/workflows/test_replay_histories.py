"""Committed histories (tests/histories/*.json) must replay against the current workflow code:
a change that alters the command sequence of runs already in history fails here until it is
put behind `workflow.patched`."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory

from starters.runs import replay_history


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


HISTORIES = sorted((Path(__file__).parents[1] / "histories").glob("*.json"))


def test_histories_are_committed() -> None:
    assert len(HISTORIES) >= 2


def test_leased_runs_and_environment_workflows_are_committed() -> None:
    names = [p.stem for p in HISTORIES]
    assert any(n.startswith("environment-") for n in names)
    # The patch marker of leased runs (payload data is base64 in history JSON).
    marker = base64.b64encode(b"environment-leases").decode()
    assert any(marker in _read(p) for p in HISTORIES)


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_history_replays(path: Path) -> None:
    # Files are named by workflow id, with `--scenario` after an environment workflow's id
    # (see tests/histories/record.py).
    history = WorkflowHistory.from_json(path.stem.split("--")[0], _read(path))
    assert len(history.events) > 10
    await replay_history(history)
