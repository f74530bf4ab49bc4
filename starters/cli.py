"""`slipway` (= `python -m starters`): the command line of CI, approvers and engineers.

Every command connects with Temporal's env config (TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE,
TEMPORAL_API_KEY, TLS, profiles). Exit codes: 0 ok, 1 the pipeline failed or a decision was
refused, 2 bad input (definition, policy file, arguments), 3 the run was superseded by a newer
commit (neither a success nor a failure of this one).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowHistory,
    WorkflowUpdateFailedError,
)
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from contracts.definition import dag
from contracts.definition.loading import load_pipeline
from contracts.definition.model import DefinitionError, PipelineSpec
from contracts.definition.triggers import pull_request_stages
from contracts.messages import (
    MAX_PULL_REQUEST,
    AbortRequest,
    ActionRecord,
    ApprovalRecord,
    CanaryControl,
    Decision,
    EnvironmentState,
    PipelineState,
    PipelineStatus,
    RollbackOutcome,
    RunContext,
    StageState,
)
from contracts.naming import environment_id, pipeline_id
from contracts.signed_decisions import COMMENT_LIMIT
from contracts.start_check import policy_start
from plumbing.codec import CodecError
from plumbing.connection import connect, runner_task_queue, task_queue
from plumbing.resource_records import ResourceRecords, records_root
from plumbing.signatures import SignatureError
from plumbing.updates import execute_update
from plumbing.worker_policy import PolicyError, gating_problems, load_policy
from starters import arguments, render
from starters.changes import ignored_change
from starters.runs import (
    RetryError,
    derived_workflow_id,
    pipeline_outcome,
    recorded_workflow_id,
    replay_history,
    reset_to_failed_stage,
    start_pipeline,
    unreadable_input,
)
from starters.signing import audit as audit_run
from starters.signing import find_key, sign_for
from workflows.environment.workflow import EnvironmentWorkflow
from workflows.pipeline.workflow import PipelineWorkflow
from workflows.rollback import ManualRollback

app = typer.Typer(
    name="slipway",
    help="Durable commit-to-production pipelines on Temporal.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

T = TypeVar("T")

RunId = Annotated[
    str,
    typer.Argument(
        help="Workflow id, e.g. pipeline-hello-0123456789ab.", callback=arguments.run_id
    ),
]
By = Annotated[str, typer.Option("--by", help="Who is asking (recorded in history).")]
Key = Annotated[
    Path | None,
    typer.Option(
        "--key",
        help="Your SSH key to sign with (else SLIPWAY_SIGNING_KEY, else git's user.signingkey "
        "when gpg.format is ssh). Without one the decision is unsigned.",
    ),
]


def _run(coro: Callable[[], Coroutine[Any, Any, T]]) -> T:
    try:
        return asyncio.run(coro())
    except RPCError as err:
        # A run, gate or environment that does not exist is bad input, not a crash.
        if err.status == RPCStatusCode.NOT_FOUND:
            raise _fail(f"not found: {err.message}") from None
        if err.status == RPCStatusCode.INVALID_ARGUMENT:
            raise _fail(f"refused by Temporal: {err.message}") from None
        raise


def _fail(message: str, code: int = 2) -> typer.Exit:
    typer.echo(message, err=True)
    return typer.Exit(code)


def _extends_roots() -> list[str]:
    """Directories besides a definition's own tree that `extends:` may name."""
    return [p for p in os.environ.get("SLIPWAY_EXTENDS_ROOTS", "").split(os.pathsep) if p]


def _load(definition: Path) -> PipelineSpec:
    try:
        return load_pipeline(definition, None, _extends_roots())
    except DefinitionError as err:
        raise _fail(str(err)) from None


async def _client() -> Client:
    try:
        return await connect()
    except CodecError as err:
        raise _fail(f"payload encryption: {err}") from None
    except RuntimeError as err:
        raise _fail(f"cannot connect to Temporal ({err}); set TEMPORAL_ADDRESS", 1) from None


@app.command()
def validate(
    definitions: Annotated[list[Path], typer.Argument(help="Pipeline definition files.")],
    policy: Annotated[
        Path | None,
        typer.Option(
            help="A worker's policy (policy.yaml): also check each definition as that worker "
            "does when a run starts (gates its people can meet, gated environments, "
            "concurrency)."
        ),
    ] = None,
    extends_root: Annotated[
        list[Path] | None,
        typer.Option(help="A directory `extends:` may also name (repeatable)."),
    ] = None,
) -> None:
    """Check definitions; every problem is listed with file, stage and field."""
    judged = None
    if policy is not None:
        try:
            judged = load_policy(policy)
        except PolicyError as err:
            raise _fail(str(err)) from None
        except OSError as err:
            raise _fail(f"{policy}: cannot read the policy file: {err.strerror or err}") from None
    allowed: list[str | Path] = [*_extends_roots(), *(extends_root or [])]
    bad = 0
    for path in definitions:
        try:
            spec = load_pipeline(path, None, allowed)
        except DefinitionError as err:
            bad += 1
            typer.echo(str(err), err=True)
            continue
        if judged is not None:
            problems = gating_problems(judged.policy, policy_start(spec, workflow_id=str(path)))
            if problems:
                bad += 1
                for problem in problems:
                    typer.echo(f"{path}: under {judged.path}: {problem}", err=True)
                continue
        typer.echo(f"{path}: ok ({len(spec.stages)} stages, service {spec.service.name})")
    if bad:
        raise typer.Exit(2)


@app.command()
def graph(definition: Annotated[Path, typer.Argument(help="Pipeline definition file.")]) -> None:
    """Print the definition as a mermaid flowchart."""
    typer.echo(dag.mermaid(_load(definition).stages))


@app.command()
def start(
    definition: Annotated[Path, typer.Option(help="Pipeline definition (YAML).")],
    repo: Annotated[
        str, typer.Option(help="Repository path or URL.", callback=arguments.repository)
    ],
    commit: Annotated[str, typer.Option(help="Full commit sha.", callback=arguments.commit_sha)],
    author: Annotated[
        str,
        typer.Option(help="Shown in summaries only: self-approval is judged on git's author."),
    ] = "",
    branch: Annotated[
        str, typer.Option(help="Branch of the commit.", callback=arguments.branch_name)
    ] = "main",
    service: Annotated[
        str,
        typer.Option(
            help="Override the definition's service name.",
            callback=arguments.optional_service_name,
        ),
    ] = "",
    commit_time: Annotated[
        str,
        typer.Option(
            hidden=True,
            help="Ignored: runs are ordered (and lead time measured) by git's committer time, "
            "never later than the run's start.",
        ),
    ] = "",
    diff_url: Annotated[str, typer.Option(help="Link approvers can read.")] = "",
    pull_request: Annotated[
        int | None,
        typer.Option(
            "--pull-request",
            help="Check pull request N's head commit (--commit): only the stages the "
            "definition's on.pull_request gives (never a deploy, approval or publish), in a "
            "run of its own (pipeline-SERVICE-SHA12-pr-N).",
            min=1,
            max=MAX_PULL_REQUEST,
        ),
    ] = None,
    base: Annotated[
        str,
        typer.Option(
            help="For paths_ignore: compare with this commit (a PR's base, a push's previous "
            "head) instead of the commit's parent.",
            callback=arguments.optional_commit_sha,
        ),
    ] = "",
    wait: Annotated[bool, typer.Option(help="Wait; exit 1 if the pipeline fails.")] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Start the pipeline of one commit (idempotent: an open or succeeded run is reused)."""
    spec = _load(definition)
    if service:
        spec = spec.model_copy(
            update={"service": spec.service.model_copy(update={"name": service})}
        )
    if pull_request is not None:
        on = spec.on.pull_request if spec.on else None
        stages, _ = pull_request_stages(spec.stages, on)
        if not stages:
            raise _fail(
                f"{definition}: no stage runs for a pull request: each touches an environment "
                "or the registry, or needs one that does (give on.pull_request.stages)"
            )
        typer.echo(f"pull request #{pull_request} runs: {', '.join(stages)}", err=True)
    if commit_time:
        typer.echo(
            f"note: --commit-time {commit_time} is ignored: runs are ordered (and lead time "
            "measured) by the commit's committer time in git, never later than the run's start",
            err=True,
        )
    try:
        run = RunContext(
            service=spec.service.name,
            repo=repo,
            commit=commit,
            author=author,
            branch=branch,
            diff_url=diff_url,
            pull_request=pull_request,
            base=base,
        )
    except ValueError as err:
        raise _fail(f"bad argument: {err}") from None
    if spec.paths_ignore:
        local = Path(repo)
        clone = local if "://" not in repo and local.is_dir() else Path.cwd()
        skip, why = ignored_change(spec.paths_ignore, clone, commit, base)
        if skip:
            workflow_id = pipeline_id(spec.service.name, branch, commit, pull_request)
            _skipped(workflow_id, why, json_output)
            raise typer.Exit(0)
        if why:
            typer.echo(f"note: {why}; starting the run", err=True)

    async def go() -> int:
        client = await _client()
        started = await start_pipeline(
            client, spec, run, {}, task_queue(), runner_task_queue=runner_task_queue()
        )
        if json_output:
            typer.echo(json.dumps(started.__dict__))
        else:
            verb = "already running/done" if started.existing else "started"
            typer.echo(f"{started.workflow_id} {verb}, run {started.run_id}")
            typer.echo(f"  {started.url}")
            for earlier in started.cancelled:
                typer.echo(f"cancelled {earlier}: a newer push of pull request #{pull_request}")
        if not wait:
            return 0
        result = await pipeline_outcome(client.get_workflow_handle(started.workflow_id))
        typer.echo(render.result_table(result))
        return _exit_code(result.state)

    raise typer.Exit(_run(go))


def _skipped(workflow_id: str, why: str, json_output: bool) -> None:
    """Say that no run starts, where CI shows it: the log, and GitHub's job summary."""
    line = f"skipped: {why}: no run started for {workflow_id}"
    if json_output:
        typer.echo(json.dumps({"workflow_id": workflow_id, "skipped": why}))
    else:
        typer.echo(line)
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        try:
            with open(summary, "a", encoding="utf-8") as out:
                out.write(f"**slipway** {line}\n")
        except OSError as err:
            typer.echo(f"note: cannot write GITHUB_STEP_SUMMARY: {err.strerror or err}", err=True)


async def _history_id(file: Path, events: Sequence[HistoryEvent], given: str) -> str | None:
    """Whose history `file` is: the id it records, or `given`, or the id its input gives the
    workflow; None (said in a sentence) when they disagree or nothing tells. Replaying under
    another id reports the children it started (named after it) as nondeterminism."""
    recorded = recorded_workflow_id(events)
    if given and recorded and given != recorded:
        typer.echo(
            f"{file} is the history of {recorded}, not {given}: give --workflow-id {recorded} "
            "(or no id)",
            err=True,
        )
        return None
    found = given or recorded or await derived_workflow_id(events)
    if not found:
        typer.echo(
            f"{file} does not say which workflow it is the history of: give its id with "
            "--workflow-id",
            err=True,
        )
    return found


def _exit_code(state: PipelineState) -> int:
    if state == PipelineState.SUCCEEDED:
        return 0
    return 3 if state == PipelineState.SUPERSEDED else 1


def _unsigned_note(key: Path | None) -> None:
    if key is None:
        typer.echo(
            "note: unsigned (no --key, SLIPWAY_SIGNING_KEY or git SSH signing key): it counts "
            "only where the gate's policy takes unsigned decisions",
            err=True,
        )


def _decide(
    workflow_id: str, approver: str, gate: str, comment: str, approve: bool, key: Path | None
) -> None:
    key = find_key(key)
    _unsigned_note(key)
    comment = comment[:COMMENT_LIMIT]

    async def go() -> int:
        client = await _client()
        handle = client.get_workflow_handle(workflow_id)
        update = "approve" if approve else "reject"
        try:
            signed = await sign_for(
                client,
                workflow_id,
                subject=f"gate:{gate}",
                decision="approve" if approve else "reject",
                by=approver,
                comment=comment,
                key=key,
            )
            record = await execute_update(
                handle,
                update,
                Decision(approver=approver, gate=gate, comment=comment, **signed.model_dump()),
                result_type=ApprovalRecord,
            )
        except (SignatureError, WorkflowUpdateFailedError, RPCError) as err:
            return await _already_finished(handle, update, err) or _not_decided(
                err, f"cannot reach {workflow_id}"
            )
        how = f"signed with {record.signer_key}" if record.signer_key else "unsigned"
        typer.echo(
            f"{record.decision}d gate {record.gate!r} as {record.approver} at {record.at} ({how})"
        )
        return 0

    raise typer.Exit(_run(go))


async def _already_finished(handle: WorkflowHandle[Any, Any], what: str, err: Exception) -> int:
    """A run that has ended takes no decision or action: the server answers "not found", and
    the person deserves to hear that the run finished (and how), not that the input was bad.
    Returns 1 after saying so, or 0 when `err` is something else."""
    if not isinstance(err, RPCError) or err.status != RPCStatusCode.NOT_FOUND:
        return 0
    try:
        described = await handle.describe()
    except RPCError:
        return 0  # no such run at all: _not_decided says so
    if described.status in (None, WorkflowExecutionStatus.RUNNING):
        return 0
    typer.echo(
        f"refused: {handle.id} has already finished ({described.status.name.lower()}): "
        f"nothing to {what}",
        err=True,
    )
    return 1


def _not_decided(err: Exception, unreachable: str) -> int:
    """Say why a signed decision did not land; the exit code: 2 for bad input (cannot sign,
    no such run), 1 for a refusal or an unreachable server."""
    if isinstance(err, SignatureError):
        typer.echo(f"cannot sign: {err}", err=True)
        return 2
    if isinstance(err, WorkflowUpdateFailedError):
        cause = err.cause
        why = cause.message if isinstance(cause, ApplicationError) else cause
        typer.echo(f"refused: {why}", err=True)
        return 1
    if isinstance(err, RPCError):
        typer.echo(f"{unreachable}: {err.message}", err=True)
        return 2 if err.status == RPCStatusCode.NOT_FOUND else 1
    raise err


@app.command()
def approve(
    workflow_id: RunId,
    approver: Annotated[str, typer.Option(help="You, as named in the worker's policy (people:).")],
    gate: Annotated[
        str,
        typer.Option(help="Gate name (by default the environment).", callback=arguments.safe_name),
    ],
    comment: Annotated[str, typer.Option(help="Why.")] = "",
    key: Key = None,
) -> None:
    """Approve an open gate, signed with your SSH key (refused with the reason when not
    allowed)."""
    _decide(workflow_id, approver, gate, comment, True, key)


@app.command()
def reject(
    workflow_id: RunId,
    approver: Annotated[str, typer.Option(help="You, as named in the worker's policy (people:).")],
    gate: Annotated[
        str,
        typer.Option(help="Gate name (by default the environment).", callback=arguments.safe_name),
    ],
    comment: Annotated[str, typer.Option(help="Why.")] = "",
    key: Key = None,
) -> None:
    """Reject an open gate (signed with your SSH key): the pipeline fails at that gate."""
    _decide(workflow_id, approver, gate, comment, False, key)


async def _status(client: Client, workflow_id: str) -> tuple[PipelineStatus | None, str]:
    handle = client.get_workflow_handle(workflow_id)
    described = await handle.describe()
    note = f"workflow {described.status.name.lower() if described.status else '?'}"
    try:
        return await handle.query(PipelineWorkflow.status), note
    except RPCError as err:
        return None, f"{note}; status query unavailable ({err.message}): is a worker running?"


async def _retrying(client: Client, workflow_id: str) -> list[str]:
    """Stages whose activity is past its first attempt (Temporal retries; the workflow only
    sees the outcome), with the last failure."""
    described = await client.get_workflow_handle(workflow_id).describe()
    lines = []
    for pending in described.raw_description.pending_activities:
        if pending.attempt > 1:
            # With a codec the message sits encrypted in the failure: decode it.
            failure = "no failure recorded"
            if pending.HasField("last_failure"):
                failure = str(await client.data_converter.decode_failure(pending.last_failure))
            lines.append(
                f"{pending.activity_id} ({pending.activity_type.name}): attempt "
                f"{pending.attempt}, last failure: {failure}"
            )
    return lines


@app.command()
def status(
    workflow_id: RunId,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Stages with state, attempt and timing; open approvals and what they show."""

    async def go() -> int:
        client = await _client()
        st, note = await _status(client, workflow_id)
        if st is None:
            typer.echo(note, err=True)
            return 1
        if json_output:
            typer.echo(st.model_dump_json(indent=2))
            return 0
        typer.echo(render.status_table(st, workflow_id))
        retrying = [
            f"{s.name} ({s.kind}): {s.summary}"
            for s in st.stages
            if s.state == StageState.RUNNING and s.summary.startswith("attempt ")
        ] + await _retrying(client, workflow_id)
        if retrying:
            typer.echo("\nactivities being retried:")
            typer.echo("\n".join(f"  {line}" for line in retrying))
        return 0

    raise typer.Exit(_run(go))


@app.command()
def watch(
    workflow_id: RunId,
    interval: Annotated[
        float, typer.Option(help="Seconds between refreshes.", min=0.1, max=3600)
    ] = 2.0,
    timeout: Annotated[
        float, typer.Option(help="Give up after this many seconds.", min=0, max=30 * 86400)
    ] = 3600,
) -> None:
    """Redraw the stage table until the run ends; exit code follows the pipeline."""

    async def go() -> int:
        client = await _client()
        handle = client.get_workflow_handle(workflow_id)
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            st, _ = await _status(client, workflow_id)
            if st is not None:
                table = render.status_table(st, workflow_id)
                if table != last:
                    if sys.stdout.isatty():
                        typer.echo("\x1b[2J\x1b[H", nl=False)
                    typer.echo(table + "\n")
                    last = table
                if st.state != PipelineState.RUNNING:
                    return _exit_code(st.state)
            described = await handle.describe()
            if described.status != WorkflowExecutionStatus.RUNNING:
                return 0 if described.status == WorkflowExecutionStatus.COMPLETED else 1
            await asyncio.sleep(interval)
        typer.echo(f"still running after {timeout:g}s", err=True)
        return 1

    raise typer.Exit(_run(go))


@app.command()
def retry(
    workflow_id: RunId,
    stage: Annotated[str, typer.Option(help="Stage to retry from (default: the failed one).")] = "",
) -> None:
    """Reset a failed run to just before its failed stage; finished stages are not redone."""

    async def go() -> int:
        client = await _client()
        try:
            name, run_id = await reset_to_failed_stage(client, workflow_id, stage or None)
        except RetryError as err:
            typer.echo(str(err), err=True)
            return 1
        typer.echo(f"{workflow_id}: retrying from stage {name!r}, new run {run_id}")
        return 0

    raise typer.Exit(_run(go))


@app.command()
def replay(
    workflow_id: Annotated[str, typer.Argument(help="Workflow id to fetch and replay.")] = "",
    file: Annotated[Path | None, typer.Option(help="History JSON (from the UI/CLI).")] = None,
    id_option: Annotated[
        str,
        typer.Option(
            "--workflow-id",
            help="Whose history --file is (else found in it: the id the server recorded, the "
            "ids of the children it started, or the id its input gives it).",
        ),
    ] = "",
    save: Annotated[Path | None, typer.Option(help="Also save the fetched history here.")] = None,
) -> None:
    """Replay a run's history against the current code (a determinism check)."""

    async def go() -> int:
        if file is not None:
            try:
                saved = WorkflowHistory.from_json("", file.read_text(encoding="utf-8"))
            except (OSError, ValueError) as err:
                typer.echo(f"{file}: not a readable history JSON file: {err}", err=True)
                return 2
            problem = await unreadable_input(saved.events)
            if problem is not None:
                typer.echo(f"{file} cannot be replayed here: {problem}", err=True)
                return 2
            found = await _history_id(file, saved.events, id_option or workflow_id)
            if found is None:
                return 2
            history = WorkflowHistory(found, saved.events)
        elif workflow_id or id_option:
            client = await _client()
            history = await client.get_workflow_handle(workflow_id or id_option).fetch_history()
            if save is not None:
                save.write_text(history.to_json(), encoding="utf-8")
            problem = await unreadable_input(history.events)
            if problem is not None:
                typer.echo(f"{history.workflow_id} cannot be replayed here: {problem}", err=True)
                return 2
        else:
            typer.echo("give a workflow id or --file", err=True)
            return 2
        try:
            await replay_history(history)
        except Exception as err:
            typer.echo(f"replay FAILED for {history.workflow_id}: {type(err).__name__}: {err}")
            return 1
        typer.echo(f"replay ok: {history.workflow_id} ({len(history.events)} events)")
        return 0

    raise typer.Exit(_run(go))


def _act(workflow_id: str, action: str, by: str, reason: str, key: Path | None) -> None:
    """An operator action as a policy-checked update, signed with the person's key."""
    key = find_key(key)
    _unsigned_note(key)
    reason = reason[:COMMENT_LIMIT]

    async def go() -> int:
        client = await _client()
        handle = client.get_workflow_handle(workflow_id)
        try:
            signed = await sign_for(
                client,
                workflow_id,
                subject=f"action:{action}",
                decision=action,
                by=by,
                comment=reason,
                key=key,
            )
            request = (
                AbortRequest(by=by, reason=reason, **signed.model_dump())
                if action == "abort"
                else CanaryControl(by=by, reason=reason, **signed.model_dump())
            )
            record = await execute_update(handle, action, request, result_type=ActionRecord)
        except (SignatureError, WorkflowUpdateFailedError, RPCError) as err:
            return await _already_finished(handle, action, err) or _not_decided(
                err, f"cannot reach {workflow_id}"
            )
        how = f"signed with {record.signer_key}" if record.signer_key else "unsigned"
        typer.echo(f"{action} of {workflow_id} by {by} accepted ({how})")
        return 0

    raise typer.Exit(_run(go))


Reason = Annotated[str, typer.Option(help="Why.")]


@app.command()
def abort(workflow_id: RunId, by: By, reason: Reason = "", key: Key = None) -> None:
    """Stop a run and roll back what it deployed (checked against the worker's policy)."""
    _act(workflow_id, "abort", by, reason, key)


@app.command()
def pause(workflow_id: RunId, by: By, reason: Reason = "", key: Key = None) -> None:
    """Hold the running canary at its weight."""
    _act(workflow_id, "pause", by, reason, key)


@app.command()
def resume(workflow_id: RunId, by: By, reason: Reason = "", key: Key = None) -> None:
    """Continue a paused canary."""
    _act(workflow_id, "resume", by, reason, key)


@app.command()
def promote(workflow_id: RunId, by: By, reason: Reason = "", key: Key = None) -> None:
    """Skip the canary's remaining steps and promote now."""
    _act(workflow_id, "promote", by, reason, key)


@app.command()
def audit(
    workflow_id: RunId,
    policy: Annotated[
        Path | None,
        typer.Option(help="Policy with the allowed signers (default: SLIPWAY_POLICY_FILE)."),
    ] = None,
) -> None:
    """Verify every decision of a finished run again: each signature against the policy's
    allowed signers. Exit 1 if one does not verify."""
    from plumbing.settings import Settings

    path = policy or Settings.load().policy_file
    try:
        loaded = load_policy(path)
    except PolicyError as err:
        raise _fail(str(err)) from None

    async def go() -> int:
        client = await _client()
        handle = client.get_workflow_handle(workflow_id)
        described = await handle.describe()
        if described.status == WorkflowExecutionStatus.RUNNING:
            typer.echo(f"{workflow_id} is still running; audit a finished run", err=True)
            return 2
        result = await pipeline_outcome(handle)
        lines = audit_run(result, workflow_id, client.namespace, loaded.policy)
        typer.echo(
            f"{workflow_id}: {result.state.value}; policy at start {result.policy_hash or '?'}"
            f", checked against {loaded.path} ({loaded.hash})"
        )
        for line in lines:
            mark = "BAD " if not line.ok else ("ok  " if line.accepted else "--  ")
            taken = "accepted" if line.accepted else "refused"
            typer.echo(f"  {mark} {line.what:<24} {line.by:<10} {taken:<8} {line.verdict}")
        if result.refused_not_kept:
            typer.echo(f"  and {result.refused_not_kept:,} more refused decisions not kept")
        bad = [line for line in lines if not line.ok]
        typer.echo(f"{len(lines)} decisions, {len(bad)} whose signature does not verify")
        return 1 if bad else 0

    raise typer.Exit(_run(go))


@app.command()
def rollback(
    service: Annotated[str, typer.Option(help="Service name.", callback=arguments.service_name)],
    environment: Annotated[
        str, typer.Option(help="Environment to restore.", callback=arguments.safe_name)
    ],
    by: By,
    reason: Annotated[str, typer.Option(help="Why.")] = "",
    key: Key = None,
) -> None:
    """Put an environment back on the release before the one serving (asked of its
    environment workflow; refused while a run holds the environment, or by the worker's
    policy)."""
    key = find_key(key)
    _unsigned_note(key)
    reason = reason[:COMMENT_LIMIT]

    async def go() -> int:
        client = await _client()
        workflow_id = environment_id(service, environment)
        handle = client.get_workflow_handle(workflow_id)
        try:
            signed = await sign_for(
                client,
                workflow_id,
                subject="action:rollback",
                decision="rollback",
                by=by,
                comment=reason,
                key=key,
            )
            outcome = await execute_update(
                handle,
                "rollback_manual",
                ManualRollback(
                    service=service,
                    environment=environment,
                    by=by,
                    reason=reason,
                    **signed.model_dump(),
                ),
                result_type=RollbackOutcome,
            )
        except (SignatureError, WorkflowUpdateFailedError, RPCError) as err:
            return _not_decided(err, f"no environment {environment!r} of {service}")
        if outcome.status == "failed":
            typer.echo(f"{environment}: rollback FAILED: {outcome.reason}", err=True)
            return 1
        restored = outcome.restored_digest or "nothing (no previous version)"
        typer.echo(
            f"{environment}: restored {restored}"
            + ("" if outcome.status == "rolled_back" else f" (no change: {outcome.reason})")
        )
        return 0

    raise typer.Exit(_run(go))


async def _environments(client: Client, service: str) -> list[EnvironmentState]:
    """The state of each environment workflow of `service` (listed by search attribute,
    else the usual three by id)."""
    ids: list[str] = []
    try:
        query = f"WorkflowType = 'EnvironmentWorkflow' AND Service = '{service}'"
        async for execution in client.list_workflows(query):
            if execution.status == WorkflowExecutionStatus.RUNNING and execution.id not in ids:
                ids.append(execution.id)
    except RPCError:
        pass
    if not ids:
        ids = [environment_id(service, e) for e in ("development", "staging", "production")]
    states = []
    for workflow_id in ids:
        try:
            states.append(
                await client.get_workflow_handle(workflow_id).query(EnvironmentWorkflow.state)
            )
        except RPCError:
            continue
    order = {"development": 0, "staging": 1, "production": 2}
    return sorted(states, key=lambda s: (order.get(s.environment, 9), s.environment))


resources_app = typer.Typer(
    help="The local platform's resources (a PostgreSQL, a Redis per service and environment): "
    "kept across "
    "releases and worker restarts until deleted here. Acts on SLIPWAY_STATE_DIR of this machine."
)
app.add_typer(resources_app, name="resources")


def _local_resources() -> ResourceRecords:
    from plumbing.settings import Settings

    return ResourceRecords(records_root(Settings.load().state_dir / "platform" / "resources"))


@resources_app.command(name="list")
def resources_list() -> None:
    """Every resource: service, environment, kind, version, port, whether its server runs."""
    records = _local_resources().listing()
    for r in records:
        state = "running" if r["running"] else "stopped"
        typer.echo(
            f"{r['service']:<20} {r['environment']:<14} {r['kind']:<9} {r['version']:<8} "
            f"{r['port']:<6} {state}"
        )
    if not records:
        typer.echo("no resources", err=True)


@resources_app.command(name="delete")
def resources_delete(
    service: Annotated[str, typer.Argument(help="Service.", callback=arguments.service_name)],
    environment: Annotated[str, typer.Argument(help="Environment.", callback=arguments.safe_name)],
    kind: Annotated[str, typer.Argument(help="postgres or redis.")],
) -> None:
    """Stop the resource and delete its data for good (the next deploy makes a new one)."""
    if kind not in ("postgres", "redis"):
        raise _fail(f"unknown resource kind {kind!r}; one of: postgres, redis")
    if not _local_resources().delete(service, environment, kind):
        typer.echo(f"{service} has no {kind} resource in {environment}", err=True)
        raise typer.Exit(1)
    typer.echo(f"deleted the {kind} resource of {service} in {environment} and its data")


@app.command(name="env")
def env_command(
    service: Annotated[str, typer.Argument(help="Service name.", callback=arguments.service_name)],
    releases: Annotated[
        int, typer.Option(help="Last releases shown per environment.", min=0, max=1000)
    ] = 5,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """What each environment serves, since when and from which run; lease, queue, releases."""

    async def go() -> int:
        client = await _client()
        states = await _environments(client, service)
        if not states:
            typer.echo(f"no environment of {service} has a record yet", err=True)
            return 1
        if json_output:
            typer.echo(json.dumps([s.model_dump(mode="json") for s in states], indent=2))
            return 0
        typer.echo(render.environments(states, releases))
        return 0

    raise typer.Exit(_run(go))


@app.command()
def dora(
    service: Annotated[str, typer.Option(help="Service name.", callback=arguments.service_name)],
    days: Annotated[int, typer.Option(help="Window in days.", min=1, max=3650)] = 7,
) -> None:
    """DORA figures from production's release record: deploys/day, lead time, change
    failure rate, time to restore."""

    async def go() -> int:
        client = await _client()
        handle = client.get_workflow_handle(environment_id(service, "production"))
        try:
            state = await handle.query(EnvironmentWorkflow.state)
        except RPCError as err:
            if err.status != RPCStatusCode.NOT_FOUND:
                raise
            state = EnvironmentState(service=service, environment="production")
        since = datetime.now(UTC) - timedelta(days=days)
        typer.echo(render.dora_table(state, since, days))
        return 0

    raise typer.Exit(_run(go))


secret_app = typer.Typer(
    help="The deployer's local secret store (`from: local` references), under "
    "$SLIPWAY_STATE_DIR/secrets on the deployer's machine."
)
app.add_typer(secret_app, name="secret")


@secret_app.command("set")
def secret_set(
    name: Annotated[str, typer.Argument(help="The secret's name, e.g. heal7/development/db.")],
) -> None:
    """Store a new version of NAME; the value is read from stdin (never an argument, which
    shell history and `ps` would keep). Earlier versions stay, for rollbacks."""
    from contracts.definition.limits import SECRET_NAME
    from plumbing.secret_store import LocalSecretStore, secret_store_path

    if not SECRET_NAME.match(name) or ".." in name.split("/"):
        typer.echo(f"{name!r} is not a secret name: 1-512 letters, digits and /_+=.@-", err=True)
        raise typer.Exit(2)
    value = sys.stdin.read().removesuffix("\n")
    if not value:
        typer.echo("no value on stdin: pipe it in, e.g. `slipway secret set NAME < file`", err=True)
        raise typer.Exit(2)
    state_dir = Path(os.environ.get("SLIPWAY_STATE_DIR", ".demo/state"))
    version = LocalSecretStore(secret_store_path(state_dir)).set(name, value)
    typer.echo(f"{name}: version {version}")


def main() -> None:
    """Run a command and exit with its code without interpreter finalization: the Temporal
    client's native runtime threads can abort a finalizing interpreter (seen as a fatal
    PyGILState_Release error after a command succeeded)."""
    code: int | str | None = 0
    try:
        app()
    except SystemExit as done:
        code = done.code
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code if isinstance(code, int) else (0 if code is None else 1))
