"""Structured logging for the worker: JSON lines, activity context bound, secrets masked.

The redaction processor masks, in every string it logs (messages, fields, exception text and
tracebacks):
- the values of secret-looking keys (`token`, `password`, `api_key`, ...);
- known secret values wherever they appear: the worker's secret settings and the values of
  secret-looking environment variables (`register_secrets`);
- passwords in URLs (`https://user:password@host`);
- the HEAL7 design's personal-data patterns: dates of birth `YYYY-MM-DD` and phone numbers of
  10-11 digits, also written with separators or the +82 country code.
The Temporal SDK's own stdlib logging goes through the same processors.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping, MutableMapping
from pathlib import Path
from typing import Any

import structlog
from pydantic import BaseModel, SecretStr
from structlog.typing import Processor
from temporalio import activity

__all__ = [
    "MASK",
    "activity_log",
    "configure_logging",
    "redact",
    "register_secrets",
    "secrets_in_environment",
    "secrets_in_settings",
]

_SECRET_KEYS = re.compile(r"(pass(word)?|secret|token|api[_-]?key|authorization|webhook)", re.I)
# Environment variables whose value is a secret: the keys above, plus key material
# (SLIPWAY_CODEC_KEY(S), TEMPORAL_TLS_CLIENT_KEY_DATA, ...) and credentials.
_SECRET_VARIABLES = re.compile(
    rf"{_SECRET_KEYS.pattern}|credential|(^|_)KEYS?(_DATA)?$|private", re.I
)
_DATE_OF_BIRTH = re.compile(r"(?<!\d)\d{4}-\d{2}-\d{2}(?!\d)")
_PHONE = re.compile(
    r"(?<![\w+])(?:"
    # Korean forms: 010-1234-5678, 010 1234 5678, 010.1234.5678, 02-1234-5678,
    # 031-123-4567, +82 10-1234-5678, +82-10-1234-5678, +821012345678.
    r"(?:\+82[-. ]?|0)\d{1,2}[-. ]?\d{3,4}[-. ]?\d{4}"
    # The design's own pattern: 10 or 11 digits in a row.
    r"|\d{10,11}"
    r")(?!\w)"
)
_URL_PASSWORD = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^/\s:@]*):[^/\s@]+@", re.I)
MASK = "***"
# Shorter values would mask ordinary words and numbers everywhere.
_MIN_SECRET_LENGTH = 6

_known_secrets: set[str] = set()
_known_pattern: re.Pattern[str] | None = None


def register_secrets(values: Iterable[str]) -> None:
    """Mask these values wherever they appear in a log line from now on."""
    global _known_pattern
    _known_secrets.update(v for v in (s.strip() for s in values) if len(v) >= _MIN_SECRET_LENGTH)
    ordered = sorted(_known_secrets, key=len, reverse=True)  # longest first: no partial masks
    _known_pattern = re.compile("|".join(map(re.escape, ordered))) if ordered else None


def _clear_secrets() -> None:
    """For tests: forget every registered secret."""
    global _known_pattern
    _known_secrets.clear()
    _known_pattern = None


def _parts(value: str) -> list[str]:
    """A secret and its pieces: a key ring `id2:key2,id1:key1` is logged key by key too."""
    pieces = [value]
    for entry in value.split(","):
        pieces.append(entry.strip())
        pieces.append(entry.partition(":")[2].strip())
    return pieces


def secrets_in_environment(environ: Mapping[str, str]) -> list[str]:
    """Values of secret-looking variables; for `NAME_FILE`, the file's contents."""
    found: list[str] = []
    for name, value in environ.items():
        base = name.removesuffix("_FILE")
        if not value or not _SECRET_VARIABLES.search(base):
            continue
        if name.endswith("_FILE"):
            try:
                value = Path(value).read_text(encoding="utf-8")[:65536]
            except (OSError, UnicodeDecodeError):
                continue
        found.extend(_parts(value.strip()))
    return found


def secrets_in_settings(settings: BaseModel) -> list[str]:
    """Values of the settings' SecretStr fields (Slack webhook, SonarQube token, ...)."""
    return [
        value.get_secret_value()
        for value in (getattr(settings, name) for name in type(settings).model_fields)
        if isinstance(value, SecretStr)
    ]


def _mask_text(text: str) -> str:
    if _known_pattern is not None:
        text = _known_pattern.sub(MASK, text)
    text = _URL_PASSWORD.sub(rf"\g<scheme>\g<user>:{MASK}@", text)
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
    if isinstance(value, BaseException):
        return _mask_text(repr(value))
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


def _shared_processors() -> list[Processor]:
    """What every log line goes through, structlog's and the stdlib's alike."""
    return [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]


def _tail_processors() -> list[Processor]:
    """Tracebacks become text first, so that redaction sees them."""
    return [structlog.processors.format_exc_info, redact]


class _SlipwayHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The root handler we install (and replace when configured again)."""


def configure_logging(level: str = "INFO", secrets: Iterable[str] = ()) -> None:
    """JSON logs for the worker and the CLI's own diagnostics; `secrets` are masked by value.
    The stdlib loggers (the Temporal SDK's) render through the same processors on stderr."""
    register_secrets(secrets)
    handler = _SlipwayHandler()
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                structlog.stdlib.add_logger_name,
                *_shared_processors(),
                structlog.stdlib.ExtraAdder(),
            ],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                *_tail_processors(),
                structlog.processors.JSONRenderer(default=repr),
            ],
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _SlipwayHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            *_shared_processors(),
            *_tail_processors(),
            structlog.processors.JSONRenderer(default=repr),
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
