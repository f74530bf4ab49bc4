"""The sandbox every untrusted step runs in: a real bwrap, real pytest, real pip.

The probe is what the breach of issue 16 ran, as a test stage of a real pytest project: it
reads every `/proc/*/environ` it can and tries to write into the shared checkout, the venv
cache, the worker's state directory and the worker's HOME. A process of the worker's user
holding its secrets in its environment runs beside it.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from temporalio.exceptions import ApplicationError

from activities.providers.execution import sandbox as sandboxes
from activities.providers.execution.sandbox import Sandbox
from activities.providers.execution.venvs import VenvCache, VenvSpec, python_in
from activities.providers.scanners.scanner_process import run_scanner
from activities.providers.testing.command_runner import SubprocessCommandRunner
from activities.providers.testing.runner import SubprocessSuiteRunner
from contracts.activity import CommandRequest, SuiteRequest
from contracts.errors import ErrorType
from plumbing.worker_policy import PolicyError, load_policy
from tests.activities.providers.test_isolation import SECRETS, write_project
from tests.support.sandbox import require_sandbox


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    working = require_sandbox()
    previous = sandboxes.use(working)
    try:
        yield working
    finally:
        sandboxes.use(previous)


@pytest.fixture
def worker_secrets(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """The secrets in this process's environment, and a process of the worker's user that
    was started with them (its /proc/<pid>/environ holds them); yields its pid."""
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    holder = subprocess.Popen(["sleep", "300"], env={**os.environ})
    try:
        yield holder.pid
    finally:
        holder.kill()
        holder.wait()


PROBE = """
    import glob
    import os
    import sys
    from pathlib import Path

    import pytest

    SECRET_VALUES = {secrets!r}
    WORKER_PIDS = {pids!r}
    TARGETS = {targets!r}


    def test_no_environ_holds_a_worker_secret():
        read = 0
        for path in glob.glob("/proc/*/environ"):
            try:
                data = Path(path).read_bytes().decode(errors="replace")
            except OSError:
                continue
            read += 1
            assert not [v for v in SECRET_VALUES if v in data], path
        assert read >= 1  # it could read its own: the probe really looked


    def test_the_workers_processes_are_not_there():
        assert [p for p in WORKER_PIDS if os.path.exists(f"/proc/{{p}}")] == []
        assert os.getpid() < 10  # its own pid namespace


    def test_it_runs_as_another_uid():
        assert {root!r} is False or os.getuid() == 65534


    @pytest.mark.parametrize("target", TARGETS)
    def test_it_cannot_write(target):
        with pytest.raises(OSError):
            Path(target).mkdir(parents=True, exist_ok=True)
            (Path(target) / "planted.pth").write_text("import os\\n")


    def test_it_cannot_write_into_its_venv():
        with pytest.raises(OSError):
            (Path(sys.prefix) / "lib" / "planted.pth").write_text("import os\\n")


    def test_its_own_copy_is_writable():
        Path("written-by-the-probe").write_text("only in this run's copy")
"""


def test_a_probe_test_stage_finds_no_secret_and_writes_nowhere(
    tmp_path: Path, sandbox: Sandbox, worker_secrets: int
) -> None:
    state = tmp_path / "state"
    venv_root = state / "venvs"
    checkout = state / "git" / "checkouts" / ("a" * 40)
    build_envs = state / "build-envs"
    build_envs.mkdir(parents=True)
    targets = [
        str(checkout.parent),  # the directory above its checkout: other shas' checkouts
        str(venv_root),
        str(build_envs),
        str(state),
        str(state / "platform" / "venvs"),
        str(Path.home()),
        str(Path.home() / ".config" / "pip"),
    ]
    write_project(
        checkout,
        dependencies=[],
        tests=PROBE.format(
            secrets=sorted(v for v in SECRETS.values() if len(v) > 8),
            pids=[os.getpid(), worker_secrets],
            targets=targets,
            root=os.geteuid() == 0,
        ),
    )
    shared_files = sorted(p.relative_to(checkout) for p in checkout.rglob("*"))

    report = SubprocessSuiteRunner(venv_root=venv_root).run(
        SuiteRequest(
            path=str(checkout),
            command=["python", "-m", "pytest", "-q", "-p", "no:cacheprovider", "--junitxml=j.xml"],
            junit="j.xml",
        ),
        lambda _note: None,
    )

    assert report.failed_tests == [], report
    assert (report.tests, report.failures, report.errors) == (5 + len(targets), 0, 0)
    # The shared checkout is as it was: the probe wrote into its own copy, and the report too.
    assert sorted(p.relative_to(checkout) for p in checkout.rglob("*")) == shared_files
    assert not list(state.rglob("planted.pth"))
    assert not (Path.home() / "planted.pth").exists()


def test_a_cached_venv_changed_behind_the_workers_back_is_rebuilt(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    cache = VenvCache(tmp_path / "venvs")
    spec = VenvSpec(label="tampered")
    venv = cache.ensure(spec, lambda _note: None)
    built = venv.resolve()
    site = next((built / "lib").glob("python*/site-packages"))
    assert cache.ensure(spec, lambda _note: None).resolve() == built  # intact: reused

    (site / "planted.pth").write_text("import os; os.system('curl evil')\n")
    notes: list[str] = []
    again = cache.ensure(spec, notes.append)

    assert again.resolve() != built
    assert not built.exists(), "the tampered venv is gone"
    assert not list(again.resolve().rglob("planted.pth"))
    assert [n for n in notes if "does not match the hash recorded" in n]
    assert python_in(again).exists()


def test_a_venv_without_a_recorded_hash_is_not_trusted(tmp_path: Path, sandbox: Sandbox) -> None:
    cache = VenvCache(tmp_path / "venvs")
    spec = VenvSpec(label="old")
    built = cache.ensure(spec, lambda _note: None).resolve()
    (cache.root / f"{spec.key()}.manifest").unlink()  # what a worker before hashes left

    assert cache.ensure(spec, lambda _note: None).resolve() != built


def test_a_venv_install_writes_only_its_venv(tmp_path: Path, sandbox: Sandbox) -> None:
    """A setup command (the stage's, or a package's build code) cannot reach past the venv."""
    cache = VenvCache(tmp_path / "venvs")
    outside = tmp_path / "venvs" / "planted"
    spec = VenvSpec(
        label="greedy",
        setup=(f'touch {outside} || echo refused > "$VIRTUAL_ENV/refused"',),
    )

    venv = cache.ensure(spec, lambda _note: None)

    assert not outside.exists()
    assert (venv / "refused").read_text().strip() == "refused"


def test_a_command_stage_writes_its_copy_and_the_output_comes_back(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    service = tmp_path / "checkouts" / "sha" / "svc"
    service.mkdir(parents=True)
    (service / "package.json").write_text("{}\n")
    script = (
        "mkdir -p dist && echo built > dist/index.html && ln -s /etc/passwd dist/link"
        f" && (touch {tmp_path}/checkouts/planted || true) && id -u > dist/uid"
    )

    report = SubprocessCommandRunner(cache_root=tmp_path / "cache").run(
        CommandRequest(path=str(service), command=["sh", "-c", script]), lambda _n: None
    )

    assert report.exit_code == 0, report.output_tail
    assert (service / "dist" / "index.html").read_text() == "built\n"
    assert os.readlink(service / "dist" / "link") == "/etc/passwd"  # a link, not a copy
    assert not (tmp_path / "checkouts" / "planted").exists()
    if os.geteuid() == 0:
        assert (service / "dist" / "uid").read_text().strip() == "65534"
        assert (service / "dist" / "index.html").stat().st_uid == 0  # the worker's now


def test_scanners_run_sandboxed_on_a_copy(tmp_path: Path, sandbox: Sandbox) -> None:
    source = tmp_path / "svc"
    source.mkdir()
    (source / "app.py").write_text("x = 1\n")

    run = run_scanner(
        ["sh", "-c", "id -u; echo $$; ls; touch app.py.scanned && echo wrote"],
        source,
        30,
    )

    lines = run.stdout.split()
    assert run.exit_code == 0, run.stderr
    assert lines[0] == ("65534" if os.geteuid() == 0 else str(os.getuid()))
    assert int(lines[1]) < 10  # its own pid namespace
    assert "app.py" in lines
    assert not (source / "app.py.scanned").exists()


# --- where there is no sandbox ------------------------------------------------------------


def test_without_bwrap_untrusted_steps_are_refused_with_a_sentence(tmp_path: Path) -> None:
    missing = Sandbox("required", bwrap=str(tmp_path / "no-bwrap"))
    previous = sandboxes.use(missing)
    try:
        project = write_project(tmp_path / "svc", dependencies=[], tests="def test_x(): pass\n")
        with pytest.raises(ApplicationError) as caught:
            SubprocessSuiteRunner(venv_root=tmp_path / "venvs").run(
                SuiteRequest(path=str(project), command=["python", "-V"], junit="j.xml"),
                lambda _n: None,
            )
    finally:
        sandboxes.use(previous)

    assert caught.value.type == ErrorType.CONFIGURATION
    assert caught.value.non_retryable
    assert "sandbox" in caught.value.message
    assert "`sandbox: off`" in caught.value.message
    assert not (tmp_path / "venvs").exists(), "nothing was installed for a refused stage"
    assert "will be refused" in missing.describe()


def test_the_policy_can_turn_the_sandbox_off_and_the_worker_says_so(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("sandbox: off\n")
    assert load_policy(policy).policy.sandbox == "off"
    assert load_policy(Path("pipelines/policy.yaml")).policy.sandbox == "required"
    policy.write_text("sandbox: sometimes\n")
    with pytest.raises(PolicyError, match="sandbox"):
        load_policy(policy)

    off = Sandbox("off")
    assert not off.active
    assert "unsandboxed" in off.describe()
    project = write_project(tmp_path / "svc", dependencies=[], tests="")
    previous = sandboxes.use(off)
    try:
        report = SubprocessCommandRunner(cache_root=tmp_path / "cache").run(
            CommandRequest(path=str(project), command=["sh", "-c", "id -u > uid"]),
            lambda _n: None,
        )
    finally:
        sandboxes.use(previous)
    assert report.exit_code == 0
    assert (project / "uid").read_text().strip() == str(os.getuid())


def test_the_workers_start_line_names_the_sandbox(sandbox: Sandbox) -> None:
    said = sandbox.describe()
    assert said.startswith("sandbox: bwrap")
    assert "\n" not in said
    assert ("uid 65534" in said) == (os.geteuid() == 0)
