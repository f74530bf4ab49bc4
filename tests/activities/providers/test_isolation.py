"""Service work runs in the service's environment: allow-listed variables, its own venv.

Real subprocesses, real venvs and real pip against the machine's configured index. One venv
root is shared by the module, so pytest is installed into a test venv once.
"""

from __future__ import annotations

import sys
import textwrap
import threading
from pathlib import Path

import pytest
from temporalio.exceptions import ApplicationError

from activities.providers.execution.child_env import child_env
from activities.providers.execution.venvs import VenvCache, VenvSpec, python_in
from activities.providers.testing.runner import SubprocessSuiteRunner
from contracts.activity import SuiteRequest
from contracts.errors import ErrorType

SECRETS = {
    "SLIPWAY_CODEC_KEY": "c2VjcmV0LWtleS0xNi1ieXRlcw==",
    "TEMPORAL_API_KEY": "temporal-api-key-value",
    "AWS_SECRET_ACCESS_KEY": "aws-secret-value",
    "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE",
    "AWS_SESSION_TOKEN": "aws-session-token",
    "SLIPWAY_SLACK_WEBHOOK_URL": "https://hooks.slack.example/T000/B000/not-a-real-hook",
    "GOOGLE_APPLICATION_CREDENTIALS": "/root/gcp.json",
}
# A small pure-Python package the worker's own environment does not have.
RUNTIME_DEPENDENCY = "inflection"


@pytest.fixture(scope="module")
def venv_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("venvs")


def write_project(root: Path, *, dependencies: list[str], tests: str, extra: str = "") -> Path:
    (root / "app").mkdir(parents=True)
    (root / "app" / "__init__.py").write_text("GREETING = 'hello'\n")
    (root / "tests").mkdir()
    (root / "tests" / "test_app.py").write_text(textwrap.dedent(tests))
    deps = ", ".join(f'"{d}"' for d in dependencies)
    (root / "pyproject.toml").write_text(
        textwrap.dedent(
            f"""
            [project]
            name = "app"
            version = "1.0"
            dependencies = [{deps}]

            [project.optional-dependencies]
            test = ["pytest>=8"]
            {extra}
            """
        )
    )
    return root


def pytest_request(root: Path, **fields: object) -> SuiteRequest:
    return SuiteRequest(
        path=str(root),
        command=["python", "-m", "pytest", "-q", "-p", "no:cacheprovider", "--junitxml=j.xml"],
        junit="j.xml",
        **fields,
    )


# --- the environment ----------------------------------------------------------------------


def test_child_env_keeps_the_allow_list_and_merges_the_stage_env_last(tmp_path: Path) -> None:
    worker = {
        **SECRETS,
        "PATH": f"{Path(sys.prefix) / 'bin'}:/usr/bin",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "TZ": "UTC",
        "HOME": "/root",
        "PIP_INDEX_URL": "https://index.example/simple",
        "HTTPS_PROXY": "http://proxy:3128",
    }

    env = child_env(
        home=tmp_path,
        extra={"SLIPWAY_PORT": "1234", "LANG": "de_DE"},
        stage_env={"LANG": "fr_FR", "DATABASE_URL": "postgres://db"},
        source=worker,
    )
    installing = child_env(home=tmp_path, install=True, source=worker)

    assert not set(SECRETS) & set(env)
    assert not set(SECRETS) & set(installing)
    assert env["HOME"] == str(tmp_path)
    assert env["PATH"] == "/usr/bin"  # the worker's own venv is not on it
    assert (env["LC_ALL"], env["TZ"], env["SLIPWAY_PORT"]) == ("C.UTF-8", "UTC", "1234")
    assert env["LANG"] == "fr_FR"  # the stage's env wins over everything
    assert env["DATABASE_URL"] == "postgres://db"
    assert "PIP_INDEX_URL" not in env
    assert "HTTPS_PROXY" not in env
    assert installing["PIP_INDEX_URL"] == "https://index.example/simple"
    assert installing["HTTPS_PROXY"] == "http://proxy:3128"


def test_a_test_stage_cannot_see_the_workers_secrets(
    tmp_path: Path, venv_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    names, values = sorted(SECRETS), sorted(SECRETS.values())
    project = write_project(
        tmp_path / "svc",
        dependencies=[],
        tests=f"""
            import os
            from pathlib import Path

            def test_no_worker_secret_is_visible():
                assert [n for n in {names!r} if n in os.environ] == []
                assert not set({values!r}) & set(os.environ.values())

            def test_the_stage_env_is_visible():
                assert os.environ["DATABASE_URL"] == "postgres://127.0.0.1:5432/app"

            def test_home_is_not_the_workers():
                assert os.environ["HOME"] != {str(Path.home())!r}
            """,
    )

    report = SubprocessSuiteRunner(venv_root=venv_root).run(
        pytest_request(project, env={"DATABASE_URL": "postgres://127.0.0.1:5432/app"}),
        lambda _note: None,
    )

    assert (report.tests, report.failures, report.errors) == (3, 0, 0), report


# --- test venvs ---------------------------------------------------------------------------


def test_tests_run_in_a_venv_of_the_services_dependencies_not_the_workers(
    tmp_path: Path, venv_root: Path
) -> None:
    with pytest.raises(ImportError):
        __import__(RUNTIME_DEPENDENCY)  # the premise: the worker lacks it
    project = write_project(
        tmp_path / "svc",
        dependencies=[RUNTIME_DEPENDENCY],
        tests=f"""
            import sys
            import pytest

            def test_its_dependency_is_installed():
                import {RUNTIME_DEPENDENCY}
                assert {RUNTIME_DEPENDENCY}.__file__.startswith(sys.prefix)

            def test_the_workers_packages_are_invisible():
                with pytest.raises(ImportError):
                    import temporalio
                assert sys.prefix != {sys.prefix!r}

            def test_its_own_code_comes_from_the_checkout():
                import app
                assert app.GREETING == "hello"
            """,
    )
    notes: list[str] = []
    runner = SubprocessSuiteRunner(venv_root=venv_root)

    first = runner.run(pytest_request(project), notes.append)
    built = [n for n in notes if n.startswith("creating the venv")]
    notes.clear()
    second = runner.run(pytest_request(project), notes.append)

    assert (first.tests, first.failures, first.errors) == (3, 0, 0), first
    assert built, "the first run builds the venv"
    assert (second.tests, second.failures) == (3, 0)
    assert not [n for n in notes if n.startswith("creating the venv")], "the venv is cached"


def test_requirements_files_and_setup_commands_make_the_venv(
    tmp_path: Path, venv_root: Path
) -> None:
    project = write_project(
        tmp_path / "svc",
        dependencies=["no-such-package-slipway-xyz"],  # not installed: requirements replace it
        tests="""
            import os
            from pathlib import Path

            def test_setup_ran_in_the_venv():
                assert (Path(os.environ["VIRTUAL_ENV"]) / "setup-ran").read_text() == "yes"

            def test_requirements_were_installed():
                import inflection
            """,
    )
    (project / "requirements-dev.txt").write_text("pytest>=8\ninflection\n")

    report = SubprocessSuiteRunner(venv_root=venv_root).run(
        pytest_request(
            project,
            requirements=["requirements-dev.txt"],
            setup=[
                'python -c "import os, pathlib; '
                "pathlib.Path(os.environ['VIRTUAL_ENV'], 'setup-ran').write_text('yes')\""
            ],
        ),
        lambda _note: None,
    )

    assert (report.tests, report.failures, report.errors) == (2, 0, 0), report


def test_a_project_with_dynamic_dependencies_is_installed_itself(
    tmp_path: Path, venv_root: Path
) -> None:
    project = tmp_path / "svc"
    (project / "app").mkdir(parents=True)
    (project / "app" / "__init__.py").write_text("GREETING = 'hello'\n")
    (project / "requirements.txt").write_text(f"{RUNTIME_DEPENDENCY}\n")
    (project / "pyproject.toml").write_text(
        textwrap.dedent(
            """
            [build-system]
            requires = ["setuptools>=61"]
            build-backend = "setuptools.build_meta"

            [project]
            name = "app"
            version = "1.0"
            dynamic = ["dependencies"]

            [project.optional-dependencies]
            test = ["pytest>=8"]

            [tool.setuptools]
            packages = ["app"]

            [tool.setuptools.dynamic]
            dependencies = {file = ["requirements.txt"]}
            """
        )
    )
    (project / "tests").mkdir()
    (project / "tests" / "test_app.py").write_text(
        "import importlib.metadata\n\n\n"
        "def test_installed_with_its_dependencies():\n"
        f"    import {RUNTIME_DEPENDENCY}\n"
        "    assert importlib.metadata.version('app') == '1.0'\n"
    )

    report = SubprocessSuiteRunner(venv_root=venv_root).run(
        pytest_request(project), lambda _note: None
    )

    assert (report.tests, report.failures, report.errors) == (1, 0, 0), report


def test_an_undeclared_extra_is_an_error_naming_it(tmp_path: Path, venv_root: Path) -> None:
    project = write_project(tmp_path / "svc", dependencies=[], tests="def test_x():\n    pass\n")

    with pytest.raises(ApplicationError) as caught:
        SubprocessSuiteRunner(venv_root=venv_root).run(
            pytest_request(project, extras=["docs"]), lambda _note: None
        )

    assert caught.value.type == ErrorType.INVALID_DEFINITION
    assert "'docs'" in caught.value.message
    assert "['test']" in caught.value.message


def test_a_missing_requirements_file_is_an_error_naming_it(tmp_path: Path, venv_root: Path) -> None:
    project = write_project(tmp_path / "svc", dependencies=[], tests="def test_x():\n    pass\n")

    with pytest.raises(ApplicationError) as caught:
        SubprocessSuiteRunner(venv_root=venv_root).run(
            pytest_request(project, requirements=["reqs/dev.txt"]), lambda _note: None
        )

    assert caught.value.type == ErrorType.INVALID_DEFINITION
    assert "`requirements`" in caught.value.message
    assert "reqs/dev.txt" in caught.value.message


def test_a_dependency_the_index_lacks_fails_the_stage_with_pips_words(
    tmp_path: Path, venv_root: Path
) -> None:
    project = write_project(
        tmp_path / "svc",
        dependencies=["no-such-package-slipway-xyz"],
        tests="def test_x():\n    pass\n",
    )

    with pytest.raises(ApplicationError) as caught:
        SubprocessSuiteRunner(venv_root=venv_root).run(pytest_request(project), lambda _n: None)

    assert caught.value.type == ErrorType.GATE_FAILED
    assert "no-such-package-slipway-xyz" in caught.value.message
    published = {link.resolve() for link in venv_root.iterdir() if link.is_symlink()}
    built = {path.resolve() for path in venv_root.glob("v-*")}
    assert built <= published, "a failed build leaves no venv behind"


# --- the venv cache -----------------------------------------------------------------------


def test_two_activities_asking_for_the_same_venv_build_it_once(tmp_path: Path) -> None:
    cache = VenvCache(tmp_path / "venvs")
    spec = VenvSpec(label="both", setup=("sleep 0.5",))
    notes: list[str] = []
    results: list[Path] = []

    def ask() -> None:
        results.append(cache.ensure(spec, notes.append))

    threads = [threading.Thread(target=ask) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(results) == 2
    assert results[0] == results[1]
    assert python_in(results[0]).exists()
    assert len([n for n in notes if n.startswith("creating the venv")]) == 1
    assert any(n.startswith("waiting") for n in notes)


def test_a_build_that_crashed_midway_is_never_used(tmp_path: Path) -> None:
    cache = VenvCache(tmp_path / "venvs")
    spec = VenvSpec(label="crashy")
    # What a worker killed mid-build leaves: a directory the `<key>` link never pointed to.
    half = cache.root / f"v-{spec.key()}-deadbeef"
    (half / "bin").mkdir(parents=True)

    venv = cache.ensure(spec, lambda _note: None)

    assert venv.resolve() != half.resolve()
    assert python_in(venv).exists()
    assert not half.exists(), "the half-built venv was removed"


def test_a_bare_tool_name_runs_the_venvs_console_script(tmp_path: Path, venv_root: Path) -> None:
    project = write_project(
        tmp_path / "svc",
        dependencies=[],
        tests=f"""
            import importlib.util
            import sys

            def test_runs_in_the_services_venv():
                assert sys.prefix != {sys.prefix!r}
                assert importlib.util.find_spec("temporalio") is None
            """,
    )
    request = SuiteRequest(
        path=str(project), command=["pytest", "-q", "--junitxml=j.xml"], junit="j.xml"
    )

    report = SubprocessSuiteRunner(venv_root=venv_root).run(request, lambda _note: None)

    assert (report.tests, report.failures, report.errors) == (1, 0, 0), report
