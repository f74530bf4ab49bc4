"""Names of container images: the build tag `{branch}-{sha12}`, repository names, and image
references split into host, repository, tag and digest."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from contracts.errors import ErrorType, verdict

__all__ = [
    "DIGEST",
    "ImageReference",
    "default_repository",
    "image_tag",
    "is_loopback",
    "sanitize_tag",
]

DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_TAG_OK = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


def sanitize_tag(value: str) -> str:
    """Make `value` a valid image tag: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.

    Branches like `feature/Login` become `feature-Login`; an empty result is an error because a
    tag that silently became something else would publish under a name nobody asked for."""
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "-", value.strip())
    cleaned = cleaned.lstrip(".-")[:128].rstrip(".-")
    if not cleaned or not _TAG_OK.fullmatch(cleaned):
        raise verdict(
            ErrorType.INVALID_DEFINITION,
            f"{value!r} cannot be used as an image tag: use letters, digits, '_', '.' or '-'",
        )
    return cleaned


def image_tag(branch: str, commit: str) -> str:
    """The build tag `{branch}-{sha12}`; the branch part is sanitised and shortened so the whole
    tag stays within 128 characters. No branch gives `commit-{sha12}`."""
    sha12 = commit[:12]
    if not re.fullmatch(r"[0-9a-fA-F]{7,64}", commit):
        raise verdict(ErrorType.INVALID_DEFINITION, f"{commit!r} is not a git commit sha")
    prefix = "commit"
    if branch.strip():
        prefix = sanitize_tag(branch)[: 128 - len(sha12) - 1].rstrip(".-") or "commit"
    return f"{prefix}-{sha12.lower()}"


def default_repository(service: str) -> str:
    """A repository name for a service: lowercase, `[a-z0-9._/-]`, no leading separators."""
    name = re.sub(r"[^a-z0-9._/-]+", "-", service.strip().lower()).strip("._/-")
    if not name:
        raise verdict(ErrorType.INVALID_DEFINITION, f"{service!r} is not a usable service name")
    return name


@dataclass(frozen=True)
class ImageReference:
    """`host[:port]/repository[:tag][@sha256:...]`, split into parts."""

    host: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, reference: str) -> ImageReference:
        rest, _, digest = reference.partition("@")
        host, slash, path = rest.partition("/")
        if not slash or not path:
            raise verdict(
                ErrorType.ARTIFACT_MISSING,
                f"image reference {reference!r} names no registry host and repository",
            )
        tag: str | None = None
        last = path.rsplit("/", 1)[-1]
        if ":" in last:
            path, _, tag = path.rpartition(":")
        return cls(host=host, repository=path, tag=tag, digest=digest or None)

    @property
    def name(self) -> str:
        return f"{self.host}/{self.repository}"


def is_loopback(host: str) -> bool:
    """Whether `host[:port]` (or `[v6]:port`) is a loopback address."""
    if host.startswith("["):
        hostname = host[1:].partition("]")[0]
    else:
        hostname = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    if hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False
