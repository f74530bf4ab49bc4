"""Scanners run as subprocesses (or over HTTP for SonarQube), their JSON parsed into findings.

Every scanner either reports what it found or says plainly that it could not run
(`available=False` with a reason): a missing binary, an unreachable data source or output that
cannot be parsed is never an empty, passing report.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
import tempfile
import time
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

from activities.providers.scanners.complexity import LizardScanner
from activities.providers.scanners.scanner_process import (
    ScannerUnavailableError,
    find_binary,
    json_output,
    last_line,
    missing_report,
    run_scanner,
    unavailable_report,
)
from activities.providers.scanners.trivy_report import parse_trivy
from activities.wiring.backends import Scanner
from activities.wiring.tls import verifying_context
from contracts.activity import Finding, ScannerReport, Severity

__all__ = [
    "SECRETS_BASELINE",
    "BanditScanner",
    "DetectSecretsScanner",
    "HadolintScanner",
    "LizardScanner",
    "PipAuditScanner",
    "SonarQubeGate",
    "TrivyScanner",
    "baseline_secrets",
    "default_scanners",
    "find_binary",
    "parse_bandit",
    "parse_detect_secrets",
    "parse_hadolint",
    "parse_pip_audit",
    "parse_trivy",
]

# Directories that are not the service's own source: virtualenvs, caches, build output.
_NOT_SOURCE = (".git", ".venv", "venv", "node_modules", "__pycache__", "build", "dist", ".tox")


def _ready(
    name: str, path: str, hint: str, binary: Path | None = None
) -> tuple[Path, Path] | ScannerReport:
    """The scanned directory and the scanner's binary (`binary`, else the one named `name`),
    or the unavailable report that says which of the two is missing."""
    root = Path(path)
    if (bad := _not_a_dir(name, root)) is not None:
        return bad
    found = binary or find_binary(name)
    if found is None:
        return missing_report(name, hint)
    return root, found


def _not_a_dir(name: str, path: Path) -> ScannerReport | None:
    if path.is_dir():
        return None
    return unavailable_report(name, f"{path} is not a directory: nothing was scanned")


# --- bandit -------------------------------------------------------------------------------

_BANDIT_SEVERITY = {"HIGH": Severity.HIGH, "MEDIUM": Severity.MEDIUM, "LOW": Severity.LOW}


def parse_bandit(report: Mapping[str, Any]) -> list[Finding]:
    """Findings of a `bandit -f json` report. Files bandit could not parse are INFO findings:
    visible in the report rather than silently unscanned."""
    findings = [
        Finding(
            scanner="bandit",
            rule=str(r.get("test_id", "?")),
            severity=_BANDIT_SEVERITY.get(str(r.get("issue_severity", "")).upper(), Severity.INFO),
            message=f"{r.get('issue_text', '')} (confidence {r.get('issue_confidence', '?')})",
            location=f"{_relative(str(r.get('filename', '')))}:{r.get('line_number', 0)}",
        )
        for r in report.get("results", [])
    ]
    findings += [
        Finding(
            scanner="bandit",
            rule="not-scanned",
            severity=Severity.INFO,
            message=f"bandit could not scan this file: {e.get('reason', '?')}",
            location=_relative(str(e.get("filename", ""))),
        )
        for e in report.get("errors", [])
    ]
    return findings


def _relative(filename: str) -> str:
    return filename.removeprefix("./")


class BanditScanner:
    """Python security linter: `bandit -r . -f json`, HIGH/MEDIUM/LOW kept as they are.
    `# nosec` and `# nosec B602` comments are honoured (bandit's default: `--ignore-nosec` is
    never passed); a stage's `skip:` list removes whole tests."""

    name = "bandit"

    def __init__(self, timeout_s: float = 300.0) -> None:
        self._timeout_s = timeout_s

    def scan(self, path: str) -> ScannerReport:
        ready = _ready(self.name, path, "pip install bandit")
        if isinstance(ready, ScannerReport):
            return ready
        root, binary = ready
        excluded = ",".join(f"./{d}" for d in _NOT_SOURCE)
        try:
            run = run_scanner(
                [str(binary), "-r", ".", "-f", "json", "-q", "-x", excluded], root, self._timeout_s
            )
            # bandit exits 1 when it found issues; anything else without JSON is a failure.
            report = json_output(run, "bandit")
        except ScannerUnavailableError as exc:
            return unavailable_report(self.name, exc)
        return ScannerReport(scanner=self.name, findings=parse_bandit(report))


# --- pip-audit ----------------------------------------------------------------------------

_PINNED = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(\[[^\]]*\])?\s*===?\s*[^\s;,*]+\s*(;.*)?$")
_NETWORK_TROUBLE = re.compile(
    r"ConnectionError|ProxyError|NewConnectionError|Max retries exceeded|"
    r"Temporary failure in name resolution|Name or service not known|timed out|"
    r"Connection refused|Network is unreachable|SSLError",
    re.IGNORECASE,
)


def parse_pip_audit(report: Mapping[str, Any]) -> tuple[list[Finding], list[str]]:
    """Findings of a `pip-audit -f json` report, and the dependencies it could not audit.

    pip-audit's services give no severity, so a known vulnerability counts as HIGH: the
    dependency has a published advisory (usually with a fixed version) and should be upgraded.
    """
    findings: list[Finding] = []
    skipped: list[str] = []
    for dep in report.get("dependencies", []):
        name, version = dep.get("name", "?"), dep.get("version", "?")
        if dep.get("skip_reason"):
            skipped.append(f"{name}: {dep['skip_reason']}")
            continue
        for vuln in dep.get("vulns", []):
            fixes = ", ".join(vuln.get("fix_versions", [])) or "none yet"
            aliases = ", ".join(vuln.get("aliases", []))
            message = f"{name} {version} is vulnerable (fixed in: {fixes})"
            if aliases:
                message += f" [{aliases}]"
            description = str(vuln.get("description") or "").strip()
            if description:
                message += f": {description[:200]}"
            findings.append(
                Finding(
                    scanner="pip-audit",
                    rule=str(vuln.get("id", "?")),
                    severity=Severity.HIGH,
                    message=message,
                    location=f"{name}=={version}",
                )
            )
    return findings, skipped


class PipAuditScanner:
    """Known vulnerabilities in the service's dependencies, from `requirements.txt` (or the
    project's `pyproject.toml`), checked against pip-audit's vulnerability service.

    pip-audit only ever sees exact pins (`--no-deps --disable-pip`). Pinned requirements are
    audited as written. Anything else (ranges, a pyproject's dependencies) is first resolved
    by the worker's own pip (`pip install --dry-run --ignore-installed --report`), the same
    resolution pip-audit would do, but without the throwaway virtualenv pip-audit builds for it
    (ensurepip, then `pip install --upgrade pip wheel setuptools` from the index): 7-15 s of a
    scan of one requirement. Without pip in the worker's interpreter pip-audit resolves itself.
    When the package index or the vulnerability service cannot be reached the report is
    unavailable. `env` is merged over the allow-listed environment (`child_env`).
    """

    name = "pip-audit"

    def __init__(
        self,
        timeout_s: float = 120.0,
        network_timeout_s: float = 5.0,
        service: str = "pypi",
        cache_dir: Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self._timeout_s = timeout_s
        self._network_timeout_s = network_timeout_s
        self._service = service
        self._cache_dir = cache_dir
        self._env = dict(env or {})

    def scan(self, path: str) -> ScannerReport:
        ready = _ready(self.name, path, "pip install pip-audit")
        if isinstance(ready, ScannerReport):
            return ready
        root, binary = ready
        deadline = time.monotonic() + self._timeout_s
        requirements = root / "requirements.txt"
        pyproject = root / "pyproject.toml"
        with tempfile.TemporaryDirectory(prefix="slipway-pip-audit-") as tmp:
            try:
                if requirements.is_file():
                    if _all_pinned(requirements):
                        source = ["-r", requirements.name, "--no-deps", "--disable-pip"]
                    else:
                        source = self._resolved(root, requirements, Path(tmp), deadline)
                elif pyproject.is_file():
                    dependencies = _pyproject_dependencies(pyproject)
                    if not dependencies:
                        return ScannerReport(scanner=self.name)  # nothing to depend on
                    listed = Path(tmp) / "pyproject-dependencies.txt"
                    listed.write_text("\n".join(dependencies) + "\n", encoding="utf-8")
                    source = self._resolved(root, listed, Path(tmp), deadline)
                else:
                    return unavailable_report(
                        self.name,
                        f"no requirements.txt or pyproject.toml in {root}: nothing says which "
                        "dependencies to audit",
                    )
                report = self._audit(binary, source, root, Path(tmp), deadline)
            except ScannerUnavailableError as exc:
                return unavailable_report(self.name, exc)
        findings, skipped = parse_pip_audit(report)
        if skipped:
            # Some dependencies were not checked at all: saying "no findings" would be a lie.
            return ScannerReport(
                scanner=self.name,
                available=False,
                reason=f"pip-audit could not audit {len(skipped)} dependencies: "
                + "; ".join(skipped[:5]),
                findings=findings,
            )
        return ScannerReport(scanner=self.name, findings=findings)

    def _network_timeout(self) -> str:
        return f"{max(1, round(self._network_timeout_s))}"

    def _audit(
        self, binary: Path, source: Sequence[str], root: Path, tmp: Path, deadline: float
    ) -> Any:
        argv = [
            str(binary),
            "-f",
            "json",
            "--progress-spinner",
            "off",
            "--timeout",
            self._network_timeout(),
            "-s",
            self._service,
        ]
        if self._cache_dir is not None:
            argv += ["--cache-dir", str(self._cache_dir)]
        writable = [tmp, *([self._cache_dir] if self._cache_dir is not None else [])]
        run = run_scanner([*argv, *source], root, _left(deadline), self._env, writable=writable)
        if _NETWORK_TROUBLE.search(run.stderr) and not run.stdout.strip():
            raise ScannerUnavailableError(
                f"pip-audit could not reach its vulnerability service ({self._service}): "
                f"{last_line(run.stderr)}"
            )
        return json_output(run, "pip-audit")  # exit 1 with JSON means vulnerabilities found

    def _resolved(self, root: Path, listed: Path, tmp: Path, deadline: float) -> list[str]:
        """pip-audit arguments auditing the exact versions `listed` resolves to (with their
        dependencies), or, without pip beside this interpreter, pip-audit's own resolution."""
        if importlib.util.find_spec("pip") is None:
            return ["-r", str(listed.absolute())]
        report_file = tmp / "resolution.json"
        argv = [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--dry-run",
            "--ignore-installed",
            "--no-input",
            "--disable-pip-version-check",
            "--quiet",
            "--timeout",
            self._network_timeout(),
            "--report",
            str(report_file),
            "-r",
            str(listed.absolute()),  # pip runs in `root`, which may itself be relative
        ]
        shown = listed.name if listed.parent == root else "the pyproject's dependencies"
        try:
            run = run_scanner(argv, root, _left(deadline), self._env, writable=[tmp])
        except ScannerUnavailableError as exc:
            raise ScannerUnavailableError(f"resolving {shown} with pip: {exc}") from exc
        if run.exit_code != 0 or not report_file.is_file():
            trouble = (
                "could not reach the package index"
                if _NETWORK_TROUBLE.search(run.stderr)
                else "failed"
            )
            raise ScannerUnavailableError(
                f"pip-audit needs exact versions, and resolving {shown} with pip {trouble} "
                f"(exit {run.exit_code}): {last_line(run.stderr)}"
            )
        try:
            installs = json.loads(report_file.read_text(encoding="utf-8"))["install"]
            pins = sorted(
                f"{item['metadata']['name']}=={item['metadata']['version']}" for item in installs
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise ScannerUnavailableError(
                f"pip's resolution report of {shown} is unreadable"
            ) from exc
        pinned = tmp / "resolved-requirements.txt"
        pinned.write_text("".join(f"{pin}\n" for pin in pins), encoding="utf-8")
        return ["-r", str(pinned), "--no-deps", "--disable-pip"]


def _left(deadline: float) -> float:
    """Seconds left before `deadline`; at least one, so the last step still gets to start."""
    return max(1.0, deadline - time.monotonic())


def _pyproject_dependencies(pyproject: Path) -> list[str]:
    """`[project].dependencies` of a pyproject.toml, as pip-audit reads them."""
    try:
        data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ScannerUnavailableError(f"{pyproject.name} cannot be read: {exc}") from exc
    project = data.get("project")
    if not isinstance(project, dict):
        raise ScannerUnavailableError(
            f"{pyproject.name} has no [project] table: nothing says which dependencies to audit"
        )
    dependencies = project.get("dependencies") or []
    if not isinstance(dependencies, list) or not all(isinstance(d, str) for d in dependencies):
        raise ScannerUnavailableError(f"{pyproject.name}: [project].dependencies is not a list")
    return [str(d) for d in dependencies]


def _all_pinned(requirements: Path) -> bool:
    lines = [
        line.split(" #", 1)[0].strip()
        for line in requirements.read_text(errors="replace").splitlines()
    ]
    lines = [line for line in lines if line and not line.startswith("#")]
    return all(_PINNED.match(line) for line in lines)


# --- detect-secrets -----------------------------------------------------------------------


SECRETS_BASELINE = ".secrets.baseline"
"""detect-secrets' own name for the file of secrets a team has reviewed and accepted."""

_SecretKey = tuple[str, str, str]


def parse_detect_secrets(
    report: Mapping[str, Any], accepted: frozenset[_SecretKey] = frozenset()
) -> list[Finding]:
    """Findings of a `detect-secrets scan` baseline, less the `accepted` ones (see
    `baseline_secrets`). Every possible secret is HIGH: a secret in the repository must be
    rotated, whatever its kind. The secret itself is never repeated."""
    return [
        Finding(
            scanner="detect-secrets",
            rule=str(secret.get("type", "?")),
            severity=Severity.HIGH,
            message=f"possible secret ({secret.get('type', '?')}) committed to the repository",
            location=f"{secret.get('filename', filename)}:{secret.get('line_number', 0)}",
        )
        for filename, secrets in sorted(report.get("results", {}).items())
        for secret in secrets
        if _secret_key(filename, secret) not in accepted
    ]


def _secret_key(filename: str, secret: Mapping[str, Any]) -> _SecretKey:
    # What detect-secrets itself compares secrets by: file, kind and the secret's hash (the
    # line number is left out, so an accepted secret stays accepted when lines move).
    return (
        str(secret.get("filename", filename)),
        str(secret.get("type", "")),
        str(secret.get("hashed_secret", "")),
    )


def baseline_secrets(baseline: Mapping[str, Any]) -> frozenset[_SecretKey]:
    """The secrets a `.secrets.baseline` accepts. An entry audited as a real secret
    (`detect-secrets audit` recorded `is_secret: true`) is not accepted: the audit said to
    rotate it, and it keeps failing the gate until it is gone."""
    results = baseline.get("results")
    if not isinstance(results, Mapping):
        raise ValueError("it has no 'results' object")
    return frozenset(
        _secret_key(str(filename), secret)
        for filename, secrets in results.items()
        if isinstance(secrets, list)
        for secret in secrets
        if isinstance(secret, Mapping) and secret.get("is_secret") is not True
    )


def _read_baseline(root: Path) -> frozenset[_SecretKey]:
    path = root / SECRETS_BASELINE
    if not path.is_file():
        return frozenset()
    try:
        return baseline_secrets(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        # Fail closed: a broken baseline must not turn into "accept nothing" silently either.
        raise ScannerUnavailableError(
            f"{SECRETS_BASELINE} in {root} is not a detect-secrets baseline ({exc}): "
            "regenerate it with `detect-secrets scan > .secrets.baseline`"
        ) from exc


class DetectSecretsScanner:
    """Secrets committed to the tree: `detect-secrets scan --all-files`. Secrets recorded in
    the service's `.secrets.baseline` are accepted (counted in `accepted`), as detect-secrets'
    own pre-commit hook accepts them; the baseline file itself is not scanned."""

    name = "detect-secrets"

    def __init__(self, timeout_s: float = 300.0) -> None:
        self._timeout_s = timeout_s

    def scan(self, path: str) -> ScannerReport:
        ready = _ready(self.name, path, "pip install detect-secrets")
        if isinstance(ready, ScannerReport):
            return ready
        root, binary = ready
        # --all-files: without it detect-secrets scans only git-tracked files, and finds
        # nothing at all outside a git repository.
        exclude = r"(^|/)(" + "|".join(re.escape(d) for d in _NOT_SOURCE) + r")(/|$)"
        exclude += rf"|^{re.escape(SECRETS_BASELINE)}$"
        argv = [str(binary), "scan", "--all-files", "--exclude-files", exclude, "."]
        try:
            accepted = _read_baseline(root)
            report = json_output(run_scanner(argv, root, self._timeout_s), "detect-secrets")
        except ScannerUnavailableError as exc:
            return unavailable_report(self.name, exc)
        everything = parse_detect_secrets(report)
        findings = parse_detect_secrets(report, accepted)
        return ScannerReport(
            scanner=self.name, findings=findings, accepted=len(everything) - len(findings)
        )


# --- hadolint -----------------------------------------------------------------------------

_HADOLINT_LEVEL = {
    "error": Severity.HIGH,
    "warning": Severity.MEDIUM,
    "info": Severity.LOW,
    "style": Severity.INFO,
}


def parse_hadolint(report: Sequence[Mapping[str, Any]]) -> list[Finding]:
    """Findings of `hadolint -f json`: error→HIGH, warning→MEDIUM, info→LOW, style→INFO."""
    return [
        Finding(
            scanner="hadolint",
            rule=str(item.get("code", "?")),
            severity=_HADOLINT_LEVEL.get(str(item.get("level", "")).lower(), Severity.INFO),
            message=str(item.get("message", "")),
            location=f"{Path(str(item.get('file', 'Dockerfile'))).name}:{item.get('line', 0)}",
        )
        for item in report
    ]


class HadolintScanner:
    """Dockerfile linter. Runs only when the service has a Dockerfile; without one there is
    nothing to lint and the report is available and empty."""

    name = "hadolint"

    def __init__(self, binary: Path | None = None, timeout_s: float = 120.0) -> None:
        self._binary = binary
        self._timeout_s = timeout_s

    def scan(self, path: str) -> ScannerReport:
        root = Path(path)
        if (bad := _not_a_dir(self.name, root)) is not None:
            return bad
        dockerfiles = sorted(
            p.name for p in root.iterdir() if p.is_file() and _is_dockerfile(p.name)
        )
        if not dockerfiles:
            return ScannerReport(scanner=self.name)
        binary = self._binary or find_binary("hadolint")
        if binary is None:
            return missing_report(
                self.name,
                f"{', '.join(dockerfiles)} not linted; install the hadolint binary on the "
                "worker's PATH",
            )
        findings: list[Finding] = []
        for dockerfile in dockerfiles:
            try:
                run = run_scanner([str(binary), "-f", "json", dockerfile], root, self._timeout_s)
                findings += parse_hadolint(json_output(run, "hadolint"))
            except ScannerUnavailableError as exc:
                return unavailable_report(self.name, exc)
        return ScannerReport(scanner=self.name, findings=findings)


def _is_dockerfile(name: str) -> bool:
    return name == "Dockerfile" or name.startswith("Dockerfile.") or name.endswith(".Dockerfile")


# --- trivy --------------------------------------------------------------------------------


class TrivyScanner:
    """Vulnerabilities, misconfigurations and secrets of a directory: `trivy fs -f json`.
    Trivy needs its vulnerability database; when it cannot get it the report is unavailable."""

    name = "trivy"

    def __init__(self, binary: Path | None = None, timeout_s: float = 600.0) -> None:
        self._binary = binary
        self._timeout_s = timeout_s

    @property
    def installed(self) -> bool:
        return (self._binary or find_binary("trivy")) is not None

    def scan(self, path: str) -> ScannerReport:
        ready = _ready(
            self.name, path, "install the trivy binary on the worker's PATH", self._binary
        )
        if isinstance(ready, ScannerReport):
            return ready
        root, binary = ready
        argv = [str(binary), "fs", "--format", "json", "--quiet", "."]
        try:
            run = run_scanner(argv, root, self._timeout_s)
            if run.exit_code != 0:
                raise ScannerUnavailableError(
                    f"trivy exited {run.exit_code}: {last_line(run.stderr)}"
                )
            findings = parse_trivy(json_output(run, "trivy"))
        except ScannerUnavailableError as exc:
            return unavailable_report(self.name, exc)
        return ScannerReport(scanner=self.name, findings=findings)


# --- SonarQube ----------------------------------------------------------------------------

_SONAR_METRICS = {"duplicated_lines_density": "duplication_pct", "complexity": "complexity_total"}


class SonarQubeGate:
    """The quality gate SonarQube computed for this commit's analysis of `project_key` (the
    analysis itself is run by a sonar-scanner elsewhere, with `sonar.branch.name` and the
    commit as its revision): the analysis is found by branch and revision, and the gate read
    by its id, so another commit's analysis never answers for this one. Failed conditions
    become HIGH findings, warnings MEDIUM. Duplication is reported when that analysis is the
    branch's latest (measures are the latest analysis's). SonarQube measures complexity per
    file at the finest (a file's is the sum of its functions'), so its `complexity` is only
    kept as `complexity_total`: per-function complexity is the `lizard` scanner's.
    The `path` given to `scan` is not used: SonarQube already holds the analysis."""

    name = "sonarqube"

    def __init__(self, url: str, token: str, project_key: str, timeout_s: float = 5.0) -> None:
        self._url = url.rstrip("/")
        self._project_key = project_key
        self._timeout_s = timeout_s
        # A SonarQube user token is sent as the basic-auth login with an empty password,
        # which every SonarQube version accepts (bearer tokens need 10.0+).
        self._auth = httpx.BasicAuth(token, "")

    def scan(self, path: str) -> ScannerReport:
        return unavailable_report(
            self.name,
            "SonarQube is read for one commit's analysis, and this scan named no commit",
        )

    def scan_commit(self, path: str, commit: str, branch: str) -> ScannerReport:
        with httpx.Client(
            base_url=self._url,
            auth=self._auth,
            timeout=self._timeout_s,
            verify=verifying_context(),
        ) as client:
            try:
                found = self._analysis(client, commit, branch)
                if isinstance(found, ScannerReport):
                    return found
                analysis, latest = found
                response = client.get(
                    "/api/qualitygates/project_status", params={"analysisId": analysis}
                )
            except httpx.HTTPError as exc:
                return unavailable_report(
                    self.name, f"SonarQube at {self._url} is unreachable: {exc}"
                )
            if (trouble := self._trouble(response)) is not None:
                return trouble
            try:
                status = response.json()["projectStatus"]
            except (ValueError, KeyError, TypeError):
                return unavailable_report(
                    self.name, "SonarQube's quality gate answer has no status"
                )
            gate = str(status.get("status", "NONE")).upper()
            if gate == "NONE":
                return unavailable_report(
                    self.name,
                    f"SonarQube has no quality gate result for the analysis of {commit[:12]} "
                    f"in {self._project_key!r}",
                )
            findings = self._findings(gate, status.get("conditions") or [])
            metrics = self._metrics(client, branch) if latest else {}
        return ScannerReport(scanner=self.name, findings=findings, metrics=metrics)

    def _trouble(self, response: httpx.Response) -> ScannerReport | None:
        if response.status_code in (401, 403):
            return unavailable_report(
                self.name,
                f"SonarQube at {self._url} refused the token ({response.status_code}): "
                "give the token 'Browse' permission on the project",
            )
        if response.status_code == 404:
            return unavailable_report(
                self.name,
                f"SonarQube at {self._url} has no project {self._project_key!r} (or branch): "
                "run an analysis first or fix the project key",
            )
        if response.status_code != 200:
            return unavailable_report(
                self.name, f"SonarQube at {self._url} answered {response.status_code}"
            )
        return None

    def _analysis(
        self, client: httpx.Client, commit: str, branch: str
    ) -> tuple[str, bool] | ScannerReport:
        """The key of the branch's analysis of `commit`, and whether it is the branch's
        latest; or why there is none."""
        params = {"project": self._project_key, "ps": "100"}
        if branch:
            params["branch"] = branch
        response = client.get("/api/project_analyses/search", params=params)
        if (trouble := self._trouble(response)) is not None:
            return trouble
        try:
            analyses = list(response.json()["analyses"])
        except (ValueError, KeyError, TypeError):
            return unavailable_report(self.name, "SonarQube's list of analyses is unreadable")
        for index, analysis in enumerate(analyses):  # newest first
            if isinstance(analysis, Mapping) and str(analysis.get("revision", "")) == commit:
                return str(analysis.get("key", "")), index == 0
        return unavailable_report(
            self.name,
            f"SonarQube has no analysis of commit {commit[:12]} in {self._project_key!r}"
            + (f" on branch {branch!r}" if branch else "")
            + " among its latest 100: run sonar-scanner on this commit "
            "(sonar.scm.revision, sonar.branch.name) before the scan stage",
        )

    def _findings(self, gate: str, conditions: Sequence[Mapping[str, Any]]) -> list[Finding]:
        findings = []
        for condition in conditions:
            state = str(condition.get("status", "")).upper()
            if state not in ("ERROR", "WARN"):
                continue
            metric = str(condition.get("metricKey", "?"))
            findings.append(
                Finding(
                    scanner=self.name,
                    rule=metric,
                    severity=Severity.HIGH if state == "ERROR" else Severity.MEDIUM,
                    message=f"quality gate condition failed: {metric} is "
                    f"{condition.get('actualValue', '?')} (must not be "
                    f"{condition.get('comparator', '?')} {condition.get('errorThreshold', '?')})",
                    location=self._project_key,
                )
            )
        if gate == "ERROR" and not any(f.severity == Severity.HIGH for f in findings):
            findings.append(
                Finding(
                    scanner=self.name,
                    rule="quality-gate",
                    severity=Severity.HIGH,
                    message="the SonarQube quality gate failed",
                    location=self._project_key,
                )
            )
        return findings

    def _metrics(self, client: httpx.Client, branch: str) -> dict[str, float]:
        """Duplication (and the project's summed complexity, never compared); missing
        figures are left out (never reported as 0)."""
        params = {"component": self._project_key, "metricKeys": ",".join(_SONAR_METRICS)}
        if branch:
            params["branch"] = branch
        try:
            response = client.get("/api/measures/component", params=params)
            measures = response.json()["component"]["measures"] if response.is_success else []
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            return {}
        metrics: dict[str, float] = {}
        for measure in measures:
            name = _SONAR_METRICS.get(str(measure.get("metric")))
            try:
                if name is not None:
                    metrics[name] = float(measure["value"])
            except (KeyError, TypeError, ValueError):
                continue
        return metrics


# --- registry of scanners -----------------------------------------------------------------


def default_scanners() -> dict[str, Scanner]:
    """The scanners a local worker offers, by the names pipeline definitions use. SonarQube
    needs a server, a token and a project key, so the worker adds a `SonarQubeGate` itself."""
    scanners: list[Scanner] = [
        BanditScanner(),
        PipAuditScanner(),
        DetectSecretsScanner(),
        HadolintScanner(),
        TrivyScanner(),
        LizardScanner(),
    ]
    return {scanner.name: scanner for scanner in scanners}
