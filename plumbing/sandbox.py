"""The workflow sandbox that the worker and `slipway replay` both run workflow code in.

Modules passed through are shared with the host instead of being imported again inside each
run's sandbox, and their code runs unchecked: a `datetime.now()`, `os.environ` or `random`
call in a passed-through module is not caught. So only modules that are pure (no I/O, no
clock, no per-run state) pass: third-party libraries the data models need, and the data
contracts that cross the workflow/activity boundary, by exact module name. Our workflow
modules are always imported inside the sandbox, where such calls fail the workflow task; a
pipeline run's sandbox imports 18 of them, its own (tests/plumbing/test_sandbox.py keeps that
list exact: no environment, canary or monitor module, nothing of activities or plumbing).

Each sandbox still runs those modules' code afresh (its own module objects, globals,
classes), but their compiled code is read once per process: `share_workflow_code` puts a
finder for our workflow package in front of the import system, whose loader keeps each
file's code object (keyed by path, size and mtime) and hands the same one to every sandbox.
A code object is immutable, so sharing it shares nothing a run could change; before, every
run in the cache unmarshalled its own ~310 kB of code from the same .pyc files.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys
import threading
from collections.abc import Sequence
from types import CodeType, ModuleType

from temporalio.worker import WorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

__all__ = ["PASSTHROUGH", "restrictions", "share_workflow_code", "workflow_runner"]

SHARED_CODE_PACKAGES = ("workflows",)
"""Our packages whose modules every sandbox imports again (their code is shared)."""

PASSTHROUGH = (
    # The pure layer as a whole: data contracts (pydantic models, enums, errors), the
    # definition language, the messages between workflows and activities, naming and the
    # pure judgments. Re-importing their pydantic models in every run's sandbox costs ~500 ms
    # of CPU per workflow started or replayed (measured on the committed pipeline history:
    # 650 ms vs 150 ms). Two more reasons: `contracts.deployer_proof` holds the worker's
    # deployer key, installed once per process (a module imported again inside a run's
    # sandbox would hold none); `contracts.definition.freeze` must build its ZoneInfo objects
    # on the host (inside the sandbox zoneinfo hands out proxied zones, which datetime
    # refuses). `tests/test_import_direction.py` keeps `contracts` free of our other packages
    # and of clocks, randomness and the environment.
    "contracts",
    # Third-party pure libraries behind the models (pydantic itself passes by default).
    "annotated_types",
    "typing_inspection",
    "yaml",
)


_CODE: dict[tuple[str, int, int], CodeType] = {}
_CODE_LOCK = threading.Lock()


class _SharedCodeLoader(importlib.machinery.SourceFileLoader):
    """A source loader that compiles (or unmarshals) each version of a file once."""

    def get_code(self, fullname: str) -> CodeType:
        path = self.get_filename(fullname)
        info = os.stat(path)
        key = (path, info.st_size, info.st_mtime_ns)
        code = _CODE.get(key)
        if code is None:
            with _CODE_LOCK:
                code = _CODE.get(key)
                if code is None:
                    loaded = super().get_code(fullname)
                    assert loaded is not None  # a source file always has code
                    code = _CODE[key] = loaded
        return code


class _SharedCodeFinder(importlib.abc.MetaPathFinder):
    """Finds our workflow modules as the path finder does, with the sharing loader."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname.split(".", 1)[0] not in SHARED_CODE_PACKAGES:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        loader = spec.loader if spec is not None else None
        if spec is None or type(loader) is not importlib.machinery.SourceFileLoader:
            return spec
        spec.loader = _SharedCodeLoader(loader.name, loader.path)
        return spec


def share_workflow_code() -> None:
    """Install the sharing finder once per process (the worker and `slipway replay` call it
    before their first workflow runs)."""
    if not any(isinstance(f, _SharedCodeFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _SharedCodeFinder())


def restrictions() -> SandboxRestrictions:
    """Temporal's default restrictions, with our passthrough list."""
    return SandboxRestrictions.default.with_passthrough_modules(*PASSTHROUGH)


def workflow_runner() -> WorkflowRunner:
    """The runner of the worker and of `slipway replay`, so replay judges exactly what the
    worker runs."""
    share_workflow_code()
    return SandboxedWorkflowRunner(restrictions=restrictions())
