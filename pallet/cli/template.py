"""docker's --format templates: the part of Go's text/template that docker users write
({{.A.B}}, pipelines, range/if/with/else/end, $variables) and docker's functions.

Pure: render(template, data) returns text. Values print as Go prints them (lists as
[a b], maps as map[k:v], a missing key as <no value>). A dict value that is callable is a
method: {{.Label "app"}} calls data["Label"]("app").
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from typing import Any

from pallet.errors import InvalidArgument


class TemplateError(InvalidArgument):
    """A template that does not parse, or fails while it runs."""


_MISSING = object()  # a key the data does not have: Go prints it as <no value>


# -- printing as Go does ------------------------------------------------------------------------
def go_str(v: Any) -> str:
    if v is _MISSING:
        return "<no value>"
    if v is None:
        return "<nil>"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e21:
        return str(int(v))
    if isinstance(v, (list, tuple)):
        return "[" + " ".join(go_str(x) for x in v) + "]"
    if isinstance(v, dict):
        return "map[" + " ".join(f"{k}:{go_str(v[k])}" for k in sorted(v)) + "]"
    return str(v)


def _data(v: Any) -> Any:
    """V without its methods (callables), as JSON sees a Go struct."""
    if isinstance(v, dict):
        return {k: _data(x) for k, x in v.items() if not callable(x)}
    if isinstance(v, (list, tuple)):
        return [_data(x) for x in v]
    return None if v is _MISSING else v


def to_json(v: Any) -> str:
    """docker's json function: compact, no HTML escaping, UTF-8 kept."""
    return json.dumps(_data(v), separators=(",", ":"), ensure_ascii=False)


def _truthy(v: Any) -> bool:
    return v not in (None, _MISSING) and v is not False and v != 0 and v != "" \
        and not (isinstance(v, (list, tuple, dict)) and not v)


def _index(v: Any, *keys: Any) -> Any:
    for k in keys:
        if isinstance(v, dict):
            v = v.get(k, "")  # docker's maps are of strings: a missing key is ""
        elif isinstance(v, (list, tuple, str)):
            try:
                v = v[int(k)]
            except (IndexError, ValueError) as e:
                raise TemplateError(f"error calling index: index out of range: {k}") from e
        elif v in (None, _MISSING):
            return _MISSING
        else:
            raise TemplateError(f"can't index item of type {type(v).__name__}")
    return v


def _printf(fmt: str, *args: Any) -> str:
    conv = iter(args)

    def one(m: re.Match[str]) -> str:
        spec = m.group(0)
        if spec == "%%":
            return "%"
        arg = next(conv, "")
        if spec[-1] == "v" or spec[-1] == "s":
            return ("%" + spec[1:-1] + "s") % go_str(arg)
        if spec[-1] == "q":
            return json.dumps(go_str(arg))
        return spec % arg
    return re.sub(r"%[-+ #0]*\d*(?:\.\d+)?[vsdqfxXeg%]", one, fmt)


def _cmp(op: Callable[[Any, Any], bool]) -> Callable[..., bool]:
    def f(a: Any, *bs: Any) -> bool:
        return any(op(a, b) for b in bs) if op is _eq else op(a, bs[0])
    return f


def _eq(a: Any, b: Any) -> bool:
    return bool(a == b)


FUNCS: dict[str, Callable[..., Any]] = {
    # docker's own
    "json": to_json,
    "split": lambda s, sep: str(s).split(sep),
    "join": lambda items, sep: sep.join(go_str(x) for x in items or []),
    "title": lambda s: str(s).title(),
    "lower": lambda s: str(s).lower(),
    "upper": lambda s: str(s).upper(),
    "pad": lambda s, before, after: " " * int(before) + go_str(s) + " " * int(after),
    "truncate": lambda s, n: go_str(s)[:int(n)],
    # Go's builtins
    "index": _index,
    "len": lambda v: len(v) if v not in (None, _MISSING) else 0,
    "print": lambda *a: "".join(go_str(x) for x in a),
    "println": lambda *a: " ".join(go_str(x) for x in a) + "\n",
    "printf": _printf,
    "not": lambda v: not _truthy(v),
    "and": lambda *a: next((x for x in a if not _truthy(x)), a[-1]),
    "or": lambda *a: next((x for x in a if _truthy(x)), a[-1]),
    "eq": _cmp(_eq),
    "ne": _cmp(lambda a, b: a != b),
    "lt": _cmp(lambda a, b: a < b),
    "le": _cmp(lambda a, b: a <= b),
    "gt": _cmp(lambda a, b: a > b),
    "ge": _cmp(lambda a, b: a >= b),
}


# -- lexing ---------------------------------------------------------------------------------------
_ACTION = re.compile(r"\{\{(-\s)?(.*?)(\s-)?\}\}", re.S)
_TOKEN = re.compile(r"""
    \s*(?:
      (?P<str>"(?:[^"\\]|\\.)*"|`[^`]*`)
    | (?P<num>-?\d+(?:\.\d+)?)
    | (?P<var>\$[A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*)
    | (?P<field>(?:\.[A-Za-z0-9_]+)+|\.)
    | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
    | (?P<op>:=|=|\||\(|\)|,)
    )""", re.X)


def _tokens(text: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise TemplateError(f"template: unexpected {text[pos:].strip()[:20]!r} in "
                                f"{{{{{text}}}}}")
        kind = m.lastgroup or ""
        out.append((kind, m.group(kind)))
        pos = m.end()
        while pos < len(text) and text[pos].isspace():
            pos += 1
    return out


# -- parsing ----------------------------------------------------------------------------------------
# A node is ("text", str) | ("action", decl, pipeline) | ("range"|"if"|"with", decl, pipeline,
# body, else_body). A pipeline is a list of commands; a command a list of operands.

def _parse(template: str) -> list[Any]:
    pieces: list[tuple[str, str]] = []
    pos = 0
    for m in _ACTION.finditer(template):
        text = template[pos:m.start()]
        if m.group(1):
            text = text.rstrip()
        pieces.append(("text", text))
        pieces.append(("action", m.group(2)))
        pos = m.end()
        if m.group(3):
            rest = template[pos:]
            pos += len(rest) - len(rest.lstrip())
    pieces.append(("text", template[pos:]))
    if any(kind == "text" and "{{" in text for kind, text in pieces):
        raise TemplateError(f"template: unclosed action in {template!r}")
    it = iter(pieces)
    body, end = _parse_list(it)
    if end is not None:
        raise TemplateError(f"template: unexpected {{{{{end}}}}}")
    return body


def _parse_list(it: Iterator[tuple[str, str]]) -> tuple[list[Any], str | None]:
    """Nodes up to an {{else...}} or {{end}} (returned as the second item)."""
    nodes: list[Any] = []
    for kind, text in it:
        if kind == "text":
            if text:
                nodes.append(("text", text))
            continue
        text = text.strip()
        if text.startswith("/*"):
            continue
        word = text.split(None, 1)[0] if text else ""
        if word in ("end", "else"):
            return nodes, text
        if word in ("range", "if", "with"):
            decl, pipe = _pipeline(text[len(word):])
            body, end = _parse_list(it)
            else_body: list[Any] = []
            if end is not None and end.startswith("else"):
                # {{else if X}} is {{else}}{{if X}}...{{end}} sharing our {{end}}
                else_body, end = _parse_list(it) if end == "else" else _else_chain(end, it)
            if end != "end":
                raise TemplateError(f"template: unexpected EOF: {{{{{word}}}}} has no {{{{end}}}}")
            nodes.append((word, decl, pipe, body, else_body))
        elif word in ("define", "template", "block", "break", "continue"):
            raise TemplateError(f"template: {{{{{word}}}}} is not supported")
        else:
            decl, pipe = _pipeline(text)
            nodes.append(("action", decl, pipe))
    return nodes, None


def _else_chain(end: str, it: Iterator[tuple[str, str]]) -> tuple[list[Any], str | None]:
    rest = end[4:].strip()
    inner = rest.split(None, 1)[0]
    decl, pipe = _pipeline(rest[len(inner):])
    body, iend = _parse_list(it)
    else_body: list[Any] = []
    if iend is not None and iend.startswith("else"):
        else_body, iend = _parse_list(it) if iend == "else" else _else_chain(iend, it)
    return [(inner, decl, pipe, body, else_body)], iend


def _pipeline(text: str) -> tuple[list[str], list[list[Any]]]:
    toks = _tokens(text)
    decl: list[str] = []
    # "$v := ..." or "$k, $v := ..."
    for i, (kind, val) in enumerate(toks):
        if kind == "op" and val in (":=", "="):
            decl = [v for k, v in toks[:i] if k == "var"]
            toks = toks[i + 1:]
            break
    pos = 0

    def operand() -> Any:
        nonlocal pos
        kind, val = toks[pos]
        pos += 1
        if kind == "op" and val == "(":
            cmds = commands(")")
            pos += 1  # the ")"
            node: Any = ("pipe", cmds)
            if pos < len(toks) and toks[pos][0] == "field" and toks[pos][1] != ".":
                node = ("chain", node, toks[pos][1])
                pos += 1
            return node
        if kind == "str":
            return ("lit", val[1:-1] if val[0] == "`" else json.loads(val))
        if kind == "num":
            return ("lit", float(val) if "." in val else int(val))
        if kind == "ident" and val in ("true", "false", "nil"):
            return ("lit", {"true": True, "false": False, "nil": None}[val])
        if kind in ("field", "var", "ident"):
            return (kind, val)
        raise TemplateError(f"template: unexpected {val!r} in {{{{{text.strip()}}}}}")

    def commands(stop: str | None) -> list[list[Any]]:
        nonlocal pos
        cmds: list[list[Any]] = [[]]
        while pos < len(toks) and toks[pos] != ("op", stop):
            if toks[pos] == ("op", "|"):
                pos += 1
                cmds.append([])
                continue
            if toks[pos] == ("op", ","):
                pos += 1
                continue
            cmds[-1].append(operand())
        if stop and pos >= len(toks):
            raise TemplateError(f"template: unclosed '(' in {{{{{text.strip()}}}}}")
        if any(not c for c in cmds):
            raise TemplateError(f"template: missing value in {{{{{text.strip()}}}}}")
        return cmds

    return decl, commands(None)


# -- running --------------------------------------------------------------------------------------
class _Run:
    def __init__(self, strict: bool):
        self.strict = strict
        self.vars: list[dict[str, Any]] = []

    def field(self, obj: Any, path: str, args: list[Any]) -> Any:
        parts = [p for p in path.split(".") if p]
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if isinstance(obj, dict):
                if part in obj:
                    obj = obj[part]
                elif self.strict:
                    raise TemplateError(f"template: can't evaluate field {part}")
                else:
                    obj = _MISSING
            elif obj in (None, _MISSING):
                return _MISSING if obj is _MISSING or not self.strict else None
            else:
                raise TemplateError(f"template: can't evaluate field {part} in type "
                                    f"{type(obj).__name__}")
            if callable(obj):
                obj = obj(*args) if last else obj()
            elif last and args:
                raise TemplateError(f"template: {part} is not a method but has arguments")
        return obj

    def lookup_var(self, name: str) -> Any:
        for scope in reversed(self.vars):
            if name in scope:
                return scope[name]
        raise TemplateError(f"template: undefined variable: {name}")

    def operand(self, node: Any, dot: Any, args: list[Any]) -> Any:
        kind = node[0]
        if kind == "lit":
            return node[1]
        if kind == "field":
            return dot if node[1] == "." else self.field(dot, node[1], args)
        if kind == "var":
            name, _, rest = node[1].partition(".")
            return self.field(self.lookup_var(name), rest, args) if rest \
                else self.lookup_var(name)
        if kind == "pipe":
            return self.pipeline(node[1], dot)
        if kind == "chain":
            return self.field(self.pipeline(node[1][1], dot), node[2], args)
        if kind == "ident":
            fn = FUNCS.get(node[1])
            if fn is None:
                raise TemplateError(f'template: function "{node[1]}" not defined')
            return fn(*args)
        raise TemplateError(f"template: cannot evaluate {node!r}")

    def command(self, cmd: list[Any], dot: Any, piped: Any) -> Any:
        head, rest = cmd[0], cmd[1:]
        args = [self.operand(a, dot, []) for a in rest]
        if piped is not _NOTHING:
            args.append(piped)
        if head[0] in ("lit",) and args:
            raise TemplateError("template: can't give argument to non-function")
        return self.operand(head, dot, args)

    def pipeline(self, cmds: list[list[Any]], dot: Any) -> Any:
        value: Any = _NOTHING
        for cmd in cmds:
            value = self.command(cmd, dot, value)
        return value

    def nodes(self, nodes: list[Any], dot: Any, out: list[str]) -> None:
        for node in nodes:
            kind = node[0]
            if kind == "text":
                out.append(node[1])
                continue
            decl, pipe = node[1], node[2]
            value = self.pipeline(pipe, dot)
            if kind == "action":
                if decl:
                    self.vars[-1][decl[0]] = value
                else:
                    out.append(go_str(value))
            elif kind in ("if", "with"):
                if _truthy(value):
                    self.vars.append({decl[0]: value} if decl else {})
                    self.nodes(node[3], value if kind == "with" else dot, out)
                    self.vars.pop()
                else:
                    self.nodes(node[4], dot, out)
            else:  # range
                if isinstance(value, dict):
                    items = [(k, value[k]) for k in sorted(value)]
                elif isinstance(value, (list, tuple)):
                    items = list(enumerate(value))
                elif isinstance(value, int) and not isinstance(value, bool):
                    items = [(i, i) for i in range(value)]
                elif value in (None, _MISSING):
                    items = []
                else:
                    raise TemplateError(f"template: range can't iterate over {go_str(value)}")
                if not items:
                    self.nodes(node[4], dot, out)
                for k, v in items:
                    scope: dict[str, Any] = {}
                    if len(decl) == 1:
                        scope[decl[0]] = v
                    elif len(decl) >= 2:
                        scope[decl[0]], scope[decl[1]] = k, v
                    self.vars.append(scope)
                    self.nodes(node[3], v, out)
                    self.vars.pop()


_NOTHING = object()


class Template:
    """A parsed template; render() may be called for many objects."""

    def __init__(self, text: str, strict: bool = False):
        # docker lets users type \t and \n in a shell-quoted --format.
        self.text = text.replace("\\t", "\t").replace("\\n", "\n")
        self.nodes = _parse(self.text)
        self.strict = strict

    def render(self, data: Any) -> str:
        run = _Run(self.strict)
        run.vars.append({"$": data})
        out: list[str] = []
        try:
            run.nodes(self.nodes, data, out)
        except TemplateError:
            raise
        except (TypeError, ValueError, KeyError, AttributeError) as e:
            raise TemplateError(f"template: error executing {self.text!r}: {e}") from None
        return "".join(out)

    def fields(self) -> list[str]:
        """The top-level {{.Field}} names used, in order (for a table's header)."""
        return re.findall(r"\{\{-?\s*\.([A-Za-z0-9_]+)", self.text)


def render(text: str, data: Any, strict: bool = False) -> str:
    return Template(text, strict).render(data)


def render_table(text: str, rows: list[dict[str, Any]], headers: dict[str, str],
                 strict: bool = True) -> str:
    """docker's `table TEMPLATE`: a header row (each {{.Field}} replaced by its column
    name), then one line per row, tab-separated cells aligned like Go's tabwriter."""
    tmpl = Template(text, strict)
    head_row: dict[str, Any] = {}
    for key in set(tmpl.fields()) | set(rows[0] if rows else {}):
        name = headers.get(key, key.upper())
        head_row[key] = (lambda *_a, n=name: n) if rows and callable(rows[0].get(key)) \
            else name
    lines = [tmpl.render(head_row)] + [tmpl.render(r) for r in rows]
    return align("\n".join(lines))


def align(text: str, minwidth: int = 10, padding: int = 3) -> str:
    """Go's tabwriter as docker configures it: tab-separated cells padded to columns."""
    rows = [line.split("\t") for line in text.split("\n")]
    widths: dict[int, int] = {}
    for cells in rows:
        for i, c in enumerate(cells[:-1]):
            widths[i] = max(widths.get(i, 0), len(c) + padding, minwidth)
    return "\n".join("".join(c.ljust(widths[i]) if i < len(cells) - 1 else c
                             for i, c in enumerate(cells)).rstrip()
                     for cells in rows)


def print_formatted(fmt: str | None, rows: list[dict[str, Any]], headers: dict[str, str],
                    default: Callable[[], None]) -> None:
    """docker's --format of a listing: "" or "table" (DEFAULT, the command's own table),
    "json" (one object a line), "table TEMPLATE" (a header and aligned columns) or a
    template (one line per row). A row's callables ({{.Label "k"}}) are not in its json."""
    if not fmt or fmt == "table":
        default()
    elif fmt == "json":
        for row in rows:
            print(json.dumps({k: v for k, v in row.items() if not callable(v)},
                             separators=(",", ":"), ensure_ascii=False))
    elif fmt.startswith(("table ", "table\t")):
        print(render_table(fmt[6:], rows, headers))
    else:
        tmpl = Template(fmt, strict=True)
        for row in rows:
            print(tmpl.render(row))


def format_inspected(fmt: str | None, objects: list[Any]) -> str:
    """What docker's inspect commands print: the objects as an indented JSON array (FMT
    empty or "json"), or FMT rendered once per object, a line each (no object: nothing)."""
    if not fmt or fmt == "json":
        return json.dumps(objects, indent=4) + "\n"
    tmpl = Template(fmt)
    return "".join(tmpl.render(obj) + "\n" for obj in objects)
