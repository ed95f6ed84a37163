"""One safe reader for every YAML or JSON file a user hands to mlthreat.

PyYAML's ``safe_load`` refuses arbitrary Python objects but not the other hostile inputs: an
alias bomb ("billion laughs") that expands nine aliases into a billion nodes, nesting thousands of
levels deep (``RecursionError`` far from the file), a key given twice (YAML and ``json`` keep the
last value silently), a file of gigabytes. This module composes the YAML event stream itself,
iteratively, on PyYAML's parser (the C one where available) and its ``SafeConstructor``, so it can
count what aliases expand to and how deep the document goes before any Python object exists:

- a file larger than ``max_bytes`` is refused before it is read;
- nesting deeper than ``max_depth`` containers is refused (counting through aliases);
- aliases that expand to more than ``max_alias_nodes`` nodes, and recursive aliases, are refused;
- a mapping key given twice is refused, naming both lines;
- JSON goes through :func:`json.loads` with the same duplicate and depth checks.

Every problem is a :class:`SafeLoadError` (``FILE:LINE: reason``, one line, values cut to a short
excerpt by :func:`excerpt`); callers turn it into their own layer's error. This module imports
nothing of the package but :mod:`mlthreat.errors`, so every layer may use it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from mlthreat.errors import MlthreatError

__all__ = [
    "MAX_ALIAS_NODES", "MAX_BYTES", "MAX_DEPTH", "SafeLoadError", "excerpt", "load",
    "parse_json", "parse_yaml", "parse_yaml_node", "read_text",
]

MAX_BYTES = 64 * 1024 * 1024
"""Default size cap of a user file (far above any profile, policy, layer or matrix file)."""
MAX_DEPTH = 100
"""Default bound on nested containers (real files stay under 15)."""
MAX_ALIAS_NODES = 100_000
"""Default bound on the nodes that YAML aliases expand to, summed over the document."""


class SafeLoadError(MlthreatError):
    """A user file that is unreadable, too large, malformed or hostile.

    ``path``, ``line`` (1-based, or None) and ``reason`` are kept so a caller can re-raise it as
    its own layer's error; ``str()`` is ``PATH:LINE: reason``.
    """

    def __init__(self, path: str | Path, reason: str, line: int | None = None) -> None:
        self.path = str(path)
        self.line = line
        self.reason = reason
        where = self.path if line is None else f"{self.path}:{line}"
        super().__init__(f"{where}: {reason}")


def excerpt(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to about ``limit`` characters, without building the whole repr of a
    huge or alias-shared structure."""
    import reprlib

    r = reprlib.Repr()
    r.maxlevel, r.maxlist, r.maxdict, r.maxstring, r.maxother = 2, 4, 4, limit, limit
    text = r.repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _one_line(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text if len(text) <= 200 else text[:199] + "…"


def read_text(path: str | Path, *, max_bytes: int = MAX_BYTES,
              encoding: str = "utf-8-sig") -> str:
    """The text of ``path``; refuses a missing or non-regular file, one larger than
    ``max_bytes`` (checked before reading), and text that is not ``encoding``."""
    p = Path(path)
    try:
        if not p.is_file():
            raise SafeLoadError(p, "not a regular file" if p.exists() else
                                "No such file or directory")
        size = p.stat().st_size
        if size > max_bytes:
            raise SafeLoadError(p, f"file is {size:,} bytes, over the {max_bytes:,}-byte limit "
                                "for a data file")
        with p.open("rb") as fh:
            raw = fh.read(max_bytes + 1)
    except OSError as exc:
        raise SafeLoadError(p, exc.strerror or _one_line(exc)) from None
    if len(raw) > max_bytes:
        raise SafeLoadError(p, f"file is over the {max_bytes:,}-byte limit for a data file")
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise SafeLoadError(p, f"not {encoding.removesuffix('-sig').upper()} text",
                            line=line) from None


def load(path: str | Path, *, max_bytes: int = MAX_BYTES, max_depth: int = MAX_DEPTH,
         max_alias_nodes: int = MAX_ALIAS_NODES) -> Any:
    """Parse a JSON or YAML file (JSON when it starts with ``{`` or ``[``) with every bound of
    this module. Raises :class:`SafeLoadError`."""
    text = read_text(path, max_bytes=max_bytes)
    if text.lstrip().startswith(("{", "[")):
        return parse_json(text, path, max_depth=max_depth)
    return parse_yaml(text, path, max_depth=max_depth, max_alias_nodes=max_alias_nodes)


# -- JSON -----------------------------------------------------------------------------------

class _Duplicate(Exception):
    def __init__(self, key: str) -> None:
        self.key = key


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _Duplicate(key)
            seen.add(key)
    return out


_JSON_TOKEN = re.compile(r'"|[\[\]{}:,]')


def _json_duplicate_lines(text: str) -> tuple[int, int] | None:
    """Lines of the first key given twice in one JSON object (slow; only on the error path)."""
    from json.decoder import scanstring  # type: ignore[attr-defined]

    stack: list[dict[str, int] | None] = []  # keys seen per open object; None for a list
    expect_key = False
    i = 0
    while (m := _JSON_TOKEN.search(text, i)) is not None:
        tok, i = m.group(), m.end()
        if tok == '"':
            value, i = scanstring(text, i)
            if expect_key and stack and stack[-1] is not None:
                line = text.count("\n", 0, m.start()) + 1
                if value in stack[-1]:
                    return stack[-1][value], line
                stack[-1][value] = line
            expect_key = False
        elif tok == "{":
            stack.append({})
            expect_key = True
        elif tok == "[":
            stack.append(None)
        elif tok in "]}":
            if stack:
                stack.pop()
            expect_key = False
        elif tok == ",":
            expect_key = bool(stack) and stack[-1] is not None
    return None


def _json_depth_ok(data: Any, max_depth: int) -> bool:
    todo: list[tuple[Any, int]] = [(data, 1)]
    while todo:
        value, depth = todo.pop()
        if depth > max_depth:
            return False
        if isinstance(value, dict):
            todo.extend((v, depth + 1) for v in value.values() if isinstance(v, (dict, list)))
        elif isinstance(value, list):
            todo.extend((v, depth + 1) for v in value if isinstance(v, (dict, list)))
    return True


def parse_json(text: str, source: str | Path = "<string>", *, max_depth: int = MAX_DEPTH) -> Any:
    """Parse JSON ``text``, refusing duplicate keys (naming both lines) and nesting deeper than
    ``max_depth``. ``source`` names the file in errors. Raises :class:`SafeLoadError`."""
    too_deep = f"nested deeper than {max_depth} levels"
    try:
        data = json.loads(text, object_pairs_hook=_pairs)
    except _Duplicate as dup:
        lines = _json_duplicate_lines(text)
        where = f" (lines {lines[0]} and {lines[1]})" if lines else ""
        raise SafeLoadError(source, f"key {excerpt(dup.key)} given twice{where}",
                            line=lines[1] if lines else None) from None
    except json.JSONDecodeError as exc:
        raise SafeLoadError(source, f"invalid JSON: {exc.msg}", line=exc.lineno) from None
    except RecursionError:
        raise SafeLoadError(source, f"invalid JSON: {too_deep}") from None
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        raise SafeLoadError(source, f"invalid JSON: {_one_line(exc)}") from None
    if not _json_depth_ok(data, max_depth):
        raise SafeLoadError(source, f"invalid JSON: {too_deep}")
    return data


# -- YAML -----------------------------------------------------------------------------------

def _loader(text: str) -> Any:
    import yaml

    return getattr(yaml, "CSafeLoader", yaml.SafeLoader)(text)


class _Frame:
    __slots__ = ("depth", "key", "keys", "node", "size")

    def __init__(self, node: Any) -> None:
        self.node = node
        self.size = 1
        self.depth = 1
        self.key: Any = None  # a mapping's key node waiting for its value
        self.keys: dict[tuple[str, str], int] = {}  # scalar key -> its line


def _compose(loader: Any, source: str | Path, max_depth: int, max_alias_nodes: int) -> Any:
    """The document's root node, composed iteratively from the parser's events with the
    bounds checked as it goes (PyYAML's own composer recurses and counts nothing)."""
    import yaml
    from yaml import events as ev
    from yaml import nodes

    def fail(reason: str, mark: Any) -> SafeLoadError:
        return SafeLoadError(source, reason, line=mark.line + 1 if mark is not None else None)

    loader.get_event()  # StreamStart
    if loader.check_event(ev.StreamEndEvent):
        loader.get_event()
        return None
    loader.get_event()  # DocumentStart
    anchors: dict[str, tuple[Any, int, int] | None] = {}  # None: still open (recursive alias)
    stack: list[_Frame] = []
    alias_nodes = 0
    root: Any = None
    done = False
    while not done:
        event: Any = loader.get_event()
        start: Any = event.start_mark  # the C parser's marks are not yaml.error.Mark
        end: Any = event.end_mark
        node: Any
        if isinstance(event, ev.AliasEvent):
            if event.anchor not in anchors:
                raise fail(f"alias *{excerpt(event.anchor, 40)} is not defined",
                           event.start_mark)
            target = anchors[event.anchor]
            if target is None:
                raise fail(f"alias *{excerpt(event.anchor, 40)} refers to itself",
                           event.start_mark)
            node, size, depth = target
            alias_nodes += size
            if alias_nodes > max_alias_nodes:
                raise fail(f"aliases expand to more than {max_alias_nodes:,} nodes",
                           event.start_mark)
        elif isinstance(event, ev.ScalarEvent):
            tag = event.tag
            if tag is None or tag == "!":
                tag = loader.resolve(nodes.ScalarNode, event.value, event.implicit)
            node = nodes.ScalarNode(tag, event.value, start, end,
                                    style=event.style)
            size, depth = 1, 0
            if event.anchor is not None:
                anchors[event.anchor] = (node, size, depth)
        elif isinstance(event, (ev.SequenceStartEvent, ev.MappingStartEvent)):
            seq = isinstance(event, ev.SequenceStartEvent)
            kind = nodes.SequenceNode if seq else nodes.MappingNode
            tag = event.tag
            if tag is None or tag == "!":
                tag = loader.resolve(kind, None, event.implicit)
            node = kind(tag, [], start, None, flow_style=event.flow_style)
            if len(stack) >= max_depth:
                raise fail(f"nested deeper than {max_depth} levels", event.start_mark)
            if event.anchor is not None:
                anchors[event.anchor] = None
            stack.append(_Frame(node))
            node.anchor = event.anchor  # remembered until the end event
            continue
        elif isinstance(event, (ev.SequenceEndEvent, ev.MappingEndEvent)):
            frame = stack.pop()
            node, size, depth = frame.node, frame.size, frame.depth
            node.end_mark = event.end_mark
            if node.anchor is not None:
                anchors[node.anchor] = (node, size, depth)
            del node.anchor
        else:
            raise fail(f"unexpected {type(event).__name__}", event.start_mark)
        if len(stack) + depth > max_depth:
            raise fail(f"nested deeper than {max_depth} levels", event.start_mark)
        if not stack:
            root, done = node, True
            continue
        parent = stack[-1]
        parent.size += size
        parent.depth = max(parent.depth, depth + 1)
        if isinstance(parent.node, nodes.SequenceNode):
            parent.node.value.append(node)
        elif parent.key is None:
            parent.key = node
            if isinstance(node, nodes.ScalarNode) and node.tag != "tag:yaml.org,2002:merge":
                line = node.start_mark.line + 1
                first = parent.keys.get((node.tag, node.value))
                if first is not None:
                    raise fail(f"key {excerpt(node.value)} given twice (lines {first} and "
                               f"{line})", node.start_mark)
                parent.keys[(node.tag, node.value)] = line
        else:
            parent.node.value.append((parent.key, node))
            parent.key = None
    loader.get_event()  # DocumentEnd
    if not loader.check_event(ev.StreamEndEvent):
        raise fail("expected a single document, found another",
                   loader.peek_event().start_mark)
    loader.get_event()
    if not isinstance(root, yaml.Node):
        return None
    return root


def parse_yaml_node(text: str, source: str | Path = "<string>", *, max_depth: int = MAX_DEPTH,
                    max_alias_nodes: int = MAX_ALIAS_NODES) -> tuple[Any, Any]:
    """Parse YAML ``text`` into ``(data, root_node)``: the data as ``yaml.safe_load`` gives it,
    and the composed node tree (with line marks) for callers that point at lines. Raises
    :class:`SafeLoadError` for bad syntax, a duplicate key, nesting deeper than ``max_depth``,
    aliases expanding past ``max_alias_nodes`` nodes, or a value the safe constructor refuses."""
    import yaml

    loader = _loader(text)
    try:
        root = _compose(loader, source, max_depth, max_alias_nodes)
        data = None if root is None else loader.construct_document(root)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid"
        raise SafeLoadError(source, f"invalid YAML: {_one_line(Exception(problem))}",
                            line=mark.line + 1 if mark is not None else None) from None
    except yaml.YAMLError as exc:
        raise SafeLoadError(source, f"invalid YAML: {_one_line(exc)}") from None
    except RecursionError:
        raise SafeLoadError(source, "invalid YAML: nested too deeply") from None
    except (ValueError, OverflowError, TypeError) as exc:  # impossible dates, long numbers
        raise SafeLoadError(source, f"invalid YAML: {_one_line(exc)}") from None
    finally:
        loader.dispose()
    return data, root


def parse_yaml(text: str, source: str | Path = "<string>", *, max_depth: int = MAX_DEPTH,
               max_alias_nodes: int = MAX_ALIAS_NODES) -> Any:
    """Parse YAML ``text`` like :func:`parse_yaml_node` and return only the data."""
    return parse_yaml_node(text, source, max_depth=max_depth,
                           max_alias_nodes=max_alias_nodes)[0]
