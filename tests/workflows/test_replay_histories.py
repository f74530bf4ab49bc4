"""Committed histories (tests/histories/*.json) must replay against the current workflow code:
a change that alters the command sequence of runs already in history fails here until it is
put behind `workflow.patched`."""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory

from starters.runs import replay_history


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


HISTORIES = sorted((Path(__file__).parents[1] / "histories").glob("*.json"))


def test_histories_are_committed() -> None:
    assert len(HISTORIES) >= 2


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_history_replays(path: Path) -> None:
    # Files are named by workflow id (see tests/histories/record.py).
    history = WorkflowHistory.from_json(path.stem, _read(path))
    assert len(history.events) > 50
    await replay_history(history)
