"""Reading ATT&CK Navigator layer files (format 4.x; 3.0 and 4.0-4.2 with a warning) back into
plain data.

Used by ``mlthreat kb export --scores`` (a layer as a score source, :func:`read_scores`) and by
anyone who wants the scores, comments, colours and tactics a layer assigns to ATLAS techniques.
An entry with a ``tactic`` is one cell of the matrix (the technique under that tactic); an entry
without one is the technique in every cell it has. IDs are validated against the full ATLAS
pattern, never a ``T`` prefix, so layers of organisation extensions read too.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from mlthreat.kb.errors import DataFileError, DataWarning
from mlthreat.kb.ids import kind_of
from mlthreat.kb.sources import MAX_BYTES

if TYPE_CHECKING:
    from mlthreat.kb.model import KnowledgeBase

__all__ = ["Layer", "Scores", "is_number", "read_layer", "read_scores"]

_Key = tuple[str, str | None]  # (techniqueID, tactic short name or None)


def is_number(value: object) -> bool:
    """A finite int or float that is not a bool."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class Layer:
    """What a Navigator layer file says about the matrix.

    ``tactic_scores`` keys are ``(techniqueID, tactic short name or None)``; ``scores`` holds
    one score per technique (the highest, when its entries are scored differently by tactic).
    ``comments`` are keyed as ``tactic_scores``. ``colored`` are the techniques with an explicit
    colour on some entry; ``tactics`` lists, per technique, the tactics its entries name, in file
    order. ``warnings`` say what was read past (no ``versions``, a format older than 4.3).
    """

    name: str
    domain: str
    layer_version: str | None
    navigator_version: str | None
    atlas_data_version: str | None
    description: str = ""
    scores: dict[str, float] = field(default_factory=dict)
    tactic_scores: dict[_Key, float] = field(default_factory=dict)
    colored: frozenset[str] = frozenset()
    tactics: dict[str, tuple[str, ...]] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)
    comments: dict[_Key, str] = field(default_factory=dict)
    warnings: tuple[DataWarning, ...] = ()


_WS = re.compile(r"\s*")


def _entry_lines(text: str) -> list[int]:
    """Line where each element of the top-level ``techniques`` array starts (best effort)."""
    decoder = json.JSONDecoder()

    def skip(i: int, sep: str = "") -> int:
        i = _WS.match(text, i).end()  # type: ignore[union-attr]
        if sep and text[i] == sep:
            i = _WS.match(text, i + 1).end()  # type: ignore[union-attr]
        return i

    lines: list[int] = []
    try:
        i = skip(0)
        if text[i] != "{":
            return []
        i = skip(i + 1)
        while text[i] == '"':
            key, i = json.decoder.scanstring(text, i + 1)  # type: ignore[attr-defined]
            i = skip(i, ":")
            if key == "techniques" and text[i] == "[":
                lines, i = [], skip(i + 1)
                line, counted = 1, 0  # newlines counted once, not from the start per entry
                while text[i] != "]":
                    line += text.count("\n", counted, i)
                    counted = i
                    lines.append(line)
                    i = skip(decoder.raw_decode(text, i)[1], ",")
                i += 1
            else:
                i = decoder.raw_decode(text, i)[1]
            i = skip(i, ",")
    except (IndexError, ValueError):
        pass
    return lines


def read_layer(path: str | Path) -> Layer:
    """Read a Navigator layer file (format 4.x) and check its technique entries.

    Parameters
    ----------
    path : str or Path
        The layer file (a JSON object, or a list holding one).

    Returns
    -------
    Layer

    Raises
    ------
    DataFileError
        When the file cannot be read, is not JSON, is not a 4.x layer, or an entry lacks a
        ``techniqueID``, names an ID that is not an ATLAS technique ID, or has a field of the
        wrong type. The message names the file, the line, the entry (``techniques[3]``) and the
        field.
    """
    p = Path(path)
    from mlthreat.safeload import SafeLoadError, parse_json, read_text

    try:
        text = read_text(p, max_bytes=MAX_BYTES)
        data = parse_json(text, p)
    except SafeLoadError as exc:
        raise DataFileError(exc.path, exc.reason, line=exc.line) from None
    lines = _entry_lines(text)
    if isinstance(data, list) and len(data) == 1:
        data, lines = data[0], []
    if not isinstance(data, dict):
        raise DataFileError(p, "not a Navigator layer: expected a JSON object with 'techniques'")

    def fail(message: str, field: str, entry: str | None = None, line: int | None = None
             ) -> NoReturn:
        raise DataFileError(p, message, line=line, entry=entry, field=field)

    for key in ("name", "domain"):
        if not isinstance(data.get(key), str):
            fail(f"a layer needs a string '{key}'", key)
    versions = data.get("versions", {})
    if not isinstance(versions, dict):
        fail("'versions' must be an object", "versions")
    layer_version = versions.get("layer")
    if "versions" not in data and "version" in data:
        layer_version = str(data["version"])
    warnings: list[DataWarning] = []
    if layer_version is None:
        warnings.append(DataWarning(str(p), "layer-version", "no 'versions' block giving the "
                                    "layer format; read as a 4.x layer", field="versions"))
    elif re.fullmatch(r"3\.\d+|4\.[0-2]", str(layer_version)):
        warnings.append(DataWarning(
            str(p), "layer-version", f"layer format {layer_version} is older than 4.3; read "
            "as 4.x (technique entries have kept their fields)", field="versions.layer"))
    elif not re.fullmatch(r"4\.\d+", str(layer_version)):
        fail(f"layer format {layer_version!r} is not supported; mlthreat reads 3.0 and 4.x "
             "layers", "versions.layer")
    techniques = data.get("techniques")
    if not isinstance(techniques, list):
        fail("not a Navigator layer: no 'techniques' list", "techniques")
    metadata = {
        m["name"]: m["value"]
        for m in data.get("metadata") or ()
        if isinstance(m, dict) and isinstance(m.get("name"), str)
        and isinstance(m.get("value"), str)
    }

    tactic_scores: dict[_Key, float] = {}
    scores: dict[str, float] = {}
    colored: set[str] = set()
    tactics: dict[str, list[str]] = {}
    comments: dict[_Key, str] = {}
    for i, raw in enumerate(techniques):
        line = lines[i] if i < len(lines) else None
        where = f"techniques[{i}]"
        if not isinstance(raw, dict):
            fail("a technique entry must be an object", "techniqueID", where, line)
        tid = raw.get("techniqueID")
        if tid is None:
            fail("missing techniqueID", "techniqueID", where, line)
        if not isinstance(tid, str) or kind_of(tid) not in ("technique", "sub-technique"):
            fail(f"{tid!r} is not an ATLAS technique ID (like AML.T0000 or AML.T0000.000)",
                 "techniqueID", where, line)
        where = f"{where} ({tid})"
        tactic = raw.get("tactic")
        if tactic is not None and (not isinstance(tactic, str) or not tactic):
            fail(f"tactic must be a tactic short name, not {tactic!r}", "tactic", where, line)
        score = raw.get("score")
        if score is not None:
            if not is_number(score):
                fail(f"score must be a finite number, not {score!r}", "score", where, line)
            tactic_scores[(tid, tactic)] = float(score)
            scores[tid] = max(float(score), scores.get(tid, -math.inf))
        comment = raw.get("comment")
        if comment is not None and not isinstance(comment, str):
            fail(f"comment must be a string, not {comment!r}", "comment", where, line)
        if comment:
            comments[(tid, tactic)] = comment
        color = raw.get("color")
        if color is not None and not isinstance(color, str):
            fail(f"color must be a string, not {color!r}", "color", where, line)
        if color:
            colored.add(tid)
        if tactic and tactic not in tactics.setdefault(tid, []):
            tactics[tid].append(tactic)
    description = data.get("description")
    return Layer(
        name=data["name"],
        domain=data["domain"],
        layer_version=None if layer_version is None else str(layer_version),
        navigator_version=None if versions.get("navigator") is None else str(versions["navigator"]),
        atlas_data_version=metadata.get("atlas_data_version"),
        description=description if isinstance(description, str) else "",
        scores=scores,
        tactic_scores=tactic_scores,
        colored=frozenset(colored),
        tactics={k: tuple(v) for k, v in tactics.items() if v},
        metadata=metadata,
        comments=comments,
        warnings=tuple(warnings),
    )


@dataclass(frozen=True)
class Scores:
    """Scores read from a file, by cell: ``(technique ID, tactic short name)`` for one cell,
    ``(technique ID, None)`` for every cell of the technique. ``comments`` are keyed the same
    way (layers only); ``warnings`` are the layer's."""

    cells: dict[_Key, float]
    comments: dict[_Key, str] = field(default_factory=dict)
    warnings: tuple[DataWarning, ...] = ()

    @property
    def by_technique(self) -> dict[str, float]:
        """One score per technique: the highest of its cells."""
        out: dict[str, float] = {}
        for (tid, _), value in self.cells.items():
            out[tid] = max(value, out.get(tid, -math.inf))
        return out


def read_scores(path: str | Path, kb: KnowledgeBase) -> Scores:
    """Scores from a JSON/YAML mapping of technique ID to number, or a Navigator layer (JSON,
    its per-tactic scores and comments kept).

    Raises
    ------
    DataFileError
        Naming the file and entry for anything that is not a finite number keyed by a
        technique or sub-technique of ``kb``.
    """
    from mlthreat.kb.sources import read_structured
    from mlthreat.safeload import excerpt

    p = Path(path)
    data = read_structured(p)
    comments: dict[_Key, str] = {}
    warnings: tuple[DataWarning, ...] = ()
    if isinstance(data, dict) and "techniques" in data:
        if p.suffix.lower() in (".yaml", ".yml"):
            raise DataFileError(p, "Navigator layers are JSON files")
        layer = read_layer(p)
        cells = dict(layer.tactic_scores)
        comments, warnings = dict(layer.comments), layer.warnings
    elif isinstance(data, dict):
        cells = {}
        for key, value in data.items():
            if not is_number(value):
                raise DataFileError(p, f"score must be a finite number, got {excerpt(value)}",
                                    entry=str(key))
            cells[(str(key), None)] = float(value)
    else:
        raise DataFileError(p, "scores must be a mapping of ATLAS technique ID to number, or a "
                            "Navigator layer")
    for tid in dict.fromkeys(k for k, _ in [*cells, *comments]):
        if tid not in kb:
            raise DataFileError(p, f"unknown ATLAS ID in ATLAS data {kb.version}", entry=tid)
        if kb.kind(tid) not in ("technique", "sub-technique"):
            raise DataFileError(p, f"{tid} is a {kb.kind(tid)}; scores are per technique",
                                entry=tid)
    return Scores(cells, comments, warnings)
