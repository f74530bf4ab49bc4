"""Pure graph logic over a pipeline's stages: cycles, ancestry, ready set, critical path,
mermaid.

No I/O and no Temporal: these functions are called from workflow code (they must be
deterministic, so every iteration follows definition order) and unit-tested on their own.
Every walk is iterative and every pass over the graph is linear in stages plus needs, so a
definition of thousands of stages (the validation limit) neither recurses nor crawls.
Definition *rules* (what may need what) live in `contracts.definition.rules`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

__all__ = [
    "FAILURE_HANDLERS",
    "StageLike",
    "ancestor_masks",
    "ancestors",
    "ancestors_of_kind",
    "critical_path",
    "find_cycle",
    "levels",
    "mermaid",
    "ready",
    "topological_order",
]


class StageLike(Protocol):
    """What graph code reads of a stage (the definition's stages, and anything shaped like
    them): the model is not imported, so the model may use these functions."""

    @property
    def name(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def needs(self) -> list[str]: ...


class DrawnStage(StageLike, Protocol):
    """A stage as `mermaid` draws it: with the environment it acts on, if any."""

    @property
    def environment_name(self) -> str | None: ...


# Stages that only run when something failed: nothing may depend on them.
FAILURE_HANDLERS = frozenset({"rollback"})


def find_cycle(graph: Mapping[str, Sequence[str]]) -> list[str] | None:
    """Return one cycle as a path that ends where it starts (a → b → a), or None.

    A depth-first walk with an explicit stack (a 10,000-stage chain must not hit the
    interpreter's recursion limit); it visits in the same order a recursive walk would."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = finished
    for root in graph:
        if root in state:
            continue
        path: list[str] = [root]
        on_path: dict[str, int] = {root: 0}
        state[root] = 1
        stack = [iter(graph.get(root, ()))]
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                stack.pop()
                done = path.pop()
                del on_path[done]
                state[done] = 2
                continue
            if nxt not in graph:
                continue
            if state.get(nxt) == 1:
                return [*path[on_path[nxt] :], nxt]
            if nxt not in state:
                state[nxt] = 1
                on_path[nxt] = len(path)
                path.append(nxt)
                stack.append(iter(graph.get(nxt, ())))
    return None


def levels(graph: Mapping[str, Sequence[str]]) -> dict[str, int] | None:
    """Each node's depth (1 + the deepest of what it needs; 0 with no needs), or None when
    the graph has a cycle. Kahn's algorithm: linear in nodes plus edges, in any order.
    Needs naming nodes outside `graph` are ignored."""
    waiting = {n: sum(1 for d in deps if d in graph) for n, deps in graph.items()}
    needed_by: dict[str, list[str]] = {n: [] for n in graph}
    for name, deps in graph.items():
        for dep in deps:
            if dep in graph:
                needed_by[dep].append(name)
    level = dict.fromkeys(graph, 0)
    queue = [n for n, count in waiting.items() if count == 0]
    done = 0
    while queue:
        node = queue.pop()
        done += 1
        for child in needed_by[node]:
            level[child] = max(level[child], level[node] + 1)
            waiting[child] -= 1
            if waiting[child] == 0:
                queue.append(child)
    return level if done == len(graph) else None


def ancestor_masks(graph: Mapping[str, Sequence[str]], order: Sequence[str]) -> dict[str, int]:
    """Each node's transitive needs as a bit set (bit i = `order[i]`), computed once in
    dependency order: "is any stage of kind X before this one" becomes one `&`, instead of a
    walk per stage (quadratic on long chains). `graph` must be acyclic."""
    bit = {name: 1 << i for i, name in enumerate(order)}
    depth = levels(graph)
    if depth is None:
        raise ValueError("cycle in stages")
    masks: dict[str, int] = {}
    for name in sorted(graph, key=lambda n: depth[n]):
        mask = 0
        for dep in graph[name]:
            if dep in masks:
                mask |= masks[dep] | bit[dep]
        masks[name] = mask
    return masks


def _needs_graph(stages: Sequence[StageLike]) -> dict[str, list[str]]:
    return {s.name: list(s.needs) for s in stages}


def _ancestors_of(graph: Mapping[str, Sequence[str]], name: str) -> list[str]:
    out: list[str] = []
    seen: set[str] = set()
    stack = list(graph.get(name, ()))
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        out.append(node)
        stack.extend(graph.get(node, ()))
    return out


def ancestors(stages: Sequence[StageLike], name: str) -> list[str]:
    """Every stage `name` transitively needs."""
    return _ancestors_of(_needs_graph(stages), name)


def ancestors_of_kind(stages: Sequence[StageLike], kind: str) -> dict[str, list[str]]:
    """Each stage → the stages of `kind` it transitively needs, in definition order (one
    pass with bit sets: linear in practice, whatever the depth). Needs naming no stage are
    ignored; the graph must be acyclic."""
    kinds = {s.name: s.kind for s in stages}
    graph = {s.name: [n for n in s.needs if n != s.name and n in kinds] for s in stages}
    order = list(graph)
    masks = ancestor_masks(graph, order)
    wanted = [(i, name) for i, name in enumerate(order) if kinds[name] == kind]
    return {name: [n for i, n in wanted if masks[name] >> i & 1] for name in order}


def ready(
    stages: Sequence[StageLike], finished: Iterable[str], started: Iterable[str]
) -> list[str]:
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


def topological_order(stages: Sequence[StageLike]) -> list[str]:
    """Stages in an order where every stage comes after what it needs (stable): by depth,
    then definition order."""
    depth = levels(_needs_graph(stages))
    if depth is None:
        raise ValueError("cycle in stages")
    position = {s.name: i for i, s in enumerate(stages)}
    return sorted(depth, key=lambda n: (depth[n], position[n]))


def critical_path(
    stages: Sequence[StageLike], durations: Mapping[str, float]
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


def mermaid(stages: Sequence[DrawnStage]) -> str:
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
