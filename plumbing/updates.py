"""Sending a workflow update that survives the server losing it before it was accepted.

The server keeps an update that is not yet accepted in memory only. When that registry is
cleared (history shard moved, workflow context reloaded, the time-skipping test server's
workflow task lost), the caller gets NOT_FOUND "update <id> not found" / "wasn't found"; the
server's own message calls it transient and fixed by retrying. Retrying with the *same*
update id is safe: an update the server did complete is deduplicated by that id and returns
its first outcome, so a decision is never applied twice.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any, TypeVar, overload

from temporalio.client import Client, WithStartWorkflowOperation, WorkflowHandle
from temporalio.service import RPCError, RPCStatusCode

__all__ = [
    "LOST_UPDATE_RETRIES",
    "execute_update",
    "execute_update_with_start",
    "is_lost_update",
]

T = TypeVar("T")

LOST_UPDATE_RETRIES = 4
"""Attempts after the first; the waits grow from 0.2 s to 1.6 s (3 s in all)."""


def is_lost_update(err: BaseException) -> bool:
    """The server's answer for an update it admitted and then forgot (not an unknown run)."""
    if not isinstance(err, RPCError) or err.status != RPCStatusCode.NOT_FOUND:
        return False
    text = err.message
    return text.startswith("update ") and ("not found" in text or "wasn't found" in text)


@overload
async def execute_update(
    handle: WorkflowHandle[Any, Any],
    update: Any,
    arg: Any,
    *,
    result_type: type[T],
    update_id: str | None = None,
) -> T: ...


@overload
async def execute_update(
    handle: WorkflowHandle[Any, Any],
    update: Any,
    arg: Any,
    *,
    result_type: None = None,
    update_id: str | None = None,
) -> Any: ...


async def execute_update(
    handle: WorkflowHandle[Any, Any],
    update: Any,
    arg: Any,
    *,
    result_type: type[Any] | None = None,
    update_id: str | None = None,
) -> Any:
    """`handle.execute_update` (`update`: a name or the handler method) under one update
    id, sent again while the server says it lost it. Any other error (an unknown run, a
    refused update) is raised at once."""
    update_id = update_id or str(uuid.uuid4())
    for attempt in range(LOST_UPDATE_RETRIES + 1):
        try:
            return await handle.execute_update(update, arg, id=update_id, result_type=result_type)
        except RPCError as err:
            if not is_lost_update(err) or attempt == LOST_UPDATE_RETRIES:
                raise
            await asyncio.sleep(0.2 * 2**attempt)
    raise AssertionError("unreachable: the last attempt returns or raises")


async def execute_update_with_start(
    client: Client,
    workflow_id: str,
    update: str,
    arg: Any,
    *,
    operation: Callable[[], WithStartWorkflowOperation[Any, Any]],
    result_type: type[T],
    update_id: str,
) -> T:
    """Update-with-start of workflow `workflow_id` (started by `operation()`, a fresh
    operation per attempt, if it is not running), under one update id, sent again while the
    server says it lost the update, like `execute_update`."""
    for attempt in range(LOST_UPDATE_RETRIES + 1):
        try:
            result: T = await client.execute_update_with_start_workflow(
                update,
                arg,
                start_workflow_operation=operation(),
                id=update_id,
                result_type=result_type,
            )
            return result
        except RPCError as err:
            if not is_lost_update(err) or attempt == LOST_UPDATE_RETRIES:
                raise
            await asyncio.sleep(0.2 * 2**attempt)
    raise AssertionError(f"unreachable: {workflow_id}'s last attempt returns or raises")
