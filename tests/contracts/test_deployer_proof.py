"""A deployer's proof binds the whole message, its purpose and its time."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from contracts import deployer_proof
from contracts.messages import RollbackOrder
from plumbing.deployer_key import key_from_file

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def key() -> None:
    deployer_proof.install_key(b"k" * 32)


def order(**changes: object) -> RollbackOrder:
    base = {"service": "hello", "environment": "production", "run": "pipeline-a", "request_id": "r"}
    return RollbackOrder.model_validate({**base, **changes})


def test_a_signed_message_verifies_once_and_only_as_signed() -> None:
    proof = deployer_proof.sign("rollback", order(), NOW)
    assert deployer_proof.check("rollback", order(), proof) is None
    # The same proof on another run, another purpose, or another key does not verify.
    other = deployer_proof.check("rollback", order(run="pipeline-b"), proof)
    assert other == "rollback refused: its proof does not verify with the deployers' key"
    assert deployer_proof.check("release", order(), proof) is not None
    deployer_proof.install_key(b"x" * 32)
    assert deployer_proof.check("rollback", order(), proof) is not None


def test_a_malformed_proof_is_refused() -> None:
    bad = deployer_proof.check("rollback", order(), "v1:x:y")
    assert bad == "rollback refused: its proof is malformed"


def test_the_key_file_is_made_once_and_private(tmp_path: Path) -> None:
    path = tmp_path / "deployer.key"
    first = key_from_file(path)
    assert key_from_file(path) == first
    assert len(first) == 32
    assert path.stat().st_mode & 0o777 == 0o600
