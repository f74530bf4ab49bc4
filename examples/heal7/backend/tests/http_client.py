"""A few lines of urllib shared by the unit and integration tests."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any


def get(url: str, timeout: float = 5) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as error:
        return int(error.code), bytes(error.read())


def get_json(url: str) -> tuple[int, dict[str, Any]]:
    code, body = get(url)
    parsed: dict[str, Any] = json.loads(body)
    return code, parsed


def sample_value(metrics_text: str, series: str) -> float:
    """The value of one exact series line (`name{labels}`) in Prometheus text, 0 if absent."""
    for line in metrics_text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    return 0.0
