"""Reading definition files: bounded, strict YAML, and `extends:` kept inside its tree.

A definition is untrusted input. A file is read only if it is a regular file, only up to
`MAX_FILE_BYTES`, and only as UTF-8 text. Its YAML events are checked before anything is
built: anchors and aliases are refused (an alias bomb expands to gigabytes), so are duplicate
keys (YAML would keep the last one silently) and nesting deeper than `MAX_NESTING` (the
composer recurses). Errors name the file and a line,
never quote its text: `extends:` may point at a file that is not a definition at all.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from contracts.definition.limits import MAX_EXTENDS_DEPTH, MAX_FILE_BYTES, MAX_NESTING, short

__all__ = ["DefinitionFileError", "read_definition", "resolve_extends"]


class DefinitionFileError(Exception):
    """One file that cannot be read as a definition; `field` is set for `extends`."""

    def __init__(self, file: Path | str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.file = str(file)
        self.message = message
        self.field = field


class _StrictError(yaml.YAMLError):
    def __init__(self, message: str, event: Any) -> None:
        mark = getattr(event, "start_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        super().__init__(message + where)


# libyaml when present: the pure-Python parser takes seconds for a large definition.
_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _check_events(text: str) -> None:
    """Refuse anchors, aliases, duplicate keys and deep nesting from the event stream, before
    anything is composed: libyaml composes recursively in C, and an alias bomb expands only
    when constructed, so neither may see such a document."""
    # One frame per open collection: [is a mapping, nodes seen in it, its keys].
    frames: list[tuple[bool, list[int], set[str]]] = []
    for event in yaml.parse(text, Loader=_LOADER):
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise _StrictError("anchors and aliases (&, *) are not allowed", event)
        if isinstance(event, yaml.CollectionEndEvent):
            frames.pop()
            continue
        if not isinstance(event, yaml.NodeEvent):
            continue
        if frames and frames[-1][0]:
            _, count, keys = frames[-1]
            if count[0] % 2 == 0:  # a key
                if not isinstance(event, yaml.ScalarEvent):
                    raise _StrictError("a mapping key must be a plain value", event)
                if event.value in keys:
                    raise _StrictError(f"duplicate key {short(event.value)}", event)
                keys.add(event.value)
            count[0] += 1
        elif frames:
            frames[-1][1][0] += 1
        if isinstance(event, yaml.CollectionStartEvent):
            if len(frames) >= MAX_NESTING:
                raise _StrictError(f"nested deeper than {MAX_NESTING} levels", event)
            frames.append((isinstance(event, yaml.MappingStartEvent), [0], set()))


def _yaml_error(exc: yaml.YAMLError) -> str:
    """The problem and where, without PyYAML's snippet of the file's text."""
    if isinstance(exc, yaml.MarkedYAMLError):
        if exc.problem and "maximum nesting depth" in exc.problem:
            # libyaml's own guard, hit before our event check sees that depth.
            where = f" at line {exc.problem_mark.line + 1}" if exc.problem_mark else ""
            return f"not valid YAML: nested deeper than {MAX_NESTING} levels{where}"
        parts = []
        for text, mark in ((exc.context, exc.context_mark), (exc.problem, exc.problem_mark)):
            if text:
                where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
                parts.append(short(text, 120)[1:-1] + where)
        return "not valid YAML: " + "; ".join(parts)
    return f"not valid YAML: {short(str(exc), 160)[1:-1]}"


def read_definition(path: Path) -> dict[str, Any]:
    """Parse one definition file into a mapping; raise `DefinitionFileError` saying why not."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise DefinitionFileError(path, "file not found") from None
    except OSError as exc:
        raise DefinitionFileError(path, f"cannot read: {exc.strerror or 'error'}") from None
    if stat.S_ISDIR(info.st_mode):
        raise DefinitionFileError(path, "is a directory, not a definition file")
    if not stat.S_ISREG(info.st_mode):
        raise DefinitionFileError(path, "is not a regular file (a device, pipe or socket)")
    if info.st_size > MAX_FILE_BYTES:
        raise DefinitionFileError(
            path, f"is {info.st_size} bytes; a definition may be {MAX_FILE_BYTES}"
        )
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise DefinitionFileError(path, f"cannot read: {exc.strerror or 'error'}") from None
    if len(raw) > MAX_FILE_BYTES:  # grew since stat
        raise DefinitionFileError(path, f"is larger than {MAX_FILE_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise DefinitionFileError(path, "is not UTF-8 text (a binary file?)") from None
    if "\x00" in text:
        raise DefinitionFileError(path, "is not text: it contains NUL bytes")
    try:
        _check_events(text)
        data = yaml.load(text, Loader=_LOADER)
    except yaml.YAMLError as exc:
        raise DefinitionFileError(path, _yaml_error(exc)) from None
    except RecursionError:
        raise DefinitionFileError(path, f"nested deeper than {MAX_NESTING} levels") from None
    if not isinstance(data, dict):
        raise DefinitionFileError(path, "expected a mapping at the top level")
    return data


def _inside(path: Path, roots: Sequence[Path]) -> bool:
    return any(path == root or path.is_relative_to(root) for root in roots)


def resolve_extends(
    path: Path, allowed_roots: Sequence[Path] = (), seen: tuple[Path, ...] = ()
) -> dict[str, Any]:
    """Read `path` and merge it over what it `extends:`. A base must lie inside the
    directory tree of the file that names it, or inside one of `allowed_roots`."""
    data = read_definition(path)
    parent = data.pop("extends", None)
    if parent is None:
        return data
    if not isinstance(parent, str) or not parent.strip():
        raise DefinitionFileError(path, "must be a relative file path", "extends")
    here = path.resolve()
    base_path = (here.parent / parent).resolve()
    if base_path in seen or base_path == here:
        raise DefinitionFileError(path, f"extends itself via {base_path}", "extends")
    if len(seen) >= MAX_EXTENDS_DEPTH:
        raise DefinitionFileError(
            path, f"more than {MAX_EXTENDS_DEPTH} files extend one another", "extends"
        )
    roots = [here.parent, *(Path(r).resolve() for r in allowed_roots)]
    if not _inside(base_path, roots):
        raise DefinitionFileError(
            path,
            f"{short(parent)} is outside {here.parent}; a base must be in the definition's "
            "directory tree (allow another with --extends-root)",
            "extends",
        )
    base = resolve_extends(base_path, allowed_roots, (*seen, here))
    base_stages, own_stages = base.get("stages"), data.pop("stages", None)
    stages: Any
    if isinstance(base_stages, list) and isinstance(own_stages, list | None):
        stages = _merge_stages(base_stages, own_stages or [])
    else:  # not lists: validation reports whichever is there
        stages = base_stages if own_stages is None else own_stages
    merged = _deep_merge(base, data)
    merged["stages"] = stages
    return merged


def _merge_stages(base: list[Any], override: list[Any]) -> list[Any]:
    """Stages of the child replace (deep-merged) base stages of the same name; new ones are
    appended. This is how a service reuses a shared pipeline library."""
    merged = [dict(s) if isinstance(s, dict) else s for s in base]
    index: dict[Any, int] = {}
    for i, s in enumerate(merged):
        name = s.get("name") if isinstance(s, dict) else None
        if isinstance(name, str):
            index.setdefault(name, i)
    for stage in override:
        name = stage.get("name") if isinstance(stage, dict) else None
        if isinstance(name, str) and name in index:
            merged[index[name]] = _deep_merge(merged[index[name]], stage)
        else:
            merged.append(stage)
    return merged


def _deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        # An empty mapping clears the base's value (how a child drops inherited thresholds).
        if value and isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out
