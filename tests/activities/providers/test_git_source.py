"""GitSource against real git repositories made in tmp_path."""

from __future__ import annotations

import subprocess
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest
from temporalio.exceptions import ApplicationError

from activities.providers.source.git_source import GitSource
from contracts.activity import CheckoutRequest, Workspace
from contracts.errors import ErrorType


def git(repo: Path, *args: str, env: dict[str, str] | None = None) -> str:
    base = {
        "GIT_AUTHOR_NAME": "Ada Lovelace",
        "GIT_AUTHOR_EMAIL": "ada@example.com",
        "GIT_COMMITTER_NAME": "Ada Lovelace",
        "GIT_COMMITTER_EMAIL": "ada@example.com",
        "GIT_CONFIG_GLOBAL": "/dev/null",
        "PATH": "/usr/bin:/bin:/usr/local/bin",
    }
    done = subprocess.run(
        ["git", "-c", "init.defaultBranch=main", *args],
        cwd=repo,
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def commit_all(repo: Path, message: str, when: str) -> str:
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message, env={"GIT_COMMITTER_DATE": when})
    return git(repo, "rev-parse", "HEAD")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "origin"
    (root / "services" / "api").mkdir(parents=True)
    git(root, "init", "-q")
    (root / "services" / "api" / "app.py").write_text("VERSION = 1\n")
    commit_all(root, "first", "2024-03-01T10:00:00+02:00")
    return root


def test_checkout_returns_the_service_dir_of_the_commit(repo: Path, tmp_path: Path) -> None:
    first = git(repo, "rev-parse", "HEAD")
    (repo / "services" / "api" / "app.py").write_text("VERSION = 2\n")
    commit_all(repo, "second", "2024-03-02T10:00:00+00:00")

    ws = GitSource(tmp_path / "cache").ensure(
        CheckoutRequest(repo=str(repo), commit=first, service_path="services/api")
    )

    assert ws.commit == first
    assert Path(ws.path).name == "api"
    assert (Path(ws.path) / "app.py").read_text() == "VERSION = 1\n"
    assert ws.commit_time == datetime(2024, 3, 1, 8, 0, tzinfo=UTC)
    assert ws.commit_time is not None
    assert ws.commit_time.tzinfo is not None
    assert ws.author == "Ada Lovelace <ada@example.com>"
    assert Path(ws.path).is_relative_to(tmp_path / "cache")


def test_short_sha_and_branch_resolve_to_the_full_sha(repo: Path, tmp_path: Path) -> None:
    source = GitSource(tmp_path / "cache")
    head = git(repo, "rev-parse", "HEAD")

    assert source.ensure(CheckoutRequest(repo=str(repo), commit=head[:8])).commit == head
    (repo / "new.txt").write_text("x")
    newer = commit_all(repo, "newer", "2024-03-03T10:00:00+00:00")
    # The branch moved after the first clone: a branch name is fetched again.
    ws = source.ensure(CheckoutRequest(repo=str(repo), commit="main"))
    assert ws.commit == newer
    assert (Path(ws.path) / "new.txt").exists()


def test_second_call_reuses_the_checkout(repo: Path, tmp_path: Path) -> None:
    source = GitSource(tmp_path / "cache")
    head = git(repo, "rev-parse", "HEAD")
    first = source.ensure(CheckoutRequest(repo=str(repo), commit=head))
    marker = Path(first.path) / "left-by-first-run"
    marker.write_text("x")

    second = source.ensure(CheckoutRequest(repo=str(repo), commit=head))

    assert second == first
    assert marker.exists()  # same directory, not a fresh checkout


def test_concurrent_calls_for_one_sha_agree(repo: Path, tmp_path: Path) -> None:
    head = git(repo, "rev-parse", "HEAD")
    request = CheckoutRequest(repo=str(repo), commit=head, service_path="services/api")
    results: list[Workspace] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            # One GitSource per thread, as two workers sharing a cache directory would be.
            results.append(GitSource(tmp_path / "cache").ensure(request))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    assert len(results) == 4
    assert len({r.path for r in results}) == 1
    assert (Path(results[0].path) / "app.py").read_text() == "VERSION = 1\n"
    assert sorted(p.name for p in (tmp_path / "cache" / "checkouts").iterdir()) == [head]


def test_unknown_commit_is_a_checkout_verdict(repo: Path, tmp_path: Path) -> None:
    missing = "0123456789abcdef0123456789abcdef01234567"
    with pytest.raises(ApplicationError) as caught:
        GitSource(tmp_path / "cache").ensure(CheckoutRequest(repo=str(repo), commit=missing))

    assert caught.value.type == ErrorType.CHECKOUT_FAILED
    assert caught.value.non_retryable
    assert missing in caught.value.message
    assert str(repo) in caught.value.message


def test_missing_service_path_is_a_checkout_verdict(repo: Path, tmp_path: Path) -> None:
    head = git(repo, "rev-parse", "HEAD")
    with pytest.raises(ApplicationError) as caught:
        GitSource(tmp_path / "cache").ensure(
            CheckoutRequest(repo=str(repo), commit=head, service_path="services/web")
        )

    assert caught.value.type == ErrorType.CHECKOUT_FAILED
    assert "services/web" in caught.value.message
    assert head in caught.value.message


def test_service_path_cannot_escape_the_checkout(repo: Path, tmp_path: Path) -> None:
    head = git(repo, "rev-parse", "HEAD")
    with pytest.raises(ApplicationError, match="service_path"):
        GitSource(tmp_path / "cache").ensure(
            CheckoutRequest(repo=str(repo), commit=head, service_path="../..")
        )


def test_repository_that_does_not_exist_is_a_checkout_verdict(tmp_path: Path) -> None:
    with pytest.raises(ApplicationError) as caught:
        GitSource(tmp_path / "cache").ensure(
            CheckoutRequest(repo=str(tmp_path / "nowhere"), commit="main")
        )

    assert caught.value.type == ErrorType.CHECKOUT_FAILED
    assert "nowhere" in caught.value.message


def test_a_repository_that_looks_like_an_option_is_never_one(tmp_path: Path) -> None:
    # git would read `--upload-pack=CMD` as an option and run CMD: the repository is made an
    # absolute path first, and `--` ends git's options anyway.
    witness = tmp_path / "ran"
    with pytest.raises(ApplicationError) as caught:
        GitSource(tmp_path / "cache").ensure(
            CheckoutRequest(repo=f"--upload-pack=touch {witness}", commit="main")
        )

    assert caught.value.type == ErrorType.CHECKOUT_FAILED
    assert not witness.exists()
