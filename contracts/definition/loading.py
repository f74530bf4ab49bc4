"""Loading a definition: read its files, resolve `extends:`, validate it and its rules,
and report every problem with the file, stage and field it is in."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import (
    ValidationError,
)

from contracts.definition import rules
from contracts.definition.files import DefinitionFileError, resolve_extends
from contracts.definition.limits import (
    MAX_SPEC_BYTES,
    MAX_STAGES,
    MAX_STAGES_READ,
    SAFE_NAME,
    SERVICE_NAME,
    short,
)
from contracts.definition.metric_presets import (
    BUILTIN_METRICS,
    REQUESTS,
)
from contracts.definition.model import (
    STAGE_ADAPTER,
    STAGE_KINDS,
    CanaryStage,
    CheckoutStage,
    DefinitionError,
    DeployStage,
    MonitorStage,
    PipelineSpec,
    Problem,
    Stage,
    env_resource_kinds,
)
from contracts.definition.service_templates import parse_service

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}

__all__ = ["definition_problems", "load_pipeline", "validate_definition"]


def load_pipeline(
    path: str | Path,
    roles: Mapping[str, Sequence[str]] | None = None,
    extends_roots: Sequence[str | Path] = (),
) -> PipelineSpec:
    """Read, resolve `extends:` and validate a definition; raise `DefinitionError` listing
    every problem. `roles` (person → roles), when given, lets approvals be checked against
    who can meet them; `extends_roots` are directories a base may also come from."""

    file = Path(path)
    try:
        data = resolve_extends(file, [Path(r) for r in extends_roots])
    except DefinitionFileError as problem:
        raise DefinitionError(
            [Problem(file=problem.file, field=problem.field, message=problem.message)]
        ) from None
    return validate_definition(data, str(file), roles=roles)


def _is_true(key: object) -> bool:
    return key is True


def _need_names(needs: Any) -> list[str]:
    return [n for n in needs if isinstance(n, str)] if isinstance(needs, list) else []


def _loc_field(loc: Iterable[int | str]) -> str:
    return ".".join(str(p) for p in loc) or "(stage)"


def _label(raw: Mapping[str, Any], position: int) -> str:
    """How problems name a stage: its name if it is one, else its position."""
    name = raw.get("name")
    if isinstance(name, str) and name and len(name) <= 63:
        return name
    return f"#{position + 1}" if name is None else f"#{position + 1} {short(name, 40)}"


def validate_definition(
    data: Mapping[str, Any],
    file: str,
    problems: list[Problem] | None = None,
    roles: Mapping[str, Sequence[str]] | None = None,
) -> PipelineSpec:
    """Validate a parsed definition; raise `DefinitionError` with every problem found."""

    problems = list(problems or [])
    raw_stages = data.get("stages")
    if not isinstance(raw_stages, list) or not raw_stages:
        problems.append(Problem(file=file, field="stages", message="a non-empty list is required"))
        raw_stages = []
    if len(raw_stages) > MAX_STAGES:
        unread = len(raw_stages) > MAX_STAGES_READ
        why = (
            " (a list this long is not read further)"
            if unread
            else ": a run records about 6 history events per stage, and Temporal ends a run "
            "whose history passes 51,200 events"
        )
        message = f"{len(raw_stages)} stages; a definition may have {MAX_STAGES}{why}"
        problems.append(Problem(file=file, field="stages", message=message))
        if unread:
            raise DefinitionError(problems)

    stages: list[Stage] = []
    for position, raw in enumerate(raw_stages):
        if not isinstance(raw, dict):
            label = f"#{position + 1}"
            problems.append(Problem(file=file, stage=label, message="a stage must be a mapping"))
            continue
        label = _label(raw, position)
        kind = raw.get("kind")
        if not isinstance(kind, str) or kind not in STAGE_KINDS:
            problems.append(
                Problem(
                    file=file,
                    stage=label,
                    field="kind",
                    message=f"unknown kind {short(kind)}; one of: {', '.join(STAGE_KINDS)}",
                )
            )
            continue
        try:
            stages.append(STAGE_ADAPTER.validate_python(raw))
        except ValidationError as exc:
            for err in exc.errors(include_url=False, include_input=False):
                # The discriminator's tag leads the location; a field may share its name
                # (`command` of a `command` stage), so only the leading one is dropped.
                loc = list(err["loc"])[1:] if err["loc"][:1] == (kind,) else list(err["loc"])
                problems.append(
                    Problem(file=file, stage=label, field=_loc_field(loc), message=_said(err))
                )

    # YAML 1.1 (PyYAML) reads a bare `on` key as true, as GitHub Actions' users know.
    top = {("on" if _is_true(k) else k): v for k, v in data.items() if k != "stages"}
    header: PipelineSpec | None = None
    try:
        header = PipelineSpec.model_validate(
            {**top, "source": file, "stages": [CheckoutStage(name="placeholder", kind="checkout")]}
        )
    except ValidationError as exc:
        for err in exc.errors(include_url=False, include_input=False):
            problems.append(Problem(file=file, field=_loc_field(err["loc"]), message=_said(err)))

    # `needs` that is not a list of names was reported above; the graph sees only names.
    graph_input = [
        (_label(s, i), _need_names(s.get("needs")), str(s.get("kind")))
        for i, s in enumerate(raw_stages)
        if isinstance(s, dict)
    ]
    problems.extend(rules.graph_problems(file, graph_input))
    if header is not None:
        valid = {s.name for s in stages}
        unvalidated = [kind for name, _, kind in graph_input if name not in valid]
        problems.extend(rules.policy_problems(file, stages, header.environments, unvalidated))
        problems.extend(rules.approval_problems(file, stages, header.environments, roles))
        known = {name for name, _, _ in graph_input}
        problems.extend(rules.pull_request_problems(file, stages, header.on, known))
    if header is not None:
        problems.extend(_metric_problems(stages, header, file))
        problems.extend(_artifact_problems(stages, header, file))
        problems.extend(_resource_problems(stages, header, file))
    if problems or header is None:
        raise DefinitionError(problems)
    spec = header.model_copy(update={"stages": stages})
    size = len(spec.model_dump_json())
    if size > MAX_SPEC_BYTES:
        raise DefinitionError(
            [
                Problem(
                    file=file,
                    message=f"the definition is {size} bytes as the run's input; "
                    f"at most {MAX_SPEC_BYTES} fit in a workflow input",
                )
            ]
        )
    return spec


def definition_problems(spec: PipelineSpec) -> list[Problem]:
    """Every rule across stages that `validate_definition` applies, run again on a definition
    that is already typed: the worker's check at a run's start (a definition can reach the
    worker without `slipway validate`: `temporal workflow start`, a script, another CLI)."""

    file = spec.source or f"definition {spec.name!r}"
    stages = spec.stages
    problems = rules.graph_problems(file, [(s.name, list(s.needs), s.kind) for s in stages])
    problems.extend(rules.policy_problems(file, stages, spec.environments))
    problems.extend(rules.approval_problems(file, stages, spec.environments, None))
    problems.extend(rules.pull_request_problems(file, stages, spec.on, {s.name for s in stages}))
    problems.extend(_metric_problems(stages, spec, file))
    problems.extend(_artifact_problems(stages, spec, file))
    problems.extend(_resource_problems(stages, spec, file))
    return problems


_PATTERNS = {
    SERVICE_NAME.pattern: "is not a service name: 1-63 lower-case letters, digits and '-', "
    "starting and ending with a letter or digit (a DNS label)",
    SAFE_NAME.pattern: "is not a safe name: 1-63 letters, digits, '_', '.' and '-', starting "
    "with a letter or digit",
}


def _said(err: Any) -> str:
    """A pydantic error as one sentence for a person: without pydantic's "Value error, "
    prefix, and a name that does not match its pattern said in words, not as a regex."""
    message = str(err["msg"]).removeprefix("Value error, ")
    pattern = (err.get("ctx") or {}).get("pattern")
    if err.get("type") == "string_pattern_mismatch" and pattern in _PATTERNS:
        return _PATTERNS[pattern]
    return message


def _artifact_problems(stages: Iterable[Stage], header: PipelineSpec, file: str) -> list[Problem]:
    """A stage's `artifact:` must name a declared artifact."""
    problems: list[Problem] = []
    for stage in stages:
        named = getattr(stage, "artifact", None)
        if named is None or named in header.artifacts:
            continue
        declared = ", ".join(header.artifacts) or "none (no artifacts: section)"
        problems.append(
            Problem(
                file=file,
                stage=stage.name,
                field="artifact",
                message=f"unknown artifact {named!r}; declared: {declared}",
            )
        )
    return problems


def _resource_problems(stages: Iterable[Stage], header: PipelineSpec, file: str) -> list[Problem]:
    """Every environment a deploy stage names declares the resources its releases' `env:`
    refers to: refused before anything deploys, naming the environment and the field."""
    deployed = sorted({s.environment for s in stages if isinstance(s, DeployStage)})
    problems: list[Problem] = []
    for environment in deployed:
        env_spec = header.environments.get(environment)
        declared = {parse_service(r).kind for r in (env_spec.resources if env_spec else [])}
        for name, release in header.releases().items():
            for kind in sorted(env_resource_kinds(release.env) - declared):
                where = f"artifacts.{name}.env" if name else "service.env"
                problems.append(
                    Problem(
                        file=file,
                        field=f"environments.{environment}.resources",
                        message=f"{where} refers to {{services.{kind}.…}} but environment "
                        f"{environment!r} declares no {kind} resource; add '{kind}' to it",
                    )
                )
    return problems


def _metric_problems(stages: Iterable[Stage], header: PipelineSpec, file: str) -> list[Problem]:
    """Checks naming a metric that neither the preset nor the environment's custom metrics
    define."""
    problems: list[Problem] = []
    for stage in stages:
        if isinstance(stage, CanaryStage):
            field, checks = "metrics", stage.metrics
        elif isinstance(stage, MonitorStage):
            field, checks = "criteria", stage.criteria
        else:
            continue
        known = set(header.metric_templates(stage.environment)) - {REQUESTS}
        for position, check in enumerate(checks):
            if check.metric not in known:
                custom = sorted(known - BUILTIN_METRICS)
                problems.append(
                    Problem(
                        file=file,
                        stage=stage.name,
                        field=f"{field}.{position}.metric",
                        message=f"unknown metric {check.metric!r}; preset metrics: "
                        f"{', '.join(sorted(BUILTIN_METRICS))}"
                        + (f"; custom: {', '.join(custom)}" if custom else "")
                        + " (define others under metrics.custom)",
                    )
                )
    return problems
