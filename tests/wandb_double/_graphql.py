"""A very small GraphQL executor for the W&B test double.

Why not answer each operation with a hand-written dict?  The SDK asks for
different field sets in different releases and paths (generated pydantic
queries with fragments and ``__typename``, hand-written queries in
``wandb/apis``, and the Go ``wandb-core`` sidecar's own queries).  Resolving the
*actual* selection set against a tree of plain dicts means the double answers
exactly the shape that was asked for, aliases and fragments included, and any
field it does not know is visible in the request log instead of silently
breaking a client-side validator.

Only what a W&B client sends is supported: one document with operations and
fragments, variables with defaults, aliases, arguments (literal or variable),
fragment spreads, inline fragments and ``@include``/``@skip``.  There is no
type system: objects are dicts whose values are either data or callables that
take the field's arguments.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Document",
    "GraphQLError",
    "execute",
    "parse",
]


class GraphQLError(Exception):
    """A failure reported to the client as ``{"errors": [...]}``.

    ``status`` lets a resolver ask for a non-200 HTTP status as well (the SDK's
    agent, for example, treats HTTP 404 on ``Heartbeat`` as "sweep deleted").
    """

    def __init__(self, message: str, *, status: int = 200) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass(frozen=True)
class Var:
    """A ``$name`` reference inside an argument value."""

    name: str


@dataclass
class Field:
    name: str
    alias: str | None
    args: dict[str, Any]
    directives: list[tuple[str, dict[str, Any]]]
    selections: list[Selection] | None


@dataclass
class Spread:
    name: str
    directives: list[tuple[str, dict[str, Any]]]


@dataclass
class Inline:
    type_condition: str | None
    directives: list[tuple[str, dict[str, Any]]]
    selections: list[Selection]


Selection = Field | Spread | Inline


@dataclass
class Operation:
    kind: str  # query | mutation | subscription
    name: str | None
    defaults: dict[str, Any]
    selections: list[Selection]


@dataclass
class Document:
    operations: list[Operation] = field(default_factory=list)
    fragments: dict[str, tuple[str, list[Selection]]] = field(default_factory=dict)

    def operation(self, name: str | None) -> Operation:
        """The operation to run: the named one, or the only one."""
        if name:
            for op in self.operations:
                if op.name == name:
                    return op
            raise GraphQLError(f"Unknown operation named {name!r}.")
        if len(self.operations) != 1:
            raise GraphQLError("Must provide operation name if query contains several operations.")
        return self.operations[0]


_TOKEN = re.compile(
    r"""
    (?P<skip>[\s,\ufeff]+|\#[^\n\r]*)
  | (?P<block>\"\"\"(?:\\\"\"\"|[^"]|"(?!""))*\"\"\")
  | (?P<string>"(?:\\.|[^"\\\n])*")
  | (?P<number>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)
  | (?P<spread>\.\.\.)
  | (?P<name>[_A-Za-z][_0-9A-Za-z]*)
  | (?P<punct>[!$&()\:=@\[\]{|}])
    """,
    re.VERBOSE,
)

_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


def _unescape(raw: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(raw):
        ch = raw[i]
        if ch == "\\" and i + 1 < len(raw):
            nxt = raw[i + 1]
            if nxt == "u":
                out.append(chr(int(raw[i + 2 : i + 6], 16)))
                i += 6
                continue
            out.append(_ESCAPES.get(nxt, nxt))
            i += 2
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def _tokenize(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            raise GraphQLError(f"Syntax Error: unexpected character {text[pos]!r} at {pos}.")
        pos = m.end()
        kind = m.lastgroup or ""
        if kind == "skip":
            continue
        value = m.group()
        if kind == "block":
            kind, value = "string", value[3:-3].replace('\\"""', '"""')
        elif kind == "string":
            value = _unescape(value[1:-1])
        tokens.append((kind, value))
    tokens.append(("eof", ""))
    return tokens


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokenize(text)
        self.i = 0

    def peek(self) -> tuple[str, str]:
        return self.tokens[self.i]

    def take(self, kind: str | None = None, value: str | None = None) -> str:
        tok_kind, tok_value = self.tokens[self.i]
        if (kind and tok_kind != kind) or (value is not None and tok_value != value):
            want = value or kind
            raise GraphQLError(f"Syntax Error: expected {want!r}, found {tok_value!r}.")
        self.i += 1
        return tok_value

    def at(self, value: str) -> bool:
        kind, tok_value = self.tokens[self.i]
        return kind in ("punct", "spread") and tok_value == value

    def document(self) -> Document:
        doc = Document()
        while self.peek()[0] != "eof":
            if self.at("{"):
                doc.operations.append(Operation("query", None, {}, self.selection_set()))
                continue
            keyword = self.take("name")
            if keyword == "fragment":
                name = self.take("name")
                self.take("name", "on")
                type_condition = self.take("name")
                self.directives()
                doc.fragments[name] = (type_condition, self.selection_set())
            elif keyword in ("query", "mutation", "subscription"):
                op_name = self.take("name") if self.peek()[0] == "name" else None
                defaults = self.variable_definitions() if self.at("(") else {}
                self.directives()
                doc.operations.append(Operation(keyword, op_name, defaults, self.selection_set()))
            else:
                raise GraphQLError(f"Syntax Error: unexpected {keyword!r}.")
        return doc

    def variable_definitions(self) -> dict[str, Any]:
        defaults: dict[str, Any] = {}
        self.take(value="(")
        while not self.at(")"):
            self.take(value="$")
            name = self.take("name")
            self.take(value=":")
            self.type_ref()
            if self.at("="):
                self.take(value="=")
                defaults[name] = self.value()
            self.directives()
        self.take(value=")")
        return defaults

    def type_ref(self) -> None:
        if self.at("["):
            self.take(value="[")
            self.type_ref()
            self.take(value="]")
        else:
            self.take("name")
        if self.at("!"):
            self.take(value="!")

    def directives(self) -> list[tuple[str, dict[str, Any]]]:
        found = []
        while self.at("@"):
            self.take(value="@")
            found.append((self.take("name"), self.arguments()))
        return found

    def arguments(self) -> dict[str, Any]:
        args: dict[str, Any] = {}
        if not self.at("("):
            return args
        self.take(value="(")
        while not self.at(")"):
            name = self.take("name")
            self.take(value=":")
            args[name] = self.value()
        self.take(value=")")
        return args

    def value(self) -> Any:
        kind, tok = self.peek()
        if self.at("$"):
            self.take(value="$")
            return Var(self.take("name"))
        if self.at("["):
            self.take(value="[")
            items = []
            while not self.at("]"):
                items.append(self.value())
            self.take(value="]")
            return items
        if self.at("{"):
            self.take(value="{")
            obj = {}
            while not self.at("}"):
                key = self.take("name")
                self.take(value=":")
                obj[key] = self.value()
            self.take(value="}")
            return obj
        self.i += 1
        if kind == "string":
            return tok
        if kind == "number":
            return float(tok) if any(c in tok for c in ".eE") else int(tok)
        if kind == "name":
            return {"true": True, "false": False, "null": None}.get(tok, tok)
        raise GraphQLError(f"Syntax Error: unexpected {tok!r}.")

    def selection_set(self) -> list[Selection]:
        self.take(value="{")
        selections: list[Selection] = []
        while not self.at("}"):
            if self.at("..."):
                self.take(value="...")
                if self.peek() == ("name", "on") or self.at("{") or self.at("@"):
                    type_condition = None
                    if self.peek() == ("name", "on"):
                        self.take("name")
                        type_condition = self.take("name")
                    directives = self.directives()
                    selections.append(Inline(type_condition, directives, self.selection_set()))
                else:
                    name = self.take("name")
                    selections.append(Spread(name, self.directives()))
                continue
            name = self.take("name")
            alias = None
            if self.at(":"):
                self.take(value=":")
                alias, name = name, self.take("name")
            args = self.arguments()
            directives = self.directives()
            sub = self.selection_set() if self.at("{") else None
            selections.append(Field(name, alias, args, directives, sub))
        self.take(value="}")
        return selections


_CACHE: dict[str, Document] = {}


def parse(text: str) -> Document:
    """Parse a GraphQL document (cached: the SDK sends the same texts again and again)."""
    doc = _CACHE.get(text)
    if doc is None:
        doc = _CACHE[text] = _Parser(text).document()
    return doc


def _substitute(value: Any, variables: Mapping[str, Any]) -> Any:
    if isinstance(value, Var):
        return variables.get(value.name)
    if isinstance(value, list):
        return [_substitute(v, variables) for v in value]
    if isinstance(value, dict):
        return {k: _substitute(v, variables) for k, v in value.items()}
    return value


@dataclass
class _Context:
    doc: Document
    variables: dict[str, Any]
    missing: list[str]


def _included(directives: list[tuple[str, dict[str, Any]]], ctx: _Context) -> bool:
    for name, args in directives:
        cond = bool(_substitute(args.get("if"), ctx.variables))
        if (name == "include" and not cond) or (name == "skip" and cond):
            return False
    return True


def _type_matches(condition: str | None, obj: Mapping[str, Any]) -> bool:
    """No schema: a fragment applies unless the object names a different type."""
    if condition is None:
        return True
    typename = obj.get("__typename")
    if typename is None or typename == condition:
        return True
    return condition in obj.get("__implements__", ())


def _collect(
    selections: list[Selection], obj: Mapping[str, Any], ctx: _Context, out: list[Field]
) -> None:
    for sel in selections:
        if not _included(sel.directives, ctx):
            continue
        if isinstance(sel, Field):
            out.append(sel)
        elif isinstance(sel, Spread):
            if sel.name not in ctx.doc.fragments:
                raise GraphQLError(f'Unknown fragment "{sel.name}".')
            condition, subs = ctx.doc.fragments[sel.name]
            if _type_matches(condition, obj):
                _collect(subs, obj, ctx, out)
        elif _type_matches(sel.type_condition, obj):
            _collect(sel.selections, obj, ctx, out)


def _complete(value: Any, sel: Field, ctx: _Context, path: str) -> Any:
    if value is None or sel.selections is None:
        return value
    if isinstance(value, list | tuple):
        return [_complete(v, sel, ctx, f"{path}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        return _select(value, sel.selections, ctx, path)
    return value


def _select(obj: Mapping[str, Any], selections: list[Selection], ctx: _Context, path: str) -> Any:
    fields: list[Field] = []
    _collect(selections, obj, ctx, fields)
    result: dict[str, Any] = {}
    for sel in fields:
        key = sel.alias or sel.name
        if sel.name == "__typename":
            result[key] = obj.get("__typename", "Object")
            continue
        if sel.name not in obj:
            ctx.missing.append(f"{path}.{sel.name}")
            result[key] = None
            continue
        value = obj[sel.name]
        if callable(value):
            args = {k: _substitute(v, ctx.variables) for k, v in sel.args.items()}
            value = value(args)
        completed = _complete(value, sel, ctx, f"{path}.{sel.name}")
        if key in result and isinstance(result[key], dict) and isinstance(completed, dict):
            result[key].update(completed)  # the same field selected twice: merge
        else:
            result[key] = completed
    return result


Resolver = Callable[[dict[str, Any]], Any]


def execute(
    doc: Document,
    operation_name: str | None,
    variables: Mapping[str, Any] | None,
    roots: Mapping[str, Mapping[str, Any]],
) -> tuple[Any, list[str]]:
    """Run one operation; return its ``data`` and the paths of fields nobody answered.

    ``roots`` maps ``query``/``mutation`` to the root object.  A root field that
    the root lacks is an error (it names the field), because an unknown
    top-level field means the double misses a whole feature; an unknown nested
    field is answered with ``null`` and reported back as *missing*.
    """
    op = doc.operation(operation_name)
    given = dict(variables or {})
    merged = {**{k: _substitute(v, given) for k, v in op.defaults.items()}, **given}
    ctx = _Context(doc, merged, [])
    root = roots.get(op.kind)
    if root is None:
        raise GraphQLError(f"The W&B test double does not support {op.kind} operations.")
    fields: list[Field] = []
    _collect(op.selections, root, ctx, fields)
    for sel in fields:
        if sel.name != "__typename" and sel.name not in root:
            raise GraphQLError(
                f"The W&B test double cannot answer {op.kind} {op.name or '(anonymous)'}: "
                f"no {op.kind} field {sel.name!r}."
            )
    return _select(root, op.selections, ctx, op.kind), ctx.missing
