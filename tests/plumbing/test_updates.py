"""An update the server lost before accepting it is sent again, under the same id; every
other failure surfaces at once. (A lost update cannot be provoked on demand on a real
server, so the handle here answers the way the server's RPC does.)"""

from __future__ import annotations

from typing import Any, cast

import pytest
from temporalio.service import RPCError, RPCStatusCode

from plumbing.updates import LOST_UPDATE_RETRIES, execute_update, is_lost_update


class FlakyHandle:
    """Fails its first `failures` calls with `error`, then answers 'done'."""

    def __init__(self, error: RPCError, failures: int) -> None:
        self.error = error
        self.failures = failures
        self.ids: list[str] = []

    async def execute_update(self, update: Any, arg: Any, *, id: str, result_type: Any) -> str:
        self.ids.append(id)
        if len(self.ids) <= self.failures:
            raise self.error
        return "done"


def lost(message: str = "update 5f0c not found") -> RPCError:
    return RPCError(message, RPCStatusCode.NOT_FOUND, b"")


@pytest.fixture(autouse=True)
def no_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    async def instant(_seconds: float) -> None:
        return None

    monkeypatch.setattr("plumbing.updates.asyncio.sleep", instant)


@pytest.mark.parametrize(
    "message",
    [
        "update 5f0c not found",
        "update 5f0c wasn't found on server. It is, most likely, a transient error",
    ],
)
def test_the_servers_lost_update_answers_are_recognised(message: str) -> None:
    assert is_lost_update(lost(message))


def test_an_unknown_run_is_not_a_lost_update() -> None:
    assert not is_lost_update(lost("workflow not found for ID: pipeline-x"))
    assert not is_lost_update(RPCError("update 1 not found", RPCStatusCode.INTERNAL, b""))


async def test_a_lost_update_is_sent_again_under_the_same_id() -> None:
    handle = FlakyHandle(lost(), failures=2)
    answer = await execute_update(cast(Any, handle), "rollback_manual", {}, result_type=str)
    assert answer == "done"
    assert len(handle.ids) == 3
    assert len(set(handle.ids)) == 1  # deduplicated by the server if one did land


async def test_it_gives_up_after_the_bounded_retries() -> None:
    handle = FlakyHandle(lost(), failures=LOST_UPDATE_RETRIES + 1)
    with pytest.raises(RPCError, match="not found"):
        await execute_update(cast(Any, handle), "approve", {}, result_type=str)
    assert len(handle.ids) == LOST_UPDATE_RETRIES + 1


async def test_an_unknown_run_fails_at_once() -> None:
    handle = FlakyHandle(lost("workflow not found for ID: pipeline-x"), failures=1)
    with pytest.raises(RPCError, match="workflow not found"):
        await execute_update(cast(Any, handle), "approve", {}, result_type=str)
    assert len(handle.ids) == 1
