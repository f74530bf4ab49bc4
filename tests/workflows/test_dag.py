"""Pure graph logic: the ready set, topological order, critical path, mermaid."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from pydantic import TypeAdapter

from contracts.definition import dag, rules
from contracts.definition.loading import load_pipeline
from contracts.definition.model import Stage
from tests.support.pipelines import HEAL7_BACKEND

HEAL7 = HEAL7_BACKEND  # the one-deployable journey the engine tests drive
_STAGE = TypeAdapter[Stage](Stage)


def node(name: str, *needs: str, kind: str = "checkout", **fields: Any) -> Stage:
    return _STAGE.validate_python({"name": name, "kind": kind, "needs": list(needs), **fields})


def rollback(name: str, *needs: str) -> Stage:
    return node(name, *needs, kind="rollback", environment="production")


def approval(name: str, *needs: str, environment: str = "production") -> Stage:
    return node(name, *needs, kind="approval", environment=environment, roles=["cto"])


# A diamond: a → (b, c) → d.
DIAMOND = [node("a"), node("b", "a"), node("c", "a"), node("d", "b", "c")]


# --- ready --------------------------------------------------------------------------------


def test_ready_lists_roots_in_definition_order_not_alphabetically() -> None:
    stages = [node("zeta"), node("alpha"), node("mid", "zeta"), node("beta")]
    assert dag.ready(stages, finished=[], started=[]) == ["zeta", "alpha", "beta"]


def test_ready_follows_the_needs_as_stages_finish() -> None:
    assert dag.ready(DIAMOND, [], []) == ["a"]
    assert dag.ready(DIAMOND, [], ["a"]) == []  # running, not finished
    assert dag.ready(DIAMOND, ["a"], ["a"]) == ["b", "c"]
    assert dag.ready(DIAMOND, ["a", "b"], ["a", "b", "c"]) == []  # d waits for c
    assert dag.ready(DIAMOND, ["a", "b", "c"], ["a", "b", "c"]) == ["d"]
    assert dag.ready(DIAMOND, ["a", "b", "c", "d"], ["a", "b", "c", "d"]) == []


def test_failure_handlers_are_never_ready() -> None:
    stages = [node("a"), rollback("undo"), rollback("undo_after", "a"), node("b", "a")]
    assert dag.ready(stages, [], []) == ["a"]
    assert dag.ready(stages, ["a"], ["a"]) == ["b"]
    assert dag.ready(stages, ["a", "b"], ["a", "b"]) == []


def test_ready_on_heal7_runs_ci_in_parallel_and_never_the_rollback() -> None:
    spec = load_pipeline(HEAL7)
    stages = spec.stages
    assert dag.ready(stages, [], []) == ["checkout"]
    assert dag.ready(stages, ["checkout"], ["checkout"]) == [
        "code_quality",
        "security_scan",
        "unit_tests",
        "integration_tests",
    ]
    everything_but_rollback = [s.name for s in stages if s.kind != "rollback"]
    assert dag.ready(stages, everything_but_rollback, everything_but_rollback) == []
    assert dag.ready(stages, [s.name for s in stages], []) == everything_but_rollback


# --- order and ancestry -------------------------------------------------------------------


def test_topological_order_is_stable_and_puts_needs_first() -> None:
    assert dag.topological_order(DIAMOND) == ["a", "b", "c", "d"]
    # A stage written before what it needs moves after it; the rest keep their order.
    stages = [node("deploy", "build"), node("lint"), node("build"), node("notify", "deploy")]
    assert dag.topological_order(stages) == ["lint", "build", "deploy", "notify"]


def test_topological_order_of_heal7_respects_every_need() -> None:
    stages = load_pipeline(HEAL7).stages
    order = dag.topological_order(stages)
    assert sorted(order) == sorted(s.name for s in stages)
    for stage in stages:
        for need in stage.needs:
            assert order.index(need) < order.index(stage.name), (need, stage.name)


def test_topological_order_refuses_a_cycle() -> None:
    with pytest.raises(ValueError, match="cycle"):
        dag.topological_order([node("a", "b"), node("b", "a")])


def test_find_cycle_returns_a_closed_path_or_none() -> None:
    assert dag.find_cycle({"a": [], "b": ["a"], "c": ["b", "a"]}) is None
    cycle = dag.find_cycle({"a": ["c"], "b": ["a"], "c": ["b"], "x": []})
    assert cycle is not None
    assert cycle[0] == cycle[-1]
    assert sorted(cycle[:-1]) == ["a", "b", "c"]


def test_graph_problems_show_a_cycle_in_run_order() -> None:
    needs = {"checkout": [], "a": ["c"], "b": ["a"], "c": ["b"]}
    problems = [
        p.model_dump()
        for p in rules.graph_problems("f", [(n, d, "checkout") for n, d in needs.items()])
    ]
    assert len(problems) == 1
    assert problems[0]["field"] == "needs"
    message = problems[0]["message"]
    assert message.startswith("cycle: ")
    shown = message.removeprefix("cycle: ").split(" -> ")
    assert len(shown) == 4
    assert shown[0] == shown[-1] == problems[0]["stage"]
    # Each stage shown runs before the next one: the next one needs it.
    for first, then in itertools.pairwise(shown):
        assert first in needs[then], message


def test_graph_problems_of_a_sound_graph_are_none() -> None:
    triples = [("a", [], "checkout"), ("b", ["a"], "build"), ("c", ["a", "b"], "deploy")]
    assert rules.graph_problems("f", triples) == []


def test_ancestors_on_heal7() -> None:
    stages = load_pipeline(HEAL7).stages
    before = dag.ancestors(stages, "deploy_production")
    assert {"checkout", "quality_gate", "build", "approve_staging", "approve_production"} <= set(
        before
    )
    assert "rollback_production" not in before
    assert dag.ancestors(stages, "checkout") == []


# --- critical path ------------------------------------------------------------------------


def test_critical_path_takes_the_longest_branch_of_a_diamond() -> None:
    total, path = dag.critical_path(DIAMOND, {"a": 1, "b": 5, "c": 2, "d": 1})
    assert (total, path) == (7, ["a", "b", "d"])
    total, path = dag.critical_path(DIAMOND, {"a": 1, "b": 2, "c": 5, "d": 1})
    assert (total, path) == (7, ["a", "c", "d"])


def test_critical_path_counts_missing_durations_as_zero() -> None:
    total, path = dag.critical_path(DIAMOND, {"c": 3})
    assert total == 3
    assert path[:2] == ["a", "c"]
    assert "b" not in path
    assert dag.critical_path(DIAMOND, {})[0] == 0


def test_critical_path_of_a_disconnected_long_stage() -> None:
    stages = [*DIAMOND, node("slow")]
    assert dag.critical_path(stages, {"a": 1, "b": 1, "d": 1, "slow": 10}) == (10, ["slow"])


def test_critical_path_of_nothing() -> None:
    assert dag.critical_path([], {}) == (0.0, [])


# --- mermaid ------------------------------------------------------------------------------


def test_mermaid_has_nodes_edges_and_approval_diamonds() -> None:
    stages = [
        node("checkout"),
        node("build-image.v2", "checkout", kind="build"),
        approval("approve_prod", "build-image.v2"),
        node("deploy", "approve_prod", kind="deploy", environment="production"),
        rollback("undo"),
    ]
    text = dag.mermaid(stages)
    lines = text.splitlines()
    assert lines[0] == "graph TD"
    assert '    s_checkout["checkout<br/>checkout"]' in lines
    # Names that mermaid cannot take as ids are made safe.
    assert '    s_build_image_v2["build-image.v2<br/>build"]' in lines
    assert '    s_approve_prod{"approve_prod<br/>approval (production)"}' in lines
    assert '    s_deploy["deploy<br/>deploy (production)"]' in lines
    assert "    s_checkout --> s_build_image_v2" in lines
    assert "    s_build_image_v2 --> s_approve_prod" in lines
    assert "    s_approve_prod --> s_deploy" in lines
    assert sum("-->" in line for line in lines) == 3
    # Only approvals are diamonds; the rollback is dashed.
    assert sum("{" in line for line in lines) == 1
    assert "    s_undo:::onfailure" in lines
    assert not any("s_deploy:::onfailure" in line for line in lines)


def test_mermaid_of_heal7_has_every_stage_and_need() -> None:
    stages = load_pipeline(HEAL7).stages
    text = dag.mermaid(stages)
    for stage in stages:
        assert f"    s_{stage.name}" in text
        for need in stage.needs:
            assert f"    s_{need} --> s_{stage.name}" in text
    assert text.count('{"') == 2  # the staging and production approvals


def test_levels_and_ancestor_masks_of_a_reversed_chain() -> None:
    # Listed last-first: a walk in definition order would see every need before its stage.
    graph = {f"s{i}": [f"s{i - 1}"] if i else [] for i in reversed(range(5))}
    assert dag.levels(graph) == {f"s{i}": i for i in range(5)}
    order = list(graph)
    masks = dag.ancestor_masks(graph, order)
    before_s3 = {order[b] for b in range(len(order)) if masks["s3"] >> b & 1}
    assert before_s3 == {"s0", "s1", "s2"}
    assert masks["s0"] == 0


def test_levels_of_a_cycle_are_none() -> None:
    assert dag.levels({"a": ["b"], "b": ["a"], "c": []}) is None


def test_find_cycle_in_a_chain_deeper_than_the_recursion_limit() -> None:
    n = 20_000
    graph = {f"s{i}": [f"s{(i + 1) % n}"] for i in range(n)}
    cycle = dag.find_cycle(graph)
    assert cycle is not None
    assert len(cycle) == n + 1
    assert dag.find_cycle({f"s{i}": [f"s{i + 1}"] if i < n - 1 else [] for i in range(n)}) is None
