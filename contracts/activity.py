"""Data that crosses the workflow/activity boundary.

Workflows call activities *by name* with one of these models and get one of these models back,
so workflow code never imports an activity implementation, and tests can register a fake under
the same name. Every model is a single object (never a positional list) so that adding a field
with a default does not break runs already in history.

This module is pure data: it is imported by deterministic workflow code.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import date, datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "RUNNER_ACTIVITIES",
    "ActivityName",
    "Artifact",
    "BrowserTestReport",
    "BrowserTestRequest",
    "BuildRequest",
    "CheckoutRequest",
    "Component",
    "DeployRequest",
    "DeployResult",
    "Endpoint",
    "EndpointRequest",
    "FenceRequest",
    "Finding",
    "FunctionComplexity",
    "HttpCheck",
    "HttpCheckReport",
    "HttpCheckRequest",
    "IgnoreEntry",
    "ImageScanRequest",
    "LiveScanRequest",
    "LoadReport",
    "LoadRequest",
    "LoadTestPath",
    "LoadTestReport",
    "LoadTestRequest",
    "MetricName",
    "MetricsQuery",
    "MetricsSample",
    "NotifyAudience",
    "NotifyRequest",
    "PageAudit",
    "PublishRequest",
    "ReferenceCheckRequest",
    "ReferenceCheckResult",
    "ReferenceProblem",
    "ReleaseConfig",
    "ReleaseReferences",
    "ReleaseSpec",
    "RestoreRequest",
    "RestoreResult",
    "RollbackRequest",
    "RollbackResult",
    "RunRef",
    "ScanReport",
    "ScanRequest",
    "ScannerReport",
    "SecretRef",
    "SecretSource",
    "Severity",
    "Slot",
    "Strategy",
    "SuiteReport",
    "SuiteRequest",
    "WebAuditReport",
    "WebAuditRequest",
    "WeightRequest",
    "Workspace",
    "bundle_of",
    "component_service",
    "release_digest",
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ActivityName(StrEnum):
    """The registered name of every activity; workflows call activities by these names."""

    CHECKOUT = "checkout"
    SCAN = "scan"
    SCAN_IMAGE = "scan_image"
    RUN_TESTS = "run_tests"
    RUN_COMMAND = "run_command"
    BUILD = "build"
    PUBLISH = "publish"
    DEPLOY = "deploy"
    SET_WEIGHT = "set_weight"
    PROMOTE = "promote"
    ROLLBACK = "rollback"
    FENCE = "fence"
    RESTORE = "restore"
    # A pipeline's messages to its environments' workflows (they run these as updates).
    ACQUIRE_LEASE = "acquire_lease"
    REPORT_SERVING = "report_serving"
    RELEASE_LEASE = "release_lease"
    REQUEST_ROLLBACK = "request_rollback"
    CONTROL_CANARY = "control_canary"
    RUN_STATUS = "run_status"
    CONFIRM_LEASE = "confirm_lease"
    HTTP_CHECK = "http_check"
    # Where an environment's service answers (base URL and headers), for the runner's tools.
    RESOLVE_ENDPOINT = "resolve_endpoint"
    # Live tests of a running environment: a load tool, a dynamic security scanner.
    LOAD_TEST = "load_test"
    LIVE_SCAN = "live_scan"
    # A web front end in a real browser (Debian's Chromium): the service's own Playwright
    # tests, and Lighthouse scores with axe's WCAG violations.
    BROWSER_TESTS = "browser_tests"
    WEB_AUDIT = "web_audit"
    QUERY_METRICS = "query_metrics"
    GENERATE_LOAD = "generate_load"
    NOTIFY = "notify"
    # The worker's policy: a decision's verdict, and the policy a run starts under.
    CHECK_DECISION = "check_decision"
    POLICY_IN_FORCE = "policy_in_force"
    # At a run's start: every secret and resource reference of the releases it will deploy.
    CHECK_REFERENCES = "check_references"


RUNNER_ACTIVITIES: frozenset[ActivityName] = frozenset(
    {
        # Fetches what the commit's author controls into the runner's filesystem; every
        # stage below reads the workspace it returns, so it lives where they run.
        ActivityName.CHECKOUT,
        # Scanners parse (bandit, detect-secrets, SonarQube's scanner) and resolve (pip-audit
        # builds the project's metadata) the commit's code.
        ActivityName.SCAN,
        # Runs the commit's tests, its `setup:` commands and its backing services' clients.
        ActivityName.RUN_TESTS,
        # Runs whatever the definition's command stage says, in the checkout.
        ActivityName.RUN_COMMAND,
        # A PEP 517 build runs the commit's build backend and setup.py; an image build runs
        # its Dockerfile's RUN steps. The artifact reaches the deployer through the artifact
        # store (wheel) or the registry (image), and is addressed by digest.
        ActivityName.BUILD,
        # Locust drives load at the environment and reads every answer of the commit's
        # service; it needs no credential, only the URL the deployer resolved
        # (RESOLVE_ENDPOINT). A third-party tool facing the commit's answers stays away from
        # the deployer's keys.
        ActivityName.LOAD_TEST,
        # Wapiti crawls and attacks the running commit, parsing whatever HTML and headers it
        # serves (hostile input by design); no credential, only the resolved URL.
        ActivityName.LIVE_SCAN,
        # The service's own Playwright tests: the commit's code (in its test venv) driving a
        # browser that renders whatever the commit serves.
        ActivityName.BROWSER_TESTS,
        # Lighthouse and axe load the commit's pages (its scripts run in the browser).
        ActivityName.WEB_AUDIT,
    }
)
"""Activities that execute or parse the commit's own code: the *runner's* work, sent to the
runner's task queue (workflows/calls.py) and registered only by runner workers (worker.py).
Every other activity belongs to the *deployer*, which holds the policy, the codec key and the
platform and registry credentials: deploys, weights, promotions, rollbacks, fences and
restores, leases and decisions, metrics and load, HTTP checks, notifications, publishing,
and `scan_image` (it reads the registry's findings for a digest, with registry credentials,
and runs nothing of the commit)."""


class Severity(StrEnum):
    """Finding severities, ordered from least to most severe (see `Severity.rank`)."""

    INFO = "info"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return list(Severity).index(self)


Strategy = Literal["rolling", "blue_green", "canary"]
"""How a new version replaces the old one in an environment."""

Slot = Literal["stable", "canary", "blue", "green"]
"""Where a version runs inside an environment. Canary strategy uses stable/canary;
blue/green uses blue/green; rolling uses stable only."""


# --- source -------------------------------------------------------------------------------


class CheckoutRequest(_Model):
    """Check out `commit` of `repo` (a path or URL)."""

    repo: str
    commit: str
    service_path: str = Field(".", description="Directory of the service inside the repository.")


class Workspace(_Model):
    """A checked-out tree of one commit, cached by sha."""

    path: str = Field(description="Absolute path of the service directory in the checkout.")
    commit: str = Field(description="The full sha that was checked out.")
    commit_time: datetime | None = Field(None, description="Committer time, for lead time.")
    author: str | None = Field(None, description="Commit author, as git knows them.")


# --- scan ---------------------------------------------------------------------------------


class Finding(_Model):
    """One finding of one scanner, with a normalised severity."""

    scanner: str
    rule: str
    severity: Severity
    message: str
    location: str = ""


class IgnoreEntry(_Model):
    """An accepted finding: findings whose rule is `id` stop counting until `expires` (a
    date, inclusive); after it the entry no longer applies and the stage fails naming it."""

    id: str = Field(min_length=1, description="The finding's rule or advisory id.")
    reason: str = Field(min_length=1, description="Why it is accepted.")
    expires: date

    @field_validator("id", "reason")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value.strip()


class ScanRequest(_Model):
    """Run `scanners` over the checked-out service at `path`. `ignore` and `skip` are keyed
    by scanner name: accepted findings (with reason and expiry) and rule ids not checked."""

    path: str
    scanners: list[str]
    ignore: dict[str, list[IgnoreEntry]] = {}
    skip: dict[str, list[str]] = {}
    commit: str = Field("", description="The commit checked out at `path` (SonarQube's analysis).")
    branch: str = ""


class ImageScanRequest(_Model):
    """Scan a built artifact (a container image or an archive) with `scanner`."""

    artifact: Artifact
    scanner: str = "trivy"
    ignore: list[IgnoreEntry] = []


class FunctionComplexity(_Model):
    """One function's cyclomatic complexity, where it is (`app/server.py:41 _route`)."""

    function: str
    complexity: int


class ScannerReport(_Model):
    """What one scanner said. `available=False` means it could not run (binary or data source
    missing): the gate's policy decides, it is never a silent pass."""

    scanner: str
    available: bool = True
    reason: str = Field("", description="Why the scanner was unavailable, when it was.")
    findings: list[Finding] = []
    metrics: dict[str, float] = Field(
        default_factory=dict,
        description="Quality figures a scanner may report: duplication_pct, complexity (of the "
        "most complex function; older SonarQube reports: the project's sum).",
    )
    complexity_counts: dict[int, int] = Field(
        default_factory=dict,
        description="Functions per cyclomatic complexity (every function measured), so a gate "
        "counts the functions over any limit; empty when the scanner measures no functions.",
    )
    worst_functions: list[FunctionComplexity] = Field(
        default_factory=list, description="The most complex functions, worst first (at most 20)."
    )
    # Findings are capped to keep the activity result under Temporal's payload limit; the
    # counts are taken before the cap so that every gate judges all findings.
    severity_counts: dict[Severity, int] | None = Field(
        None,
        description="Findings per severity before the cap (accepted ones excluded); None in "
        "reports that were never capped, where `findings` is complete.",
    )
    omitted: int = Field(0, ge=0, description="Findings counted but not kept in `findings`.")
    accepted: int = Field(0, ge=0, description="Findings removed by baselines, ignore, skip.")
    expired_ignores: list[str] = Field(
        default_factory=list, description="Ignore entries past their date: each fails the gate."
    )

    def counts(self) -> dict[Severity, int]:
        """Findings per severity, every severity present (uncapped when capped)."""
        if self.severity_counts is not None:
            return {s: self.severity_counts.get(s, 0) for s in Severity}
        out = dict.fromkeys(Severity, 0)
        for f in self.findings:
            out[f.severity] += 1
        return out


class ScanReport(_Model):
    """All scanners of one scan stage."""

    reports: list[ScannerReport]

    def count_at_least(self, severity: Severity) -> int:
        return sum(
            n for r in self.reports for s, n in r.counts().items() if s.rank >= severity.rank
        )

    def listing_note(self) -> str:
        """What the findings list leaves out, per scanner: 'detect-secrets accepted 2' and
        'trivy lists 200, and 9,800 more' ('' when it leaves nothing out)."""
        notes = [f"{r.scanner} accepted {r.accepted:,}" for r in self.reports if r.accepted]
        notes += [
            f"{r.scanner} lists {len(r.findings):,}, and {r.omitted:,} more"
            for r in self.reports
            if r.omitted
        ]
        return "; ".join(notes)

    def counts(self) -> dict[str, int]:
        out = {s.value: 0 for s in Severity}
        for r in self.reports:
            for severity, n in r.counts().items():
                out[severity.value] += n
        return out


# --- test ---------------------------------------------------------------------------------


class SuiteRequest(_Model):
    """Run a test command in `path` and read its JUnit (and optional coverage) XML."""

    path: str
    command: list[str]
    junit: str = Field(description="JUnit XML path, relative to `path`.")
    coverage: str | None = Field(None, description="Cobertura coverage XML, relative to `path`.")
    env: dict[str, str] = {}
    services: list[str] = Field(
        default_factory=list,
        description="Backing services started for the run, e.g. 'postgres:16'; `env` values "
        "may refer to them as '{services.postgres.port}'.",
    )
    extras: list[str] | None = Field(
        None, description="pyproject extras for the venv; None: the `test` extra if declared."
    )
    requirements: list[str] = Field(
        default_factory=list, description="Requirements files for the venv, relative to `path`."
    )
    setup: list[str] = Field(
        default_factory=list, description="Shell commands run in the new venv (cached with it)."
    )


class CommandRequest(_Model):
    """Run `command` in `path` (a generic stage: a frontend build, a code generator)."""

    path: str
    command: list[str]
    env: dict[str, str] = {}


class CommandReport(_Model):
    """How a command ended; a non-zero exit is data, judged by the workflow."""

    exit_code: int
    duration_s: float = 0.0
    output_tail: str = ""
    timed_out: bool = False


class SuiteReport(_Model):
    """Counts from JUnit XML and line coverage from the coverage XML."""

    exit_code: int
    tests: int
    failures: int
    errors: int
    skipped: int
    coverage_pct: float | None = None
    duration_s: float = 0.0
    failed_tests: list[str] = Field(default_factory=list, description="First failing test ids.")
    services: list[str] = Field(
        default_factory=list,
        description="What each backing service ran, e.g. 'postgres 16.2' or "
        "'redis 7 asked, 6.2.6 available'.",
    )


# --- build / publish ----------------------------------------------------------------------


class Artifact(_Model):
    """A built artifact, identified by its content digest. Built once; the same digest is
    deployed to every environment. A `bundle` is the set of a run's deployables (the
    definition's `artifacts:`): deployed, rolled back and restored as one."""

    digest: str = Field(description="'sha256:<hex>' of the artifact's content.")
    uri: str = Field(description="Where the deploy target fetches it (path, image reference).")
    kind: Literal["wheel", "sdist", "image", "bundle"] = "wheel"
    size_bytes: int = 0
    version: str = Field("", description="Human version label, e.g. the short sha.")
    tags: list[str] = []
    components: list[Component] = Field(
        default_factory=list, description="A bundle's deployables, by name; empty otherwise."
    )


class Component(_Model):
    """One deployable of a bundle: its artifact and how a platform runs it. On the platform
    it is the service `<service>-<name>`, with its own slots and routes."""

    name: str
    artifact: Artifact
    run_command: list[str] = []
    health_path: str = "/health"
    ready_path: str = "/ready"
    env: dict[str, str] = Field(
        default_factory=dict, description="Its process's variables; resource placeholders."
    )
    release: list[str] = Field(default_factory=list, description="Its release-phase command.")


Artifact.model_rebuild()


def component_service(service: str, component: str) -> str:
    """The platform's name for one deployable of `service`'s bundle."""
    return f"{service}-{component}"


def bundle_of(components: list[Component], version: str = "") -> Artifact:
    """The bundle of `components`: its digest covers every component's name and digest, so
    a change to any one of them is a new release (and the same set is the same release)."""
    ordered = sorted(components, key=lambda c: c.name)
    content = "\n".join(f"{c.name} {c.artifact.digest}" for c in ordered)
    return Artifact(
        digest="sha256:" + hashlib.sha256(content.encode()).hexdigest(),
        uri="bundle:" + ",".join(c.name for c in ordered),
        kind="bundle",
        size_bytes=sum(c.artifact.size_bytes for c in ordered),
        version=version,
        components=ordered,
    )


# --- configuration ------------------------------------------------------------------------


SecretSource = Literal["local", "secretsmanager", "kubernetes"]
"""Where a secret reference points: the deployer's local store (`slipway secret set`), AWS
Secrets Manager, or a Kubernetes Secret in the environment's namespace."""


class SecretRef(_Model):
    """A secret by reference, never its value: where it is, and which version the deployer
    resolved when the release was deployed (empty until then)."""

    source: SecretSource
    name: str
    key: str = Field(
        "",
        description="A Kubernetes Secret's data key, or a field of a JSON Secrets Manager "
        "secret; empty: the whole value.",
    )
    version: str = Field("", description="The version resolved at deploy time.")

    def label(self) -> str:
        """'secretsmanager:heal7/production/db#password@v3' (no value, ever)."""
        text = f"{self.source}:{self.name}"
        if self.key:
            text += f"#{self.key}"
        return text + (f"@{self.version}" if self.version else "")


class ReleaseConfig(_Model):
    """A release's configuration: plain settings and secret references, as environment
    variables of the release's processes. A bundle's artifacts add their own over the
    environment's (`components`). Part of what an environment records and a rollback puts
    back; a change of it is a new release (`release_digest`)."""

    settings: dict[str, str] = {}
    secrets: dict[str, SecretRef] = {}
    components: dict[str, ReleaseConfig] = Field(
        default_factory=dict, description="A bundle's per-artifact config, over the top level."
    )

    def for_component(self, name: str) -> ReleaseConfig:
        """What `name` runs with: the top level's, its own over it (a name is a setting or a
        secret, whichever its own level says last)."""
        own = self.components.get(name)
        if own is None:
            return ReleaseConfig(settings=self.settings, secrets=self.secrets)
        settings = {k: v for k, v in self.settings.items() if k not in own.secrets}
        secrets = {k: v for k, v in self.secrets.items() if k not in own.settings}
        return ReleaseConfig(
            settings={**settings, **own.settings}, secrets={**secrets, **own.secrets}
        )

    def effective(self, components: Sequence[str] = ()) -> dict[str, ReleaseConfig]:
        """Per component ('' for a release of one artifact), what each runs with."""
        if not components:
            return {"": ReleaseConfig(settings=self.settings, secrets=self.secrets)}
        return {name: self.for_component(name) for name in sorted(components)}

    @property
    def is_empty(self) -> bool:
        return not (
            self.settings or self.secrets or any(not c.is_empty for c in self.components.values())
        )

    def fingerprint(self, components: Sequence[str] = ()) -> str:
        """A short hash of the effective configuration (values of settings, references and
        versions of secrets); '' when there is none."""
        effective = self.effective(components)
        if all(c.is_empty for c in effective.values()):
            return ""
        text = json.dumps(
            {name: c.model_dump(mode="json") for name, c in effective.items()}, sort_keys=True
        )
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def describe(self) -> str:
        """Names, references and versions for a summary: never a value."""
        parts: list[str] = []
        for where, c in [("", self), *((f"{n}: ", c) for n, c in sorted(self.components.items()))]:
            if c.settings:
                parts.append(f"{where}settings {', '.join(sorted(c.settings))}")
            if c.secrets:
                refs = ", ".join(f"{k} ({r.label()})" for k, r in sorted(c.secrets.items()))
                parts.append(f"{where}secrets {refs}")
        return "; ".join(parts)


def release_digest(artifact: Artifact, config: ReleaseConfig) -> str:
    """What identifies a release: the artifact's digest, and a hash of its configuration when
    it has one ('sha256:…+config:1a2b3c4d5e6f'). A settings-only change is a new release."""
    names = [c.name for c in artifact.components] if artifact.kind == "bundle" else []
    fingerprint = config.fingerprint(names)
    return f"{artifact.digest}+config:{fingerprint}" if fingerprint else artifact.digest


class BuildRequest(_Model):
    """Build the service at `path` for `commit`."""

    path: str
    service: str
    commit: str
    branch: str = ""


class PublishRequest(_Model):
    """Push `artifact` to the registry under `tags`; the digest does not change."""

    artifact: Artifact
    service: str
    tags: list[str]


# --- deploy / traffic ---------------------------------------------------------------------


class DeployRequest(_Model):
    """Run `artifact` in `slot` of `environment` and wait until it is healthy.
    Idempotent: deploying the digest already running in the slot is a no-op."""

    service: str
    environment: str
    slot: Slot
    artifact: Artifact
    strategy: Strategy = "rolling"
    run_command: list[str] = Field(
        default_factory=list,
        description="How a process-based platform starts the service; '{port}' is replaced.",
    )
    health_path: str = "/health"
    ready_path: str = "/ready"
    fence: int = Field(
        0,
        description="The environment lease's fencing token: a platform refuses a call whose "
        "token is lower than one it has seen for the environment (0: no lease, legacy runs).",
    )
    config: ReleaseConfig = Field(
        default_factory=ReleaseConfig,
        description="Settings and secret references; the deployer resolves them (values never "
        "travel in a request).",
    )

    @property
    def release_digest(self) -> str:
        """The release's identity: artifact and configuration (`release_digest`)."""
        return release_digest(self.artifact, self.config)

    resources: list[str] = Field(
        default_factory=list,
        description="The environment's resources ('postgres:16'): on the local platform made "
        "on first use and kept; `env` placeholders ({services.postgres.url}) name them.",
    )
    env: dict[str, str] = Field(
        default_factory=dict, description="The release's variables; resource placeholders."
    )
    release: list[str] = Field(
        default_factory=list, description="The release-phase command (before traffic moves)."
    )


class DeployResult(_Model):
    environment: str
    slot: Slot
    digest: str
    previous_digest: str | None = None
    endpoint: str = ""
    changed: bool = True
    config: ReleaseConfig | None = Field(
        None, description="The request's configuration with each secret's resolved version."
    )
    release_phase: str = Field(
        "", description="What the release phase did ('' when the release has none)."
    )


class ReleaseReferences(_Model):
    """What one deployable refers to in one environment, each with the definition field that
    declares it: its secret references, its `env:` (resource placeholders) and the
    environment's resources. References only: nothing here is a value."""

    environment: str
    service: str = Field(description="The platform's service (`<service>-<artifact>`).")
    secrets: dict[str, SecretRef] = Field(
        default_factory=dict,
        description="Definition field ('environments.production.secrets.DB_PASSWORD') → ref.",
    )
    env: dict[str, str] = Field(
        default_factory=dict, description="The release's variables; resource placeholders."
    )
    env_field: str = Field("service.env", description="Where `env` is declared.")
    resources: list[str] = Field(default_factory=list)
    resources_field: str = Field("", description="Where `resources` is declared.")


class ReferenceCheckRequest(_Model):
    """Before a run deploys anything: do the references of its releases resolve here?"""

    service: str
    releases: list[ReleaseReferences] = Field(default_factory=list)


class ReferenceProblem(_Model):
    """A reference that does not resolve: where it is declared and why, never a value."""

    environment: str
    field: str
    reference: str = Field(description="'kubernetes:heal7-db#password', 'Secret heal7-postgres'.")
    problem: str

    def sentence(self) -> str:
        return (
            f"environment {self.environment!r}, field {self.field!r}: "
            f"{self.reference} {self.problem}"
        )


class ReferenceCheckResult(_Model):
    checked: int = Field(0, description="How many references were looked up.")
    problems: list[ReferenceProblem] = Field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def sentences(self) -> list[str]:
        return [p.sentence() for p in self.problems]


class WeightRequest(_Model):
    """Send `canary_weight` percent of `environment`'s traffic to the canary slot."""

    service: str
    environment: str
    canary_weight: int = Field(ge=0, le=100)
    fence: int = Field(0, description="The lease's fencing token (see DeployRequest.fence).")
    components: list[str] = Field(
        default_factory=list, description="A bundle's deployables: every one moves together."
    )


class RunRef(_Model):
    """A workflow execution, by id (and run id when one run is meant)."""

    workflow_id: str
    run_id: str = ""


class FenceRequest(_Model):
    """Make `token` the environment's current fencing token: from now on the platform refuses
    calls carrying a lower one (a deposed lease holder's late writes)."""

    service: str
    environment: str
    token: int = Field(ge=1)
    components: list[str] = Field(
        default_factory=list,
        description="A bundle's deployables: each is fenced, and what serves is their bundle.",
    )


class ReleaseSpec(_Model):
    """Everything a platform needs to run a release again: what a rollback puts back. The
    artifact **and** its configuration (secrets by reference and version)."""

    artifact: Artifact
    run_command: list[str] = []
    health_path: str = "/health"
    ready_path: str = "/ready"
    config: ReleaseConfig = Field(default_factory=ReleaseConfig)
    env: dict[str, str] = Field(
        default_factory=dict, description="The release's variables; resource placeholders."
    )
    release_phase: str = Field(
        "",
        description="The release command this release ran in the environment, as recorded "
        "(a rollback runs none: migrations are never run backwards).",
    )

    @property
    def digest(self) -> str:
        """The release's identity: the artifact's digest, with the configuration's hash when
        it has one (`release_digest`)."""
        return release_digest(self.artifact, self.config)


class RestoreRequest(_Model):
    """Put `environment` back on `target`: canary weight 0, canary slot down, and the serving
    slot on `target`'s digest (no `target`: the environment never had an earlier release, so
    only the canary is taken away). Idempotent: what already serves `target` is not touched."""

    service: str
    environment: str
    target: ReleaseSpec | None
    strategy: Strategy = "rolling"
    fence: int = Field(ge=1)
    reason: str = ""
    components: list[str] = Field(
        default_factory=list,
        description="A bundle's deployables besides the target's own (their canary goes too).",
    )


class RestoreResult(_Model):
    environment: str
    restored_digest: str | None = Field(description="What serves after the restore.")
    changed: bool


class RollbackRequest(_Model):
    """Legacy (runs started before environment leases): put `environment` back on its previous
    version: canary weight 0 and the canary slot scaled down; if the stable slot was already
    switched, restore its previous revision. New runs restore a recorded digest instead
    (`RestoreRequest`)."""

    service: str
    environment: str
    reason: str = ""


class RollbackResult(_Model):
    environment: str
    restored_digest: str | None
    changed: bool


class HttpCheck(_Model):
    """One HTTP probe: GET `path` expects `status` and, if set, `contains` in the body."""

    path: str = "/"
    status: int = 200
    contains: str | None = None


class HttpCheckRequest(_Model):
    service: str
    environment: str
    checks: list[HttpCheck]
    slot: Slot | None = Field(None, description="Probe one slot directly instead of the router.")


class HttpCheckReport(_Model):
    passed: int
    failed: int
    failures: list[str] = []


class EndpointRequest(_Model):
    """Where `service` answers in `environment` (through its router, or one slot)."""

    service: str
    environment: str
    slot: Slot | None = None


class Endpoint(_Model):
    """A base URL (no trailing slash) and the headers that pick the service there (the
    local platform's Host header on a shared entrypoint; the canary header on an ingress)."""

    base_url: str
    headers: dict[str, str] = {}


# --- live tests ---------------------------------------------------------------------------


class LoadTestPath(_Model):
    """A GET of `path`, picked `weight` times as often as a path of weight 1."""

    path: str = "/"
    weight: int = Field(1, ge=1, le=100)


class LoadTestRequest(_Model):
    """Drive `users` concurrent users at `endpoint` for `duration_s`, started over `ramp_s`;
    with `rate`, the users together send at most that many requests per second."""

    endpoint: Endpoint
    users: int = Field(ge=1, le=1000)
    rate: float | None = Field(None, gt=0, le=5000)
    duration_s: float = Field(gt=0, le=3600)
    ramp_s: float = Field(0, ge=0, le=3600)
    paths: list[LoadTestPath] = Field(min_length=1, max_length=20)
    request_timeout_s: float = Field(10, gt=0, le=300)


class LoadTestReport(_Model):
    """What the load tool measured over the whole run (ramp included); `available=False`
    when the tool could not run (the stage's `unavailable:` decides)."""

    tool: str = "locust"
    available: bool = True
    reason: str = ""
    requests: int = 0
    failures: int = 0
    rps: float = 0.0
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    duration_s: float = 0.0
    failure_examples: list[str] = Field(default_factory=list, description="First few errors.")

    @property
    def error_rate(self) -> float | None:
        """Failed requests in percent; None when nothing was sent."""
        return 100.0 * self.failures / self.requests if self.requests else None


class LiveScanRequest(_Model):
    """Scan the running service at `endpoint` with `scanner`, within `max_scan_s`."""

    endpoint: Endpoint
    scanner: str = "wapiti"
    modules: list[str] = []
    max_scan_s: float = Field(gt=0, le=3600)
    depth: int = Field(5, ge=1, le=50)
    ignore: list[IgnoreEntry] = []


# --- web front ends in a browser ---------------------------------------------------------


class BrowserTestRequest(_Model):
    """Run the service's own Playwright tests (pytest-playwright) found under `tests` in
    `path`, in a venv of its declared dependencies, against `endpoint` with Chromium."""

    path: str
    endpoint: Endpoint
    tests: list[str] = Field(min_length=1, max_length=20)
    args: list[str] = Field(default_factory=list, max_length=50)
    env: dict[str, str] = {}
    extras: list[str] | None = None
    requirements: list[str] = []
    setup: list[str] = []
    screenshot: Literal["only-on-failure", "on", "off"] = "only-on-failure"
    tracing: Literal["retain-on-failure", "on", "off"] = "retain-on-failure"
    video: Literal["retain-on-failure", "on", "off"] = "off"
    max_duration_s: float = Field(600, gt=0, le=3600)
    stage: str = Field("browser", description="The stage's name, for messages and paths.")


class BrowserTestReport(_Model):
    """What the browser tests did; `available=False` when no browser could run them (the
    stage's `unavailable:` decides). `results_dir`: where the traces, screenshots and JUnit
    report of a failed run are kept on the runner ('' when nothing was kept)."""

    available: bool = True
    reason: str = ""
    exit_code: int = 0
    tests: int = 0
    failures: int = 0
    errors: int = 0
    skipped: int = 0
    failed_tests: list[str] = []
    duration_s: float = 0.0
    results_dir: str = ""
    kept: list[str] = Field(default_factory=list, description="Files kept, at most 20 named.")
    output_tail: str = ""


class WebAuditRequest(_Model):
    """Audit `paths` of the service at `endpoint`: Lighthouse's category scores and axe's
    WCAG violations (for `wcag_tags`), all within `max_time_s`."""

    endpoint: Endpoint
    paths: list[str] = Field(min_length=1, max_length=20)
    lighthouse: bool = True
    axe: bool = True
    categories: list[str] = ["performance", "accessibility", "best-practices", "seo"]
    form_factor: Literal["mobile", "desktop"] = "mobile"
    wcag_tags: list[str] = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa"]
    max_time_s: float = Field(300, gt=0, le=3600)
    ignore: list[IgnoreEntry] = []


class PageAudit(_Model):
    """One page's Lighthouse scores (0-100; None: Lighthouse gave none) and why not."""

    path: str
    scores: dict[str, float | None] = {}
    error: str = ""


class WebAuditReport(_Model):
    """Lighthouse per page, and axe's violations as findings (rule: axe's rule id; severity:
    critical/serious/moderate/minor as critical/high/medium/low; location: page and
    element). `available=False` when the tools or the target could not run."""

    available: bool = True
    reason: str = ""
    pages: list[PageAudit] = []
    axe: ScannerReport | None = None
    tools: dict[str, str] = Field(default_factory=dict, description="Tool → version.")


# --- metrics ------------------------------------------------------------------------------


MetricName = str
"""A preset metric (`contracts.definition.metric_presets.BUILTIN_METRICS`) or one the definition
defines under `metrics.custom`."""


class MetricsQuery(_Model):
    """Measure `slot` of `environment` over the `window_s` seconds before `at`."""

    service: str
    environment: str
    slot: Slot
    window_s: float = Field(gt=0)
    at: datetime | None = Field(
        None,
        description="The window's end: when the interval it judges ended (the workflow's "
        "time when it asked), so a query that runs late, after its worker was lost, still "
        "reads the interval and not the quiet after it. None: when the query runs.",
    )
    metrics: list[MetricName]
    templates: dict[str, str] = Field(
        default_factory=dict,
        description="Metric → PromQL template, from the definition; empty: the provider's own.",
    )


class MetricsSample(_Model):
    """Measured values; `None` means no data (never a pass)."""

    values: dict[str, float | None]
    requests: int = 0
    source: str = ""
    queries: dict[str, str] = Field(
        default_factory=dict, description="Metric → the query that was asked (PromQL)."
    )


class LoadRequest(_Model):
    """Send bounded synthetic traffic to `environment` for `duration_s` (Flagger's load tester
    role), so analysis has requests to judge on a quiet environment."""

    service: str
    environment: str
    duration_s: float = Field(gt=0, le=3600)
    rps: float = Field(gt=0, le=500)
    path: str = "/"


class LoadReport(_Model):
    sent: int
    errors: int


# --- notify -------------------------------------------------------------------------------


class NotifyAudience(_Model):
    """Whom a notification is for, named by the worker's policy: the people holding `roles`
    (an approval gate's; the policy's rule for `gate` in `environment` wins when it pins
    roles), or the commit's `author` (the policy's person whose emails match, else as git
    names them)."""

    roles: list[str] = []
    gate: str = ""
    environment: str = ""
    author: str = ""


class NotifyRequest(_Model):
    """An event for humans; HEAL7's three levels plus info."""

    level: Literal["info", "success", "warning", "error"]
    event: str
    message: str
    service: str = ""
    environment: str = ""
    fields: dict[str, str] = {}
    audience: NotifyAudience | None = None


ImageScanRequest.model_rebuild()
