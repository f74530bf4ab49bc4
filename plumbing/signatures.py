"""SSH signatures of decisions with `ssh-keygen -Y sign / verify` (what git uses for SSH
commit signing). Used by the CLI (sign), the worker's decision check and `slipway audit`
(verify). Blocking subprocesses: activities call these in a thread."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from contracts.signed_decisions import NAMESPACE

__all__ = ["SignatureError", "Verified", "sign", "ssh_keygen", "verify"]

TIMEOUT_S = 30


class SignatureError(RuntimeError):
    """Signing failed (no key, a locked key without an agent, no ssh-keygen); the message
    says what to do."""


@dataclass(frozen=True)
class Verified:
    ok: bool
    detail: str
    """ssh-keygen's own words: 'Good "slipway-decision" signature for carol with ED25519 key
    SHA256:...' or why it failed."""

    @property
    def key(self) -> str:
        """The signing key's fingerprint, when verified."""
        return self.detail.rsplit(" key ", 1)[-1].strip() if self.ok else ""


def ssh_keygen() -> str:
    found = shutil.which("ssh-keygen")
    if found is None:
        raise SignatureError(
            "ssh-keygen not found: install OpenSSH's client (Debian: apt-get install "
            "openssh-client)"
        )
    return found


def sign(data: bytes, key: Path) -> str:
    """An armored SSH signature of `data` by `key` (a private key file, or a public key
    whose private half is in ssh-agent, as git's `user.signingkey`)."""
    if not key.exists():
        raise SignatureError(f"signing key {key} does not exist (--key or SLIPWAY_SIGNING_KEY)")
    out = subprocess.run(
        [ssh_keygen(), "-Y", "sign", "-q", "-f", str(key), "-n", NAMESPACE],
        input=data,
        capture_output=True,
        timeout=TIMEOUT_S,
        check=False,
    )
    if out.returncode != 0 or b"BEGIN SSH SIGNATURE" not in out.stdout:
        why = out.stderr.decode(errors="replace").strip() or f"exit {out.returncode}"
        raise SignatureError(f"ssh-keygen could not sign with {key}: {why}")
    return out.stdout.decode("ascii")


def verify(
    data: bytes, signature: str, signer: str, allowed: Mapping[str, Sequence[str]]
) -> Verified:
    """Does `signature` over `data` verify as `signer`'s, by one of the keys `allowed`
    lists for them (person → public keys, the allowed-signers list)? Never raises for a bad
    signature: the answer says why."""
    keys = allowed.get(signer, ())
    if not keys:
        return Verified(False, f"{signer!r} has no signing key in the policy")
    if not signature.strip():
        return Verified(False, "no signature")
    with tempfile.TemporaryDirectory(prefix="slipway-verify-") as tmp:
        signers = Path(tmp) / "allowed_signers"
        # One line per key: principal, then the key itself; our principals never contain
        # spaces, commas or quotes (the policy refuses such names).
        signers.write_text("".join(f"{signer} {k.strip()}\n" for k in keys), encoding="utf-8")
        sig = Path(tmp) / "decision.sig"
        sig.write_text(signature, encoding="ascii", errors="replace")
        out = subprocess.run(
            [
                ssh_keygen(),
                "-Y",
                "verify",
                "-f",
                str(signers),
                "-I",
                signer,
                "-n",
                NAMESPACE,
                "-s",
                str(sig),
            ],
            input=data,
            capture_output=True,
            timeout=TIMEOUT_S,
            check=False,
        )
    said = (out.stdout + out.stderr).decode(errors="replace").strip().splitlines()
    detail = said[0] if said else f"exit {out.returncode}"
    if out.returncode != 0:
        return Verified(False, f"signature does not verify as {signer!r}'s: {detail}")
    return Verified(True, detail)
