"""Error types: verdicts are non-retryable, everything else is left to Temporal's retry policy.

Activities raise `verdict(...)` for outcomes that a retry cannot change (a gate said no, an
artifact does not exist, a rollout missed its deadline). Any other exception (connection
refused, a 5xx, a timeout) is transient and retried with backoff by Temporal.
"""

from __future__ import annotations

from enum import StrEnum

from temporalio.exceptions import ApplicationError

__all__ = ["ErrorType", "check_fence", "verdict"]


class ErrorType(StrEnum):
    """`ApplicationError.type` values that workflows and retry policies recognise."""

    GATE_FAILED = "GateFailed"
    INVALID_DEFINITION = "InvalidDefinition"
    NOT_AUTHORIZED = "NotAuthorized"
    ARTIFACT_MISSING = "ArtifactMissing"
    DEPLOY_FAILED = "DeployFailed"
    CHECKOUT_FAILED = "CheckoutFailed"
    BUILD_FAILED = "BuildFailed"
    CONFIGURATION = "ConfigurationError"
    STALE_LEASE = "StaleLease"


def verdict(error_type: ErrorType, message: str) -> ApplicationError:
    """A non-retryable failure whose message says what happened and what to do."""
    return ApplicationError(message, type=error_type.value, non_retryable=True)


def check_fence(current: int, token: int, service: str, environment: str) -> int:
    """The fencing rule every platform applies at its commit point: a call carrying a token
    lower than the highest seen for the environment comes from a deposed lease holder and is
    refused; otherwise the token becomes the highest seen. Returns the new highest."""
    if token < current:
        raise verdict(
            ErrorType.STALE_LEASE,
            f"{service} in {environment}: this run's lease (fencing token {token}) was "
            f"superseded by token {current}; another run or a rollback owns the environment now",
        )
    return max(current, token)
