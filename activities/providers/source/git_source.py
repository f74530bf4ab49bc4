"""Checkouts of one commit, cached by sha: a mirror clone per repository, a directory per sha.

Layout under `cache_dir`:

    repos/<key>.git      a `git clone --mirror` of the repository (fetched when a commit is new)
    checkouts/<sha>/     a working tree of exactly that commit
    locks/<key>.lock     serialises fetches and checkout creation for one repository

A checkout is built in a temporary directory and renamed into place, so a directory under
`checkouts/` is always complete: a second call (or a concurrent one, after the lock) reuses it.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import datetime
from pathlib import Path

from contracts.activity import CheckoutRequest, Workspace
from contracts.errors import ErrorType, verdict

__all__ = ["GitSource"]

_FULL_SHA = re.compile(r"^[0-9a-f]{40}$")
_GIT_TIMEOUT_S = 600.0
_SCP_LIKE = re.compile(r"^[\w.-]+@[\w.-]+:")  # git@host:owner/repo
_NO_SUCH_REPO = re.compile(
    r"does not exist|not a git repository|does not appear to be a git repository|not found",
    re.IGNORECASE,
)


class GitError(RuntimeError):
    """A git command failed; transient unless the caller turns it into a verdict."""


class GitSource:
    """`SourceProvider` over git: clones any local path or URL into `cache_dir` and keeps one
    working tree per commit sha there."""

    def __init__(self, cache_dir: Path) -> None:
        self._cache = Path(cache_dir)

    def ensure(self, request: CheckoutRequest) -> Workspace:
        repo = _normalise_repo(request.repo)
        commit = request.commit.strip()
        checkout = None
        if _FULL_SHA.match(commit):
            # Fast path without the lock: a checkout directory only exists once complete.
            candidate = self._cache / "checkouts" / commit
            if candidate.is_dir():
                checkout = candidate
        if checkout is None:
            with self._lock(repo):
                mirror = self._mirror(repo)
                sha = self._resolve(mirror, repo, commit)
                checkout = self._checkout(mirror, sha)
        return self._workspace(checkout, request)

    # --- steps -----------------------------------------------------------------------------

    def _mirror(self, repo: str) -> Path:
        """The mirror clone of `repo`, cloned on first use (into a temp dir, then renamed)."""
        mirror = self._cache / "repos" / f"{_repo_key(repo)}.git"
        if mirror.is_dir():
            return mirror
        mirror.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".clone-", dir=mirror.parent))
        try:
            _git(["clone", "--mirror", "--quiet", "--", repo, str(tmp)], cwd=None)
        except GitError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            if _is_local(repo) or _NO_SUCH_REPO.search(str(exc)):
                raise verdict(
                    ErrorType.CHECKOUT_FAILED,
                    f"Could not clone repository {repo!r}: {exc}. Check that the repo path or "
                    "URL in the pipeline is right and readable by the worker.",
                ) from exc
            raise  # network or server trouble: transient, Temporal retries the checkout
        os.replace(tmp, mirror)
        return mirror

    def _resolve(self, mirror: Path, repo: str, commit: str) -> str:
        """The full sha of `commit`, fetching when the mirror does not know it yet."""
        sha = _rev_parse(mirror, commit)
        # A sha names the same tree forever; a branch or tag may have moved since the last
        # fetch, so those are always refreshed. A failed fetch is transient: Temporal retries.
        if sha is not None and _FULL_SHA.match(commit):
            return sha
        _git(["fetch", "--quiet", "--prune", "origin"], cwd=mirror)
        sha = _rev_parse(mirror, commit)
        if sha is None and _FULL_SHA.match(commit):
            # A commit on no branch (a PR head): servers may still serve it by sha.
            with suppress(GitError):
                _git(["fetch", "--quiet", "--", "origin", commit], cwd=mirror)
            sha = _rev_parse(mirror, commit)
        if sha is None:
            raise verdict(
                ErrorType.CHECKOUT_FAILED,
                f"Commit {commit!r} does not exist in repository {repo!r}. Check the commit "
                "sha (or branch) you started the pipeline with, and that it was pushed.",
            )
        return sha

    def _checkout(self, mirror: Path, sha: str) -> Path:
        checkout = self._cache / "checkouts" / sha
        if checkout.is_dir():
            return checkout
        checkout.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{sha[:12]}-", dir=checkout.parent))
        try:
            # A local clone hard-links the mirror's objects: cheap, yet self-contained (a later
            # fetch --prune and gc of the mirror cannot break it) and it survives the rename.
            _git(["clone", "--no-checkout", "--quiet", "--", str(mirror), str(tmp)], cwd=None)
            _git(["-c", "advice.detachedHead=false", "checkout", "--quiet", sha, "--"], cwd=tmp)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        try:
            os.replace(tmp, checkout)
        except OSError:
            # Another worker on the same cache won the race (it did not hold our lock, e.g. a
            # different repo key for the same sha): its checkout is as good as ours.
            shutil.rmtree(tmp, ignore_errors=True)
            if not checkout.is_dir():
                raise
        return checkout

    def _workspace(self, checkout: Path, request: CheckoutRequest) -> Workspace:
        sha, committed, author = _git(
            ["log", "-1", "--format=%H%x00%cI%x00%an <%ae>"], cwd=checkout
        ).split("\0")
        service = (checkout / request.service_path).resolve()
        if not service.is_relative_to(checkout.resolve()) or not service.is_dir():
            raise verdict(
                ErrorType.CHECKOUT_FAILED,
                f"service_path {request.service_path!r} does not exist in commit {sha} of "
                f"repository {request.repo!r}. Fix service_path in the pipeline definition "
                "(it is relative to the repository root).",
            )
        return Workspace(
            path=str(service),
            commit=sha,
            commit_time=datetime.fromisoformat(committed),
            author=author,
        )

    @contextmanager
    def _lock(self, repo: str) -> Iterator[None]:
        lock_path = self._cache / "locks" / f"{_repo_key(repo)}.lock"
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        with lock_path.open("a") as handle:
            # flock is released by the kernel if the worker dies, so no stale locks remain.
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def _is_local(repo: str) -> bool:
    return "://" not in repo and not _SCP_LIKE.match(repo)


def _normalise_repo(repo: str) -> str:
    """Local paths become absolute (the cache key must not depend on the worker's cwd)."""
    repo = repo.strip()
    if _is_local(repo):
        return str(Path(repo).expanduser().resolve())
    return repo


def _repo_key(repo: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", repo.rstrip("/").rsplit("/", 1)[-1])[:40]
    digest = hashlib.sha256(repo.encode()).hexdigest()[:16]
    return f"{name.removesuffix('.git')}-{digest}"


def _rev_parse(mirror: Path, rev: str) -> str | None:
    if rev.startswith("-"):
        return None  # never let a "commit" be read as an option
    try:
        return _git(["rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"], cwd=mirror)
    except GitError:
        return None


def _git(args: list[str], cwd: Path | None) -> str:
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}
    try:
        done = subprocess.run(
            ["git", *args],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=_GIT_TIMEOUT_S,
            check=False,
        )
    except FileNotFoundError as exc:
        raise verdict(
            ErrorType.CONFIGURATION, "git is not installed on this worker: install git."
        ) from exc
    except subprocess.TimeoutExpired as exc:
        raise GitError(f"git {args[0]} did not finish within {_GIT_TIMEOUT_S:.0f} s") from exc
    if done.returncode != 0:
        detail = done.stderr.strip().splitlines()
        raise GitError(detail[-1] if detail else f"git {args[0]} exited {done.returncode}")
    return done.stdout.strip()
