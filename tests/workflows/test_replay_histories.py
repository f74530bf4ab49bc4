"""Committed histories (tests/histories/*.json) must replay against the current workflow code:
a change that alters the command sequence of runs already in history fails here until it is
put behind `workflow.patched`."""

from __future__ import annotations

import base64
import re
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


def _payload_texts(path: Path) -> str:
    """Every payload of a history, decoded (patch ids are payloads of marker events)."""
    found = re.findall(r'"data":\s*"([A-Za-z0-9+/=]+)"', _read(path))
    return "\n".join(base64.b64decode(d).decode("utf-8", "ignore") for d in found)


@pytest.mark.parametrize(
    "patch",
    [
        "lease-mailbox",
        "environment-work-as-local-activities",
        "lease-messages-in-background",
        "policy-in-force-as-local-activity",
        "lease-answered-in-update",
        "environment-fence-as-activity",
    ],
)
def test_lease_load_patches_are_pinned_by_a_history(patch: str) -> None:
    """The histories recorded after the lease changes of issue 19 (`*-lease-mailbox.json` and
    their pipelines, `*-answered-in-update.json`, `*-fence-as-activity.json`) pin each of its
    patches."""
    assert any(patch in _payload_texts(p) for p in HISTORIES)


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_history_replays(path: Path) -> None:
    # Files are named by workflow id, with `--scenario` after an environment workflow's id
    # (see tests/histories/record.py).
    history = WorkflowHistory.from_json(path.stem.split("--")[0], _read(path))
    assert len(history.events) > 10
    await replay_history(history)
