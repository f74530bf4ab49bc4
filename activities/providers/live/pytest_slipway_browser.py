"""The pytest plugin a browser stage loads into the service's test run (`-p slipway_browser`;
copied next to the tests, never imported by the worker for itself but for its constants).

pytest-playwright launches its browser with the `browser_type_launch_args` fixture and opens
contexts with `browser_context_args`. This plugin wraps both (a fixture of the same name
that asks for the one it replaces), registered once every plugin is loaded, so it comes
after pytest-playwright's and before the service's own conftest overrides, which still see
and can extend it:

- launch Debian's Chromium (`CHROME_PATH`) through `executable_path`, with the arguments
  it needs in the runner's sandbox;
- add the endpoint's headers (`SLIPWAY_BROWSER_HEADERS`, JSON) to every request.

It runs with the service's pytest in the service's venv: standard library and pytest only.
"""

from __future__ import annotations

import json
import os
import types
from typing import Any

import pytest

HEADERS_VARIABLE = "SLIPWAY_BROWSER_HEADERS"
LAUNCH_ARGS = ["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"]


def encode(headers: dict[str, str]) -> str:
    """The headers as this plugin reads them from its environment."""
    return json.dumps(headers, sort_keys=True)


def _launch_args(browser_type_launch_args: dict[str, Any]) -> dict[str, Any]:
    args = dict(browser_type_launch_args)
    chrome = os.environ.get("CHROME_PATH")
    if chrome:
        args["executable_path"] = chrome
    args["args"] = [*args.get("args", []), *LAUNCH_ARGS]
    return args


def _context_args(browser_context_args: dict[str, Any]) -> dict[str, Any]:
    headers = json.loads(os.environ.get(HEADERS_VARIABLE) or "{}")
    if not headers:
        return browser_context_args
    merged = {**headers, **(browser_context_args.get("extra_http_headers") or {})}
    return {**browser_context_args, "extra_http_headers": merged}


def pytest_configure(config: pytest.Config) -> None:
    fixtures = types.ModuleType("slipway_browser_fixtures")
    launch = pytest.fixture(scope="session", name="browser_type_launch_args")(_launch_args)
    context = pytest.fixture(scope="session", name="browser_context_args")(_context_args)
    fixtures.__dict__["slipway_browser_type_launch_args"] = launch
    fixtures.__dict__["slipway_browser_context_args"] = context
    config.pluginmanager.register(fixtures, "slipway-browser-fixtures")
