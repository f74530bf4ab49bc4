"""Logs never carry secrets or the HEAL7 design's personal-data patterns: not in fields, not
in messages, not in exception text or tracebacks, and not in the Temporal SDK's own logs."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from pydantic import SecretStr

from activities.wiring import observability
from activities.wiring.observability import (
    MASK,
    configure_logging,
    redact,
    register_secrets,
    secrets_in_environment,
    secrets_in_settings,
)
from plumbing.settings import Settings


@pytest.fixture(autouse=True)
def _fresh_logging() -> Iterator[None]:
    observability._clear_secrets()
    yield
    observability._clear_secrets()
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, observability._SlipwayHandler)]:
        root.removeHandler(handler)
    structlog.reset_defaults()


def test_secret_keys_dates_of_birth_and_phone_numbers_are_masked() -> None:
    event: dict[str, Any] = {
        "event": "user 010-1234-5678 born 1990-01-02 called from 01012345678",
        "api_key": "abc123",
        "headers": {"Authorization": "Bearer x", "accept": "json"},
        "attempt": 3,
        "numbers": ["02012345678", "short 123"],
    }
    out = redact(None, "info", event)
    assert out["event"] == f"user {MASK} born {MASK} called from {MASK}"
    assert out["api_key"] == MASK
    assert out["headers"] == {"Authorization": MASK, "accept": "json"}
    assert out["attempt"] == 3
    assert out["numbers"] == [MASK, "short 123"]


# Every form a 10-11 digit phone number is written in: the design's bare digits, Korean
# mobile and landline numbers with hyphens, spaces or dots, and the +82 country code.
PHONE_FORMS = [
    "01012345678",
    "0212345678",
    "1234567890",
    "12345678901",
    "010-1234-5678",
    "010 1234 5678",
    "010.1234.5678",
    "011-123-4567",
    "02-1234-5678",
    "02-123-4567",
    "031-123-4567",
    "031-1234-5678",
    "+82 10-1234-5678",
    "+82-10-1234-5678",
    "+82 10 1234 5678",
    "+821012345678",
    "+82-2-1234-5678",
]


@pytest.mark.parametrize("phone", PHONE_FORMS)
def test_every_phone_number_form_is_masked(phone: str) -> None:
    for text, expected in [
        (phone, MASK),
        (f"call {phone} now", f"call {MASK} now"),
        (f"tel:{phone}.", f"tel:{MASK}."),
        (f"(phone={phone})", f"(phone={MASK})"),
    ]:
        assert redact(None, "info", {"event": text})["event"] == expected


@pytest.mark.parametrize(
    "text",
    [
        "attempt 3 of 5",
        "temporalio 1.34.0 on 10.0.0.12:7233",
        "commit 9c5964cc1a91 and a1234567890f",
        "123456789012 is twelve digits",
        "took 1234 ms, port 18080",
        "sha256:9e3bad495aa360f8b05a2c004611b26403c50e4d9fc1c8479de93073a7d776ac",
    ],
)
def test_ordinary_numbers_stay(text: str) -> None:
    assert redact(None, "info", {"event": text})["event"] == text


def test_passwords_in_urls_are_masked() -> None:
    out = redact(None, "info", {"event": "clone https://bob:hunter2@git.example.com/x.git failed"})
    assert out["event"] == f"clone https://bob:{MASK}@git.example.com/x.git failed"


def test_known_secret_values_are_masked_anywhere() -> None:
    register_secrets(["s3cr3t-value-42", "short"])  # too short to mask safely: ignored
    out = redact(
        None,
        "info",
        {"event": "sent s3cr3t-value-42", "detail": ["x s3cr3t-value-42 y"], "note": "short"},
    )
    assert out == {"event": f"sent {MASK}", "detail": [f"x {MASK} y"], "note": "short"}


def _json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_exception_text_and_tracebacks_are_masked(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", secrets=["whsec-0123456789abcdef"])
    log = structlog.get_logger("slipway.test")
    try:
        raise ConnectionError("POST with whsec-0123456789abcdef for 010-1234-5678 refused")
    except ConnectionError:
        log.exception("notify failed")
    out = capsys.readouterr().out
    (line,) = _json_lines(out)
    assert "whsec-0123456789abcdef" not in out
    assert "010-1234-5678" not in out
    assert "Traceback" in line["exception"]
    assert f"POST with {MASK} for {MASK} refused" in line["exception"]


def test_the_sdks_stdlib_logs_go_through_the_same_processors(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("INFO", secrets=["tok-abcdef123456"])
    sdk = logging.getLogger("temporalio.activity")
    sdk.warning(
        "Completing activity as failed (%s)",
        "https://ci:pw123456@example.com tok-abcdef123456 born 1990-01-02 +82 10-1234-5678",
        extra={"temporal_activity": {"activity_type": "notify", "token": "tok-abcdef123456"}},
    )
    try:
        raise RuntimeError("boom tok-abcdef123456")
    except RuntimeError:
        sdk.exception("Activity failed")
    err = capsys.readouterr().err
    first, second = _json_lines(err)
    assert first["event"] == (
        f"Completing activity as failed (https://ci:{MASK}@example.com {MASK} born {MASK} {MASK})"
    )
    assert first["level"] == "warning"
    assert first["logger"] == "temporalio.activity"
    assert first["temporal_activity"] == {"activity_type": "notify", "token": MASK}
    assert "timestamp" in first
    assert f"boom {MASK}" in second["exception"]
    assert "tok-abcdef123456" not in err


def test_secret_values_come_from_settings_and_the_environment(tmp_path: Path) -> None:
    settings = Settings.load(
        notifier="slack",
        slack_webhook_url=SecretStr("https://hooks.slack.com/services/T0/B0/abcdef"),
    )
    assert secrets_in_settings(settings) == ["https://hooks.slack.com/services/T0/B0/abcdef"]

    ring = tmp_path / "ring"
    ring.write_text("k2:bmV3LWtleS1ieXRlcw==,k1:b2xkLWtleS1ieXRlcw==\n", encoding="utf-8")
    found = secrets_in_environment(
        {
            "TEMPORAL_API_KEY": "tmprl-api-key-1",
            "AWS_SECRET_ACCESS_KEY": "aws/secret+key",
            "SLIPWAY_CODEC_KEY": "c2luZ2xlLWtleS1ieXRlcw==",
            "SLIPWAY_CODEC_KEYS_FILE": str(ring),
            "TEMPORAL_TLS_CLIENT_KEY_DATA": "-----BEGIN PRIVATE KEY-----",
            "TEMPORAL_TLS_CLIENT_KEY_PATH": "/etc/tls/key.pem",
            "SLIPWAY_PLATFORM": "kubernetes",
            "HOME": "/home/someone",
        }
    )
    for secret in [
        "tmprl-api-key-1",
        "aws/secret+key",
        "c2luZ2xlLWtleS1ieXRlcw==",
        "bmV3LWtleS1ieXRlcw==",
        "b2xkLWtleS1ieXRlcw==",
        "-----BEGIN PRIVATE KEY-----",
    ]:
        assert secret in found
    for ordinary in ["/etc/tls/key.pem", "kubernetes", "/home/someone", str(ring)]:
        assert ordinary not in found
