"""A third-party-shaped Python web service, generated: what a new user ships with Slipway.

It is everything the worker's own environment is not: a `flit_core` build backend, a pytest
configuration turning every warning into an error (the worker's pytest plugins would break it),
a runtime dependency the worker does not have (`inflection`), and a frontend built with
`npm ci && npm run build` into the package. Its HTTP answer says where
that dependency was imported from, so a test can tell the release's environment from the
worker's.
"""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

__all__ = ["RUNTIME_DEPENDENCY", "commit_service", "write_service"]

RUNTIME_DEPENDENCY = "inflection"
PACKAGE = "greeter_app"

_PYPROJECT = """
[build-system]
requires = ["flit_core>=3.4,<5"]
build-backend = "flit_core.buildapi"

[project]
name = "greeter-app"
version = "{version}"
description = "Greets people by their titleized names"
requires-python = ">=3.11"
dependencies = ["inflection>=0.5"]

[project.optional-dependencies]
test = ["pytest>=8"]

[tool.flit.module]
name = "greeter_app"

[tool.pytest.ini_options]
testpaths = ["tests"]
filterwarnings = ["error"]
"""

_INIT = '''
"""Greets people by their titleized names."""

import inflection


def greet(name: str) -> str:
    return f"Hello, {inflection.titleize(name)}!"
'''

_MAIN = '''
"""python -m greeter_app --port N: /health, /ready and / (a greeting, and where from)."""

import argparse
import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import inflection

from greeter_app import greet


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path in ("/health", "/ready"):
            body = b"ok"
        elif self.path == "/app":  # the frontend, built by the pipeline's command stage
            body = (Path(__file__).parent / "static" / "index.html").read_bytes()
        else:
            body = json.dumps(
                {
                    "message": greet("ada_lovelace"),
                    "dependency_file": inflection.__file__,
                    "prefix": sys.prefix,
                    "secrets_seen": sorted(
                        k for k in os.environ if k.startswith(("AWS_", "TEMPORAL_", "SLIPWAY_C"))
                    ),
                }
            ).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


parser = argparse.ArgumentParser()
parser.add_argument("--host", default="127.0.0.1")
parser.add_argument("--port", type=int, required=True)
args = parser.parse_args()
ThreadingHTTPServer((args.host, args.port), Handler).serve_forever()
'''

# A frontend without dependencies: `npm ci && npm run build` writes the package's static page.
_PACKAGE_JSON = """{
  "name": "greeter-frontend",
  "version": "1.0.0",
  "private": true,
  "scripts": {"build": "node build.js"}
}
"""
_PACKAGE_LOCK = """{
  "name": "greeter-frontend",
  "version": "1.0.0",
  "lockfileVersion": 3,
  "requires": true,
  "packages": {"": {"name": "greeter-frontend", "version": "1.0.0"}}
}
"""
_BUILD_JS = """const fs = require("fs");
fs.mkdirSync("../greeter_app/static", { recursive: true });
fs.writeFileSync("../greeter_app/static/index.html", "<h1>greeter frontend</h1>");
"""

_TESTS = """
import os

from greeter_app import greet


def test_greets_with_a_titleized_name():
    assert greet("ada_lovelace") == "Hello, Ada Lovelace!"


def test_the_stage_env_reaches_the_tests():
    assert os.environ.get("GREETER_MODE") == "test"


def test_no_worker_secret_reaches_the_tests():
    assert "AWS_SECRET_ACCESS_KEY" not in os.environ
"""


def write_service(root: Path, version: str = "1.0.0") -> Path:
    """Write the service's files under `root` and return it."""
    package = root / PACKAGE
    package.mkdir(parents=True, exist_ok=True)
    (root / "tests").mkdir(exist_ok=True)
    (root / "pyproject.toml").write_text(textwrap.dedent(_PYPROJECT).format(version=version))
    (package / "__init__.py").write_text(_INIT.lstrip())
    (package / "__main__.py").write_text(_MAIN.lstrip())
    (root / "tests" / "test_greeter.py").write_text(_TESTS.lstrip())
    (root / "README.md").write_text("# greeter-app\n")
    frontend = root / "frontend"
    frontend.mkdir(exist_ok=True)
    (frontend / "package.json").write_text(_PACKAGE_JSON)
    (frontend / "package-lock.json").write_text(_PACKAGE_LOCK)
    (frontend / "build.js").write_text(_BUILD_JS)
    return root


def commit_service(repo: Path, version: str = "1.0.0") -> str:
    """A git repository holding the service in one commit; returns its sha."""
    write_service(repo, version)
    env = {
        "GIT_AUTHOR_NAME": "erin",
        "GIT_AUTHOR_EMAIL": "erin@example.com",
        "GIT_COMMITTER_NAME": "erin",
        "GIT_COMMITTER_EMAIL": "erin@example.com",
        "PATH": "/usr/local/bin:/usr/bin:/bin",
    }
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", version]):
        subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True)
    done = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=repo, env=env, check=True, capture_output=True, text=True
    )
    return done.stdout.strip()
