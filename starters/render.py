"""Plain-text tables for the terminal (CI logs included: no colours, no cursor tricks)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from datetime import datetime

from contracts import dora
from contracts.messages import (
    EnvironmentState,
    PipelineResult,
    PipelineStatus,
    StageState,
    StageStatus,
)
from workflows.environment.record import RELEASES_KEPT

__all__ = ["dora_table", "environments", "result_table", "stage_rows", "status_table"]

_MARK = {
    StageState.PENDING: " ",
    StageState.RUNNING: ">",
    StageState.WAITING: "?",
    StageState.QUEUED: "=",
    StageState.SUCCEEDED: "+",
    StageState.FAILED: "x",
    StageState.SKIPPED: "-",
    StageState.CANCELLED: "!",
}


def _clock(at: datetime | None) -> str:
    return at.strftime("%H:%M:%S") if at else ""


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=False)]
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(x.rstrip() for x in out)


def stage_rows(stages: Sequence[StageStatus]) -> list[list[str]]:
    rows = []
    for s in stages:
        took = f"{s.duration_s:.1f}s" if s.duration_s is not None else ""
        rows.append(
            [
                f"{_MARK[s.state]} {s.name}",
                s.kind,
                s.state.value,
                _clock(s.started_at),
                took,
                s.summary[:90],
            ]
        )
    return rows


def _pr(number: int | None) -> str:
    return f" (pull request #{number})" if number is not None else ""


def status_table(st: PipelineStatus, workflow_id: str = "") -> str:
    """The `status` query as text. `workflow_id` (the status itself does not carry it) goes
    into the approval hint, so that it can be copied as it is; without it a placeholder."""
    lines = [f"{st.service} {st.commit[:12]}{_pr(st.pull_request)}: {st.state.value}"]
    if st.artifact:
        lines.append(f"artifact {st.artifact.digest}")
    if st.deployed:
        lines.append("serving: " + ", ".join(f"{e}={d[:19]}" for e, d in st.deployed.items()))
    lines.append("")
    lines.append(
        _table(["stage", "kind", "state", "started", "took", "summary"], stage_rows(st.stages))
    )
    for p in st.pending_approvals:
        lines.append("")
        lines.append(
            f"waiting for gate {p.gate!r} ({p.environment}): roles {', '.join(p.roles)}, "
            f"quorum {p.quorum}, approved by {', '.join(p.approved_by) or 'nobody yet'}"
        )
        lines.append(f"  commit {p.commit} by {p.author} {p.diff_url}".rstrip())
        for name, outcome in p.evidence.items():
            lines.append(f"  {name}: {outcome}")
        lines.append(
            f"  slipway approve {workflow_id or 'WORKFLOW_ID'} --approver YOU --gate {p.gate}"
        )
    return "\n".join(lines)


def result_table(result: PipelineResult) -> str:
    lines = [
        f"{result.service} {result.commit[:12]}{_pr(result.pull_request)}: {result.state.value}"
    ]
    if result.failure:
        lines.append(f"failure: {result.failure}")
    lines.append("")
    lines.append(
        _table(["stage", "kind", "state", "started", "took", "summary"], stage_rows(result.stages))
    )
    if result.approvals:
        lines.append("")
        for a in result.approvals:
            verdict = "accepted" if a.accepted else f"REFUSED ({a.reason})"
            lines.append(
                f"{_clock(a.at)} {a.approver} {a.decision} {a.gate} via {a.via}: {verdict}"
            )
    if result.deployed:
        lines.append("serving: " + ", ".join(f"{e}={d[:19]}" for e, d in result.deployed.items()))
    if result.lead_time_s is not None:
        lines.append(f"lead time: {result.lead_time_s / 60:.1f} min")
    return "\n".join(lines)


def _digest(digest: str | None) -> str:
    return digest[:19] if digest else "-"


def environments(states: Sequence[EnvironmentState], releases: int) -> str:
    """`slipway env`: per environment, what serves, the lease, the queue, the last releases."""
    blocks = []
    for st in states:
        serving = st.serving
        head = f"{st.environment}: " + (
            f"{_digest(serving.release.digest)} since {serving.since:%Y-%m-%d %H:%M:%S} "
            f"from {serving.run}"
            if serving
            else "nothing recorded yet"
        )
        lines = [head]
        if st.holder is not None:
            lines.append(f"  lease {st.holder.token}: {st.holder.run} (since "
                         f"{st.holder.granted_at:%H:%M:%S})")  # fmt: skip
        for position, waiting in enumerate(st.queue, 1):
            lines.append(f"  queued {position}: {waiting.run}")
        rows = [
            [
                f"{e.at:%Y-%m-%d %H:%M:%S}",
                _digest(e.digest),
                e.outcome,
                e.run,
                e.reason[:60],
            ]
            for e in reversed(st.releases[-releases:])
        ]
        if rows:
            table = _table(["at", "digest", "outcome", "run", "reason"], rows)
            lines.append("  " + table.replace("\n", "\n  "))
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def dora_table(production: EnvironmentState, since: datetime, days: int) -> str:
    """DORA from production's own record. A change is a release a pipeline run put there
    (promoted, or a canary rolled back); it failed if it was rolled back; lead time is commit
    to serving; time to restore is from a failed change serving to the rollback that put the
    release before it back. Exact from the release list when it reaches back to `since`;
    otherwise from the counts per UTC day the environment keeps beyond it (whole days, and
    means instead of medians)."""
    kept = production.releases
    if production.dora is None or (kept and kept[0].at <= since):
        return _dora_from_releases(production, since, days)
    counts = dora.in_window(production, since.date())
    delivered = counts.changes - counts.failed
    rows = [
        ["deployment frequency", f"{delivered / max(days, 1):.2f}/day", ">= 10/day"],
        [
            "lead time (mean)",
            f"{counts.lead_s / counts.leads / 60:.1f} min" if counts.leads else "n/a",
            "< 30 min",
        ],
        [
            "change failure rate",
            f"{100 * counts.failed / counts.changes:.1f}%" if counts.changes else "n/a",
            "< 5%",
        ],
        [
            "time to restore (mean)",
            f"{counts.restore_s / counts.restores / 60:.1f} min" if counts.restores else "n/a",
            "< 60 min",
        ],
    ]
    head = (
        f"{counts.changes} production changes in the last {days} days "
        f"(counted per UTC day since {since.date().isoformat()})"
    )
    return head + "\n" + _table(["figure", "value", "HEAL7 target"], rows)


def _dora_from_releases(production: EnvironmentState, since: datetime, days: int) -> str:
    changes = [e for e in production.releases if e.at >= since and dora.is_change(e)]
    failed = [e for e in changes if e.outcome == "rolled_back"]
    delivered = [e for e in changes if e.outcome != "rolled_back"]
    leads = [(e.at - e.commit_time).total_seconds() for e in delivered if e.commit_time]
    restores = [(e.until - e.at).total_seconds() for e in failed if e.until]
    rows = [
        ["deployment frequency", f"{len(delivered) / max(days, 1):.2f}/day", ">= 10/day"],
        [
            "lead time (median)",
            f"{statistics.median(leads) / 60:.1f} min" if leads else "n/a",
            "< 30 min",
        ],
        [
            "change failure rate",
            f"{100 * len(failed) / len(changes):.1f}%" if changes else "n/a",
            "< 5%",
        ],
        [
            "time to restore (median)",
            f"{statistics.median(restores) / 60:.1f} min" if restores else "n/a",
            "< 60 min",
        ],
    ]
    head = f"{len(changes)} production changes in the last {days} days"
    kept = production.releases
    if len(kept) >= RELEASES_KEPT and kept[0].at > since:
        head += f" (only the last {len(kept)} releases are recorded: the count is short)"
    return head + "\n" + _table(["figure", "value", "HEAL7 target"], rows)
