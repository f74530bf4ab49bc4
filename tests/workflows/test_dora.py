"""DORA counts beyond the bounded release list: what `slipway dora` reads of production."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from contracts import dora
from contracts.activity import Artifact, ReleaseSpec
from contracts.messages import EnvironmentInput, EnvironmentState, ReleaseEntry
from starters.render import dora_table
from workflows.environment.record import RELEASES_KEPT

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def release(n: int) -> ReleaseSpec:
    digest = f"sha256:{n:064x}"
    return ReleaseSpec(artifact=Artifact(digest=digest, uri=f"memory://{n}"))


def deploy(state: EnvironmentState, n: int, at: datetime) -> ReleaseEntry:
    """What the environment workflow records when run n's release starts serving."""
    entry = ReleaseEntry(
        release=release(n),
        run=f"pipeline-heal7-main-{n:012x}",
        commit=f"{n:040x}",
        commit_time=at - timedelta(minutes=20),
        at=at,
        outcome="serving",
    )
    dora.record(state, entry, RELEASES_KEPT)
    return entry


def roll_back(state: EnvironmentState, entry: ReleaseEntry, at: datetime) -> None:
    """Its rollback: the entry closes rolled back, the release before is restored."""
    ended = entry.model_copy(update={"until": at, "outcome": "rolled_back"})
    dora.closed(state, entry, ended)
    state.releases[state.releases.index(entry)] = ended
    restored = ReleaseEntry(
        release=release(0), run="pipeline-heal7-main-0", commit="0", at=at, outcome="restored"
    )
    dora.record(state, restored, RELEASES_KEPT)


def production_of_150_changes() -> EnvironmentState:
    """150 changes over 9.4 days, every tenth rolled back 12 minutes after it served."""
    state = EnvironmentState(service="heal7", environment="production")
    step = timedelta(days=9.4) / 150
    for n in range(1, 151):
        at = NOW - timedelta(days=9.4) + n * step
        entry = deploy(state, n, at)
        if n % 10 == 0:
            roll_back(state, entry, at + timedelta(minutes=12))
    return state


def figures(table: str) -> dict[str, str]:
    rows = [line.split("  ") for line in table.splitlines()[3:]]
    return {cells[0].strip(): next(c for c in cells[1:] if c.strip()).strip() for cells in rows}


def test_dora_counts_every_change_beyond_the_100_releases_kept() -> None:
    state = production_of_150_changes()
    assert len(state.releases) == RELEASES_KEPT  # the list is bounded ...

    table = dora_table(state, NOW - timedelta(days=10), 10)

    # ... the counts are not: 135 delivered changes over 10 days, not 100 (or fewer).
    assert table.startswith("150 production changes in the last 10 days")
    assert figures(table) == {
        "deployment frequency": "13.50/day",
        "lead time (mean)": "20.0 min",
        "change failure rate": "10.0%",
        "time to restore (mean)": "12.0 min",
    }


def test_a_window_the_release_list_covers_is_read_exactly_from_it() -> None:
    state = production_of_150_changes()

    table = dora_table(state, NOW - timedelta(days=1), 1)

    assert figures(table)["lead time (median)"] == "20.0 min"  # exact: medians
    assert figures(table)["time to restore (median)"] == "12.0 min"


def test_counts_ride_continue_as_new_and_start_from_an_older_record() -> None:
    carried = EnvironmentInput.model_validate_json(
        EnvironmentInput(
            service="heal7", environment="production", state=production_of_150_changes()
        ).model_dump_json()
    )
    assert carried.state is not None
    assert carried.state.dora == production_of_150_changes().dora

    # An environment recorded before the counts: they start from its release list.
    older = EnvironmentState(service="heal7", environment="production")
    for n in range(1, 4):
        older.releases.append(
            ReleaseEntry(
                release=release(n),
                run=f"pipeline-heal7-main-{n:012x}",
                commit=f"{n:040x}",
                at=NOW - timedelta(days=n),
                outcome="replaced",
            )
        )
    short = dora_table(older, NOW - timedelta(days=7), 7)
    assert short.startswith("3 production changes")
    deploy(older, 4, NOW)
    assert older.dora is not None
    assert sum(day.changes for day in older.dora.values()) == 4
    assert dora_table(older, NOW - timedelta(days=7), 7).startswith("4 production changes")
