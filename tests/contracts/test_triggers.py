"""`on.pull_request` and `paths_ignore` in a definition: what a PR runs, what validation
refuses (one sentence naming file, stage and field), how patterns match, and the PR's id."""

from __future__ import annotations

from pathlib import Path

import pytest

from contracts.definition.loading import load_pipeline
from contracts.definition.model import DefinitionError
from contracts.definition.triggers import all_ignored, path_matches, pull_request_stages
from contracts.naming import pipeline_id
from tests.support.pipelines import ROOT

HEAL7 = (ROOT / "pipelines" / "heal7.yaml").read_text(encoding="utf-8")


def definition(tmp_path: Path, extra: str) -> Path:
    path = tmp_path / "pr.yaml"
    path.write_text(HEAL7 + "\n" + extra, encoding="utf-8")
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(DefinitionError) as caught:
        load_pipeline(path)
    return [str(p) for p in caught.value.problems]


def test_on_pull_request_reads_as_github_actions_users_write_it(tmp_path: Path) -> None:
    # A bare `on:` is YAML 1.1's `true`, as in a GitHub Actions workflow: read as `on`.
    path = definition(
        tmp_path, "on:\n  pull_request: {until: quality_gate}\npaths_ignore: [docs/**, '**.md']\n"
    )
    spec = load_pipeline(path)
    assert spec.on is not None
    assert spec.paths_ignore == ["docs/**", "**.md"]
    stages, refused = pull_request_stages(spec.stages, spec.on.pull_request)
    assert stages == [
        "checkout",
        "code_quality",
        "security_scan",
        "unit_tests",
        "integration_tests",
        # The quality gate reads the frontend's suites too: what it needs comes along.
        "frontend_build",
        "frontend_lint",
        "frontend_typecheck",
        "frontend_unit_tests",
        "frontend_component_tests",
        "quality_gate",
    ]
    assert refused == {}
    listed = load_pipeline(definition(tmp_path, "on: {pull_request: {stages: [unit_tests]}}\n"))
    assert listed.on is not None
    assert pull_request_stages(listed.stages, listed.on.pull_request)[0] == [
        "checkout",
        "unit_tests",
    ]


def test_a_pull_request_stage_that_touches_an_environment_is_refused(tmp_path: Path) -> None:
    path = definition(tmp_path, "on:\n  pull_request: {stages: [unit_tests, e2e_dev, nope]}\n")
    found = problems(path)
    field = "field 'on.pull_request.stages'"
    assert f"{path}, {field}: unknown stage 'nope'" in found
    assert (
        f"{path}: stage 'e2e_dev', {field}: a pull-request run never touches an environment or "
        "the registry, and this e2e stage would: it tests a running environment" in found
    )
    assert (
        f"{path}: stage 'deploy_dev', {field}: a pull-request run never touches an environment "
        "or the registry, and this deploy stage would: it deploys to an environment, and "
        "'e2e_dev' (named there) needs it" in found
    )
    assert any("stage 'publish'" in p and "pushes tags to the registry" in p for p in found)
    assert len(found) == 4, found
    # docs/definition.md's example
    until = definition(tmp_path, "on: {pull_request: {until: approve_staging}}\n")
    assert (
        f"{until}: stage 'deploy_dev', field 'on.pull_request.until': a pull-request run never "
        "touches an environment or the registry, and this deploy stage would: it deploys to an "
        "environment, and 'approve_staging' (named there) needs it" in problems(until)
    )
    both = definition(tmp_path, "on: {pull_request: {stages: [build], until: build}}\n")
    (only,) = problems(both)
    assert only == f"{both}, field 'on.pull_request': give 'stages' or 'until', not both"


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("/docs/**", "'/docs/**' must be a path relative to the repository's root, e.g. 'docs/**'"),
        ("docs/../src", "must be a path relative to the repository's root"),
        ("docs/?.md", "'docs/?.md': ? is not supported; patterns take '*'"),
        ("!docs/**", "'!docs/**': ! is not supported"),
    ],
)
def test_a_bad_path_pattern_is_one_sentence(tmp_path: Path, pattern: str, message: str) -> None:
    path = definition(tmp_path, f"paths_ignore: ['{pattern}']\n")
    (found,) = problems(path)
    assert found.startswith(f"{path}, field 'paths_ignore.0': ")
    assert message in found


@pytest.mark.parametrize(
    ("pattern", "path", "matches"),
    [
        ("docs/**", "docs/guide/intro.md", True),
        ("docs/**", "docs", False),
        ("docs/**", "src/docs/a.md", False),
        ("*.md", "README.md", True),
        ("*.md", "docs/README.md", False),  # '*' stays within a directory, as in GitHub's
        ("**.md", "docs/README.md", True),
        ("**/*.md", "README.md", True),  # '**/' also matches no directory
        ("**/*.md", "a/b/c.md", True),
        ("docs/*.png", "docs/img/a.png", False),
        ("LICENSE", "LICENSE", True),
        ("a.b", "axb", False),  # a dot is a dot
    ],
)
def test_patterns_match_whole_paths(pattern: str, path: str, matches: bool) -> None:
    assert path_matches(pattern, path) is matches


def test_a_change_is_ignored_only_when_every_path_is() -> None:
    patterns = ["docs/**", "**.md"]
    assert all_ignored(["docs/a.txt", "README.md"], patterns)
    assert not all_ignored(["docs/a.txt", "app/main.py"], patterns)
    assert not all_ignored([], patterns)  # no change seen: nothing to skip on
    assert not all_ignored(["README.md"], [])


def test_a_pull_request_run_has_an_id_no_branch_run_can_have() -> None:
    sha = "0123456789ab" + "c" * 28
    assert pipeline_id("hello", "feature/x", sha, 42) == "pipeline-hello-0123456789ab-pr-42"
    # A branch named like it still ends in the commit's 12 hex digits.
    assert pipeline_id("hello", "pr-42", sha) == "pipeline-hello-pr-42-0123456789ab"
    assert pipeline_id("hello", "0123456789ab-pr-42", sha).endswith("-0123456789ab")
