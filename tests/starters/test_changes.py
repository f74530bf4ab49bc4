"""`paths_ignore` as `slipway start` reads it, in real git repositories: a commit against
its parent, a pull request against its base (from their merge base, as GitHub's "Files
changed"), renames, and clones that cannot tell (the run then starts)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from demo.localstack import git, make_service_repo
from starters.changes import NO_COMMIT, changed_paths, ignored_change

PATTERNS = ["docs/**", "**.md"]


def write(repo: Path, path: str, text: str) -> None:
    (repo / path).parent.mkdir(parents=True, exist_ok=True)
    (repo / path).write_text(text, encoding="utf-8")


def commit(repo: Path, message: str) -> str:
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


def test_a_docs_only_commit_is_skipped_and_a_code_commit_is_not(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    first = make_service_repo(repo)
    write(repo, "docs/guide.md", "# guide\n")
    write(repo, "README.md", "hello\n")
    docs = commit(repo, "docs")
    skip, why = ignored_change(PATTERNS, repo, docs)
    assert skip
    assert why == (
        f"only ignored paths changed (2 files since {first[:12]}: README.md, docs/guide.md; "
        "paths_ignore **.md, docs/**)"
    )
    write(repo, "hello_service/extra.py", "X = 1\n")
    write(repo, "docs/more.md", "more\n")
    code = commit(repo, "code and docs")
    assert ignored_change(PATTERNS, repo, code) == (False, "")
    # GitHub's `before` of a new branch is no base: the parent counts.
    assert ignored_change(PATTERNS, repo, docs, NO_COMMIT)[0]


def test_a_rename_out_of_an_ignored_directory_is_a_change(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    make_service_repo(repo)
    write(repo, "docs/notes.py", "NOTES = 1\n")
    commit(repo, "notes")
    git(repo, "mv", "docs/notes.py", "hello_service/notes.py")
    moved = commit(repo, "move notes into the service")
    assert changed_paths(repo, moved).paths == ["docs/notes.py", "hello_service/notes.py"]
    assert ignored_change(PATTERNS, repo, moved) == (False, "")


def test_a_pull_request_is_compared_from_its_merge_base(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    make_service_repo(repo)
    git(repo, "checkout", "-q", "-b", "feature/docs")
    write(repo, "docs/intro.md", "intro\n")
    head = commit(repo, "docs on the PR")
    git(repo, "checkout", "-q", "main")
    write(repo, "hello_service/later.py", "LATER = 1\n")
    base = commit(repo, "main moved on with code")
    # Against the base's tip, the code on main would count; from the merge base it does not.
    skip, why = ignored_change(PATTERNS, repo, head, base)
    assert skip, why
    assert f"1 file since {base[:12]}: docs/intro.md" in why


def test_a_clone_that_cannot_tell_starts_the_run(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    make_service_repo(repo)
    write(repo, "docs/a.md", "a\n")
    docs = commit(repo, "docs")
    missing = "f" * 40
    skip, why = ignored_change(PATTERNS, repo, docs, missing)
    assert not skip
    assert why == (
        f"paths_ignore not applied: base ffffffffffff is not in {repo} (fetch it, e.g. "
        "actions/checkout's fetch-depth: 0)"
    )
    skip, why = ignored_change(PATTERNS, repo, missing)
    assert (skip, why.split(" is not in")[0]) == (
        False,
        "paths_ignore not applied: commit ffffffffffff",
    )
    # actions/checkout's default: one commit, no parent to compare with.
    shallow = tmp_path / "shallow"
    subprocess.run(
        ["git", "clone", "-q", "--depth", "1", f"file://{repo}", str(shallow)], check=True
    )
    skip, why = ignored_change(PATTERNS, shallow, docs)
    assert not skip
    assert why == (
        f"paths_ignore not applied: {shallow} is a shallow clone without {docs[:12]}'s parent"
    )
    skip, why = ignored_change(PATTERNS, tmp_path / "nowhere", docs)
    assert not skip
    assert why.startswith("paths_ignore not applied: commit")
