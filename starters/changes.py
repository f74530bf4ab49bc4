"""What a commit changed, read from a local clone by `slipway start` for `paths_ignore`.

The starter decides, not the run: a commit whose changes are all ignored starts nothing (no
workflow, no clone on a worker, no history), as GitHub Actions' own `paths-ignore` does, yet
the CI job still ends, green, saying why (a required check is never left waiting). Whether a
commit gets a pipeline at all was always CI's call, so nothing is trusted that was not. When
the clone cannot tell (the commit or its base not fetched, a shallow clone), the run starts:
a filter may only ever save work, never skip a change it did not see.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from contracts.definition.triggers import all_ignored, path_matches

__all__ = ["NO_COMMIT", "Changes", "UnknownChangesError", "changed_paths", "ignored_change"]

NO_COMMIT = "0" * 40
"""What GitHub gives as `github.event.before` for a new branch: no base."""
_SHOWN = 3
_FETCH = "fetch it, e.g. actions/checkout's fetch-depth: 0"


@dataclass(frozen=True)
class Changes:
    paths: list[str]
    against: str
    """The commit compared with (the base, or the parent); empty for a root commit."""


class UnknownChangesError(Exception):
    """The clone cannot tell what changed; the message says why."""


def _git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_OPTIONAL_LOCKS": "0"}
    try:
        done = subprocess.run(
            ["git", "-C", str(repo), *args],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        raise UnknownChangesError(f"git did not answer in {repo}: {err}") from None
    if done.returncode != 0:
        raise UnknownChangesError(f"git {args[0]} failed in {repo}: {done.stderr.strip()[:200]}")
    return done.stdout


def _has(repo: Path, commit: str) -> bool:
    try:
        _git(repo, "cat-file", "-e", f"{commit}^{{commit}}")
    except UnknownChangesError:
        return False
    return True


def _shallow(repo: Path, commit: str) -> bool:
    shallow = Path(_git(repo, "rev-parse", "--git-path", "shallow").strip())
    if not shallow.is_absolute():
        shallow = repo / shallow
    try:
        return commit in shallow.read_text(encoding="utf-8").split()
    except OSError:
        return False


def _names(out: str) -> list[str]:
    return sorted({p for p in out.split("\0") if p})


def changed_paths(repo: Path, commit: str, base: str = "") -> Changes:
    """The paths `commit` changes: against `base` from their merge base (what a pull
    request's "Files changed" lists), else against its first parent (a root commit: every
    path). Both sides of a rename count. Raises UnknownChangesError
    when the clone cannot tell."""
    if not _has(repo, commit):
        raise UnknownChangesError(f"commit {commit[:12]} is not in {repo} ({_FETCH})")
    if base and base != NO_COMMIT:
        if not _has(repo, base):
            raise UnknownChangesError(f"base {base[:12]} is not in {repo} ({_FETCH})")
        merge_base = _git(repo, "merge-base", base, commit).strip()
        out = _git(repo, "diff", "--name-only", "--no-renames", "-z", merge_base, commit)
        return Changes(_names(out), base)
    parents = _git(repo, "rev-list", "--parents", "-n", "1", commit).split()[1:]
    if not parents:
        if _shallow(repo, commit):
            raise UnknownChangesError(f"{repo} is a shallow clone without {commit[:12]}'s parent")
        out = _git(repo, "diff-tree", "--root", "-r", "--no-commit-id", "--name-only", "-z", commit)
        return Changes(_names(out), "")
    out = _git(repo, "diff", "--name-only", "--no-renames", "-z", parents[0], commit)
    return Changes(_names(out), parents[0])


def ignored_change(
    patterns: list[str], repo: Path, commit: str, base: str = ""
) -> tuple[bool, str]:
    """(True, why) when every path `commit` changes matches `patterns`: the run is skipped.
    (False, why) when the clone cannot tell (a note for the log), (False, "") otherwise."""
    try:
        changes = changed_paths(repo, commit, base)
    except UnknownChangesError as err:
        return False, f"paths_ignore not applied: {err}"
    if not all_ignored(changes.paths, patterns):
        return False, ""
    matched = sorted({p for path in changes.paths for p in patterns if path_matches(p, path)})
    shown = ", ".join(changes.paths[:_SHOWN]) + (
        f" and {len(changes.paths) - _SHOWN} more" if len(changes.paths) > _SHOWN else ""
    )
    since = f" since {changes.against[:12]}" if changes.against else ""
    count = f"{len(changes.paths)} file{'s' if len(changes.paths) != 1 else ''}"
    return True, (
        f"only ignored paths changed ({count}{since}: {shown}; paths_ignore {', '.join(matched)})"
    )
