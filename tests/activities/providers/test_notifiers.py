"""Notifiers: Slack against a real HTTP server on loopback, the log notifier through structlog."""

from __future__ import annotations

import json
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any, Literal

import pytest
from structlog.testing import capture_logs

from activities.providers.notify.notifiers import LogNotifier, SlackDeliveryError, SlackNotifier
from activities.wiring.backends import Notifier
from contracts.activity import NotifyRequest
from tests.support.ports import free_port
from tests.support.stub_http import serving


class Webhook(BaseHTTPRequestHandler):
    """Records what Slack's incoming webhook would receive; answers `status`."""

    received: list[dict[str, Any]] = []
    status = 200

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        Webhook.received.append(
            {"path": self.path, "type": self.headers["Content-Type"], "json": json.loads(body)}
        )
        answer = b"ok" if self.status == 200 else b"invalid_payload"
        self.send_response(self.status)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[str]:
    Webhook.received, Webhook.status = [], 200
    with serving(Webhook) as url:
        yield f"{url}/services/T000/B000/webhook-secret"


Level = Literal["info", "success", "warning", "error"]


def rollback_event(level: Level = "error") -> NotifyRequest:
    return NotifyRequest(
        level=level,
        event="rollback",
        message="canary error rate 7.2% > 5% over 300s: rolled back",
        service="hello",
        environment="production",
        fields={"digest": "sha256:abc", "run": "pipeline-hello-3f2a9c1d5e7b"},
    )


@pytest.mark.parametrize(
    ("level", "color"),
    [("success", "#2eb886"), ("warning", "#daa038"), ("error", "#d50200"), ("info", "#9e9e9e")],
)
def test_slack_message_is_posted_with_the_level_colour(
    webhook: str, level: Level, color: str
) -> None:
    SlackNotifier(webhook, timeout=5).send(rollback_event(level))

    assert len(Webhook.received) == 1
    posted = Webhook.received[0]
    assert posted["path"] == "/services/T000/B000/webhook-secret"
    assert posted["type"] == "application/json"
    message = posted["json"]
    assert "rollback" in message["text"]
    assert "canary error rate 7.2%" in message["text"]
    [attachment] = message["attachments"]
    assert attachment["color"] == color
    fields = {f["title"]: f["value"] for f in attachment["fields"]}
    assert fields == {
        "service": "hello",
        "environment": "production",
        "digest": "sha256:abc",
        "run": "pipeline-hello-3f2a9c1d5e7b",
    }


def test_slack_error_answer_raises_a_retryable_error(webhook: str) -> None:
    Webhook.status = 500

    with pytest.raises(SlackDeliveryError, match="500") as caught:
        SlackNotifier(webhook).send(rollback_event())

    # Not a Temporal verdict: the workflow's bounded retry policy decides.
    assert not hasattr(caught.value, "non_retryable")
    assert "webhook-secret" not in str(caught.value)  # the webhook URL is a secret


def test_slack_unreachable_raises_without_leaking_the_url() -> None:
    url = f"http://127.0.0.1:{free_port()}/services/T000/B000/SECRET"

    with pytest.raises(SlackDeliveryError) as caught:
        SlackNotifier(url, timeout=2).send(rollback_event())

    assert "SECRET" not in str(caught.value)


def test_log_notifier_writes_one_structured_event() -> None:
    with capture_logs() as logs:
        LogNotifier().send(rollback_event("warning"))

    assert len(logs) == 1
    [entry] = logs
    assert entry["event"] == "rollback"
    assert entry["log_level"] == "warning"
    assert entry["notify_level"] == "warning"
    assert entry["message"] == "canary error rate 7.2% > 5% over 300s: rolled back"
    assert entry["service"] == "hello"
    assert entry["environment"] == "production"
    assert entry["fields"] == {"digest": "sha256:abc", "run": "pipeline-hello-3f2a9c1d5e7b"}


def test_notifiers_satisfy_the_protocol(webhook: str) -> None:
    assert isinstance(LogNotifier(), Notifier)
    assert isinstance(SlackNotifier(webhook), Notifier)
