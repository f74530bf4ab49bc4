"""The environment of every process that runs a service's code: an allow-list, never the
worker's own environment.

The worker holds secrets in its environment (SLIPWAY_CODEC_KEY, TEMPORAL_API_KEY, cloud
credentials, the Slack webhook, ...). Test commands, setup commands, builds, scanners and
released services are code we did not write, so they start from nothing and get only:

- `PATH` (without the worker's own virtualenv, whose tools must not stand in for the
  service's), locale (`LANG`, `LANGUAGE`, `LC_*`), `TZ`, `TERM`, `TMPDIR`;
- `HOME` set to a directory of the caller's choosing (a throwaway one), so files in the
  worker's home (~/.aws/credentials, ~/.docker/config.json, ~/.netrc) are out of reach;
- with `install=True` (steps that download packages: venv installs, setup commands, PEP 517
  builds, pip-audit, command stages) the index settings: every `PIP_*` and `NPM_CONFIG_*`
  variable, the proxy and CA-bundle
  variables, and the worker's user-level pip.conf as `PIP_CONFIG_FILE` (the throwaway HOME
  would hide it). These can hold an index token; they are what installing needs;
- the caller's own variables (`extra`: the platform's SLIPWAY_PORT and the like), then the
  stage's `env:` merged last, so a definition (or a helper templating values into it, such
  as a backing service's port) always has the final word.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["ALLOWED", "INSTALL_ALLOWED", "child_env"]

ALLOWED = frozenset({"PATH", "LANG", "LANGUAGE", "TZ", "TERM", "TMPDIR"})
ALLOWED_PREFIXES = ("LC_",)
INSTALL_ALLOWED = frozenset(
    {
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
        "http_proxy",
        "https_proxy",
        "no_proxy",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "REQUESTS_CA_BUNDLE",
    }
)
INSTALL_PREFIXES = ("PIP_", "NPM_CONFIG_", "npm_config_")
_DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"


def child_env(
    *,
    home: Path,
    install: bool = False,
    prepend_path: Sequence[Path] = (),
    extra: Mapping[str, str] | None = None,
    stage_env: Mapping[str, str] | None = None,
    source: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment for a child process running service code; see the module docstring.

    `source` is the worker's environment (os.environ unless a test gives another one).
    """
    worker = os.environ if source is None else source
    env = {
        name: value
        for name, value in worker.items()
        if name in ALLOWED or name.startswith(ALLOWED_PREFIXES)
    }
    env["PATH"] = _path(worker.get("PATH", _DEFAULT_PATH), prepend_path)
    env["HOME"] = str(home)
    if install:
        env.update(
            (name, value)
            for name, value in worker.items()
            if name in INSTALL_ALLOWED or name.startswith(INSTALL_PREFIXES)
        )
        if "PIP_CONFIG_FILE" not in env:
            user_config = _user_pip_config(worker)
            if user_config is not None:
                env["PIP_CONFIG_FILE"] = str(user_config)
    env.update(extra or {})
    env.update(stage_env or {})
    return env


def _path(worker_path: str, prepend: Sequence[Path]) -> str:
    """The worker's PATH minus the worker's own virtualenv, after `prepend`."""
    own_bin = Path(sys.prefix) / "bin"
    kept = [p for p in worker_path.split(os.pathsep) if p and not _same_dir(p, own_bin)]
    return os.pathsep.join([*(str(p) for p in prepend), *kept])


def _same_dir(entry: str, directory: Path) -> bool:
    try:
        return Path(entry).resolve() == directory.resolve()
    except OSError:
        return False


def _user_pip_config(worker: Mapping[str, str]) -> Path | None:
    """The worker user's pip.conf, which pip would read from the worker's HOME."""
    home = worker.get("HOME")
    if not home:
        return None
    config_home = Path(worker.get("XDG_CONFIG_HOME") or Path(home) / ".config")
    for candidate in (config_home / "pip" / "pip.conf", Path(home) / ".pip" / "pip.conf"):
        if candidate.is_file():
            return candidate
    return None
