"""Notifiers: a structured log line, or a Slack message through an incoming webhook.

A notifier that fails raises: the workflow retries the notify activity a bounded number of times
and never fails the pipeline for it.
"""

from __future__ import annotations

from typing import Any

import httpx

from activities.wiring.observability import activity_log
from activities.wiring.tls import verifying_context
from contracts.activity import NotifyRequest

__all__ = [
    "LEVEL_COLORS",
    "LogNotifier",
    "SlackDeliveryError",
    "SlackNotifier",
    "slack_payload",
]

LEVEL_COLORS = {
    "success": "#2eb886",  # green
    "warning": "#daa038",  # yellow
    "error": "#d50200",  # red
    "info": "#9e9e9e",  # grey
}
"""Slack attachment colour of each notification level."""

_LOG_METHOD = {"success": "info", "info": "info", "warning": "warning", "error": "error"}


class SlackDeliveryError(RuntimeError):
    """Slack did not accept the message. Retryable: Temporal's retry policy decides."""


class LogNotifier:
    """`Notifier` that writes one structured log event per notification (the local default)."""

    def send(self, request: NotifyRequest) -> None:
        log = activity_log(
            notify_level=request.level,
            service=request.service,
            environment=request.environment,
            fields=dict(request.fields),
        )
        getattr(log, _LOG_METHOD[request.level])(request.event, message=request.message)


class SlackNotifier:
    """`Notifier` posting to a Slack incoming webhook: the event as text, and an attachment
    coloured by level carrying the message and the event's fields."""

    def __init__(self, webhook_url: str, timeout: float = 5.0) -> None:
        self._url = webhook_url
        self._timeout = timeout

    def send(self, request: NotifyRequest) -> None:
        try:
            response = httpx.post(
                self._url,
                json=slack_payload(request),
                timeout=self._timeout,
                verify=verifying_context(),
            )
        except httpx.HTTPError as exc:
            # The webhook URL is a secret: name the failure, never the URL.
            raise SlackDeliveryError(
                f"could not reach the Slack webhook: {type(exc).__name__}"
            ) from exc
        if not response.is_success:
            raise SlackDeliveryError(
                f"the Slack webhook answered {response.status_code}: {response.text[:200]}"
            )


def slack_payload(request: NotifyRequest) -> dict[str, Any]:
    """The incoming-webhook JSON for one notification."""
    where = " / ".join(part for part in (request.service, request.environment) if part)
    title = f"[{request.level}] {request.event}" + (f" ({where})" if where else "")
    named = {"service": request.service, "environment": request.environment, **request.fields}
    fields = [{"title": k, "value": v, "short": True} for k, v in named.items() if v]
    return {
        "text": f"{title}: {request.message}",
        "attachments": [
            {
                "color": LEVEL_COLORS[request.level],
                "title": title,
                "text": request.message,
                "fields": fields,
                "fallback": f"{title}: {request.message}",
            }
        ],
    }
