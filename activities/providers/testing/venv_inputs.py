"""What a test stage's venv holds, read from the stage and the service's own files.

- `requirements: [requirements-dev.txt]`: those files (`pip install -r`), and the project's
  dependencies only if `extras` is given too;
- `extras: [test, docs]`: the project's dependencies plus those extras of its pyproject.toml;
- neither: the project's dependencies plus its `test` extra if it declares one (what tox and
  nox users expect).

The dependencies are read from `[project]` in pyproject.toml, so the venv is shared by every
commit that declares the same ones; the service's own code is imported from the checkout (its
directory, and `src/` when present, are on PYTHONPATH). A project whose dependencies are
`dynamic` is installed itself (`pip install .[extras]`), in a venv keyed by its whole tree.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from activities.providers.execution.venvs import VenvSpec, file_fingerprint, tree_fingerprint
from contracts.errors import ErrorType, verdict

__all__ = ["source_paths", "test_venv_spec"]

DEFAULT_EXTRA = "test"
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[([^\]]*)\])?")


def test_venv_spec(
    service_dir: Path,
    *,
    extras: Sequence[str] | None,
    requirements: Sequence[str],
    setup: Sequence[str],
    label: str,
) -> VenvSpec:
    """The venv a test stage runs in; a clear error naming the field when an input is wrong."""
    install: list[str] = []
    fingerprint = ""
    files: list[Path] = []
    for name in requirements:
        path = (service_dir / name).resolve()
        if not path.is_file():
            raise verdict(
                ErrorType.INVALID_DEFINITION,
                f"The {label}'s `requirements` names {name!r}, which is not a file in "
                f"{str(service_dir)!r}: fix the path (relative to the service directory).",
            )
        files.append(path)
        install += ["-r", str(path)]
    if extras is not None or not requirements:
        project, fallback = _project_requirements(service_dir, extras, label)
        if fallback:
            # pip only warns about an undeclared extra, so the default `test` is safe here.
            wanted = ",".join(extras if extras is not None else [DEFAULT_EXTRA])
            install.append(f"{service_dir}[{wanted}]" if wanted else str(service_dir))
            fingerprint = tree_fingerprint(service_dir)
        install += project
    if files:
        fingerprint += file_fingerprint(files)
    return VenvSpec(
        label=label,
        install=tuple(install),
        setup=tuple(setup),
        fingerprint=fingerprint,
        cwd=service_dir,
        readable=tuple(files),  # a requirements file may live outside the service dir
    )


def source_paths(service_dir: Path) -> list[str]:
    """Where the service's own modules are imported from: its directory and `src/`."""
    paths = [str(service_dir)]
    if (service_dir / "src").is_dir():
        paths.insert(0, str(service_dir / "src"))
    return paths


def _project_requirements(
    service_dir: Path, extras: Sequence[str] | None, label: str
) -> tuple[list[str], bool]:
    """(requirement strings, whether the project must be installed itself instead)."""
    pyproject = service_dir / "pyproject.toml"
    if not pyproject.is_file():
        if extras:
            raise verdict(
                ErrorType.INVALID_DEFINITION,
                f"The {label} names `extras` {list(extras)}, but {str(service_dir)!r} has no "
                "pyproject.toml to declare them: use `requirements` instead.",
            )
        return [], (service_dir / "setup.py").is_file()
    try:
        data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise verdict(
            ErrorType.INVALID_DEFINITION, f"{str(pyproject)!r} is not valid TOML: {exc}"
        ) from exc
    project: dict[str, Any] = data.get("project") or {}
    dynamic = set(project.get("dynamic") or [])
    if not project or {"dependencies", "optional-dependencies"} & dynamic:
        return [], True
    optional: dict[str, list[str]] = project.get("optional-dependencies") or {}
    if extras is None:
        chosen = [DEFAULT_EXTRA] if DEFAULT_EXTRA in optional else []
    else:
        chosen = list(extras)
        unknown = [e for e in chosen if e not in optional]
        if unknown:
            raise verdict(
                ErrorType.INVALID_DEFINITION,
                f"The {label}'s `extras` names {unknown[0]!r}, which {str(pyproject)!r} does "
                f"not declare; it declares: {sorted(optional) or 'none'}.",
            )
    own = _normalise(str(project.get("name", "")))
    requirements = list(project.get("dependencies") or [])
    seen: set[str] = set()
    pending = list(chosen)
    while pending:
        extra = pending.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for requirement in optional.get(extra, []):
            match = _NAME.match(requirement)
            if match and own and _normalise(match.group(1)) == own:
                # `test = ["app[http]"]`: the project's own extras, not a package to fetch.
                pending += [e.strip() for e in (match.group(3) or "").split(",") if e.strip()]
            else:
                requirements.append(requirement)
    return requirements, False


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()
