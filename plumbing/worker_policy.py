"""The worker's policy: who holds which roles, what each gate asks, who may act on runs.

Loaded from the file named by SLIPWAY_POLICY_FILE (the Helm chart mounts it from a
ConfigMap). The worker looks at the file again at each decision (`PolicyCache`: its identity
and the hash of its bytes) and parses it again only when it changed, so an edited file (a
revoked role, a new key) applies to the next decision of every run. Whoever starts a run has
no say in it.

    people:
      carol:
        roles: [cto]
        emails: [carol@heal7.example]          # matched against the commit's git author
        keys: ["ssh-ed25519 AAAA... carol"]   # allowed signers (ssh-keygen -Y verify)
    gates:                  # the gate's environment (else "*"), made stricter by its name's
      "*": {signatures: optional}
      production: {roles: [cto, devops_lead], signatures: required}
    actions:                # promote, pause, resume, abort, rollback
      promote: {roles: [devops_lead, cto]}
    environments:           # a run's definition may only be stricter
      production:
        requires_approval: true
        concurrency: queue
        freeze: [{cron: "0 18 * * FRI", duration: 62h, timezone: Asia/Seoul}]
        freeze_override_roles: [cto]
    sandbox: required       # or off: untrusted steps run unsandboxed (read at worker start)
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from contracts.definition.model import FreezeWindow
from contracts.definition.rules import unmet_gate
from contracts.messages import PolicyStart

__all__ = [
    "ACTIONS",
    "ActionRule",
    "GateRule",
    "LoadedPolicy",
    "Person",
    "PolicyCache",
    "PolicyError",
    "WorkerPolicy",
    "gating_problems",
    "is_author",
    "load_policy",
    "policy_cache",
]

ACTIONS = ("promote", "pause", "resume", "abort", "rollback")
_NAME = re.compile(r"^[A-Za-z0-9._@+-]+$")


class PolicyError(ValueError):
    """The policy file is missing or invalid; the message names the file and the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Person(_Strict):
    roles: list[str] = Field(default_factory=list, description="Roles this person holds.")
    emails: list[str] = Field(
        default_factory=list, description="Git author emails that are this person."
    )
    keys: list[str] = Field(
        default_factory=list,
        description="SSH public keys ('ssh-ed25519 AAAA... comment'): the allowed signers.",
    )

    @field_validator("keys")
    @classmethod
    def _keys_look_like_keys(cls, keys: list[str]) -> list[str]:
        for key in keys:
            if len(key.split()) < 2 or not key.split()[0].startswith(("ssh-", "ecdsa-", "sk-")):
                raise ValueError(f"not an SSH public key: {key[:40]!r}")
        return keys


Signatures = Literal["required", "optional"]


class GateRule(_Strict):
    """What an approval gate asks, whatever the run's definition says."""

    roles: list[str] | None = Field(
        None,
        description="Roles the gate needs, each by a different person; default: the definition's.",
    )
    quorum: int | None = Field(None, ge=1, le=20, description="At least this many people.")
    allow_self_approval: bool = Field(
        False, description="The commit's author may decide (only if the definition allows it too)."
    )
    signatures: Signatures = Field(
        "optional", description="required: unsigned decisions (Web UI, temporal CLI) are refused."
    )

    def stricter(self, other: GateRule) -> GateRule:
        """The rule that asks all either asks: every role either pins (each by a different
        person; neither pinning leaves the definition's), the larger quorum, signatures if
        either requires them, self-approval only if both allow it."""
        if self.roles is None and other.roles is None:
            roles = None
        else:
            roles = list(dict.fromkeys([*(self.roles or []), *(other.roles or [])]))
        quorums = [q for q in (self.quorum, other.quorum) if q is not None]
        return GateRule(
            roles=roles,
            quorum=max(quorums) if quorums else None,
            allow_self_approval=self.allow_self_approval and other.allow_self_approval,
            signatures="required"
            if "required" in (self.signatures, other.signatures)
            else "optional",
        )


class ActionRule(_Strict):
    """Who may promote, pause, resume, abort or roll back."""

    roles: list[str] | None = Field(
        None, description="Roles allowed; default: anyone named in `people`."
    )
    signatures: Signatures = "optional"


class EnvironmentRule(_Strict):
    """What the policy says of an environment; a run's definition may only be stricter."""

    requires_approval: bool = Field(
        False,
        description="A run that changes it (deploy, canary, monitor) needs an approval gate "
        "for it first.",
    )
    concurrency: Literal["queue", "supersede"] | None = Field(
        None,
        description="queue: runs wait in commit order, and a definition asking 'supersede' is "
        "refused at the run's start; supersede: a definition may still ask 'queue'. Default: "
        "no say (the definition's).",
    )
    freeze: list[FreezeWindow] = Field(
        default_factory=list,
        description="Freeze windows, in force whatever the definition says (its own windows "
        "are added).",
    )
    freeze_override_roles: list[str] = Field(
        default_factory=list,
        description="Who may let a deploy through a freeze here (approving the gate "
        "'<environment>-freeze'), narrowed to the definition's roles when it names any. "
        "Empty: nobody.",
    )

    @property
    def governs_freeze(self) -> bool:
        return bool(self.freeze or self.freeze_override_roles)


class WorkerPolicy(_Strict):
    sandbox: Literal["required", "off"] = Field(
        "required",
        description="required: tests, command stages, builds, installs and scanners run only "
        "in the sandbox (bubblewrap), refused where it cannot run; off: they run unsandboxed. "
        "Read at worker start.",
    )
    people: dict[str, Person] = Field(default_factory=dict)
    gates: dict[str, GateRule] = Field(default_factory=dict)
    actions: dict[Literal["promote", "pause", "resume", "abort", "rollback"], ActionRule] = Field(
        default_factory=dict
    )
    environments: dict[str, EnvironmentRule] = Field(default_factory=dict)

    @field_validator("sandbox", mode="before")
    @classmethod
    def _yaml_off(cls, value: object) -> object:
        # YAML 1.1 reads a bare `off` as false (and `on` as true).
        if value is False:
            return "off"
        return "required" if value is True else value

    @field_validator("people")
    @classmethod
    def _plain_names(cls, people: dict[str, Person]) -> dict[str, Person]:
        for name in people:
            if not _NAME.match(name):
                raise ValueError(
                    f"person {name!r}: use letters, digits and . _ @ + - only (the name is "
                    "the signer identity ssh-keygen checks)"
                )
        return people

    def gate_rule(self, gate: str, environment: str) -> GateRule:
        """The rule a gate is judged by. Its environment's rule (else "*", else the default)
        is the floor: a gate's name is the definition's choice, so a rule by that name can
        only make the gate stricter (`GateRule.stricter`), never pick a weaker rule."""
        floor = self.gates.get(environment) or self.gates.get("*") or GateRule()
        named = self.gates.get(gate) if gate != environment else None
        return floor if named is None else named.stricter(floor)

    def action_rule(self, action: str) -> ActionRule:
        for name, rule in self.actions.items():
            if name == action:
                return rule
        return ActionRule()

    def allowed_signers(self) -> dict[str, list[str]]:
        return {name: list(p.keys) for name, p in self.people.items() if p.keys}


@dataclass(frozen=True)
class LoadedPolicy:
    policy: WorkerPolicy
    hash: str
    """sha256 of the file's bytes, as recorded by each run at its start."""
    path: str


def load_policy(path: str | Path) -> LoadedPolicy:
    file = Path(path)
    try:
        raw = file.read_bytes()
    except FileNotFoundError:
        raise _not_found(file) from None
    return _parse(file, raw, _digest(raw))


def _not_found(file: Path) -> PolicyError:
    return PolicyError(
        f"{file}: policy file not found (set SLIPWAY_POLICY_FILE to the worker's policy)"
    )


def _digest(raw: bytes) -> str:
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def _parse(file: Path, raw: bytes, digest: str) -> LoadedPolicy:
    try:
        data = yaml.safe_load(raw) or {}
    except yaml.YAMLError as exc:
        raise PolicyError(f"{file}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise PolicyError(f"{file}: expected a mapping with people, gates, actions")
    try:
        policy = WorkerPolicy.model_validate(data)
    except ValidationError as exc:
        problems = [
            f"{file}: field '{'.'.join(str(p) for p in err['loc'])}': "
            + str(err["msg"]).removeprefix("Value error, ")
            for err in exc.errors()
        ]
        raise PolicyError("invalid policy:\n  " + "\n  ".join(problems)) from None
    return LoadedPolicy(policy, digest, str(file))


FileIdentity = tuple[int, int, int, int]
"""(st_dev, st_ino, st_size, st_mtime_ns) of the opened policy file."""


class PolicyCache:
    """The worker's policy, parsed once per change of its file (one per process).

    Each `load` opens the file, takes its identity (device, inode, size, mtime in ns: a
    ConfigMap update swaps the file, an editor rewrites it) from the open descriptor and
    hashes its bytes (a few kB: microseconds); YAML parsing and validation, the costly part,
    run again only when the identity or the hash differs from the last good read. The hash
    is what decides: an edit that keeps the size and the mtime (a coarse clock, a copy that
    keeps times) is still seen. A file that is missing or invalid raises `PolicyError` at
    every call (fail closed) and is never cached; the last good policy is not used instead.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._seen: tuple[FileIdentity, str, LoadedPolicy] | None = None
        self.parses = 0
        """How many times the file was parsed (tests, logs)."""

    def load(self) -> LoadedPolicy:
        try:
            with self.path.open("rb") as f:
                st = os.fstat(f.fileno())
                raw = f.read()
        except FileNotFoundError:
            raise _not_found(self.path) from None
        identity: FileIdentity = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        digest = _digest(raw)
        with self._lock:
            seen = self._seen
            if seen is not None and seen[0] == identity and seen[1] == digest:
                return seen[2]
        loaded = _parse(self.path, raw, digest)
        with self._lock:
            self.parses += 1
            self._seen = (identity, digest, loaded)
        return loaded


_CACHES: dict[Path, PolicyCache] = {}
_CACHES_LOCK = threading.Lock()


def policy_cache(path: str | Path) -> PolicyCache:
    """The process's one `PolicyCache` of the file at `path` (the decision and notify
    activities share it)."""
    key = Path(path).absolute()
    with _CACHES_LOCK:
        cache = _CACHES.get(key)
        if cache is None:
            cache = _CACHES[key] = PolicyCache(key)
        return cache


def is_author(person: str, entry: Person | None, author: str) -> bool:
    """Is `person` the commit's author, as git names it ('Name <email>')? By email when the
    policy lists the person's emails, and by name."""
    if not author.strip():
        return False
    name, _, rest = author.partition("<")
    email = rest.rstrip(">").strip().lower()
    if entry is not None and email and email in {e.lower() for e in entry.emails}:
        return True
    return name.strip().lower() == person.lower() or author.strip().lower() == person.lower()


def holds_any(entry: Person | None, roles: Sequence[str]) -> bool:
    return entry is not None and bool(set(entry.roles) & set(roles))


def gating_problems(policy: WorkerPolicy, start: PolicyStart) -> list[str]:
    """What the policy says of a run's definition at its start: a change of an environment
    the policy gates (a deploy, a canary, a monitor) without a gate before it; a gate named
    after another environment of the policy's, or after a freeze override gate; a gate the
    policy's people cannot meet (it would wait until it times out, or forever); a
    concurrency weaker than the policy's."""
    problems = []
    for env, gated in sorted(start.gated.items()):
        env_rule = policy.environments.get(env)
        if env_rule is not None and env_rule.requires_approval and not gated:
            stages = ", ".join(repr(s) for s in start.ungated.get(env, []))
            problems.append(
                f"the worker's policy requires an approval gate before every deploy to {env} "
                f"(and every canary and monitor there); this run's definition has "
                f"{stages or 'a stage changing it'} without one"
            )
    held = {name: person.roles for name, person in policy.people.items()}
    freeze_gates = {f"{env}-freeze": env for env in policy.environments}
    for ask in start.gates:
        if ask.gate != ask.environment and ask.gate in policy.environments:
            problems.append(
                f"gate {ask.gate!r} of {ask.environment} is named after another environment "
                "of the worker's policy; name it after its own environment or no environment"
            )
        elif ask.gate in freeze_gates:
            problems.append(
                f"gate {ask.gate!r} is the freeze override gate of {freeze_gates[ask.gate]}; "
                "give the approval another name"
            )
        rule = policy.gate_rule(ask.gate, ask.environment)
        roles = list(rule.roles) if rule.roles is not None else ask.roles
        unmet = unmet_gate(roles, max(rule.quorum or 0, ask.quorum or 0) or None, held)
        if unmet is None:
            continue
        needed, holders = unmet
        after = "it would wait forever" if not ask.times_out else "it could only time out"
        problems.append(
            f"gate {ask.gate!r} needs {needed} distinct approvers covering {sorted(set(roles))}; "
            f"the worker's policy has {len(holders)} ({', '.join(holders) or 'nobody'}): "
            f"{after}"
        )
    for env, said in sorted(start.environments.items()):
        env_rule = policy.environments.get(env)
        if (
            env_rule is not None
            and env_rule.concurrency == "queue"
            and said.concurrency == ("supersede")
        ):
            problems.append(
                f"the worker's policy runs {env} with concurrency 'queue'; this run's "
                "definition asks 'supersede' (a newer commit would take the environment "
                "from a run mid-change): remove it or ask 'queue'"
            )
    return problems
