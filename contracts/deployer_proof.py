"""Proof that a deployer sent a message: an HMAC with a key only deployer workers hold.

Environment workflows and canaries change what production serves, and any Temporal client
that may send updates can reach them. So each message a pipeline sends them (acquire, report,
release and rollback to an environment; pause, resume, promote and abort to a canary) is
signed by the deployer activity that delivers it, over the whole message and the moment it
was signed, and the receiving workflow's update validator verifies it before anything is
written to history. A bare `temporal workflow update execute` has no key: it is refused.

Why a validator: validators do not run when a history is replayed, so a key that changes
(rotated, or a replica with another one) never changes what a replay does; and a refused
update leaves no trace in history.

A message copied out of a history with its proof can be sent again, so none may do harm
twice: every message names a unique request id (the update id: Temporal answers a repeat
with the first outcome), an environment refuses a lease request it has seen, a release or
report counts only under the lease token it names, and a rollback happens once per run and
token. The proof's time is not judged against the workflow's clock: a time-skipping test
server, or a workflow task held back by an outage, would make honest messages look old.

The key is read by the worker at start (`plumbing/deployer_key.py`) and installed once per
process (`install_key`) and this module is passed
through the workflow sandbox, so validators see the same key. It is never logged, never in
history, and runner workers (which run the commit's code) never have it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import datetime

from pydantic import BaseModel

__all__ = [
    "KeyMissingError",
    "check",
    "has_key",
    "install_key",
    "sign",
]

_VERSION = "v1"
_key: bytes | None = None


class KeyMissingError(RuntimeError):
    """This process holds no deployer key: it cannot sign."""


def install_key(key: bytes) -> None:
    """The deployer key of this process (at least 16 bytes)."""
    global _key
    if len(key) < 16:
        raise ValueError("a deployer key needs at least 16 bytes")
    _key = bytes(key)


def has_key() -> bool:
    return _key is not None


def _mac(key: bytes, purpose: str, message: BaseModel, stamp: int) -> str:
    body = json.dumps(
        message.model_dump(mode="json", exclude={"proof"}),
        sort_keys=True,
        separators=(",", ":"),
    )
    payload = f"{_VERSION}\n{purpose}\n{stamp}\n{body}".encode()
    return hmac.new(key, payload, hashlib.sha256).hexdigest()


def sign(purpose: str, message: BaseModel, now: datetime) -> str:
    """The proof for `message` (its `proof` field left out) sent for `purpose` at `now` (the
    caller's clock: this module is pure, so it reads none)."""
    if _key is None:
        raise KeyMissingError("this worker holds no deployer key: it cannot send this message")
    stamp = int(now.timestamp())
    return f"{_VERSION}:{stamp}:{_mac(_key, purpose, message, stamp)}"


def check(purpose: str, message: BaseModel, proof: str) -> str | None:
    """None if `proof` shows a deployer sent `message` for `purpose`; otherwise why not, in
    one sentence."""
    if not proof:
        return f"{purpose} refused: not sent by a deployer (no proof); pipelines send it"
    if _key is None:
        return f"{purpose} refused: this worker holds no deployer key to verify it with"
    version, _, rest = proof.partition(":")
    stamp_text, _, mac = rest.partition(":")
    if version != _VERSION or not stamp_text.isdigit() or not mac:
        return f"{purpose} refused: its proof is malformed"
    stamp = int(stamp_text)
    if not hmac.compare_digest(mac, _mac(_key, purpose, message, stamp)):
        return f"{purpose} refused: its proof does not verify with the deployers' key"
    return None
