"""A small renderer for the subset of Helm's Go templates our chart uses.

Helm cannot be installed here, so the chart's tests render it with this instead. It covers
exactly what deploy/helm/slipway-worker uses, and fails loudly on anything else, so a template
that steps outside the subset breaks the tests instead of rendering wrongly:

- text with `{{ }}` actions and the trim markers `{{-` / `-}}`; comments `{{/* */}}`;
- `define` / `include`, `if` / `else if` / `else`, `with` / `else`, `range` (over lists and
  maps, in sorted key order, optionally binding `$i, $v :=` or `$v :=`), and `$x := ...`;
- fields `.A.b`, `$`, `$var.a`, string / number / bool / nil literals, `( )`, pipes `|`;
- functions: default, eq, ne, not, and, or, empty, contains, list, quote, squote, printf (%s %d %v),
  trunc, trimSuffix, lower, toString, toYaml, indent, nindent, required, b64enc.

Missing map keys read as nil (Helm prints nil as nothing); reading a field of nil is an error,
as in Helm ("nil pointer evaluating").
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = ["TemplateError", "render_chart", "render_text"]


class TemplateError(Exception):
    """The template is invalid or uses something outside the supported subset."""


# --- lexing ---------------------------------------------------------------------------------


@dataclass
class _Text:
    text: str


@dataclass
class _Action:
    source: str
    trim_left: bool
    trim_right: bool


def _split(source: str, name: str) -> list[_Text | _Action]:
    pieces: list[_Text | _Action] = []
    pos = 0
    while True:
        start = source.find("{{", pos)
        if start == -1:
            pieces.append(_Text(source[pos:]))
            break
        pieces.append(_Text(source[pos:start]))
        end = _action_end(source, start + 2, name)
        inner = source[start + 2 : end]
        trim_left = inner.startswith("- ")
        trim_right = inner.endswith(" -")
        inner = inner[2 if trim_left else 0 : len(inner) - (2 if trim_right else 0)]
        pieces.append(_Action(inner.strip(), trim_left, trim_right))
        pos = end + 2
    # Apply trim markers to the neighbouring text.
    for i, piece in enumerate(pieces):
        if not isinstance(piece, _Action):
            continue
        before, after = pieces[i - 1], pieces[i + 1] if i + 1 < len(pieces) else None
        if piece.trim_left and isinstance(before, _Text):
            before.text = before.text.rstrip(" \t\r\n")
        if piece.trim_right and isinstance(after, _Text):
            after.text = after.text.lstrip(" \t\r\n")
    return pieces


def _action_end(source: str, pos: int, name: str) -> int:
    quote: str | None = None
    while pos < len(source) - 1:
        ch = source[pos]
        if quote:
            if ch == "\\" and quote == '"':
                pos += 2
                continue
            if ch == quote:
                quote = None
        elif ch in '"`':
            quote = ch
        elif source.startswith("}}", pos):
            return pos
        pos += 1
    raise TemplateError(f"{name}: unclosed action")


_TOKEN = re.compile(
    r"""\s*(?:
      (?P<string>"(?:[^"\\]|\\.)*"|`[^`]*`)
    | (?P<number>-?\d+(?:\.\d+)?)
    | (?P<declare>:=)
    | (?P<punct>[|(),=])
    | (?P<variable>\$[A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*)
    | (?P<field>(?:\.[A-Za-z0-9_]+)+|\.)
    | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
    )""",
    re.VERBOSE,
)


def _tokens(source: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    source = source.rstrip()
    while pos < len(source):
        match = _TOKEN.match(source, pos)
        if match is None or match.lastgroup is None:
            raise TemplateError(f"cannot read {source[pos:]!r}")
        out.append((match.lastgroup, match.group(match.lastgroup)))
        pos = match.end()
    return out


# --- parsing --------------------------------------------------------------------------------


@dataclass
class _Pipeline:
    declare: list[str]
    commands: list[list[Any]]  # each command: list of operands (tuples / nested _Pipeline)


@dataclass
class _Block:
    kind: str  # if / with / range / define
    pipeline: _Pipeline | None
    name: str = ""
    body: list[Any] = field(default_factory=list)
    otherwise: list[Any] = field(default_factory=list)
    in_else: bool = False
    chained: bool = False


def _parse_pipeline(tokens: list[tuple[str, str]]) -> _Pipeline:
    declare: list[str] = []
    for i, (kind, _value) in enumerate(tokens):
        if kind == "declare":
            names = [v for k, v in tokens[:i] if k == "variable"]
            if not names or any(k not in ("variable", "punct") for k, _ in tokens[:i]):
                raise TemplateError("only `$a :=` or `$a, $b :=` declarations are supported")
            declare, tokens = names, tokens[i + 1 :]
            break
    commands, _ = _parse_commands(tokens, 0)
    return _Pipeline(declare, commands)


def _parse_commands(tokens: list[tuple[str, str]], pos: int) -> tuple[list[list[Any]], int]:
    commands: list[list[Any]] = [[]]
    while pos < len(tokens):
        kind, value = tokens[pos]
        if kind == "punct" and value == "|":
            commands.append([])
        elif kind == "punct" and value == "(":
            inner, pos = _parse_commands(tokens, pos + 1)
            commands[-1].append(_Pipeline([], inner))
        elif kind == "punct" and value == ")":
            return commands, pos
        elif kind == "punct":
            raise TemplateError(f"unexpected {value!r}")
        else:
            commands[-1].append((kind, value))
        pos += 1
    if any(not c for c in commands):
        raise TemplateError("empty command in pipeline")
    return commands, pos


def _parse(pieces: list[_Text | _Action], name: str) -> list[Any]:
    root: list[Any] = []
    stack: list[_Block] = []

    def current() -> list[Any]:
        if not stack:
            return root
        return stack[-1].otherwise if stack[-1].in_else else stack[-1].body

    for piece in pieces:
        if isinstance(piece, _Text):
            if piece.text:
                current().append(piece.text)
            continue
        src = piece.source
        if src.startswith("/*"):
            if not src.endswith("*/"):
                raise TemplateError(f"{name}: unterminated comment")
            continue
        tokens = _tokens(src)
        head = tokens[0][1] if tokens and tokens[0][0] == "ident" else ""
        if head in ("if", "with", "range"):
            block = _Block(head, _parse_pipeline(tokens[1:]))
            current().append(block)
            stack.append(block)
        elif head == "define":
            if len(tokens) != 2 or tokens[1][0] != "string":
                raise TemplateError(f"{name}: define takes one quoted name")
            block = _Block("define", None, name=_string(tokens[1][1]))
            current().append(block)
            stack.append(block)
        elif head == "else":
            if not stack or stack[-1].in_else:
                raise TemplateError(f"{name}: misplaced else")
            stack[-1].in_else = True
            if len(tokens) > 1 and tokens[1] == ("ident", "if"):
                # `else if` is an `if` nested in the else branch, closed by the same `end`.
                nested = _Block("if", _parse_pipeline(tokens[2:]), chained=True)
                current().append(nested)
                stack.append(nested)
        elif head == "end":
            if not stack:
                raise TemplateError(f"{name}: end without a block")
            while stack.pop().chained:
                pass
        elif head in ("template", "block", "break", "continue"):
            raise TemplateError(f"{name}: `{head}` is outside the supported subset")
        else:
            current().append(_parse_pipeline(tokens))
    if stack:
        raise TemplateError(f"{name}: missing {{{{ end }}}} for {stack[-1].kind}")
    return root


def _string(literal: str) -> str:
    if literal.startswith("`"):
        return literal[1:-1]
    value = json.loads(literal)
    if not isinstance(value, str):
        raise TemplateError(f"not a string: {literal}")
    return value


# --- evaluation -----------------------------------------------------------------------------


class _Renderer:
    def __init__(self, defines: dict[str, list[Any]]) -> None:
        self.defines = defines
        self.functions: dict[str, Callable[..., Any]] = {
            "default": lambda fallback, value=None: value if _truthy(value) else fallback,
            "eq": lambda a, *b: any(a == x for x in b),
            "ne": lambda a, b: a != b,
            "not": lambda a: not _truthy(a),
            "and": _and,
            "or": _or,
            "empty": lambda a=None: not _truthy(a),
            "contains": lambda part, whole: _to_str(part) in _to_str(whole),
            "list": lambda *items: list(items),
            "quote": lambda *a: " ".join(json.dumps(_to_str(x)) for x in a),
            "squote": lambda *a: " ".join(f"'{_to_str(x)}'" for x in a),
            "printf": _printf,
            "trunc": lambda n, s: _to_str(s)[:n] if n >= 0 else _to_str(s)[n:],
            "trimSuffix": lambda suffix, s: _to_str(s).removesuffix(suffix),
            "lower": lambda s: _to_str(s).lower(),
            "toString": _to_str,
            "toYaml": _to_yaml,
            "indent": lambda n, s: _indent(n, _to_str(s)),
            "nindent": lambda n, s: "\n" + _indent(n, _to_str(s)),
            "required": _required,
            "b64enc": lambda s: base64.b64encode(_to_str(s).encode()).decode(),
        }

    def render(self, nodes: list[Any], dot: Any, scope: dict[str, Any]) -> str:
        out: list[str] = []
        for node in nodes:
            if isinstance(node, str):
                out.append(node)
            elif isinstance(node, _Pipeline):
                value = self.pipeline(node, dot, scope)
                if node.declare:
                    scope[node.declare[0]] = value
                else:
                    out.append(_print(value))
            elif isinstance(node, _Block):
                out.append(self.block(node, dot, scope))
        return "".join(out)

    def block(self, block: _Block, dot: Any, scope: dict[str, Any]) -> str:
        if block.kind == "define":
            return ""
        assert block.pipeline is not None
        value = self.pipeline(block.pipeline, dot, scope)
        inner = dict(scope)
        if block.kind == "if":
            chosen = block.body if _truthy(value) else block.otherwise
            return self.render(chosen, dot, inner)
        if block.kind == "with":
            if _truthy(value):
                return self.render(block.body, value, inner)
            return self.render(block.otherwise, dot, inner)
        # range
        if not _truthy(value):
            return self.render(block.otherwise, dot, inner)
        if isinstance(value, Mapping):
            items = [(k, value[k]) for k in sorted(value)]
        elif isinstance(value, Sequence) and not isinstance(value, str):
            items = list(enumerate(value))
        else:
            raise TemplateError(f"range over {type(value).__name__}")
        out = []
        names = block.pipeline.declare
        for key, item in items:
            if len(names) == 2:
                inner[names[0]], inner[names[1]] = key, item
            elif len(names) == 1:
                inner[names[0]] = item
            out.append(self.render(block.body, item, inner))
        return "".join(out)

    def pipeline(self, pipeline: _Pipeline, dot: Any, scope: dict[str, Any]) -> Any:
        value: Any = None
        for index, command in enumerate(pipeline.commands):
            piped = [value] if index > 0 else []
            value = self.command(command, dot, scope, piped)
        return value

    def command(self, command: list[Any], dot: Any, scope: dict[str, Any], piped: list[Any]) -> Any:
        first = command[0]
        if isinstance(first, tuple) and first[0] == "ident" and first[1] not in _LITERALS:
            name = first[1]
            args = [self.operand(op, dot, scope) for op in command[1:]] + piped
            if name == "include":
                if len(args) != 2:
                    raise TemplateError("include takes a name and a context")
                return self.include(args[0], args[1])
            function = self.functions.get(name)
            if function is None:
                raise TemplateError(f"function {name!r} is outside the supported subset")
            return function(*args)
        if len(command) > 1 or piped:
            raise TemplateError(f"cannot give arguments to a non-function: {command!r}")
        return self.operand(first, dot, scope)

    def operand(self, operand: Any, dot: Any, scope: dict[str, Any]) -> Any:
        if isinstance(operand, _Pipeline):
            return self.pipeline(operand, dot, scope)
        kind, value = operand
        if kind == "string":
            return _string(value)
        if kind == "number":
            return float(value) if "." in value else int(value)
        if kind == "ident":
            return _LITERALS[value]
        if kind == "field":
            return _walk(dot, value.split(".")[1:] if value != "." else [], value)
        if kind == "variable":
            name, *path = value.split(".")
            if name not in scope:
                raise TemplateError(f"undefined variable {name}")
            return _walk(scope[name], path, value)
        raise TemplateError(f"unexpected {value!r}")

    def include(self, name: object, context: Any) -> str:
        if not isinstance(name, str) or name not in self.defines:
            raise TemplateError(f"no template named {name!r}")
        return self.render(self.defines[name], context, {"$": context})


_LITERALS: dict[str, Any] = {"true": True, "false": False, "nil": None}


def _walk(value: Any, path: list[str], expression: str) -> Any:
    for part in path:
        if value is None:
            raise TemplateError(f"nil pointer evaluating {expression}")
        if not isinstance(value, Mapping):
            raise TemplateError(f"{expression}: cannot read {part!r} of {type(value).__name__}")
        value = value.get(part)
    return value


def _truthy(value: Any) -> bool:
    if value is None or value is False:
        return False
    if isinstance(value, int | float | str | list | dict | tuple):
        return bool(value)
    return True


def _and(*values: Any) -> Any:
    for value in values:
        if not _truthy(value):
            return value
    return values[-1]


def _or(*values: Any) -> Any:
    for value in values:
        if _truthy(value):
            return value
    return values[-1]


def _to_str(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, str | int | float):
        return str(value)
    raise TemplateError(f"cannot print a {type(value).__name__}; use toYaml")


def _print(value: Any) -> str:
    return _to_str(value)


def _printf(form: str, *args: Any) -> str:
    values = iter(args)

    def substitute(match: re.Match[str]) -> str:
        verb = match.group(1)
        if verb == "%":
            return "%"
        value = next(values)
        if verb == "d" and not isinstance(value, int):
            raise TemplateError(f"printf %d of {value!r}")
        return _to_str(value)

    return re.sub(r"%([sdv%])", substitute, form)


def _to_yaml(value: Any) -> str:
    return (
        yaml.safe_dump(value, default_flow_style=False, sort_keys=True)
        .rstrip("\n")
        .removesuffix("\n...")
    )


def _indent(n: int, text: str) -> str:
    pad = " " * n
    return pad + text.replace("\n", "\n" + pad)


def _required(message: str, value: Any) -> Any:
    if not _truthy(value):
        raise TemplateError(message)
    return value


# --- entry points ---------------------------------------------------------------------------


def _defines(nodes: list[Any], into: dict[str, list[Any]]) -> None:
    for node in nodes:
        if isinstance(node, _Block):
            if node.kind == "define":
                into[node.name] = node.body
            _defines(node.body, into)
            _defines(node.otherwise, into)


def render_text(source: str, context: Mapping[str, Any], helpers: Sequence[str] = ()) -> str:
    """Render one template with `context` as `.` (and `$`), after reading `helpers`' defines."""
    defines: dict[str, list[Any]] = {}
    for index, helper in enumerate(helpers):
        _defines(_parse(_split(helper, f"helper{index}"), f"helper{index}"), defines)
    nodes = _parse(_split(source, "template"), "template")
    _defines(nodes, defines)
    return _Renderer(defines).render(nodes, context, {"$": context})


def _deep_merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def render_chart(
    chart_dir: Path,
    values: Mapping[str, Any] | None = None,
    *,
    release: str = "slipway-worker",
    namespace: str = "slipway",
) -> dict[str, str]:
    """Render every template of the chart like `helm template`; file name → rendered text."""
    chart = yaml.safe_load((chart_dir / "Chart.yaml").read_text())
    defaults = yaml.safe_load((chart_dir / "values.yaml").read_text()) or {}
    context = {
        "Values": _deep_merge(defaults, values or {}),
        "Release": {
            "Name": release,
            "Namespace": namespace,
            "Service": "Helm",
            "IsInstall": True,
        },
        "Chart": {
            "Name": chart["name"],
            "Version": chart["version"],
            "AppVersion": chart.get("appVersion", ""),
        },
    }
    templates = chart_dir / "templates"
    helpers = [p.read_text() for p in sorted(templates.glob("_*.tpl"))]
    rendered: dict[str, str] = {}
    for path in sorted(templates.iterdir()):
        if path.name.startswith("_") or path.suffix not in (".yaml", ".txt"):
            continue
        try:
            rendered[path.name] = render_text(path.read_text(), context, helpers)
        except TemplateError as e:
            raise TemplateError(f"{path.name}: {e}") from e
    return rendered
