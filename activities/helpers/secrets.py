"""Secret references, resolved by the deployer (ARCHITECTURE §9: a release is artifact +
configuration).

A definition names secrets by reference (`{from: secretsmanager, name: heal7/production/db}`);
the deploy and restore activities, on the deployer, resolve them here. `pin` checks every
reference of a release before anything changes and returns the same configuration with each
secret's current version (what history and the environment's record keep); `values` reads
the values at those versions for a platform that passes them to the release's processes
(the local platform). No value is ever returned from an activity, and every value read is
added to the log redaction list (`activities.wiring.observability.register_secrets`).

Three sources: the local store under the state directory (`slipway secret set`,
`plumbing/secret_store.py`: the CLI writes it), AWS Secrets
Manager (boto3; `SLIPWAY_SECRETSMANAGER_ENDPOINT_URL` for moto or a VPC endpoint) and
Kubernetes Secrets of the environment's namespace. With `key`, the secret's value is a JSON
object (Secrets Manager, local store) or a Secret's data (Kubernetes), and `key` picks one.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from activities.wiring.observability import register_secrets
from contracts.activity import ReleaseConfig, SecretRef
from contracts.errors import ErrorType, verdict
from plumbing.secret_store import Resolved, SecretUnavailableError, pick_key

__all__ = [
    "KubernetesSecrets",
    "SecretBackend",
    "SecretResolver",
    "SecretsManagerSecrets",
    "secretsmanager_client",
]


class SecretBackend(Protocol):
    def fetch(self, ref: SecretRef, environment: str) -> Resolved:
        """The secret at `ref.version` (its current version when empty); raise
        SecretUnavailableError naming what is missing."""
        ...


# --- AWS Secrets Manager ------------------------------------------------------------------


def secretsmanager_client(endpoint_url: str | None, region: str) -> Any:
    """A boto3 Secrets Manager client that makes each call once (Temporal retries)."""
    import boto3
    from botocore.config import Config

    config = Config(
        retries={"total_max_attempts": 1, "mode": "standard"}, connect_timeout=10, read_timeout=30
    )
    return boto3.client(
        "secretsmanager", region_name=region, endpoint_url=endpoint_url, config=config
    )


_NOT_RESOLVING = {
    "ResourceNotFoundException": "does not exist in AWS Secrets Manager (or not that version)",
    "AccessDeniedException": "may not be read by the deployer's AWS identity",
    "InvalidRequestException": "cannot be read (deleted, or scheduled for deletion)",
    "DecryptionFailure": "cannot be decrypted with its KMS key by the deployer",
    "InvalidParameterException": "is not a valid Secrets Manager reference",
}


class SecretsManagerSecrets:
    """References `{from: secretsmanager, name: ..., key: ...}`; the version is the secret's
    VersionId, so a restore reads the value that served then."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def fetch(self, ref: SecretRef, environment: str) -> Resolved:
        from botocore.exceptions import ClientError

        ask: dict[str, str] = {"SecretId": ref.name}
        if ref.version:
            ask["VersionId"] = ref.version
        try:
            answer = self._client.get_secret_value(**ask)
        except ClientError as error:
            code = str(error.response.get("Error", {}).get("Code", ""))
            if code in _NOT_RESOLVING:
                raise SecretUnavailableError(_NOT_RESOLVING[code]) from None
            raise
        text = answer.get("SecretString")
        if text is None:
            raise SecretUnavailableError("is binary; store it as a string")
        return Resolved(version=str(answer["VersionId"]), value=pick_key(str(text), ref))


# --- Kubernetes Secrets -------------------------------------------------------------------


class KubernetesSecrets:
    """References `{from: kubernetes, name: ..., key: ...}` to a Secret in the environment's
    namespace. The kubernetes platform never reads values: its pods take them with
    `valueFrom.secretKeyRef`; this checks that the key exists and records the Secret's
    resourceVersion. Kubernetes keeps no old versions: a restore on the local platform reads
    the Secret as it is then."""

    def __init__(self, read_secret: Callable[[str, str], Any], namespace_for: Callable[[str], str]):
        self._read = read_secret
        self._namespace_for = namespace_for

    def fetch(self, ref: SecretRef, environment: str) -> Resolved:
        namespace = self._namespace_for(environment)
        secret = self._read(namespace, ref.name)
        if secret is None:
            raise SecretUnavailableError(f"does not exist in namespace {namespace!r}")
        data: Mapping[str, str] = secret.data or {}
        if ref.key not in data:
            raise SecretUnavailableError(f"has no key {ref.key!r} in namespace {namespace!r}")
        value = base64.b64decode(data[ref.key]).decode("utf-8", "replace")
        version = str(secret.metadata.resource_version) if secret.metadata else ""
        return Resolved(version=version, value=value)


# --- resolution ---------------------------------------------------------------------------


_SOURCE_NAMES = {
    "local": "the local store",
    "secretsmanager": "AWS Secrets Manager",
    "kubernetes": "Kubernetes Secrets",
}


class SecretResolver:
    """Every reference of a release, through the backend of its source."""

    def __init__(self, backends: Mapping[str, SecretBackend]) -> None:
        self._backends = dict(backends)

    def add(self, source: str, backend: SecretBackend) -> None:
        self._backends[source] = backend

    @property
    def sources(self) -> list[str]:
        return sorted(self._backends)

    def _fetch(self, ref: SecretRef, environment: str, where: str) -> Resolved:
        backend = self._backends.get(ref.source)
        if backend is None:
            offered = ", ".join(self.sources) or "none"
            raise verdict(
                ErrorType.CONFIGURATION,
                f"environment {environment!r}, field {where!r}: this deployer has no "
                f"{_SOURCE_NAMES[ref.source]} (`from: {ref.source}`); it offers: {offered}",
            )
        try:
            found = backend.fetch(ref, environment)
        except SecretUnavailableError as problem:
            raise verdict(
                ErrorType.CONFIGURATION,
                f"environment {environment!r}, field {where!r}: secret {ref.label()} {problem}",
            ) from None
        register_secrets([found.value])
        return found

    def problem(self, ref: SecretRef, environment: str) -> str | None:
        """Why `ref` does not resolve for `environment` (no such source here, secret, key or
        version; not allowed), or None when it does. Never a value; transient failures
        raise for Temporal to retry."""
        backend = self._backends.get(ref.source)
        if backend is None:
            offered = ", ".join(self.sources) or "none"
            return (
                f"cannot be read: this deployer has no {_SOURCE_NAMES[ref.source]} "
                f"(`from: {ref.source}`); it offers: {offered}"
            )
        try:
            found = backend.fetch(ref, environment)
        except SecretUnavailableError as problem:
            return str(problem)
        register_secrets([found.value])
        return None

    def pin(self, config: ReleaseConfig, environment: str) -> ReleaseConfig:
        """`config` with every secret resolved to a version (those already pinned kept),
        after checking every reference resolves; nothing of a value is returned."""

        def pinned(level: ReleaseConfig, prefix: str) -> ReleaseConfig:
            secrets = {
                name: ref.model_copy(
                    update={
                        "version": self._fetch(ref, environment, f"{prefix}secrets.{name}").version
                    }
                )
                for name, ref in level.secrets.items()
            }
            return level.model_copy(update={"secrets": secrets})

        top = pinned(config, "")
        components = {
            name: pinned(part, f"artifacts.{name}.") for name, part in config.components.items()
        }
        return top.model_copy(update={"components": components})

    def values(self, config: ReleaseConfig, environment: str) -> dict[str, str]:
        """The environment variables of one release (a flat config: a bundle's component's
        is `config.for_component(name)`): settings and secret values, at their versions."""
        out = dict(config.settings)
        for name, ref in config.secrets.items():
            out[name] = self._fetch(ref, environment, f"secrets.{name}").value
        return out
