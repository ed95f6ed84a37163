"""The scanning machinery of :mod:`mlthreat.kb.check`: where values are in the text, and the walk
over a parsed JSON/YAML file.

Each piece stays linear in the file size, so a hostile file is cheap: :class:`Lines` indexes ATLAS
IDs in one pass and searches for other values within a budget of passes, and :func:`walk` visits
each container once however often YAML aliases repeat it, and at most ``MAX_NODES`` values.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlthreat.kb.errors import DataFileError
from mlthreat.kb.ids import ANY_ID

if TYPE_CHECKING:
    pass

__all__ = ["MAX_NODES", "Lines", "walk"]

MAX_NODES = 5_000_000  # containers and values walked in one JSON/YAML file
_PATH_DEPTH = 64  # deeper locations are shown as the first 64 steps, "…", the last step
_KEY_CLIP = 64  # characters of a mapping key shown in a location


class Lines:
    """Line numbers of values in the text. ``find`` gives the next occurrence of a value, walking
    forward so repeats get their own line; ATLAS IDs are indexed in one pass, other values are
    searched for within a budget of passes over the text, so no file makes this quadratic."""

    def __init__(self, text: str) -> None:
        self.text = text
        self._starts: list[int] | None = None
        self._ids: dict[str, list[int]] | None = None
        self._budget = 64 * len(text) + (64 << 20)
        self.reset()

    def reset(self) -> None:
        self._next: dict[str, int] = {}
        self._absent: dict[str, int] = {}  # value -> a position after which it does not occur

    def line(self, at: int | None) -> int | None:
        if at is None:
            return None
        if self._starts is None:
            self._starts = [0, *(m.end() for m in re.finditer("\n", self.text))]
        return bisect.bisect_right(self._starts, at)

    def _positions(self, value: str) -> list[int] | None:
        if self._ids is None:
            self._ids = {}
            for m in ANY_ID.finditer(self.text):
                self._ids.setdefault(m.group(), []).append(m.start())
        return self._ids.get(value)

    def search(self, value: str, start: int) -> int | None:
        """The first position of ``value`` from ``start``; None if absent or over budget."""
        if not value or self._budget <= 0 or start >= self._absent.get(value, len(self.text) + 1):
            return None
        at = self.text.find(value, start)
        self._budget -= (at + len(value) if at >= 0 else len(self.text)) - start
        if at < 0:
            self._absent[value] = start
            return None
        return at

    def next_at(self, value: str, start: int) -> int | None:
        positions = self._positions(value)
        if positions is None:
            return self.search(value, start)
        i = bisect.bisect_left(positions, start)
        return positions[i] if i < len(positions) else None

    def find(self, value: str) -> int | None:
        positions = self._positions(value)
        if positions is not None:
            i = self._next.get(value, 0)
            self._next[value] = i + 1
            return self.line(positions[i]) if i < len(positions) else None
        at = self.search(value, self._next.get(value, 0))
        if at is not None:
            self._next[value] = at + len(value)
        return self.line(at)


def walk(root: Any, source: Path, chars: int,
         limit: int | None = None) -> Iterator[tuple[str, dict[str, str]]]:
    """Every mapping (its string fields) and every string list item, with its path, in document
    order. Iterative, so depth costs nothing; each container is walked once, so YAML aliases
    repeating one (a "billion laughs" file) are read once.

    Raises
    ------
    DataFileError
        When more than ``limit`` containers and values, or more than ``chars`` characters of
        strings (aliases repeating one long string) would be walked.
    """
    if isinstance(root, str):
        yield "text", {"": root}
        return
    limit = MAX_NODES if limit is None else limit
    seen: set[int] = set()
    walked = 0
    # (node, path, depth, the path at _PATH_DEPTH once deeper); a str is a list item to yield
    stack: list[tuple[Any, str, int, str]] = [(root, "", 0, "")]
    while stack:
        node, path, depth, head = stack.pop()
        if isinstance(node, str):
            chars -= len(node)
            if chars < 0:
                raise DataFileError(source, _TOO_MUCH_TEXT)
            yield path, {"": node}
            continue
        if not isinstance(node, dict | list) or id(node) in seen:
            continue
        seen.add(id(node))
        walked += 1 + len(node)
        if walked > limit:
            raise DataFileError(source, f"more than {limit:,} values to check (an alias bomb?); "
                                        "split the file")
        if depth == _PATH_DEPTH:
            head = path
        children: list[tuple[Any, str]]
        if isinstance(node, dict):
            fields = {_key(k): v for k, v in node.items() if isinstance(v, str)}
            chars -= sum(map(len, fields.values()))
            if chars < 0:
                raise DataFileError(source, _TOO_MUCH_TEXT)
            yield path or "$", fields
            children = [(v, f".{_key(k)[:_KEY_CLIP]}" if path else _key(k)[:_KEY_CLIP])
                        for k, v in node.items() if isinstance(v, dict | list)]
        else:
            children = [(v, f"[{i}]") for i, v in enumerate(node)
                        if isinstance(v, str | dict | list)]
        for child, step in reversed(children):
            stack.append((child, f"{head}…{step}" if head else path + step, depth + 1, head))


_TOO_MUCH_TEXT = ("its aliases repeat more text than the file holds several times over (an alias "
                  "bomb?); write the values out")


def _key(key: Any) -> str:
    if isinstance(key, str):
        return key
    try:
        return str(key)
    except ValueError:  # an integer too long to print
        return f"<{type(key).__name__}>"
