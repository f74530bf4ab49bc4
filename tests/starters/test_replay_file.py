"""`slipway replay --file`: whose history a file is comes from the history, never from the
file's name (a run's children are named after its id: replayed under another id they were
reported as nondeterminism); an encrypted history needs the key, said in a sentence."""

from __future__ import annotations

import asyncio
import base64
import json
import os
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.common.v1 import Payload
from typer.testing import CliRunner

from plumbing.codec import AesGcmCodec
from starters.cli import app

HISTORIES = Path(__file__).parents[1] / "histories"
PIPELINE = "pipeline-heal7-backend-9c5964cc1a91-c4e48e"  # started a canary and a monitor
ENVIRONMENT = "environment-heal7-backend-production"
CANARY = "pipeline-heal7-backend-main-2a2884dd4b9f-0e4a09-canary-canary"
FILES = {
    PIPELINE: f"{PIPELINE}.json",
    ENVIRONMENT: f"{ENVIRONMENT}--heal7-promoted.json",
    CANARY: f"{CANARY}.json",
}


def saved_as(tmp_path: Path, workflow_id: str, name: str = "h.json") -> Path:
    path = tmp_path / name
    path.write_text((HISTORIES / FILES[workflow_id]).read_text(encoding="utf-8"), "utf-8")
    return path


def replay(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["replay", *args])
    return result.exit_code, " ".join(result.output.split())


@pytest.fixture(autouse=True)
def no_codec_key(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in os.environ:
        if name.startswith("SLIPWAY_CODEC"):
            monkeypatch.delenv(name)


@pytest.mark.parametrize("workflow_id", FILES)
def test_a_history_under_any_name_replays_as_its_workflow(tmp_path: Path, workflow_id: str) -> None:
    # Recorded on the test server, which records no id at the start: the pipeline's comes
    # from its children's ids, the environment's and the canary's from their input.
    code, out = replay("--file", str(saved_as(tmp_path, workflow_id)))
    assert code == 0, out
    assert f"replay ok: {workflow_id} (" in out


def test_the_id_given_is_checked_against_the_one_recorded(tmp_path: Path) -> None:
    path = saved_as(tmp_path, PIPELINE)
    code, out = replay("--file", str(path), "--workflow-id", "h")
    assert code == 2
    assert f"is the history of {PIPELINE}, not h: give --workflow-id {PIPELINE}" in out
    assert "ondeterminism" not in out
    code, out = replay(PIPELINE, "--file", str(path))  # the argument, as before
    assert code == 0, out


def test_a_history_that_says_nothing_of_its_id_is_refused_unless_given(tmp_path: Path) -> None:
    history = json.loads((HISTORIES / FILES[ENVIRONMENT]).read_text(encoding="utf-8"))
    started = history["events"][0]["workflowExecutionStartedEventAttributes"]
    started["input"]["payloads"] = []  # nothing to derive its id from
    path = tmp_path / "h.json"
    path.write_text(json.dumps(history), encoding="utf-8")
    code, out = replay("--file", str(path))
    assert code == 2
    assert out == (
        f"{path} does not say which workflow it is the history of: give its id with --workflow-id"
    )


def _encrypted(value: Any, codec: AesGcmCodec) -> Any:
    """A history as a worker with the codec writes it: payloads encrypted, but not the
    patch markers' (the SDK core writes those) nor search attributes."""
    if isinstance(value, list):
        return [_encrypted(v, codec) for v in value]
    if not isinstance(value, dict):
        return value
    if "encoding" in value.get("metadata", {}) and "data" in value:
        payload = Payload(
            metadata={k: base64.b64decode(v) for k, v in value["metadata"].items()},
            data=base64.b64decode(value["data"]),
        )
        (sealed,) = asyncio.run(codec.encode([payload]))
        return {
            "metadata": {k: base64.b64encode(v).decode() for k, v in sealed.metadata.items()},
            "data": base64.b64encode(sealed.data).decode(),
        }
    kept = ("markerRecordedEventAttributes", "searchAttributes")
    return {k: v if k in kept else _encrypted(v, codec) for k, v in value.items()}


@pytest.mark.parametrize("workflow_id", [PIPELINE, ENVIRONMENT])
def test_an_encrypted_history_replays_with_its_key_and_is_refused_without(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workflow_id: str
) -> None:
    key = os.urandom(32)
    history = json.loads((HISTORIES / FILES[workflow_id]).read_text(encoding="utf-8"))
    path = tmp_path / "h.json"
    path.write_text(json.dumps(_encrypted(history, AesGcmCodec({"default": key}))), "utf-8")
    code, out = replay("--file", str(path))
    assert code == 2
    assert out == (
        f"{path} cannot be replayed here: its payloads are encrypted "
        "(binary/encrypted-aes-gcm;v2) and no key is configured: set SLIPWAY_CODEC_KEY or "
        "SLIPWAY_CODEC_KEYS to the key the worker used"
    )
    monkeypatch.setenv("SLIPWAY_CODEC_KEY", base64.b64encode(os.urandom(32)).decode())
    code, out = replay("--file", str(path))
    assert code == 2
    assert "its recorded input cannot be read (CodecError: payload does not decrypt" in out
    monkeypatch.setenv("SLIPWAY_CODEC_KEY", base64.b64encode(key).decode())
    code, out = replay("--file", str(path))
    assert code == 0, out
    assert f"replay ok: {workflow_id} (" in out
