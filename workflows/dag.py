"""Pure graph logic over a pipeline's stages: validation, ready set, critical path, mermaid.

No I/O and no Temporal: these functions are called from workflow code (they must be
deterministic, so every iteration follows definition order) and unit-tested on their own.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from workflows.spec import EnvironmentSpec, Stage

__all__ = [
    "ancestors",
    "critical_path",
    "descendants",
    "find_cycle",
    "graph_problems",
    "mermaid",
    "policy_problems",
    "ready",
    "topological_order",
]

# Stages that only run when something failed: nothing may depend on them.
FAILURE_HANDLERS = frozenset({"rollback"})
# Stages acting on an environment that must have been deployed earlier in the run.
NEEDS_DEPLOY = frozenset({"e2e", "smoke", "canary", "monitor"})
NEEDS_ARTIFACT = frozenset({"image_scan", "publish", "deploy"})


def find_cycle(graph: Mapping[str, Sequence[str]]) -> list[str] | None:
    """Return one cycle as a path that ends where it starts (a → b → a), or None."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = finished
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in graph.get(node, ()):
            if nxt not in graph:
                continue
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in graph:
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def graph_problems(stages: Sequence[tuple[str, list[str], str]]) -> list[dict[str, Any]]:
    """Structural problems of (name, needs, kind) triples: duplicates, unknown needs, cycles,
    stages that cannot be reached in a run."""
    problems: list[dict[str, Any]] = []
    seen: set[str] = set()
    for name, _, _ in stages:
        if name in seen:
            problems.append({"stage": name, "field": "name", "message": "duplicate stage name"})
        seen.add(name)
    kinds = {name: kind for name, _, kind in stages}
    graph: dict[str, list[str]] = {}
    for name, needs, _ in stages:
        graph.setdefault(name, [])
        for need in needs:
            if need not in kinds:
                problems.append(
                    {
                        "stage": name,
                        "field": "needs",
                        "message": f"needs unknown stage {need!r}",
                    }
                )
            elif need == name:
                problems.append({"stage": name, "field": "needs", "message": "needs itself"})
            else:
                graph[name].append(need)
    graph = {n: [d for d in deps if d != n] for n, deps in graph.items()}
    cycle = find_cycle(graph)
    if cycle:
        # `graph` maps a stage to what it needs; show the cycle in run order.
        shown = " -> ".join(reversed(cycle))
        problems.append({"stage": cycle[0], "field": "needs", "message": f"cycle: {shown}"})
        return problems
    for name, _needs, _ in stages:
        handlers = [a for a in _ancestors_of(graph, name) if kinds.get(a) in FAILURE_HANDLERS]
        if handlers:
            problems.append(
                {
                    "stage": name,
                    "field": "needs",
                    "message": f"unreachable: depends on {handlers[0]!r}, a rollback stage "
                    "that only runs when something failed",
                }
            )
    return problems


def _ancestors_of(graph: Mapping[str, Sequence[str]], name: str) -> list[str]:
    out: list[str] = []
    stack = list(graph.get(name, ()))
    while stack:
        node = stack.pop()
        if node in out:
            continue
        out.append(node)
        stack.extend(graph.get(node, ()))
    return out


def _needs_graph(stages: Sequence[Stage]) -> dict[str, list[str]]:
    return {s.name: list(s.needs) for s in stages}


def ancestors(stages: Sequence[Stage], name: str) -> list[str]:
    """Every stage `name` transitively needs."""
    return _ancestors_of(_needs_graph(stages), name)


def descendants(stages: Sequence[Stage], name: str) -> list[str]:
    """Every stage that transitively needs `name`, in definition order."""
    graph = _needs_graph(stages)
    return [s.name for s in stages if name in _ancestors_of(graph, s.name)]


def policy_problems(
    stages: Sequence[Stage],
    environments: Mapping[str, EnvironmentSpec],
    unvalidated_kinds: Collection[str] = (),
) -> list[dict[str, Any]]:
    """Cross-stage rules: declared environments, approvals before protected deploys, deploys
    before what acts on an environment, a build before what needs an artifact.

    `stages` are the stages that validated; `unvalidated_kinds` the kinds of those that did
    not (already reported). A stage whose needs reach a stage that is not in `stages` is not
    judged on what runs before it: that would blame it for the other stage's problem."""
    problems: list[dict[str, Any]] = []
    by_name = {s.name: s for s in stages}
    graph = _needs_graph(stages)
    for stage in stages:
        ancestry = _ancestors_of(graph, stage.name)
        known_before = all(a in by_name for a in ancestry)
        before = [by_name[a] for a in ancestry if a in by_name]
        env = stage.environment_name
        if env is not None and environments and env not in environments:
            problems.append(
                {
                    "stage": stage.name,
                    "field": "environment",
                    "message": f"unknown environment {env!r}; declared: " + ", ".join(environments),
                }
            )
            continue
        if not known_before:
            continue
        if stage.kind in NEEDS_ARTIFACT and not any(b.kind == "build" for b in before):
            problems.append(
                {
                    "stage": stage.name,
                    "field": "needs",
                    "message": f"a {stage.kind} stage needs a build stage before it",
                }
            )
        if stage.kind == "deploy" and env is not None:
            policy = environments.get(env)
            approved = any(b.kind == "approval" and b.environment_name == env for b in before)
            if policy is not None and policy.requires_approval and not approved:
                problems.append(
                    {
                        "stage": stage.name,
                        "field": "needs",
                        "message": f"environment {env!r} requires approval: add an approval "
                        f"stage for {env!r} to this deploy's needs",
                    }
                )
            strategy = getattr(stage, "strategy", None) or (policy.strategy if policy else None)
            if (
                strategy == "canary"
                and "canary" not in unvalidated_kinds
                and not any(s.kind == "canary" and s.environment_name == env for s in stages)
            ):
                problems.append(
                    {
                        "stage": stage.name,
                        "field": "strategy",
                        "message": f"canary deploy to {env!r} has no canary stage to promote it",
                    }
                )
        if stage.kind in NEEDS_DEPLOY and not any(
            b.kind == "deploy" and b.environment_name == env for b in before
        ):
            problems.append(
                {
                    "stage": stage.name,
                    "field": "needs",
                    "message": f"needs a deploy to {env!r} before it",
                }
            )
        if stage.kind == "quality_gate":
            for test_name in getattr(stage, "min_coverage", {}):
                target = by_name.get(test_name)
                if target is None or target.kind != "test":
                    problems.append(
                        {
                            "stage": stage.name,
                            "field": f"min_coverage.{test_name}",
                            "message": f"{test_name!r} is not a test stage",
                        }
                    )
                elif test_name not in _ancestors_of(graph, stage.name):
                    problems.append(
                        {
                            "stage": stage.name,
                            "field": f"min_coverage.{test_name}",
                            "message": f"{test_name!r} must run before the gate (add to needs)",
                        }
                    )
    return problems


def ready(stages: Sequence[Stage], finished: Iterable[str], started: Iterable[str]) -> list[str]:
    """Stages not yet started whose needs have all finished, in definition order.
    Failure handlers (rollback) are never ready: the workflow runs them on failure."""
    finished_set, started_set = set(finished), set(started)
    return [
        s.name
        for s in stages
        if s.name not in started_set
        and s.kind not in FAILURE_HANDLERS
        and all(n in finished_set for n in s.needs)
    ]


def topological_order(stages: Sequence[Stage]) -> list[str]:
    """Stages in an order where every stage comes after what it needs (stable)."""
    done: list[str] = []
    remaining = list(stages)
    while remaining:
        batch = [s for s in remaining if all(n in done for n in s.needs)]
        if not batch:
            raise ValueError("cycle in stages")
        done.extend(s.name for s in batch)
        remaining = [s for s in remaining if s.name not in done]
    return done


def critical_path(
    stages: Sequence[Stage], durations: Mapping[str, float]
) -> tuple[float, list[str]]:
    """Longest chain of needs by duration: the least wall time the DAG can take."""
    by_name = {s.name: s for s in stages}
    finish: dict[str, float] = {}
    via: dict[str, str | None] = {}
    for name in topological_order(stages):
        needs = by_name[name].needs
        prev = max(needs, key=lambda n: finish[n]) if needs else None
        finish[name] = (finish[prev] if prev else 0.0) + durations.get(name, 0.0)
        via[name] = prev
    if not finish:
        return 0.0, []
    end: str | None = max(finish, key=lambda n: finish[n])
    total = finish[end] if end else 0.0
    path: list[str] = []
    while end is not None:
        path.append(end)
        end = via[end]
    return total, list(reversed(path))


def mermaid(stages: Sequence[Stage]) -> str:
    """A mermaid flowchart of the definition (approval gates as diamonds)."""
    lines = ["graph TD"]
    for s in stages:
        label = f"{s.name}<br/>{s.kind}"
        env = s.environment_name
        if env:
            label += f" ({env})"
        shape = ("{", "}") if s.kind == "approval" else ("[", "]")
        lines.append(f'    {_node(s.name)}{shape[0]}"{label}"{shape[1]}')
    for s in stages:
        lines.extend(f"    {_node(need)} --> {_node(s.name)}" for need in s.needs)
    for s in stages:
        if s.kind in FAILURE_HANDLERS:
            lines.append(f"    {_node(s.name)}:::onfailure")
    lines.append("    classDef onfailure stroke-dasharray: 5 5")
    return "\n".join(lines)


def _node(name: str) -> str:
    return "s_" + "".join(c if c.isalnum() else "_" for c in name)
