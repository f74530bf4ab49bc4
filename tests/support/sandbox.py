"""The sandbox untrusted steps run in (`activities.providers.execution.sandbox`), for tests.

Tests that need bubblewrap call `require_sandbox()`: it skips locally with the reason and
fails in CI (REQUIRE_REAL_SERVERS=1), where `.ci/real-servers.sh` installs it. Tests about
something else whose fake tools write where a sandbox would not let them (a spy script
recording its argv in the test's directory) use the `unsandboxed` fixture.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from activities.providers.execution import sandbox as sandboxes
from activities.providers.execution.sandbox import Sandbox
from tests.support.binaries import missing

__all__ = ["require_sandbox", "unsandboxed"]


def require_sandbox() -> Sandbox:
    """The worker's sandbox, working (bwrap runs here), or skip/fail saying why not."""
    sandbox = Sandbox("required")
    if sandbox.unavailable is not None:
        missing(f"the sandbox cannot run here ({sandbox.unavailable}): install bubblewrap")
    return sandbox


@pytest.fixture
def unsandboxed() -> Iterator[None]:
    """The policy's `sandbox: off` for one test."""
    previous = sandboxes.use(Sandbox("off"))
    try:
        yield
    finally:
        sandboxes.use(previous)
