"""What starts a run, and what it runs: pull-request runs (`on.pull_request`) and path
filters (`paths_ignore`). Pure: the starter and the workflow both decide with these.

A pull-request run checks a PR's head commit: only the stages a PR needs (by default every
stage that neither touches an environment or the registry nor needs one that does), never a
deploy, canary, monitor, approval, rollback, a test of a running environment or a publish.
`paths_ignore` (GitHub Actions' filter patterns: `*` within a directory, `**` across
directories) skips a run whose changes all match.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from contracts.definition import dag
from contracts.definition.limits import SAFE_NAME, short

__all__ = [
    "MAX_PATH_PATTERNS",
    "PULL_REQUEST_REFUSED",
    "PathPattern",
    "PullRequestSpec",
    "TriggersSpec",
    "all_ignored",
    "path_matches",
    "pull_request_stages",
]

PULL_REQUEST_REFUSED: dict[str, str] = {
    "deploy": "it deploys to an environment",
    "canary": "it moves an environment's traffic",
    "monitor": "it watches (and rolls back) an environment",
    "approval": "it gates an environment",
    "rollback": "it restores an environment",
    "e2e": "it tests a running environment",
    "smoke": "it tests a running environment",
    "load_test": "it tests a running environment",
    "dast": "it tests a running environment",
    "publish": "it pushes tags to the registry",
}
"""Stage kinds a pull-request run never runs, and why (one clause each)."""

MAX_PATH_PATTERNS = 100
_PATTERN_CHARS = 256
_UNSUPPORTED = "?+![]\\"


def _path_pattern(value: str) -> str:
    if not value or len(value) > _PATTERN_CHARS:
        raise ValueError(f"{short(value)} must be 1-{_PATTERN_CHARS} characters")
    bad = sorted({c for c in value if c in _UNSUPPORTED})
    if bad:
        raise ValueError(
            f"{short(value)}: {' '.join(bad)} is not supported; patterns take '*' (within a "
            "directory) and '**' (across directories)"
        )
    parts = value.split("/")
    if value.startswith("/") or "." in parts or ".." in parts or "" in parts[:-1]:
        raise ValueError(
            f"{short(value)} must be a path relative to the repository's root, e.g. 'docs/**'"
        )
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError(f"{short(value)} contains control characters")
    return value


PathPattern = Annotated[str, AfterValidator(_path_pattern)]


def _stage_name(value: str) -> str:
    if not SAFE_NAME.match(value):
        raise ValueError(f"{short(value)} is not a stage name")
    return value


StageName = Annotated[str, AfterValidator(_stage_name)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PullRequestSpec(_Strict):
    """Which stages a pull-request run runs: `stages` (each with everything it needs) or
    `until` (that stage and everything it needs); neither: every stage that does not touch
    an environment or the registry and needs none that does."""

    stages: list[StageName] | None = Field(None, min_length=1, max_length=1000)
    until: StageName | None = None

    @model_validator(mode="after")
    def _one_way(self) -> PullRequestSpec:
        if self.stages is not None and self.until is not None:
            raise ValueError("give 'stages' or 'until', not both")
        return self

    @property
    def named(self) -> list[str] | None:
        """The stages named (with `until` as a list of one), or None for the default."""
        if self.until is not None:
            return [self.until]
        return list(self.stages) if self.stages is not None else None

    @property
    def field(self) -> str:
        return "on.pull_request." + ("until" if self.until is not None else "stages")


class TriggersSpec(_Strict):
    """`on:` of a definition (as in GitHub Actions): what each kind of run does."""

    pull_request: PullRequestSpec | None = Field(
        None, description="What `slipway start --pull-request N` runs."
    )


def pull_request_stages(
    stages: Sequence[dag.StageLike], spec: PullRequestSpec | None
) -> tuple[list[str], dict[str, str]]:
    """The stages a pull-request run runs, in definition order, and the refused ones its
    `on.pull_request` asks for (stage → the stage named there that needs it, or itself).
    A refused kind is never among the first list, whatever the definition says."""
    by_name = {s.name: s for s in stages}
    named = spec.named if spec is not None else None
    if named is not None:
        # Everything the named stages need, transitively; remember who asked first.
        asked_by: dict[str, str] = {}
        todo = [(n, n) for n in named if n in by_name]
        while todo:
            name, origin = todo.pop()
            if name in asked_by:
                continue
            asked_by[name] = origin
            todo.extend((need, origin) for need in by_name[name].needs if need in by_name)
        chosen = [s.name for s in stages if s.name in asked_by]
        refused = {n: asked_by[n] for n in chosen if by_name[n].kind in PULL_REQUEST_REFUSED}
        return [n for n in chosen if n not in refused], refused
    graph = {s.name: [n for n in s.needs if n != s.name] for s in stages}
    depth = dag.levels(graph)
    if depth is None:
        return [], {}  # a cycle: reported elsewhere, nothing runs
    ok: set[str] = set()
    for name in sorted(graph, key=lambda n: depth[n]):
        stage = by_name[name]
        if stage.kind not in PULL_REQUEST_REFUSED and all(
            n in ok for n in stage.needs if n in by_name
        ):
            ok.add(name)
    return [s.name for s in stages if s.name in ok], {}


@lru_cache(maxsize=256)
def _regex(pattern: str) -> re.Pattern[str]:
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out), re.DOTALL)


def path_matches(pattern: str, path: str) -> bool:
    """Whether a repository path matches a filter pattern, as GitHub Actions' `paths-ignore`
    reads it: the whole path, `*` within one directory, `**` across (`**/` also matching none)."""
    return _regex(pattern).fullmatch(path) is not None


def all_ignored(paths: Iterable[str], patterns: Sequence[str]) -> bool:
    """True when there is a change and every changed path matches one of `patterns`."""
    seen = False
    for path in paths:
        seen = True
        if not any(path_matches(p, path) for p in patterns):
            return False
    return seen and bool(patterns)
