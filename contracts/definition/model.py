"""The pipeline definition: a DAG of stages, written in YAML and validated by pydantic.

`load_pipeline(path)` reads a file (resolving `extends:`), validates every stage on its own so
that *all* problems are reported at once, then checks the graph (`contracts.definition.dag`) and the
cross-stage rules (approvals before protected deploys, canary steps reaching max weight).
Every problem names the file, the stage and the field.

This module is pure (no I/O but `load_pipeline`'s file reads, which only the CLI calls): the
validated `PipelineSpec` travels inside the workflow input, so a run never re-reads a file.
"""

from __future__ import annotations

import math
import re
import string
from datetime import timedelta
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationInfo,
    field_validator,
    model_validator,
)

from contracts.activity import (
    HttpCheck,
    IgnoreEntry,
    MetricName,
    ReleaseConfig,
    SecretRef,
    Severity,
    Strategy,
)
from contracts.definition.limits import (
    DOCKER_TAG,
    ENV_NAME,
    KUBE_SECRET_NAME,
    MAX_CONFIG_ENTRIES,
    MAX_DURATION,
    MAX_SETTING_CHARS,
    MAX_STAGES_READ,
    MAX_TEMPLATE_CHARS,
    SAFE_NAME,
    SECRET_NAME,
    SERVICE_NAME,
    short,
)
from contracts.definition.metric_presets import (
    LATENCY_METRICS,
    PERCENT_METRICS,
    PRESETS,
    Preset,
    template_problem,
)
from contracts.definition.service_templates import parse_service, template_references
from contracts.definition.triggers import MAX_PATH_PATTERNS, PathPattern, TriggersSpec

__all__ = [
    "STAGE_ADAPTER",
    "ApprovalStage",
    "BrowserStage",
    "BuildStage",
    "CanaryStage",
    "CheckoutStage",
    "CommandStage",
    "ConfigSpec",
    "DastStage",
    "DefinitionError",
    "DeployStage",
    "E2EStage",
    "EnvironmentSpec",
    "FreezeWindow",
    "ImageScanStage",
    "LoadSpec",
    "LoadTestStage",
    "MetricCheck",
    "MetricsSpec",
    "MonitorStage",
    "NotifyStage",
    "PipelineSpec",
    "Problem",
    "PublishStage",
    "QualityGateStage",
    "RetrySpec",
    "RollbackStage",
    "ScanStage",
    "SecretRefSpec",
    "ServiceSpec",
    "SmokeStage",
    "Stage",
    "StageBase",
    "SuiteStage",
    "WebAuditStage",
    "parse_duration",
]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


_ISO_DURATION = TypeAdapter(timedelta)


def parse_duration(value: Any) -> Any:
    """Accept '500ms', '30s', '1m', '15m', '4h', a number of seconds or an ISO-8601 duration
    ('PT5M'); refuse, with a sentence, anything out of `MAX_DURATION` (never an overflow)."""
    if isinstance(value, timedelta | bool):
        return value
    seconds: float
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        else:
            try:
                return _bounded(_ISO_DURATION.validate_python(value.strip()))
            except (ValueError, OverflowError):
                raise ValueError(
                    f"{short(value)} is not a duration; write e.g. '500ms', '30s', '15m', "
                    "'4h', '2d' or a number of seconds"
                ) from None
    else:
        return value
    if not math.isfinite(seconds) or abs(seconds) > MAX_DURATION.total_seconds():
        raise ValueError(f"{short(value)} is out of range: at most {_days(MAX_DURATION)}")
    return _bounded(timedelta(seconds=seconds))


def _days(value: timedelta) -> str:
    seconds = value.total_seconds()
    return f"{seconds / 86400:g}d" if seconds >= 86400 else f"{seconds:g}s"


def _bounded(value: timedelta) -> timedelta:
    if abs(value) > MAX_DURATION:
        raise ValueError(f"{_days(value)} is out of range: at most {_days(MAX_DURATION)}")
    return value


def _positive(value: timedelta) -> timedelta:
    if value <= timedelta(0):
        raise ValueError(f"a duration must be positive, got {value.total_seconds():g}s")
    return value


def _at_most(maximum: timedelta) -> Any:
    def check(value: timedelta) -> timedelta:
        if value > maximum:
            raise ValueError(f"{_days(value)} is too long: at most {_days(maximum)}")
        return value

    return AfterValidator(check)


# Each duration field has a bound of its own (docs/definition.md: Limits).
Duration = Annotated[
    timedelta, BeforeValidator(parse_duration), AfterValidator(_positive), _at_most(MAX_DURATION)
]
Hours = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    AfterValidator(_positive),
    _at_most(timedelta(days=1)),
]
"""Intervals, windows and retry delays: a day at most."""
Days = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    AfterValidator(_positive),
    _at_most(timedelta(days=7)),
]
"""Stage timeouts and monitor durations: a week at most."""
Month = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    AfterValidator(_positive),
    _at_most(timedelta(days=30)),
]
"""Approval timeouts and freeze windows: 30 days at most."""


def _safe_name(value: str) -> str:
    if not SAFE_NAME.match(value):
        raise ValueError(
            f"{short(value)} is not a safe name: 1-63 letters, digits, '_', '.', '-', "
            "starting with a letter or digit"
        )
    return value


SafeName = Annotated[str, AfterValidator(_safe_name)]


def _check_path(value: str) -> str:
    # A path that is not absolute ('@host/...') or scheme-relative ('//host/...') changes
    # the host the probe goes to once joined to the environment's URL.
    if not value.startswith("/") or value.startswith("//") or "\\" in value:
        raise ValueError(f"{short(value)} must be a path starting with a single '/'")
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in value) or len(value) > 2048:
        raise ValueError(f"{short(value)} must be a URL path without spaces or control characters")
    return value


CheckPath = Annotated[str, AfterValidator(_check_path)]


def _report_path(value: str) -> str:
    # The test runner deletes a stale report before the run: outside the checkout that
    # would delete someone else's file.
    parts = value.replace("\\", "/").split("/")
    if not value or value.startswith(("/", "~")) or ".." in parts or ":" in parts[0]:
        raise ValueError(f"{short(value)} must be a relative path inside the checkout")
    return value


ReportPath = Annotated[str, Field(max_length=1024), AfterValidator(_report_path)]
Percent = Annotated[float, Field(ge=0, le=100)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class RetrySpec(_Strict):
    """How Temporal retries a stage's activity on transient errors."""

    max_attempts: int = Field(3, ge=1, le=100)
    initial_interval: Hours = timedelta(seconds=2)
    backoff: float = Field(2.0, ge=1.0, le=10.0)
    max_interval: Hours = timedelta(minutes=1)


class When(_Strict):
    """Run the stage only for these branches (glob patterns like 'release/*')."""

    branches: list[str] = Field(min_length=1)


class _StageBase(_Strict):
    name: SafeName
    needs: list[str] = []
    when: When | None = None
    retry: RetrySpec | None = None
    timeout: Days | None = None
    on_failure: Literal["fail", "continue", "rollback"] = "fail"
    description: str = ""

    @property
    def environment_name(self) -> str | None:
        """The environment the stage acts on, if any."""
        return getattr(self, "environment", None)


class CheckoutStage(_StageBase):
    """Check out the run's commit; every later stage works on this tree."""

    kind: Literal["checkout"]


class ScanStage(_StageBase):
    """Run source scanners; fail on findings at or above `fail_on`."""

    kind: Literal["scan"]
    scanners: list[str] = Field(min_length=1)
    fail_on: Severity = Severity.HIGH
    unavailable: Literal["fail", "warn"] = Field(
        "fail", description="What a scanner that cannot run means: fail closed by default."
    )
    ignore: dict[str, list[IgnoreEntry]] = Field(
        default_factory=dict,
        description="Scanner name → accepted findings ({id, reason, expires}); an expired "
        "entry fails the stage.",
    )
    skip: dict[str, list[Annotated[str, Field(min_length=1)]]] = Field(
        default_factory=dict, description="Scanner name → rule ids not checked at all."
    )
    artifact: SafeName | None = Field(
        None,
        description="With `artifacts:`: run in that artifact's directory (default: the service's).",
    )

    @model_validator(mode="after")
    def _known_scanners(self) -> ScanStage:
        # An entry for a scanner the stage does not run would silently accept nothing.
        for field in ("ignore", "skip"):
            for scanner in getattr(self, field):
                if scanner not in self.scanners:
                    raise ValueError(
                        f"{field}: {scanner!r} is not one of this stage's scanners "
                        f"({', '.join(self.scanners)})"
                    )
        return self


def _service_entry(text: str) -> str:
    parse_service(text)  # raises ValueError with the sentence naming the choices
    return text


def _release_env(env: dict[str, str]) -> dict[str, str]:
    """A release's `env:`: literal values or resource placeholders (`{services.postgres.url}`),
    rendered by the platform from the environment's resources when the release starts."""
    problems = []
    for name, value in env.items():
        try:
            template_references(value)
        except ValueError as exc:
            problems.append(f"{name}: {exc}")
    if problems:
        raise ValueError("; ".join(problems))
    return env


def env_resource_kinds(env: dict[str, str]) -> set[str]:
    """The resource kinds a release's `env:` refers to."""
    return {kind for value in env.values() for kind, _ in template_references(value)}


ReleaseEnv = Annotated[
    dict[str, str],
    AfterValidator(_release_env),
    Field(
        default_factory=dict,
        description="Variables of the release's process; '{services.postgres.url}' etc. "
        "expand to the environment's resources.",
    ),
]
ReleaseCommand = Annotated[
    list[str],
    Field(
        default_factory=list,
        max_length=100,
        description="The release phase: run once per environment per release, with the new "
        "artifact and that environment's configuration, before traffic moves to it "
        "(e.g. [alembic, upgrade, head]). Empty: none.",
    ),
]


class SuiteStage(_StageBase):
    """Run a test command and judge its JUnit and coverage reports."""

    kind: Literal["test"]
    command: list[str] = Field(min_length=1)
    artifact: SafeName | None = Field(
        None,
        description="With `artifacts:`: run in that artifact's directory (default: the service's).",
    )
    junit: ReportPath = "junit.xml"
    coverage: ReportPath | None = None
    min_coverage: Percent | None = None
    max_failures: int = Field(0, ge=0)
    services: list[Annotated[str, AfterValidator(_service_entry)]] = Field(
        default_factory=list,
        description="Backing services started for the run: 'postgres[:16]', 'redis[:7]'.",
    )
    env: dict[str, str] = Field(
        default_factory=dict,
        description="Variables for the command; '{services.postgres.port}' etc. expand.",
    )

    extras: list[str] | None = Field(
        None,
        description="pyproject extras installed into the stage's venv with the project's "
        "dependencies; default: the `test` extra when declared.",
    )
    requirements: list[str] = Field(
        default_factory=list, description="Requirements files (relative to the service)."
    )
    setup: list[str] = Field(
        default_factory=list, description="Shell commands run once in the new venv."
    )

    @field_validator("services")
    @classmethod
    def _one_of_each(cls, services: list[str]) -> list[str]:
        kinds = [parse_service(s).kind for s in services]
        twice = sorted({k for k in kinds if kinds.count(k) > 1})
        if twice:
            raise ValueError(f"{', '.join(twice)} listed more than once; one of each kind")
        return services

    @field_validator("env")
    @classmethod
    def _env_refers_to_services(cls, env: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        # A field validator (not a model one) so that the problem names the field.
        # Invalid `services` were reported already: then only the templates' syntax is judged.
        listed = info.data.get("services")
        problems = []
        for name, value in env.items():
            try:
                references = template_references(value)
            except ValueError as exc:
                problems.append(f"{name}: {exc}")
                continue
            for kind in sorted({kind for kind, _ in references}):
                if listed is not None and kind not in {parse_service(s).kind for s in listed}:
                    problems.append(
                        f"{name}: {{services.{kind}.…}} refers to {kind}, which 'services' "
                        "does not start; add it there"
                    )
        if problems:
            raise ValueError("; ".join(problems))
        return env


class CommandStage(_StageBase):
    """Run a command in the service's directory (non-Python work: `[sh, -c, "npm ci && npm
    run build"]`); a non-zero exit fails the stage."""

    kind: Literal["command"]
    command: list[str] = Field(min_length=1)
    artifact: SafeName | None = Field(
        None,
        description="With `artifacts:`: run in that artifact's directory (default: the service's).",
    )
    env: dict[str, str] = Field(
        default_factory=dict, description="Variables for the command, merged last."
    )


class QualityGateStage(_StageBase):
    """Combine earlier results against thresholds. A report the gate needs but no stage
    produced is an error, and any error fails the gate (HEAL7's rule)."""

    kind: Literal["quality_gate"]
    inputs: list[str] = Field(
        default_factory=list, description="Stages whose results are judged; default: needs."
    )
    min_coverage: dict[str, Percent] = Field(
        default_factory=dict, description="Test stage name → minimum line coverage %."
    )
    max_findings: dict[Severity, int] = Field(
        default_factory=lambda: {Severity.CRITICAL: 0, Severity.HIGH: 0}
    )
    require_scan: bool = True
    max_duplication_pct: Percent | None = None
    max_complexity: float | None = Field(None, gt=0)
    max_test_duration: Hours | None = None


class BuildStage(_StageBase):
    """Build the artifact once; its digest flows to every deploy."""

    kind: Literal["build"]
    max_size_mb: float | None = Field(None, gt=0)
    max_duration: Hours | None = None


class ImageScanStage(_StageBase):
    """Scan the built artifact; fail on findings at or above `fail_on`."""

    kind: Literal["image_scan"]
    scanner: str = "trivy"
    fail_on: Severity = Severity.HIGH
    unavailable: Literal["fail", "warn"] = "fail"
    ignore: list[IgnoreEntry] = Field(
        default_factory=list,
        description="Accepted findings ({id, reason, expires}); an expired entry fails the stage.",
    )


# Values as long as a run's can be: a template that formats these formats any run's values
# (all are strings, so a format spec behaves the same whatever their text).
_SAMPLES = {
    "branch": "release-2026.11-hotfix",
    "sha": "0123456789abcdef0123456789abcdef01234567",
    "sha12": "0123456789ab",
    "service": "shop",
    "author": "someone@example.com",
}


def _template(allowed: frozenset[str], is_tag: bool = False) -> Any:
    """A string that formats with sample values of `allowed`: checked here, because one that
    fails while a run formats it would fail the workflow task over and over."""

    def check(text: str) -> str:
        if len(text) > MAX_TEMPLATE_CHARS:
            raise ValueError(f"a template may be {MAX_TEMPLATE_CHARS} characters long")
        try:
            fields = list(string.Formatter().parse(text))
        except ValueError as exc:
            raise ValueError(f"{short(text)} is not a valid template: {exc}") from None
        for _, name, spec, _ in fields:
            if name is None:
                continue
            if name not in allowed:
                raise ValueError(
                    f"unknown placeholder {{{name[:40]}}} in {short(text)}; use {sorted(allowed)}"
                )
            # A width from a nested field, or a huge literal one, builds a string of any size.
            widths = [int(w) for w in re.findall(r"\d+", spec or "")]
            if "{" in (spec or "") or any(w > MAX_TEMPLATE_CHARS for w in widths):
                raise ValueError(
                    f"format spec {short(spec)} in {short(text)}: widths above "
                    f"{MAX_TEMPLATE_CHARS} and nested fields are not allowed"
                )
        try:
            sample = text.format(**{n: _SAMPLES[n] for n in allowed})
        except (ValueError, KeyError, IndexError, AttributeError, TypeError) as exc:
            raise ValueError(f"{short(text)} does not format: {exc}") from None
        if len(sample) > MAX_TEMPLATE_CHARS * 4:
            raise ValueError(f"{short(text)} expands to {len(sample)} characters")
        if is_tag and not DOCKER_TAG.match(sample):
            raise ValueError(
                f"{short(text)} makes tags like {short(sample)}: a tag is 1-128 letters, "
                "digits, '_', '.', '-'"
            )
        return text

    return AfterValidator(check)


TAG_FIELDS = frozenset({"branch", "sha", "sha12"})
MESSAGE_FIELDS = frozenset({"service", "sha12", "branch", "author"})


class PublishStage(_StageBase):
    """Push the artifact to the registry under tags; '{branch}', '{sha}', '{sha12}' expand."""

    kind: Literal["publish"]
    # Immutable per-commit tags by default: registries with tag immutability (ECR, as we
    # configure it) refuse to move a floating tag like '{branch}'.
    tags: list[Annotated[str, _template(TAG_FIELDS, is_tag=True)]] = Field(
        default_factory=lambda: ["{branch}-{sha12}", "{sha}"], min_length=1, max_length=20
    )


class DeployStage(_StageBase):
    """Deploy the build's artifact to an environment."""

    kind: Literal["deploy"]
    environment: SafeName
    strategy: Strategy | None = Field(None, description="Default: the environment's strategy.")


class _HttpCheckStage(_StageBase):
    environment: SafeName
    checks: list[HttpCheck] = Field(
        default_factory=lambda: [HttpCheck(path="/health")], max_length=100
    )

    @field_validator("checks")
    @classmethod
    def _paths_stay_on_the_host(cls, checks: list[HttpCheck]) -> list[HttpCheck]:
        for i, check in enumerate(checks):
            try:
                _check_path(check.path)
            except ValueError as exc:
                raise ValueError(f"check #{i + 1}: {exc}") from None
        return checks

    slot: Literal["stable", "canary", "blue", "green"] | None = None
    artifact: SafeName | None = Field(
        None, description="With `artifacts:`: whose endpoint is probed (default: the first)."
    )


class E2EStage(_HttpCheckStage):
    """End-to-end HTTP checks against an environment."""

    kind: Literal["e2e"]


class SmokeStage(_HttpCheckStage):
    """Quick HTTP checks against an environment."""

    kind: Literal["smoke"]


class LoadPath(_Strict):
    """A path the load test's users GET, `weight` times as often as one of weight 1."""

    path: CheckPath = "/"
    weight: int = Field(1, ge=1, le=100)


class LoadThresholds(_Strict):
    """What the load test must show over its whole run; at least one bound."""

    p95_ms: float | None = Field(None, gt=0, le=600_000, allow_inf_nan=False)
    p99_ms: float | None = Field(None, gt=0, le=600_000, allow_inf_nan=False)
    error_rate: Percent | None = Field(None, description="Failed requests, at most this %.")
    min_rps: float | None = Field(
        None, gt=0, le=100_000, allow_inf_nan=False, description="Throughput, at least."
    )

    @model_validator(mode="after")
    def _one_bound(self) -> LoadThresholds:
        if all(v is None for v in (self.p95_ms, self.p99_ms, self.error_rate, self.min_rps)):
            raise ValueError("give at least one of p95_ms, p99_ms, error_rate, min_rps")
        return self


Minutes = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    AfterValidator(_positive),
    _at_most(timedelta(hours=1)),
]
"""A live test's run time (load duration, scan time): an hour at most."""


def _not_negative(value: Any) -> Any:
    if value in (0, "0", "0s"):
        return timedelta(0)
    return parse_duration(value)


class LoadTestStage(_StageBase):
    """Drive load at an environment with a real load tool (locust) and judge what it
    measured against `thresholds`."""

    kind: Literal["load_test"]
    environment: SafeName
    artifact: SafeName | None = Field(
        None, description="With `artifacts:`: whose endpoint takes the load (default: the first)."
    )
    tool: Literal["locust"] = "locust"
    users: int = Field(10, ge=1, le=1000, description="Concurrent users.")
    rate: float | None = Field(
        None,
        gt=0,
        le=5000,
        allow_inf_nan=False,
        description="Requests per second the users send together, at most; default: as fast "
        "as answers come.",
    )
    duration: Minutes = timedelta(minutes=1)
    ramp: Annotated[timedelta, BeforeValidator(_not_negative), _at_most(timedelta(hours=1))] = (
        Field(timedelta(0), description="Users start over this time (0: all at once).")
    )
    paths: list[LoadPath] = Field(default_factory=lambda: [LoadPath()], min_length=1, max_length=20)
    thresholds: LoadThresholds
    unavailable: Literal["fail", "warn"] = Field(
        "fail", description="What a load tool that cannot run means: fail closed by default."
    )

    @field_validator("ramp")
    @classmethod
    def _ramp_within_duration(cls, ramp: timedelta, info: ValidationInfo) -> timedelta:
        duration = info.data.get("duration")
        if ramp < timedelta(0):
            raise ValueError("ramp must not be negative")
        if duration is not None and ramp >= duration:
            raise ValueError(
                f"ramp {ramp.total_seconds():g}s must be shorter than duration "
                f"{duration.total_seconds():g}s"
            )
        return ramp


DAST_MODULES = (
    "backup",
    "blindsql",
    "buster",
    "cookieflags",
    "crlf",
    "csp",
    "csrf",
    "exec",
    "file",
    "htaccess",
    "http_headers",
    "methods",
    "nikto",
    "permanentxss",
    "redirect",
    "shellshock",
    "sql",
    "xss",
)
"""Wapiti's modules a stage may pick: every one that sends requests to the target only
(`ssrf` and `xxe` call an outside endpoint; `wapp` and `brute_login_form` are left out)."""
DAST_DEFAULT_MODULES = (
    "blindsql",
    "cookieflags",
    "csp",
    "exec",
    "file",
    "http_headers",
    "permanentxss",
    "redirect",
    "sql",
    "xss",
)
"""Wapiti's default modules without `ssrf`."""


class DastStage(_StageBase):
    """A dynamic scan of the running environment by a real scanner (wapiti), judged like
    every scan: findings at or above `fail_on` fail, `ignore:` entries expire."""

    kind: Literal["dast"]
    environment: SafeName
    artifact: SafeName | None = Field(
        None, description="With `artifacts:`: whose endpoint is scanned (default: the first)."
    )
    scanner: Literal["wapiti"] = "wapiti"
    modules: list[Literal[DAST_MODULES]] = Field(  # type: ignore[valid-type]
        default_factory=lambda: list(DAST_DEFAULT_MODULES), min_length=1, max_length=30
    )
    max_scan_time: Minutes = Field(
        timedelta(minutes=5), description="The scanner stops crawling and attacking then."
    )
    depth: int = Field(5, ge=1, le=50, description="How many links deep it crawls.")
    fail_on: Severity = Severity.HIGH
    unavailable: Literal["fail", "warn"] = "fail"
    ignore: list[IgnoreEntry] = Field(
        default_factory=list,
        description="Accepted findings ({id, reason, expires}); an expired entry fails the stage.",
    )


_BROWSER_OWNED_ARGS = (
    "--base-url",
    "--browser",
    "--browser-channel",
    "--device",
    "--junitxml",
    "--junit-xml",
    "--output",
    "--screenshot",
    "--tracing",
    "--video",
    "--headed",
    "-p",
    "--rootdir",
    "--basetemp",
    "-c",
    "--config-file",
)
"""pytest options a browser stage sets itself (or that would take the run out of its
directory); `args` may not name them."""


def _pytest_arg(value: str) -> str:
    if not value or len(value) > 1024 or any(ord(c) < 32 for c in value):
        raise ValueError(f"{short(value)} must be 1-1024 characters without control characters")
    name = value.split("=", 1)[0]
    if name in _BROWSER_OWNED_ARGS or (name.startswith("-p") and not name.startswith("--")):
        raise ValueError(f"{short(value)} is set by the stage itself; leave it out of args")
    return value


def _env_name(env: dict[str, str]) -> dict[str, str]:
    if len(env) > MAX_CONFIG_ENTRIES:
        raise ValueError(f"{len(env)} variables: at most {MAX_CONFIG_ENTRIES}")
    for name, value in env.items():
        if not ENV_NAME.match(name) or name in _RESERVED_VARIABLES:
            raise ValueError(f"{short(name)} is not a variable a stage may set")
        if len(value) > MAX_SETTING_CHARS:
            raise ValueError(f"{name}: value longer than {MAX_SETTING_CHARS} characters")
    return env


class BrowserStage(_StageBase):
    """The service's own Playwright tests (Python, pytest-playwright) in Debian's Chromium
    against the environment's URL, in a venv of the service's dependencies, on the runner
    and in its sandbox; on failure their traces and screenshots are kept and named."""

    kind: Literal["browser"]
    environment: SafeName
    artifact: SafeName | None = Field(
        None,
        description="With `artifacts:`: whose directory holds the tests and whose endpoint "
        "they visit (default: the service's directory, the first artifact's endpoint).",
    )
    tests: list[ReportPath] = Field(
        default_factory=lambda: ["tests/e2e"],
        min_length=1,
        max_length=20,
        description="Test files or directories, relative to the service's directory.",
    )
    args: list[Annotated[str, AfterValidator(_pytest_arg)]] = Field(
        default_factory=list, max_length=50, description="More pytest arguments (`-k smoke`)."
    )
    max_failures: int = Field(0, ge=0, le=100_000)
    screenshot: Literal["only-on-failure", "on", "off"] = "only-on-failure"
    trace: Literal["retain-on-failure", "on", "off"] = "retain-on-failure"
    video: Literal["retain-on-failure", "on", "off"] = "off"
    max_duration: Minutes = Field(
        timedelta(minutes=10), description="The test run is stopped then (an hour at most)."
    )
    extras: list[str] | None = Field(
        None,
        description="pyproject extras installed into the venv with the project's "
        "dependencies; default: the `test` extra when declared.",
        max_length=20,
    )
    requirements: list[ReportPath] = Field(default_factory=list, max_length=20)
    setup: list[str] = Field(default_factory=list, max_length=20)
    env: Annotated[dict[str, str], AfterValidator(_env_name)] = Field(
        default_factory=dict, description="Variables for the tests."
    )
    unavailable: Literal["fail", "warn"] = Field(
        "fail", description="What a missing browser means: fail closed by default."
    )


class LighthouseScores(_Strict):
    """Lighthouse category scores (0-100) a page must reach; null: not judged."""

    performance: Annotated[float, Field(ge=0, le=100)] | None = 90
    accessibility: Annotated[float, Field(ge=0, le=100)] | None = 90
    best_practices: Annotated[float, Field(ge=0, le=100)] | None = Field(
        90, validation_alias=AliasChoices("best_practices", "best-practices")
    )
    seo: Annotated[float, Field(ge=0, le=100)] | None = 90

    def minimums(self) -> dict[str, float]:
        """Lighthouse's category id → the least score, for the judged categories."""
        given = {
            "performance": self.performance,
            "accessibility": self.accessibility,
            "best-practices": self.best_practices,
            "seo": self.seo,
        }
        return {k: v for k, v in given.items() if v is not None}


WCAG_TAGS = {
    "A": ("wcag2a", "wcag21a"),
    "AA": ("wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa"),
}
"""axe's rule tags of each WCAG 2 conformance level (2.0, 2.1 and 2.2 rules)."""


class WebAuditStage(_StageBase):
    """Lighthouse scores and axe's WCAG 2 violations of a web front end's pages, in Debian's
    Chromium, on the runner and in its sandbox; judged by the stage's minimums and `fail_on`
    (axe's impacts critical/serious/moderate/minor as critical/high/medium/low)."""

    kind: Literal["web_audit"]
    environment: SafeName
    artifact: SafeName | None = Field(
        None, description="With `artifacts:`: whose pages are audited (default: the first)."
    )
    paths: list[CheckPath] = Field(default_factory=lambda: ["/"], min_length=1, max_length=20)
    lighthouse: LighthouseScores | None = Field(
        default_factory=LighthouseScores,
        description="Least scores per category (default 90 each); null: no Lighthouse run.",
    )
    form_factor: Literal["mobile", "desktop"] = "mobile"
    wcag: Literal["A", "AA"] | None = Field(
        "AA", description="The WCAG 2 level axe checks; null: no axe run."
    )
    fail_on: Severity = Field(
        Severity.HIGH, description="axe violations at or above this fail (high: serious)."
    )
    ignore: list[IgnoreEntry] = Field(
        default_factory=list,
        description="Accepted axe rules ({id, reason, expires}); an expired entry fails.",
        max_length=100,
    )
    max_audit_time: Minutes = Field(
        timedelta(minutes=5), description="Every page's audits together stop then."
    )
    unavailable: Literal["fail", "warn"] = "fail"

    @model_validator(mode="after")
    def _audits_something(self) -> WebAuditStage:
        if self.lighthouse is None and self.wcag is None:
            raise ValueError("give `lighthouse` or `wcag` (or both): nothing would be audited")
        return self


class ApprovalStage(_StageBase):
    """A human gate. Each role in `roles` must be covered by a distinct approver, and at least
    `quorum` distinct people must approve; one rejection by an allowed person closes it."""

    kind: Literal["approval"]
    environment: SafeName
    gate: SafeName | None = Field(
        None, description="Gate name approvers type; default: environment."
    )
    roles: list[str] = Field(min_length=1, max_length=20)
    quorum: int | None = Field(None, ge=1, le=20)
    timeout: Month | None = timedelta(hours=24)
    allow_self_approval: bool = False

    @property
    def gate_name(self) -> str:
        return self.gate or self.environment

    @property
    def required_quorum(self) -> int:
        return self.quorum or len(self.roles)


MetricKey = Annotated[str, Field(pattern=r"^[a-z_][a-z0-9_]*$")]


class MetricCheck(_Strict):
    """One metric judged against a bound over a window: exactly one of `min`/`max`. The
    metric is a preset one or one defined under the definition's `metrics.custom`."""

    metric: Annotated[MetricName, Field(pattern=r"^[a-z_][a-z0-9_]*$")]
    min: float | None = Field(None, allow_inf_nan=False)
    max: float | None = Field(None, allow_inf_nan=False)
    window: Hours = timedelta(minutes=1)
    description: str = ""

    @model_validator(mode="after")
    def _one_bound_in_range(self) -> MetricCheck:
        if (self.min is None) == (self.max is None):
            raise ValueError(f"metric {self.metric!r}: give exactly one of 'min' or 'max'")
        bound = self.min if self.min is not None else self.max
        assert bound is not None
        if self.metric in PERCENT_METRICS and not 0 <= bound <= 100:
            raise ValueError(f"metric {self.metric!r}: a percentage must be 0..100, got {bound}")
        if self.metric in LATENCY_METRICS and bound <= 0:
            raise ValueError(f"metric {self.metric!r}: latency bound must be > 0 ms, got {bound}")
        if self.window <= timedelta(0):
            raise ValueError(f"metric {self.metric!r}: window must be positive")
        return self


def _promql_template(text: str) -> str:
    problem = template_problem(text)
    if problem:
        raise ValueError(problem)
    return text


class CustomMetric(_Strict):
    """A metric of the service's own: one PromQL template yielding one number, e.g.
    `sum(rate(saju_calculations_total{namespace="{namespace}",pod=~"{service}-{slot}-.*"}
    [{window}]))`."""

    query: Annotated[str, AfterValidator(_promql_template)]
    description: str = ""


class MetricsSpec(_Strict):
    """Where metrics come from: a `preset` (traefik, istio, http; see
    `contracts.definition.metric_presets`) and `custom` metrics, which may also replace a preset
    one."""

    preset: Preset | None = Field(None, description="Default: traefik.")
    custom: dict[MetricKey, CustomMetric] = Field(default_factory=dict)


class LoadSpec(_Strict):
    """Synthetic traffic during analysis (Flagger's load tester), for quiet environments."""

    rps: float = Field(20, gt=0, le=500)
    path: CheckPath = "/"


class CanaryStage(_StageBase):
    """Shift traffic to the canary step by step, analysing metrics after each interval."""

    kind: Literal["canary"]
    environment: SafeName
    interval: Hours = timedelta(minutes=1)
    threshold: int = Field(5, ge=1, le=100)
    max_weight: int = Field(
        50, ge=1, le=100, validation_alias=AliasChoices("max_weight", "maxWeight")
    )
    step_weight: int = Field(
        10,
        ge=1,
        le=100,
        validation_alias=AliasChoices("step_weight", "stepWeight"),
        validate_default=True,
    )
    progress_deadline: Hours = timedelta(seconds=60)
    metrics: list[MetricCheck] = Field(min_length=1, max_length=20)
    no_data: Literal["fail", "ignore"] = Field(
        "fail", description="How an analysis with no data counts: a failure by default."
    )
    load: LoadSpec | None = None
    preflight: bool = Field(
        True,
        description="Before the first step, run every check's query against the stable "
        "version; one without data fails the stage.",
    )
    artifact: SafeName | None = Field(
        None,
        description="With `artifacts:`: whose metrics judge the joint canary (default: the "
        "first); every artifact's traffic moves together.",
    )

    @field_validator("step_weight")
    @classmethod
    def _steps_reach_max(cls, step: int, info: ValidationInfo) -> int:
        # A field validator (not a model one) so that the problem names the field.
        maximum = info.data.get("max_weight")
        if maximum is not None and (step > maximum or maximum % step):
            raise ValueError(
                f"step_weight {step} does not reach max_weight {maximum} "
                "in whole steps; choose a step that divides it"
            )
        return step

    @property
    def weights(self) -> list[int]:
        return list(range(self.step_weight, self.max_weight + 1, self.step_weight))


class MonitorStage(_StageBase):
    """Watch production after promotion; a violation confirmed on re-check rolls back."""

    kind: Literal["monitor"]
    environment: SafeName
    duration: Days = timedelta(minutes=15)
    interval: Hours = Field(timedelta(seconds=60), validate_default=True)
    recheck: Hours = timedelta(seconds=30)
    criteria: list[MetricCheck] = Field(min_length=1, max_length=20)
    no_data: Literal["fail", "ignore"] = "ignore"
    load: LoadSpec | None = None
    artifact: SafeName | None = Field(
        None, description="With `artifacts:`: whose metrics are watched (default: the first)."
    )

    @field_validator("interval")
    @classmethod
    def _interval_fits(cls, interval: timedelta, info: ValidationInfo) -> timedelta:
        duration = info.data.get("duration")
        if duration is not None and interval > duration:
            raise ValueError(f"interval {interval} must not exceed duration {duration}")
        return interval


class RollbackStage(_StageBase):
    """Runs only when a stage with `on_failure: rollback` failed: restores the previous
    version of `environment` (default: the failed stage's environment)."""

    kind: Literal["rollback"]
    environment: SafeName | None = None


class NotifyStage(_StageBase):
    """Send a notification; never fails the pipeline."""

    kind: Literal["notify"]
    level: Literal["info", "success", "warning", "error"] = "info"
    message: Annotated[str, _template(MESSAGE_FIELDS)] = Field(
        description="'{service}', '{sha12}', '{branch}', '{author}' expand."
    )


Stage = Annotated[
    CheckoutStage
    | ScanStage
    | SuiteStage
    | CommandStage
    | QualityGateStage
    | BuildStage
    | ImageScanStage
    | PublishStage
    | DeployStage
    | E2EStage
    | SmokeStage
    | LoadTestStage
    | DastStage
    | BrowserStage
    | WebAuditStage
    | ApprovalStage
    | CanaryStage
    | MonitorStage
    | RollbackStage
    | NotifyStage,
    Field(discriminator="kind"),
]

StageBase = _StageBase
"""What every stage kind shares (name, needs, when, retry, timeout, on_failure)."""
_STAGE_CLASSES: tuple[type[_StageBase], ...] = get_args(get_args(Stage)[0])
STAGE_KINDS: list[str] = [get_args(c.model_fields["kind"].annotation)[0] for c in _STAGE_CLASSES]
"""Every stage kind, in the order of the `Stage` union (derived: one list to keep)."""
STAGE_ADAPTER = TypeAdapter[Stage](Stage)


class ServiceSpec(_Strict):
    """The service the pipeline ships."""

    name: str = Field(pattern=SERVICE_NAME.pattern)
    path: ReportPath = Field(".", description="Directory of the service inside the repository.")
    run: list[str] = Field(
        default_factory=list,
        description="Command a process-based platform runs; '{port}' is replaced.",
    )
    health_path: CheckPath = "/health"
    ready_path: CheckPath = "/ready"
    env: ReleaseEnv
    release: ReleaseCommand


# --- configuration ------------------------------------------------------------------------

_RESERVED_VARIABLES = frozenset({"PATH", "HOME", "VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME"})


def _variable(value: str) -> str:
    if not ENV_NAME.match(value):
        raise ValueError(
            f"{short(value)} is not an environment variable name: letters, digits and '_', "
            "not starting with a digit, at most 128"
        )
    if value.upper().startswith("SLIPWAY_") or value.upper() in _RESERVED_VARIABLES:
        raise ValueError(f"{value!r} is set by Slipway itself; choose another name")
    return value


Variable = Annotated[str, AfterValidator(_variable)]


class SecretRefSpec(_Strict):
    """A secret by reference: `{from: secretsmanager, name: heal7/production/db}`,
    `{from: kubernetes, name: heal7-db, key: password}`, `{from: local, name: heal7/dev/db}`.
    The deployer resolves it when it deploys; its value never enters the definition, history
    or logs."""

    source: Literal["local", "secretsmanager", "kubernetes"] = Field(
        validation_alias=AliasChoices("from", "source"), serialization_alias="from"
    )
    name: str = Field(min_length=1, max_length=512)
    key: str = Field("", max_length=253)

    @model_validator(mode="after")
    def _name_fits_source(self) -> SecretRefSpec:
        if self.source == "kubernetes":
            if not KUBE_SECRET_NAME.match(self.name):
                raise ValueError(
                    f"{short(self.name)} is not a Kubernetes Secret name (lower-case letters, "
                    "digits, '-' and '.', at most 253)"
                )
            if not self.key:
                raise ValueError("a Kubernetes Secret reference needs `key`: the data key to use")
        elif not SECRET_NAME.match(self.name) or ".." in self.name.split("/"):
            raise ValueError(
                f"{short(self.name)} is not a secret name: 1-512 letters, digits and /_+=.@-"
            )
        if self.key and not re.fullmatch(r"[A-Za-z0-9_.-]{1,253}", self.key):
            raise ValueError(f"key {short(self.key)} must be letters, digits, '_', '.', '-'")
        return self

    def ref(self) -> SecretRef:
        return SecretRef(source=self.source, name=self.name, key=self.key)


class ConfigSpec(_Strict):
    """Settings (plain values) and secrets (references only), given to the release's processes
    as environment variables."""

    settings: dict[Variable, Annotated[str, Field(max_length=MAX_SETTING_CHARS)]] = Field(
        default_factory=dict,
        max_length=MAX_CONFIG_ENTRIES,
        description="Plain values: never put a secret here (they are shown in summaries).",
    )
    secrets: dict[Variable, SecretRefSpec] = Field(
        default_factory=dict,
        max_length=MAX_CONFIG_ENTRIES,
        description="References resolved by the deployer at deploy time; never values.",
    )

    @field_validator("settings", mode="before")
    @classmethod
    def _plain_values(cls, value: Any) -> Any:
        # YAML reads `PORT: 80` and `DEBUG: true` as numbers and booleans; they are text here.
        if isinstance(value, dict):
            return {
                k: (str(v).lower() if isinstance(v, bool) else str(v))
                if isinstance(v, bool | int | float)
                else v
                for k, v in value.items()
            }
        return value

    @model_validator(mode="after")
    def _one_kind_per_name(self) -> ConfigSpec:
        both = sorted(set(self.settings) & set(self.secrets))
        if both:
            raise ValueError(f"{', '.join(both)}: a name is a setting or a secret, not both")
        return self

    def release_config(self) -> ReleaseConfig:
        return ReleaseConfig(
            settings=dict(self.settings),
            secrets={name: ref.ref() for name, ref in self.secrets.items()},
        )


class ArtifactSpec(ConfigSpec):
    """One of several deployables of the run (`artifacts:`): built from `path`, run with
    `run`. On the platform it is the service `<service>-<artifact>`."""

    path: ReportPath = Field(description="Directory of the artifact inside the repository.")
    run: list[str] = Field(
        default_factory=list,
        description="Command a process-based platform runs; '{port}' is replaced.",
    )
    health_path: CheckPath = "/health"
    ready_path: CheckPath = "/ready"
    environments: dict[SafeName, ConfigSpec] = Field(
        default_factory=dict,
        max_length=100,
        description="This artifact's settings and secrets in one environment, over its own.",
    )
    env: ReleaseEnv
    release: ReleaseCommand


MAX_ARTIFACTS = 10


class FreezeWindow(_Strict):
    """When the environment takes no deploys: from each time `cron` matches (read in
    `timezone`), for `duration`. `{cron: "0 18 * * FRI", duration: 62h, timezone: Asia/Seoul}`"""

    cron: str = Field(max_length=200)
    duration: Month
    timezone: str = Field("UTC", max_length=100)

    @field_validator("cron")
    @classmethod
    def _cron_reads(cls, value: str) -> str:
        from contracts.definition.freeze import parse_cron

        parse_cron(value)
        return value

    @field_validator("timezone")
    @classmethod
    def _zone_exists(cls, value: str) -> str:
        from contracts.definition.freeze import time_zone

        time_zone(value)
        return value


class EnvironmentSpec(ConfigSpec):
    """Per-environment policy (HEAL7's environment table), and the release's configuration
    there (`settings`, `secrets`)."""

    requires_approval: bool = False
    strategy: Strategy = "rolling"
    branches: list[str] = Field(default_factory=list, description="Empty: any branch.")
    auto_rollback: bool = True
    concurrency: Literal["queue", "supersede"] | None = Field(
        None,
        description="Several runs at once: 'supersede' (newest commit wins) or 'queue' (in "
        "commit order). Default: queue for production, supersede elsewhere.",
    )
    freeze: list[FreezeWindow] = Field(
        default_factory=list, description="Windows when deploys wait for the window's end."
    )
    freeze_override_roles: list[str] = Field(
        default_factory=list,
        description="Who may let a deploy through a freeze: approving the gate "
        "'<environment>-freeze'. Empty: nobody; the deploy waits.",
    )
    metrics: MetricsSpec | None = Field(
        None, description="This environment's preset and custom metrics, over the top level's."
    )
    resources: list[Annotated[str, AfterValidator(_service_entry)]] = Field(
        default_factory=list,
        max_length=10,
        description="Backing resources its releases use ('postgres:16', 'redis:7'): on the "
        "local platform real servers kept across releases; elsewhere references.",
    )

    @field_validator("resources")
    @classmethod
    def _one_resource_of_each(cls, resources: list[str]) -> list[str]:
        kinds = [parse_service(s).kind for s in resources]
        twice = sorted({k for k in kinds if kinds.count(k) > 1})
        if twice:
            raise ValueError(f"{', '.join(twice)} listed more than once; one of each kind")
        return resources


class PipelineSpec(_Strict):
    """A validated pipeline definition."""

    name: str = Field(min_length=1, max_length=200)
    service: ServiceSpec
    artifacts: dict[SafeName, ArtifactSpec] = Field(
        default_factory=dict,
        max_length=MAX_ARTIFACTS,
        description="Several deployables, each built, scanned and published once, and "
        "deployed, canaried, monitored and rolled back together. Empty: the service itself.",
    )
    environments: dict[SafeName, EnvironmentSpec] = Field(default_factory=dict, max_length=100)
    stages: list[Stage] = Field(min_length=1, max_length=MAX_STAGES_READ)
    source: str = Field("", description="File the definition was loaded from.")
    metrics: MetricsSpec | None = Field(None, description="Default: the traefik preset.")
    on: TriggersSpec | None = Field(
        None, description="What each kind of run runs: `on.pull_request` (pull-request runs)."
    )
    paths_ignore: list[PathPattern] = Field(
        default_factory=list,
        max_length=MAX_PATH_PATTERNS,
        description="A commit whose changes (against its base, else its parent) all match "
        "these patterns starts no run: `slipway start` says so and exits 0.",
    )

    def metric_templates(self, environment: str) -> dict[str, str]:
        """Metric name → PromQL template for `environment`: its preset (the environment's,
        else the top level's, else traefik) with the custom metrics of both on top."""
        env = self.environments.get(environment)
        top, own = self.metrics or MetricsSpec(), (env.metrics if env else None) or MetricsSpec()
        preset = own.preset or top.preset or "traefik"
        custom = {**top.custom, **own.custom}
        return {**PRESETS[preset], **{name: m.query for name, m in custom.items()}}

    def release_config(self, environment: str) -> ReleaseConfig:
        """The configuration a release runs with in `environment`: the environment's, and
        each artifact's (its own, then its `environments.<environment>`) over it."""
        env = self.environments.get(environment)
        top = env.release_config() if env else ReleaseConfig()
        components: dict[str, ReleaseConfig] = {}
        for name, artifact in self.artifacts.items():
            own = artifact.release_config()
            here = artifact.environments.get(environment)
            if here is not None:
                own = ReleaseConfig(
                    settings=own.settings,
                    secrets=own.secrets,
                    components={"_": here.release_config()},
                ).for_component("_")
            if not own.is_empty:
                components[name] = own
        return top.model_copy(update={"components": components})

    @model_validator(mode="after")
    def _artifact_environments_are_declared(self) -> PipelineSpec:
        for name, artifact in self.artifacts.items():
            for environment in artifact.environments:
                if environment not in self.environments:
                    declared = ", ".join(self.environments) or "none"
                    raise ValueError(
                        f"artifacts.{name}.environments: unknown environment "
                        f"{environment!r}; declared under environments: {declared}"
                    )
        return self

    def releases(self) -> dict[str, ServiceSpec | ArtifactSpec]:
        """Each deployable by name ('' for the service itself)."""
        if self.artifacts:
            return dict(self.artifacts)
        return {"": self.service}

    @model_validator(mode="after")
    def _artifact_services_are_names(self) -> PipelineSpec:
        if self.artifacts and self.service.run:
            raise ValueError(
                "service.run: with artifacts: each artifact says how it runs; remove "
                "service.run (it would be ignored)"
            )
        for name in self.artifacts:
            platform_name = f"{self.service.name}-{name}"
            if not SERVICE_NAME.match(platform_name):
                raise ValueError(
                    f"artifacts.{name}: its platform service {platform_name!r} is not a valid "
                    "service name (lowercase letters, digits and '-', at most 63)"
                )
        return self

    def artifact_for(self, stage: Stage) -> str | None:
        """The artifact a check, canary or monitor stage addresses: its own `artifact:`,
        else the first declared; None without `artifacts:`."""
        if not self.artifacts:
            return None
        named: str | None = getattr(stage, "artifact", None)
        return named or next(iter(self.artifacts))

    def stage(self, name: str) -> Stage:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise KeyError(name)

    @property
    def by_name(self) -> dict[str, Stage]:
        return {s.name: s for s in self.stages}


class Problem(_Strict):
    """One thing wrong with a definition."""

    file: str
    stage: str | None = None
    field: str | None = None
    message: str

    def __str__(self) -> str:
        where = self.file
        if self.stage:
            where += f": stage {self.stage!r}"
        if self.field:
            where += f", field {self.field!r}"
        return f"{where}: {self.message}"


class DefinitionError(ValueError):
    """A definition that cannot run; carries every problem found, not only the first."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"invalid pipeline definition ({len(problems)} problems):\n{lines}")
