"""Worker policies for tests: real SSH keys (ssh-keygen) and a policy file naming them."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.support.binaries import missing
from tests.support.pipelines import ROLES

# The people the pipeline tests know (`tests.support.pipelines.ROLES`) but frank, who holds
# two roles: the policy tests were written without him.
PEOPLE = {name: roles for name, roles in ROLES.items() if name != "frank"}


def ssh_keygen() -> str:
    found = shutil.which("ssh-keygen")
    if found is None:
        missing("ssh-keygen not found: apt-get install openssh-client")
    return found


def make_key(directory: Path, person: str) -> Path:
    """A new ed25519 key pair without a passphrase; returns the private key's path."""
    key = directory / f"{person}_ed25519"
    subprocess.run(
        [ssh_keygen(), "-q", "-t", "ed25519", "-N", "", "-C", person, "-f", str(key)],
        check=True,
        capture_output=True,
    )
    return key


def public_key(key: Path) -> str:
    return key.with_suffix(".pub").read_text(encoding="utf-8").strip()


def write_policy(
    path: Path,
    keys: dict[str, Path],
    *,
    people: dict[str, list[str]] | None = None,
    gates: dict[str, Any] | None = None,
    actions: dict[str, Any] | None = None,
) -> Path:
    """A policy file: `people` (person → roles) with the public half of `keys`."""
    entries: dict[str, Any] = {}
    for name, roles in (people or PEOPLE).items():
        entry: dict[str, Any] = {"roles": roles, "emails": [f"{name}@example.com"]}
        if name in keys:
            entry["keys"] = [public_key(keys[name])]
        entries[name] = entry
    data = {
        "people": entries,
        "gates": gates
        or {
            "*": {"signatures": "optional"},
            "production": {"roles": ["cto", "devops_lead"], "signatures": "required"},
        },
        "actions": actions
        or {
            "promote": {"roles": ["devops_lead", "cto"]},
            "pause": {"roles": ["devops_lead", "cto"]},
            "resume": {"roles": ["devops_lead", "cto"]},
            "abort": {"roles": ["devops_lead", "cto", "team_lead"]},
            "rollback": {"roles": ["devops_lead", "cto"]},
        },
    }
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path
