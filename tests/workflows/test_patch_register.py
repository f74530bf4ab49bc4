"""The patch register (workflows/patch_register.py) and the code stay in step: every patch id
the workflows use is registered, every registered id is used, and every patch marker in a
committed history is registered (a marker nobody handles would fail that history's replay)."""

from __future__ import annotations

import ast
from pathlib import Path

from temporalio.client import WorkflowHistory
from temporalio.converter import DataConverter

from workflows.patch_register import PATCHES

ROOT = Path(__file__).resolve().parents[2]


def patch_ids_in_code() -> dict[str, str]:
    """Module constants documented as a patch id ("Patch id: ..."), id → module."""
    found: dict[str, str] = {}
    for path in sorted((ROOT / "workflows").rglob("*.py")):
        body = ast.parse(path.read_text(encoding="utf-8")).body
        for node, after in zip(body, [*body[1:], None], strict=False):
            if (
                isinstance(node, ast.Assign)
                and isinstance(node.value, ast.Constant)
                and isinstance(node.value.value, str)
                and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant)
                and str(after.value.value).startswith("Patch id")
            ):
                found[node.value.value] = path.name
    return found


def patch_markers(path: Path) -> set[str]:
    history = WorkflowHistory.from_json(path.stem, path.read_text(encoding="utf-8"))
    ids: set[str] = set()
    for event in history.events:
        marker = event.marker_recorded_event_attributes
        if marker.marker_name == "core_patch" and "patch-data" in marker.details:
            [data] = DataConverter.default.payload_converter.from_payloads(
                marker.details["patch-data"].payloads
            )
            ids.add(str(data["id"]))
    return ids


def test_every_patch_in_the_code_is_registered_and_no_more() -> None:
    in_code = patch_ids_in_code()
    registered = {p.id for p in PATCHES}
    assert len(registered) == len(PATCHES), "a patch is registered twice"
    assert set(in_code) - registered == set(), "patches used but not registered"
    assert registered - set(in_code) == set(), "registered patches no workflow uses"


def test_every_marker_in_a_committed_history_is_registered() -> None:
    histories = sorted((ROOT / "tests" / "histories").glob("*.json"))
    assert histories
    registered = {p.id for p in PATCHES}
    markers = {path.name: patch_markers(path) for path in histories}
    assert any(markers.values()), "no history carries a patch marker: the reader is broken"
    unknown = {name: ids - registered for name, ids in markers.items() if ids - registered}
    assert unknown == {}
