"""The hostile-input catalogue (issue 9): every kind of bad definition gets one clear refusal
naming the file, stage and field; never a traceback, a hang, an unbounded read or an echo of
another file's content."""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from contracts.definition.limits import MAX_FILE_BYTES, MAX_STAGES, MAX_STAGES_READ
from contracts.definition.loading import load_pipeline, validate_definition
from contracts.definition.model import DefinitionError, Problem

SECRET = "hunter2-do-not-print"
ROLES = {"alice": ["cto"], "bob": ["devops_lead"], "carol": ["developer"]}


def base() -> dict[str, Any]:
    return {
        "name": "shop",
        "service": {"name": "shop"},
        "environments": {"staging": {}, "production": {"requires_approval": True}},
        "stages": [
            {"name": "checkout", "kind": "checkout"},
            {"name": "unit", "kind": "test", "needs": ["checkout"], "command": ["pytest"]},
            {"name": "build", "kind": "build", "needs": ["unit"]},
            {"name": "publish", "kind": "publish", "needs": ["build"]},
            {"name": "deploy_staging", "kind": "deploy", "needs": ["build"],
             "environment": "staging"},
            {"name": "smoke", "kind": "smoke", "needs": ["deploy_staging"],
             "environment": "staging"},
            {"name": "approve", "kind": "approval", "needs": ["smoke"],
             "environment": "production", "roles": ["cto"]},
            {"name": "deploy_production", "kind": "deploy", "needs": ["approve"],
             "environment": "production"},
            {"name": "tell", "kind": "notify", "needs": ["deploy_production"],
             "message": "{service} {sha12} shipped"},
        ],
    }  # fmt: skip


def stage(data: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(s for s in data["stages"] if s["name"] == name)
    return found


def changed(change: Callable[[dict[str, Any]], None]) -> Callable[[Path], Path]:
    """A case made by changing the valid definition and writing it as YAML."""

    def make(tmp: Path) -> Path:
        data = copy.deepcopy(base())
        change(data)
        path = tmp / "pipeline.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
        return path

    return make


def text(body: str | bytes, name: str = "pipeline.yaml") -> Callable[[Path], Path]:
    """A case that is a file's raw text (or bytes)."""

    def make(tmp: Path) -> Path:
        path = tmp / name
        if isinstance(body, bytes):
            path.write_bytes(body)
        else:
            path.write_text(body, encoding="utf-8")
        return path

    return make


def extending(
    target: str, setup: Callable[[Path], None] = lambda _: None
) -> Callable[[Path], Path]:
    """A definition in `tmp/svc/` whose `extends:` names `target`, after `setup(tmp)`."""

    def make(tmp: Path) -> Path:
        (tmp / "svc").mkdir(exist_ok=True)
        setup(tmp)
        path = tmp / "svc" / "pipeline.yaml"
        path.write_text(yaml.safe_dump({"extends": target, "name": "child"}), encoding="utf-8")
        return path

    return make


def _set(data: dict[str, Any], which: str, **fields: Any) -> None:
    stage(data, which).update(fields)


@dataclass(frozen=True)
class Case:
    make: Callable[[Path], Path]
    file: str  # the file named, relative to tmp
    stage: str | None
    field: str | None
    message: str  # a part of the sentence


def _write(rel: str, content: str | bytes) -> Callable[[Path], None]:
    def setup(tmp: Path) -> None:
        path = tmp / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")

    return setup


def _deep(levels: int) -> str:
    return "name: x\nservice: {name: x}\nstages: " + "[" * levels + "]" * levels + "\n"


def _alias_bomb() -> str:
    lines = ['a0: &a0 ["xxxxxxxxxx"]']
    lines += [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}]" for i in range(1, 30)]
    lines += ["name: x", "service: {name: x}", "stages: [{name: *a29, kind: checkout}]"]
    return "\n".join(lines) + "\n"


def _dup_gate(data: dict[str, Any]) -> None:
    data["stages"].append(
        {"name": "approve2", "kind": "approval", "needs": ["approve"],
         "environment": "production", "gate": "production", "roles": ["devops_lead"]}
    )  # fmt: skip


def _rename_env(data: dict[str, Any]) -> None:
    data["environments"]["../../etc/prod uction"] = data["environments"].pop("staging")


CATALOGUE: dict[str, Case] = {
    # numbers out of range
    "timeout 1e20": Case(changed(lambda d: _set(d, "unit", timeout="1e20")),
                         "pipeline.yaml", "unit", "timeout", "is not a duration"),
    "timeout .inf": Case(changed(lambda d: _set(d, "unit", timeout=float("inf"))),
                         "pipeline.yaml", "unit", "timeout", "out of range"),
    "timeout 99999999999d": Case(changed(lambda d: _set(d, "unit", timeout="99999999999d")),
                                 "pipeline.yaml", "unit", "timeout", "out of range"),
    "timeout over a week": Case(changed(lambda d: _set(d, "unit", timeout="8d")),
                                "pipeline.yaml", "unit", "timeout", "at most 7d"),
    "ISO duration overflow": Case(changed(lambda d: _set(d, "unit", timeout="P99999999999D")),
                                  "pipeline.yaml", "unit", "timeout", "is not a duration"),
    "retry interval over a day": Case(
        changed(lambda d: _set(d, "unit", retry={"initial_interval": "2d"})),
        "pipeline.yaml", "unit", "retry.initial_interval", "at most 1d"),
    "approval timeout over 30 days": Case(
        changed(lambda d: _set(d, "approve", timeout="31d")),
        "pipeline.yaml", "approve", "timeout", "at most 30d"),
    "negative timeout": Case(changed(lambda d: _set(d, "unit", timeout=-5)),
                             "pipeline.yaml", "unit", "timeout", "must be positive"),
    # structure too deep or too big
    "nested 40 levels": Case(text(_deep(40)), "pipeline.yaml", None, None,
                             "nested deeper than 32 levels"),
    "nested 50,000 levels": Case(text(_deep(50_000)), "pipeline.yaml", None, None,
                                 "nested deeper than 32 levels"),
    "more stages than a run can carry": Case(
        changed(lambda d: d.update(stages=[{"name": f"s{i}", "kind": "checkout"}
                                           for i in range(MAX_STAGES + 1)])),
        "pipeline.yaml", None, "stages", "Temporal ends a run whose history passes 51,200"),
    "more stages than are read": Case(
        changed(lambda d: d.update(stages=[{"name": f"s{i}", "kind": "checkout"}
                                           for i in range(MAX_STAGES_READ + 1)])),
        "pipeline.yaml", None, "stages", "a list this long is not read further"),
    "file over the size limit": Case(text("# " + "x" * MAX_FILE_BYTES + "\nname: x\n"),
                                     "pipeline.yaml", None, None, "bytes; a definition may be"),
    # YAML features that hide what runs
    "alias bomb": Case(text(_alias_bomb()), "pipeline.yaml", None, None,
                       "anchors and aliases (&, *) are not allowed"),
    "duplicate key": Case(text("name: a\nname: b\nservice: {name: x}\nstages: []\n"),
                          "pipeline.yaml", None, None, "duplicate key 'name'"),
    "duplicate key in a stage": Case(
        text("name: a\nservice: {name: x}\nstages:\n  - {name: c, kind: checkout, kind: build}\n"),
        "pipeline.yaml", None, None, "duplicate key 'kind'"),
    # things that are not definition files
    "binary definition": Case(text(b"\x89PNG\r\n\x1a\n\x00\xff\xfe"), "pipeline.yaml", None,
                              None, "is not UTF-8 text"),
    "NUL bytes": Case(text("name: a\x00\n"), "pipeline.yaml", None, None, "NUL bytes"),
    "not a mapping": Case(text("- a\n- b\n"), "pipeline.yaml", None, None,
                          "expected a mapping at the top level"),
    "extends a directory": Case(extending("lib", lambda t: (t / "svc" / "lib").mkdir()),
                                "svc/lib", None, None, "is a directory"),
    "extends a fifo": Case(extending("pipe", lambda t: os.mkfifo(t / "svc" / "pipe")),
                           "svc/pipe", None, None, "not a regular file"),
    "extends a device via a link": Case(
        extending("null", lambda t: (t / "svc" / "null").symlink_to("/dev/zero")),
        "svc/pipeline.yaml", None, "extends", "outside"),
    "extends a binary file": Case(extending("base.bin", _write("svc/base.bin", b"\xff\x00\xfe")),
                                  "svc/base.bin", None, None, "is not UTF-8 text"),
    "extends outside the tree": Case(
        extending("../secrets.env", _write("secrets.env", f"API_KEY: [{SECRET}\n")),
        "svc/pipeline.yaml", None, "extends", "outside"),
    "extends an absolute path": Case(extending("/etc/passwd"), "svc/pipeline.yaml", None,
                                     "extends", "outside"),
    "extends a secrets file in the tree": Case(
        extending(".env", _write("svc/.env", f"API_KEY: [{SECRET}\n")),
        "svc/.env", None, None, "not valid YAML"),
    "extends a non-string": Case(text("extends: [a]\nname: x\n"), "pipeline.yaml", None,
                                 "extends", "relative file path"),
    # templates checked by formatting
    "tag {sha12:d}": Case(changed(lambda d: _set(d, "publish", tags=["{sha12:d}"])),
                          "pipeline.yaml", "publish", "tags.0", "does not format"),
    "message {service:%Y}": Case(changed(lambda d: _set(d, "tell", message="{service:%Y}")),
                                 "pipeline.yaml", "tell", "message", "does not format"),
    "huge width": Case(changed(lambda d: _set(d, "publish", tags=["{sha12:>900000000}"])),
                       "pipeline.yaml", "publish", "tags.0", "widths above 128"),
    "nested width": Case(changed(lambda d: _set(d, "publish", tags=["{sha:>{sha12}}"])),
                         "pipeline.yaml", "publish", "tags.0", "nested fields"),
    "positional field": Case(changed(lambda d: _set(d, "tell", message="done {}")),
                             "pipeline.yaml", "tell", "message", "unknown placeholder"),
    "attribute access": Case(changed(lambda d: _set(d, "tell", message="{sha12.__class__}")),
                             "pipeline.yaml", "tell", "message", "unknown placeholder"),
    "tag with a slash": Case(changed(lambda d: _set(d, "publish", tags=["v/{sha12}"])),
                             "pipeline.yaml", "publish", "tags.0", "a tag is 1-128"),
    # ambiguity
    # gates a definition could weaken (issue 16)
    "approval that continues when not given": Case(
        changed(lambda d: _set(d, "approve", timeout="1s", on_failure="continue")),
        "pipeline.yaml", "approve", "on_failure", "an approval takes only on_failure: fail"),
    "approval that rolls back when not given": Case(
        changed(lambda d: _set(d, "approve", on_failure="rollback")),
        "pipeline.yaml", "approve", "on_failure", "an approval takes only on_failure: fail"),
    "production gate named after staging": Case(
        changed(lambda d: _set(d, "approve", gate="staging")),
        "pipeline.yaml", "approve", "gate", "named after another environment"),
    "gate named after a freeze gate": Case(
        changed(lambda d: _set(d, "approve", gate="production-freeze")),
        "pipeline.yaml", "approve", "gate", "is the freeze override gate of 'production'"),
    "production canary without the approval": Case(
        changed(lambda d: d["stages"].append(
            {"name": "canary", "kind": "canary", "needs": ["deploy_staging"],
             "environment": "production", "metrics": [{"metric": "error_rate", "max": 1}]})),
        "pipeline.yaml", "canary", "needs", "requires approval: add an approval stage for "
        "'production' to this canary's needs"),
    "two approvals, one gate": Case(changed(_dup_gate), "pipeline.yaml", "approve2", "gate",
                                    "is also the gate of stage 'approve'"),
    # unsafe names and paths
    "environment name with a path": Case(changed(_rename_env), "pipeline.yaml", None,
                                         "environments", "is not a safe name"),
    "stage environment with a path": Case(
        changed(lambda d: _set(d, "smoke", environment="../prod")),
        "pipeline.yaml", "smoke", "environment", "is not a safe name"),
    "gate with a space": Case(changed(lambda d: _set(d, "approve", gate="prod gate")),
                              "pipeline.yaml", "approve", "gate", "is not a safe name"),
    "stage name as an option": Case(changed(lambda d: _set(d, "tell", name="-rf")),
                                    "pipeline.yaml", "-rf", "name", "is not a safe name"),
    "check path to another host": Case(
        changed(lambda d: _set(d, "smoke", checks=[{"path": "@169.254.169.254/latest"}])),
        "pipeline.yaml", "smoke", "checks", "must be a path starting with a single '/'"),
    "scheme-relative check path": Case(
        changed(lambda d: _set(d, "smoke", checks=[{"path": "//evil.example/x"}])),
        "pipeline.yaml", "smoke", "checks", "single '/'"),
    "service name with '/' and capitals": Case(
        changed(lambda d: d["service"].update(name="Shop/Web")),
        "pipeline.yaml", None, "service.name", "is not a service name: 1-63 lower-case"),
    "health path": Case(changed(lambda d: d["service"].update(health_path="health")),
                        "pipeline.yaml", None, "service.health_path", "single '/'"),
    "absolute junit path": Case(changed(lambda d: _set(d, "unit", junit="/etc/passwd")),
                                "pipeline.yaml", "unit", "junit", "inside the checkout"),
    "junit path with ..": Case(changed(lambda d: _set(d, "unit", junit="../../x.xml")),
                               "pipeline.yaml", "unit", "junit", "inside the checkout"),
    "coverage path home": Case(changed(lambda d: _set(d, "unit", coverage="~/cov.xml")),
                               "pipeline.yaml", "unit", "coverage", "inside the checkout"),
    "metric bound infinite": Case(
        changed(lambda d: d["stages"].append(
            {"name": "watch", "kind": "monitor", "needs": ["deploy_production"],
             "environment": "production", "criteria": [{"metric": "error_rate",
                                                        "max": float("inf")}]})),
        "pipeline.yaml", "watch", "criteria.0.max", "finite"),
    "unknown kind, huge": Case(changed(lambda d: _set(d, "tell", kind="k" * 100_000)),
                               "pipeline.yaml", "tell", "kind", "unknown kind"),
}  # fmt: skip


def problems_of(path: Path, roles: dict[str, list[str]] | None = None) -> list[Problem]:
    with pytest.raises(DefinitionError) as info:
        load_pipeline(path, roles)
    return info.value.problems


@pytest.mark.parametrize("case", CATALOGUE.values(), ids=CATALOGUE.keys())
def test_catalogue_each_bad_input_is_refused_by_name(tmp_path: Path, case: Case) -> None:
    path = case.make(tmp_path)
    # CPU time, not wall time: bounded work (a huge definition is cut off, not crawled) is
    # what this asserts, and a busy machine must not fail it.
    started = time.process_time()
    problems = problems_of(path)
    assert time.process_time() - started < 5
    matching = [p for p in problems if case.message in p.message]
    assert matching, [str(p) for p in problems]
    problem = matching[0]
    assert problem.file == str(tmp_path / case.file)
    assert problem.stage == case.stage
    if case.field is None:
        assert problem.field is None, problem
    else:
        assert str(problem.field).startswith(case.field), problem
    # A refusal is a sentence, never a dump of the input or of another file, nor a
    # validator's wording (a regex, pydantic's "Value error," prefix).
    rendered = str(DefinitionError(problems))
    assert "Value error," not in rendered
    assert "should match pattern" not in rendered
    assert SECRET not in rendered
    assert len(rendered) < 4000, rendered[:300]


def test_the_valid_base_is_accepted(tmp_path: Path) -> None:
    spec = load_pipeline(changed(lambda d: None)(tmp_path), ROLES)
    assert [s.name for s in spec.stages][:2] == ["checkout", "unit"]


def test_a_quorum_the_roles_file_cannot_meet_is_refused(tmp_path: Path) -> None:
    path = changed(lambda d: _set(d, "approve", roles=["cto", "devops_lead"], quorum=3))(tmp_path)
    (problem,) = problems_of(path, ROLES)
    assert (problem.stage, problem.field) == ("approve", "quorum")
    assert "needs 3 distinct approvers" in problem.message
    assert "alice, bob" in problem.message
    # Without a roles file, the quorum is not judged (the roles are not known).
    assert load_pipeline(path).stage("approve")


def test_one_person_cannot_cover_two_roles_of_a_gate(tmp_path: Path) -> None:
    path = changed(lambda d: _set(d, "approve", roles=["cto", "devops_lead"]))(tmp_path)
    (problem,) = problems_of(path, {"alice": ["cto", "devops_lead"], "carol": ["developer"]})
    assert (problem.stage, problem.field) == ("approve", "roles")


def test_a_gate_nobody_can_approve_without_timeout_would_wait_forever(tmp_path: Path) -> None:
    path = changed(lambda d: _set(d, "approve", roles=["auditor"], timeout=None))(tmp_path)
    (problem,) = problems_of(path, ROLES)
    assert problem.stage == "approve"
    assert "nobody" in problem.message
    assert "wait forever" in problem.message


def test_a_binary_file_does_not_stop_the_other_files(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from starters.cli import app

    good = changed(lambda d: None)(tmp_path)
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00\x01")
    result = CliRunner().invoke(app, ["validate", str(binary), str(good)])
    assert result.exit_code == 2
    assert f"{binary}: is not UTF-8 text" in result.output
    assert f"{good}: ok" in result.output


def chain(length: int, reverse: bool) -> dict[str, object]:
    names = [f"s{i}" for i in range(length)]
    stages = [{"name": names[0], "kind": "checkout"}] + [
        {"name": n, "kind": "checkout", "needs": [names[i]]} for i, n in enumerate(names[1:])
    ]
    return {
        "name": "chain",
        "service": {"name": "chain"},
        "stages": stages[::-1] if reverse else stages,
    }


@pytest.mark.parametrize("reverse", [False, True], ids=["in order", "reversed"])
def test_a_chain_as_long_as_a_run_can_carry_validates(reverse: bool) -> None:
    # Timing is a benchmark row (tests/bench); here: no recursion error, and accepted.
    spec = validate_definition(chain(MAX_STAGES, reverse), "chain.yaml")
    assert len(spec.stages) == MAX_STAGES


@pytest.mark.parametrize("reverse", [False, True], ids=["in order", "reversed"])
def test_a_10k_stage_chain_is_checked_whole_and_refused_only_for_its_length(
    reverse: bool,
) -> None:
    with pytest.raises(DefinitionError) as info:
        validate_definition(chain(MAX_STAGES_READ, reverse), "chain.yaml")
    (problem,) = info.value.problems
    assert problem.field == "stages"
    assert problem.message.startswith(f"{MAX_STAGES_READ} stages; a definition may have ")


def test_a_cycle_through_10k_stages_is_found_without_recursion() -> None:
    names = [f"s{i}" for i in range(MAX_STAGES_READ)]
    stages = [{"name": n, "kind": "checkout", "needs": [names[i - 1]]} for i, n in enumerate(names)]
    data = {"name": "ring", "service": {"name": "ring"}, "stages": stages}
    with pytest.raises(DefinitionError) as info:
        validate_definition(data, "ring.yaml")
    # Found in a definition too long to run: every check ran.
    (problem,) = [p for p in info.value.problems if p.field == "needs"]
    assert problem.message.startswith("cycle: ")
