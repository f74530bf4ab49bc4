"""Definition policy: what a pipeline's stages may need and ask, as `Problem`s.

`contracts.definition.dag` answers graph questions (cycles, ancestry); this module decides which
graphs are pipelines that can run: declared environments, approvals before protected deploys,
deploys before what acts on an environment, a build before what needs an artifact, gates
that are unambiguous and that the people in the roles file can meet. Ancestry is computed
once as bit sets, so each rule is one `&` per stage and validation stays linear in practice.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

from contracts.definition import dag
from contracts.definition.model import ApprovalStage, EnvironmentSpec, Problem, Stage
from contracts.definition.triggers import PULL_REQUEST_REFUSED, TriggersSpec, pull_request_stages

__all__ = [
    "CHANGES_ENVIRONMENT",
    "NEEDS_ARTIFACT",
    "NEEDS_DEPLOY",
    "approval_problems",
    "graph_problems",
    "policy_problems",
    "pull_request_problems",
    "unmet_gate",
]

# Stages acting on an environment that must have been deployed earlier in the run.
NEEDS_DEPLOY = frozenset(
    {"e2e", "smoke", "load_test", "dast", "browser", "web_audit", "canary", "monitor"}
)
NEEDS_ARTIFACT = frozenset({"image_scan", "publish", "deploy"})
# Stages that change what an environment serves (or how much traffic it takes): each needs
# the environment's approval before it when the environment requires one.
CHANGES_ENVIRONMENT = frozenset({"deploy", "canary", "monitor"})


def graph_problems(file: str, stages: Sequence[tuple[str, list[str], str]]) -> list[Problem]:
    """Structural problems of (name, needs, kind) triples: duplicates, unknown needs, cycles,
    stages that cannot be reached in a run."""
    problems: list[Problem] = []
    seen: set[str] = set()
    for name, _, _ in stages:
        if name in seen:
            problems.append(
                Problem(file=file, stage=name, field="name", message="duplicate stage name")
            )
        seen.add(name)
    kinds = {name: kind for name, _, kind in stages}
    graph: dict[str, list[str]] = {}
    for name, needs, _ in stages:
        deps = graph.setdefault(name, [])
        for need in needs:
            if need not in kinds:
                problems.append(
                    Problem(
                        file=file,
                        stage=name,
                        field="needs",
                        message=f"needs unknown stage {dag_short(need)}",
                    )
                )
            elif need == name:
                problems.append(
                    Problem(file=file, stage=name, field="needs", message="needs itself")
                )
            else:
                deps.append(need)
    cycle = dag.find_cycle(graph)
    if cycle:
        # `graph` maps a stage to what it needs; show the cycle in run order.
        shown = " -> ".join(reversed(cycle))
        problems.append(
            Problem(file=file, stage=cycle[0], field="needs", message=f"cycle: {shown}")
        )
        return problems
    order = list(graph)
    masks = dag.ancestor_masks(graph, order)
    handlers = [i for i, n in enumerate(order) if kinds.get(n) in dag.FAILURE_HANDLERS]
    handler_mask = sum(1 << i for i in handlers)
    for name in order:
        reached = masks[name] & handler_mask
        if reached:
            first = order[(reached & -reached).bit_length() - 1]
            problems.append(
                Problem(
                    file=file,
                    stage=name,
                    field="needs",
                    message=f"unreachable: depends on {first!r}, a rollback stage "
                    "that only runs when something failed",
                )
            )
    return problems


def dag_short(name: str) -> str:
    return repr(name) if len(name) <= 63 else repr(name[:60] + "...")


class _Ancestry:
    """Bit-set ancestry of the validated stages, and masks of the stages of each kind."""

    def __init__(self, stages: Sequence[Stage]) -> None:
        self.by_name = {s.name: s for s in stages}
        graph = {
            name: [n for n in s.needs if n != name and n in self.by_name]
            for name, s in self.by_name.items()
        }
        self.order = list(graph)
        self.bit = {name: 1 << i for i, name in enumerate(self.order)}
        depth = dag.levels(graph)
        self.acyclic = depth is not None
        self.masks = dag.ancestor_masks(graph, self.order) if depth is not None else {}
        # A stage whose needs reach a stage that did not validate is not judged on what runs
        # before it: that would blame it for the other stage's problem.
        self.incomplete: dict[str, bool] = {}
        for name in sorted(graph, key=lambda n: depth[n]) if depth is not None else ():
            stage = self.by_name[name]
            self.incomplete[name] = any(
                n != name and (n not in self.by_name or self.incomplete.get(n, False))
                for n in stage.needs
            )

    def mask(self, kind: str) -> int:
        return sum(self.bit[s.name] for s in self.by_name.values() if s.kind == kind)


def policy_problems(
    file: str,
    stages: Sequence[Stage],
    environments: Mapping[str, EnvironmentSpec],
    unvalidated_kinds: Collection[str] = (),
) -> list[Problem]:
    """Cross-stage rules: declared environments, approvals before protected deploys, deploys
    before what acts on an environment, a build before what needs an artifact.

    `stages` are the stages that validated; `unvalidated_kinds` the kinds of those that did
    not (already reported)."""
    problems: list[Problem] = []
    tree = _Ancestry(stages)
    if not tree.acyclic:
        return problems  # the cycle is reported by graph_problems

    def problem(stage: Stage, field: str, message: str) -> None:
        problems.append(Problem(file=file, stage=stage.name, field=field, message=message))

    builds = tree.mask("build")
    approvals: dict[str | None, int] = {}
    deploys: dict[str | None, int] = {}
    canary_envs = {s.environment_name for s in stages if s.kind == "canary"}
    for s in stages:
        bit = tree.bit.get(s.name, 0)
        if s.kind == "approval":
            approvals[s.environment_name] = approvals.get(s.environment_name, 0) | bit
        elif s.kind == "deploy":
            deploys[s.environment_name] = deploys.get(s.environment_name, 0) | bit

    for stage in stages:
        before = tree.masks.get(stage.name, 0)
        env = stage.environment_name
        if env is not None and environments and env not in environments:
            declared = ", ".join(environments)
            problem(stage, "environment", f"unknown environment {env!r}; declared: {declared}")
            continue
        if tree.incomplete.get(stage.name, True):
            continue
        if stage.kind in NEEDS_ARTIFACT and not before & builds:
            problem(stage, "needs", f"a {stage.kind} stage needs a build stage before it")
        if stage.kind in CHANGES_ENVIRONMENT and env is not None:
            policy = environments.get(env)
            # A canary or monitor after a deploy there is judged by that deploy's gate.
            judged = stage.kind == "deploy" or not before & deploys.get(env, 0)
            if (
                policy is not None
                and policy.requires_approval
                and judged
                and not before & approvals.get(env, 0)
            ):
                problem(
                    stage,
                    "needs",
                    f"environment {env!r} requires approval: add an approval "
                    f"stage for {env!r} to this {stage.kind}'s needs",
                )
        if stage.kind == "deploy" and env is not None:
            policy = environments.get(env)
            strategy = getattr(stage, "strategy", None) or (policy.strategy if policy else None)
            if (
                strategy == "canary"
                and "canary" not in unvalidated_kinds
                and env not in canary_envs
            ):
                problem(
                    stage, "strategy", f"canary deploy to {env!r} has no canary stage to promote it"
                )
        if stage.kind in NEEDS_DEPLOY and not before & deploys.get(env, 0):
            problem(stage, "needs", f"needs a deploy to {env!r} before it")
        if stage.kind == "quality_gate":
            for test_name in getattr(stage, "min_coverage", {}):
                target = tree.by_name.get(test_name)
                field = f"min_coverage.{test_name}"
                if target is None or target.kind != "test":
                    problem(stage, field, f"{dag_short(test_name)} is not a test stage")
                elif not before & tree.bit[test_name]:
                    problem(stage, field, f"{test_name!r} must run before the gate (add to needs)")
    return problems


def _can_cover(required: Sequence[str], roles: Mapping[str, Sequence[str]]) -> bool:
    """Whether each required role can be held by a different person (bipartite matching by
    augmenting paths; a gate has at most 20 roles)."""
    holder_of: dict[str, str] = {}  # person -> role they cover
    holders = {role: [p for p, held in roles.items() if role in held] for role in required}

    def assign(role: str, tried: set[str]) -> bool:
        for person in holders[role]:
            if person in tried:
                continue
            tried.add(person)
            if person not in holder_of or assign(holder_of[person], tried):
                holder_of[person] = role
                return True
        return False

    return all(assign(role, set()) for role in dict.fromkeys(required))


def unmet_gate(
    roles: Sequence[str], quorum: int | None, people: Mapping[str, Sequence[str]]
) -> tuple[int, list[str]] | None:
    """None if `people` (person → roles held) can meet a gate asking each of `roles` of a
    different person and at least `quorum` of them (default: one per role); else how many
    distinct approvers it needs and who holds any of its roles."""
    needed = max(quorum or len(roles), len(set(roles)))
    holders = sorted(p for p, held in people.items() if set(held) & set(roles))
    if len(holders) >= needed and _can_cover(roles, people):
        return None
    return needed, holders


def approval_problems(
    file: str,
    stages: Sequence[Stage],
    environments: Mapping[str, EnvironmentSpec],
    roles: Mapping[str, Sequence[str]] | None,
) -> list[Problem]:
    """Gates that are ambiguous, weakened or cannot be met: one gate name per approval stage
    (votes are counted per gate name), no name of another environment (nor of a freeze
    override gate), `on_failure: fail` only (a gate that is not approved stops the run), and,
    when the roles file is known, a quorum and roles that its people can meet."""
    problems: list[Problem] = []
    gates: dict[str, str] = {}
    # Declared or named by a stage; frozen or not (the worker's policy may add windows).
    named = [*environments, *(s.environment_name for s in stages)]
    known = dict.fromkeys(env for env in named if env is not None)
    freeze_gates = {f"{env}-freeze": env for env in known}
    for stage in stages:
        if not isinstance(stage, ApprovalStage):
            continue
        gate = stage.gate_name
        if stage.on_failure != "fail":
            problems.append(
                Problem(
                    file=file,
                    stage=stage.name,
                    field="on_failure",
                    message=f"an approval takes only on_failure: fail ({stage.on_failure!r} "
                    "would let what needs the gate run when it is rejected or times out)",
                )
            )
        if gate != stage.environment and gate in known:
            problems.append(
                Problem(
                    file=file,
                    stage=stage.name,
                    field="gate",
                    message=f"gate {gate!r} is named after another environment than this "
                    f"approval's ({stage.environment!r}); name it {stage.environment!r} or "
                    "after no environment",
                )
            )
        if gate in gates:
            problems.append(
                Problem(
                    file=file,
                    stage=stage.name,
                    field="gate",
                    message=f"gate {gate!r} is also the gate of stage {gates[gate]!r}; "
                    "give each approval stage its own gate name",
                )
            )
        elif gate in freeze_gates:
            problems.append(
                Problem(
                    file=file,
                    stage=stage.name,
                    field="gate",
                    message=f"gate {gate!r} is the freeze override gate of {freeze_gates[gate]!r}",
                )
            )
        gates.setdefault(gate, stage.name)
        if roles is None:
            continue
        unmet = unmet_gate(stage.roles, stage.quorum, roles)
        if unmet is not None:
            needed, holders = unmet
            forever = (
                " and it has no timeout: the run would wait forever"
                if stage.timeout is None
                else ""
            )
            problems.append(
                Problem(
                    file=file,
                    stage=stage.name,
                    field="quorum" if stage.quorum and len(holders) < stage.quorum else "roles",
                    message=f"gate {gate!r} needs {needed} distinct approvers covering "
                    f"{sorted(set(stage.roles))}; the roles file has {len(holders)} "
                    f"({', '.join(holders) or 'nobody'}){forever}",
                )
            )
    return problems


def pull_request_problems(
    file: str, stages: Sequence[Stage], on: TriggersSpec | None, known: Collection[str]
) -> list[Problem]:
    """`on.pull_request` names stages that exist, and none of them (nor anything they need)
    touches an environment or the registry: a pull-request run never does."""
    spec = on.pull_request if on is not None else None
    if spec is None or spec.named is None:
        return []
    problems = [
        Problem(file=file, field=spec.field, message=f"unknown stage {dag_short(name)}")
        for name in spec.named
        if name not in known
    ]
    by_name = {s.name: s for s in stages}
    _, refused = pull_request_stages(stages, spec)
    for name, origin in refused.items():
        kind = by_name[name].kind
        via = "" if origin == name else f", and {origin!r} (named there) needs it"
        problems.append(
            Problem(
                file=file,
                stage=name,
                field=spec.field,
                message=f"a pull-request run never touches an environment or the registry, "
                f"and this {kind} stage would: {PULL_REQUEST_REFUSED[kind]}{via}",
            )
        )
    return problems
