"""Stages over the run's artifact: build once (each deployable of a bundle side by side), scan
the image, publish by digest."""

from __future__ import annotations

import asyncio
import posixpath

from temporalio import workflow

from contracts import judgments as policy
from contracts.activity import (
    ActivityName,
    Artifact,
    BuildRequest,
    Component,
    ImageScanRequest,
    PublishRequest,
    ScanReport,
    bundle_of,
    component_service,
)
from contracts.definition.model import (
    BuildStage,
    ImageScanStage,
    PublishStage,
)
from workflows.stages.run_state import (
    RunState,
    StageFailedError,
    stage_call,
)

__all__ = ["build", "image_scan", "publish"]


async def build(stage: BuildStage, state: RunState) -> str:
    if state.artifact is not None:
        # Built once per run: a second build stage (or a replayed one) reuses the digest.
        return f"reused {state.artifact.digest[:19]}"
    ws = state.need_workspace(stage)
    spec = state.input.spec
    if not spec.artifacts:
        artifact = await _build_one(stage, state, ws.path, state.service, "")
        state.artifact = artifact
        return f"{artifact.kind} {artifact.digest[:19]} ({artifact.size_bytes / 1e3:.0f} kB)"
    # Several deployables: each built once, side by side; the run's release is their bundle.
    names = list(spec.artifacts)
    built = await asyncio.gather(
        *(
            _build_one(
                stage,
                state,
                posixpath.join(ws.path, spec.artifacts[name].path),
                component_service(state.service, name),
                f":{name}",
            )
            for name in names
        )
    )
    state.artifact = bundle_of(
        [
            Component(
                name=name,
                artifact=artifact,
                run_command=spec.artifacts[name].run,
                health_path=spec.artifacts[name].health_path,
                ready_path=spec.artifacts[name].ready_path,
                env=dict(spec.artifacts[name].env),
                release=list(spec.artifacts[name].release),
            )
            for name, artifact in zip(names, built, strict=True)
        ],
        version=built[0].version,
    )
    return "; ".join(
        f"{name}: {a.kind} {a.digest[:19]} ({a.size_bytes / 1e3:.0f} kB)"
        for name, a in zip(names, built, strict=True)
    )


async def _build_one(
    stage: BuildStage, state: RunState, path: str, service: str, suffix: str
) -> Artifact:
    ws = state.need_workspace(stage)
    run = state.input.run
    started = workflow.now()
    artifact = await stage_call(
        stage,
        state,
        ActivityName.BUILD,
        BuildRequest(path=path, service=service, commit=ws.commit, branch=run.branch),
        Artifact,
        f"build {service} at {ws.commit[:12]}",
        suffix=suffix,
    )
    took = (workflow.now() - started).total_seconds()
    what = f"{suffix[1:]}: " if suffix else ""
    if stage.max_size_mb is not None and artifact.size_bytes > stage.max_size_mb * 1e6:
        raise StageFailedError(
            f"{what}artifact is {artifact.size_bytes / 1e6:.1f} MB, limit {stage.max_size_mb:g} MB"
        )
    if stage.max_duration is not None and took > stage.max_duration.total_seconds():
        raise StageFailedError(
            f"{what}build took {took:.0f}s, limit {stage.max_duration.total_seconds():.0f}s"
        )
    return artifact


def _parts(artifact: Artifact) -> list[tuple[str, Artifact]]:
    """(suffix, artifact) for each deployable: the bundle's components, or the one artifact."""
    if artifact.kind != "bundle":
        return [("", artifact)]
    return [(f":{c.name}", c.artifact) for c in artifact.components]


async def image_scan(stage: ImageScanStage, state: RunState) -> str:
    artifact = state.need_artifact(stage)
    parts = _parts(artifact)
    reports = await asyncio.gather(
        *(
            stage_call(
                stage,
                state,
                ActivityName.SCAN_IMAGE,
                ImageScanRequest(artifact=part, scanner=stage.scanner, ignore=stage.ignore),
                ScanReport,
                f"{stage.scanner} on {suffix[1:] or part.digest[:19]}",
                suffix=suffix,
            )
            for suffix, part in parts
        )
    )
    # One report for the stage; in a bundle each scanner line names its artifact.
    report = ScanReport(
        reports=[
            r.model_copy(update={"scanner": f"{r.scanner} ({suffix[1:]})"}) if suffix else r
            for (suffix, _), one in zip(parts, reports, strict=True)
            for r in one.reports
        ]
    )
    state.scans[stage.name] = report
    verdict = policy.judge_scan(report, stage.fail_on, stage.unavailable, stage.name)
    if not verdict.passed:
        raise StageFailedError(verdict.summary)
    counts = report.counts()
    notes = [*verdict.warnings, report.listing_note()]
    return f"HIGH {counts['high']}, CRITICAL {counts['critical']}" + "".join(
        f"; {note}" for note in notes if note
    )


async def publish(stage: PublishStage, state: RunState) -> str:
    artifact = state.need_artifact(stage)
    run = state.input.run
    branch = run.branch.replace("/", "-")
    tags = [t.format(branch=branch, sha=run.commit, sha12=run.sha12) for t in stage.tags]
    parts = _parts(artifact)
    published = await asyncio.gather(
        *(
            stage_call(
                stage,
                state,
                ActivityName.PUBLISH,
                PublishRequest(
                    artifact=part,
                    service=component_service(state.service, suffix[1:])
                    if suffix
                    else state.service,
                    tags=tags,
                ),
                Artifact,
                f"{suffix[1:] + ' ' if suffix else ''}tags " + ", ".join(tags),
                suffix=suffix,
            )
            for suffix, part in parts
        )
    )
    for (suffix, part), answer in zip(parts, published, strict=True):
        if answer.digest != part.digest:
            what = f"{suffix[1:]}: " if suffix else ""
            raise StageFailedError(
                f"{what}registry answered digest {answer.digest}, built {part.digest}: "
                "refusing to deploy something other than what was built and scanned"
            )
    if artifact.kind != "bundle":
        state.artifact = published[0]
    else:
        state.artifact = bundle_of(
            [
                c.model_copy(update={"artifact": answer})
                for c, answer in zip(artifact.components, published, strict=True)
            ],
            version=artifact.version,
        )
    return "tags " + ", ".join(tags)
