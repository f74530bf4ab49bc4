"""Plain-text tables for the terminal (CI logs included: no colours, no cursor tricks)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from datetime import datetime

from workflows.messages import PipelineResult, PipelineStatus, StageState, StageStatus

__all__ = ["dora_table", "result_table", "stage_rows", "status_table"]

_MARK = {
    StageState.PENDING: " ",
    StageState.RUNNING: ">",
    StageState.WAITING: "?",
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


def status_table(st: PipelineStatus, workflow_id: str = "") -> str:
    """The `status` query as text. `workflow_id` (the status itself does not carry it) goes
    into the approval hint, so that it can be copied as it is; without it a placeholder."""
    lines = [f"{st.service} {st.commit[:12]}: {st.state.value}"]
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
    lines = [f"{result.service} {result.commit[:12]}: {result.state.value}"]
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


def dora_table(results: Sequence[PipelineResult], days: int) -> str:
    """DORA over finished runs. A production *change* is a run that deployed there; it failed
    if it was rolled back; restore time is from the failing stage's start to the run's end."""
    changes = [r for r in results if "production" in r.deployed or "production" in r.rolled_back]
    failed = [r for r in changes if "production" in r.rolled_back]
    delivered = [r for r in changes if r not in failed]
    leads = [r.lead_time_s for r in delivered if r.lead_time_s is not None]
    restores = []
    for r in failed:
        starts = [s.started_at for s in r.stages if s.state == StageState.FAILED and s.started_at]
        if starts:
            restores.append((r.ended_at - min(starts)).total_seconds())
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
    head = f"{len(results)} finished runs, {len(changes)} production changes, last {days} days"
    return head + "\n" + _table(["figure", "value", "seed target"], rows)
