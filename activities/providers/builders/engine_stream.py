"""The Docker Engine API's JSON streams (build, push, pull): reading them with a bound, the
errors they carry, and what a push reports as the pushed digest."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from activities.providers.builders.image_names import DIGEST
from activities.wiring.backends import Heartbeat
from contracts.errors import ErrorType, verdict

__all__ = ["DockerClientFactory", "error_of", "events", "push", "transfer_error"]

DockerClientFactory = Callable[[], Any]
"""Returns a connected `docker.DockerClient` (the SDK is untyped, hence `Any`)."""

_MAX_STREAM_EVENTS = 1_000_000  # a bound on any engine stream we read; real ones are far shorter


def events(stream: Iterable[object]) -> Iterable[dict[str, Any]]:
    """The JSON objects of an engine stream (decoded by the SDK), bounded in count."""
    for count, event in enumerate(stream):
        if count >= _MAX_STREAM_EVENTS:
            raise RuntimeError("docker engine stream did not end")
        if isinstance(event, dict):
            yield event


def error_of(event: Mapping[str, Any]) -> str | None:
    error = event.get("error")
    if error is None and isinstance(event.get("errorDetail"), dict):
        error = event["errorDetail"].get("message")
    return str(error).strip() if error else None


def transfer_error(action: str, reference: str, message: str) -> Exception:
    """Classify a push/pull error: a verdict when a retry cannot help, else a plain error."""
    lowered = message.lower()
    text = f"{action} of {reference} failed: {message}"
    if any(word in lowered for word in ("unauthorized", "denied", "authentication required")):
        return verdict(ErrorType.NOT_AUTHORIZED, text + " (check the registry credentials)")
    if "immutable" in lowered or "already exists" in lowered:
        return verdict(
            ErrorType.CONFIGURATION,
            text + " (the repository's tags are immutable: publish under a new tag)",
        )
    if action == "pull" and ("manifest unknown" in lowered or "not found" in lowered):
        return verdict(ErrorType.ARTIFACT_MISSING, text)
    if action == "push" and ("name unknown" in lowered or "does not exist" in lowered):
        return verdict(ErrorType.CONFIGURATION, text + " (create the repository first)")
    return RuntimeError(text)


def push(
    client: Any,
    name: str,
    tag: str,
    auth: dict[str, str] | None,
    heartbeat: Heartbeat,
) -> str | None:
    """Push `name:tag`; return the manifest digest the push reported (None if it said none)."""
    digest: str | None = None
    stream = client.api.push(name, tag=tag, stream=True, decode=True, auth_config=auth)
    for event in events(stream):
        error = error_of(event)
        if error:
            raise transfer_error("push", f"{name}:{tag}", error)
        aux = event.get("aux")
        if isinstance(aux, dict) and isinstance(aux.get("Digest"), str):
            digest = aux["Digest"]  # dockerd reports it here
        status = str(event.get("status", ""))
        found = DIGEST.search(status) if "digest:" in status else None
        if found:
            digest = found.group(0)  # "<tag>: digest: sha256:... size: N" (dockerd and podman)
        if status:
            heartbeat(f"push {tag}: {status[:120]}")
    return digest
