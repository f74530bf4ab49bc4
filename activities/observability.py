"""Structured logging for the worker: JSON lines, activity context bound, secrets masked.

The redaction processor masks values of secret-looking keys and the seed's personal-data
patterns (dates of birth `YYYY-MM-DD`, 10-11 digit phone numbers) in every string it logs.
"""

from __future__ import annotations

import logging
import re
from collections.abc import MutableMapping
from typing import Any

import structlog
from temporalio import activity

__all__ = ["activity_log", "configure_logging", "redact"]

_SECRET_KEYS = re.compile(r"(pass(word)?|secret|token|api[_-]?key|authorization|webhook)", re.I)
_DATE_OF_BIRTH = re.compile(r"(?<!\d)\d{4}-\d{2}-\d{2}(?!\d)")
_PHONE = re.compile(r"(?<!\d)\d{10,11}(?!\d)")
MASK = "***"


def _mask_text(text: str) -> str:
    return _PHONE.sub(MASK, _DATE_OF_BIRTH.sub(MASK, text))


def _redact_value(key: str, value: Any) -> Any:
    if _SECRET_KEYS.search(key):
        return MASK
    if isinstance(value, str):
        return _mask_text(value)
    if isinstance(value, dict):
        return {k: _redact_value(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_value(key, v) for v in value]
    return value


def redact(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: mask secrets and personal data in every field."""
    for key in list(event_dict):
        if key == "timestamp":
            continue
        event_dict[key] = _redact_value(key, event_dict[key])
    return event_dict


def configure_logging(level: str = "INFO") -> None:
    """JSON logs on stderr for the worker and the CLI's own diagnostics."""
    logging.basicConfig(level=level, format="%(message)s")
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        cache_logger_on_first_use=True,
    )


def activity_log(**fields: Any) -> Any:
    """A logger bound to the running activity: workflow id, run id, activity, attempt."""
    log = structlog.get_logger("slipway.activity")
    if activity.in_activity():
        info = activity.info()
        log = log.bind(
            workflow_id=info.workflow_id,
            run_id=info.workflow_run_id,
            activity=info.activity_type,
            attempt=info.attempt,
        )
    return log.bind(**fields)
