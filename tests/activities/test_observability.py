"""Logs never carry secrets or the seed's personal-data patterns."""

from __future__ import annotations

from typing import Any

from activities.observability import MASK, redact


def test_secrets_dates_of_birth_and_phone_numbers_are_masked() -> None:
    event: dict[str, Any] = {
        "event": "user 010-1234-5678 born 1990-01-02 called from 01012345678",
        "api_key": "abc123",
        "headers": {"Authorization": "Bearer x", "accept": "json"},
        "attempt": 3,
        "numbers": ["02012345678", "short 123"],
    }
    out = redact(None, "info", event)
    assert out["event"] == f"user 010-1234-5678 born {MASK} called from {MASK}"
    assert out["api_key"] == MASK
    assert out["headers"] == {"Authorization": MASK, "accept": "json"}
    assert out["attempt"] == 3
    assert out["numbers"] == [MASK, "short 123"]
