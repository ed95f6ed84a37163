"""Stale-mapping check: every ATLAS ID in a layer, CSV, JSON or YAML file, against current data.

Mappings to the matrix rot: IDs are retired, techniques renamed (the "ML" → "AI" renames of
ATLAS 5.0), tactics renamed (``ml-attack-staging`` became ``ai-attack-staging``), and a hand-kept
sheet pairs an ID with the wrong name. Findings, each with the current ID and name to use:

``unknown-id``
    A well-formed ID the data does not hold (with the ID it was retired from, or a close match).
``outdated-name``
    An ID written next to the name it had in an older release.
``name-mismatch``
    An ID written next to the name of a different object.
``legacy-tactic``
    A layer's ``tactic`` short name from an older release.
``wrong-tactic``
    A layer entry placing a technique under a tactic it does not belong to.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlthreat.kb.errors import DataFileError
from mlthreat.kb.ids import ID_PATTERN, find_ids
from mlthreat.kb.model import KnowledgeBase

__all__ = ["CheckFinding", "CheckReport", "check_file"]


@dataclass(frozen=True, slots=True)
class CheckFinding:
    """One stale or wrong reference: where (``line`` and a ``location`` path such as
    ``techniques[3].tactic`` or ``row 12``), what was ``found``, and what to use instead."""

    kind: str
    line: int | None
    location: str
    id: str
    found: str
    message: str
    suggestion_id: str | None = None
    suggestion_name: str | None = None


@dataclass(frozen=True)
class CheckReport:
    """The result of checking one file: how many ID references were read and what is wrong."""

    path: str
    file_format: str
    atlas_version: str
    references_checked: int
    findings: tuple[CheckFinding, ...]


class _Names:
    """Current and former names of every object, and legacy tactic short names."""

    def __init__(self, kb: KnowledgeBase) -> None:
        from mlthreat.kb.sources.atlas_yaml import shortname
        from mlthreat.kb.sources.snapshot import history

        self.kb = kb
        hist = history()
        self.current: dict[str, list[str]] = {}
        for obj in kb:
            self.current.setdefault(obj.name.casefold(), []).append(obj.id)
        self.former: dict[str, dict[str, str]] = {}  # id -> {old name casefolded: release}
        self.former_any: dict[str, list[str]] = {}
        for atlas_id, entries in hist.get("names", {}).items():
            for name, release in entries:
                self.former.setdefault(atlas_id, {})[name.casefold()] = release
                self.former_any.setdefault(name.casefold(), []).append(atlas_id)
        self.removed: dict[str, list[str]] = hist.get("removed", {})
        self.legacy_tactics: dict[str, str] = {}
        for atlas_id, entries in hist.get("names", {}).items():
            if atlas_id in kb and kb.kind(atlas_id) == "tactic":
                for name, _ in entries:
                    self.legacy_tactics[shortname(name)] = atlas_id
        self.prefixes = {ID_PATTERN.match(o.id)["prefix"] for o in kb}  # type: ignore[index]

    def is_name(self, text: str) -> bool:
        key = text.strip().casefold()
        return key in self.current or key in self.former_any


def _family(kind: str) -> str:
    return "technique" if kind == "sub-technique" else kind


def _line_finder(text: str) -> Any:
    """Line of the next occurrence of a value, walking forward so repeats get their own line."""
    pos: dict[str, int] = {}

    def find(value: str) -> int | None:
        start = pos.get(value, 0)
        at = text.find(value, start)
        if at < 0:
            return None
        pos[value] = at + len(value)
        return text.count("\n", 0, at) + 1

    return find


class _Checker:
    def __init__(self, kb: KnowledgeBase, text: str) -> None:
        self.kb = kb
        self.names = _Names(kb)
        self.line_of = _line_finder(text)
        self.findings: list[CheckFinding] = []
        self.checked = 0

    def add(self, kind: str, line: int | None, loc: str, atlas_id: str, found: str, msg: str,
            suggestion: str | None = None) -> None:
        name = self.kb.get(suggestion).name if suggestion and suggestion in self.kb else None
        self.findings.append(CheckFinding(kind, line, loc, atlas_id, found, msg, suggestion, name))

    def check_group(self, values: dict[str, str], loc: str, line_hint: int | None) -> None:
        """Check the IDs in one record (a JSON/YAML mapping, a CSV row) and the names beside
        them."""
        ids: list[tuple[str, str, int | None]] = []
        for key, value in values.items():
            for atlas_id in find_ids(value):
                prefix = atlas_id.split(".", 1)[0]
                if prefix not in self.names.prefixes:
                    continue
                line = self.line_of(atlas_id) or line_hint
                self.checked += 1
                ids.append((atlas_id, key, line))
                if atlas_id not in self.kb:
                    self._unknown(atlas_id, line, f"{loc}.{key}" if key else loc)
        exact = [(i, k, ln) for i, k, ln in ids if values[k].strip() == i and i in self.kb]
        if not exact:
            return
        for key, value in values.items():
            if not value or any(k == key for _, k, _ in ids) or not self.names.is_name(value):
                continue
            self._pair(exact, value, f"{loc}.{key}" if key else loc, line_hint)

    def _unknown(self, atlas_id: str, line: int | None, loc: str) -> None:
        if atlas_id in self.names.removed:
            name, release = self.names.removed[atlas_id]
            self.add("unknown-id", line, loc, atlas_id, atlas_id,
                     f"{atlas_id} ({name}) was last in ATLAS {release} and is gone from "
                     f"{self.kb.version}")
            return
        close = self.kb._suggest(atlas_id)
        self.add("unknown-id", line, loc, atlas_id, atlas_id,
                 f"{atlas_id} is not in ATLAS {self.kb.version}", close)

    def _pair(self, ids: list[tuple[str, str, int | None]], text: str, loc: str,
              line_hint: int | None) -> None:
        key = text.strip().casefold()
        present = [i for i, _, _ in ids]
        if any(self.kb.get(i).name.casefold() == key for i in present):
            return
        # A CSV row knows its line; in JSON/YAML the name's own occurrence is searched for.
        line = line_hint or self.line_of(text.strip())
        for atlas_id in present:
            release = self.names.former.get(atlas_id, {}).get(key)
            if release:
                current = self.kb.get(atlas_id).name
                self.add("outdated-name", line, loc, atlas_id, text.strip(),
                         f"'{text.strip()}' is the ATLAS {release} name of {atlas_id}; it is "
                         f"now '{current}'", atlas_id)
                return
        if len(present) != 1:
            return  # a name beside several IDs cannot be paired with one of them
        atlas_id = present[0]
        family = _family(self.kb.kind(atlas_id))
        owners = self.names.current.get(key) or self.names.former_any.get(key) or []
        owner = next((o for o in owners if o != atlas_id and o in self.kb
                      and _family(self.kb.kind(o)) == family), None)
        if owner is None:
            return  # a tactic name beside a technique ID is a column, not a pairing
        self.add("name-mismatch", line, loc, atlas_id, text.strip(),
                 f"{atlas_id} is '{self.kb.get(atlas_id).name}', but the name beside it, "
                 f"'{text.strip()}', belongs to {owner}", owner)

    def check_layer_tactic(self, technique_id: str, tactic: str, loc: str) -> None:
        if technique_id not in self.kb or self.kb.kind(technique_id) not in (
                "technique", "sub-technique"):
            return
        line = self.line_of(tactic)
        valid = {t.shortname: t.id for t in self.kb.tactics_of(technique_id)}
        if tactic in valid:
            return
        self.checked += 1
        legacy = self.names.legacy_tactics.get(tactic)
        if legacy:
            new = self.kb.tactic(legacy).shortname
            self.add("legacy-tactic", line, loc, technique_id, tactic,
                     f"tactic '{tactic}' was renamed; use '{new}'", legacy)
        elif self.kb.tactic_by_shortname(tactic):
            self.add("wrong-tactic", line, loc, technique_id, tactic,
                     f"{technique_id} is not a technique of '{tactic}'; its tactics are "
                     f"{', '.join(valid) or 'none'}", next(iter(valid.values()), None))
        else:
            self.add("wrong-tactic", line, loc, technique_id, tactic,
                     f"'{tactic}' is not a tactic short name in ATLAS {self.kb.version}")


def _walk(node: Any, path: str) -> Iterator[tuple[str, dict[str, str]]]:
    """Every mapping (its scalar fields as strings) and every scalar list item, with its path."""
    if isinstance(node, dict):
        scalars = {str(k): str(v) for k, v in node.items()
                   if isinstance(v, str | int | float) and not isinstance(v, bool)}
        yield path or "$", scalars
        for k, v in node.items():
            if isinstance(v, dict | list):
                yield from _walk(v, f"{path}.{k}" if path else str(k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            if isinstance(v, dict | list):
                yield from _walk(v, f"{path}[{i}]")
            elif isinstance(v, str):
                yield f"{path}[{i}]", {"": v}
    elif isinstance(node, str):
        yield path or "text", {"": node}


def check_file(kb: KnowledgeBase, path: str | Path) -> CheckReport:
    """Check every ATLAS ID reference in ``path`` against ``kb``.

    The format is read from the content: a Navigator layer (JSON with ``techniques`` entries
    holding ``techniqueID``), CSV (by ``.csv``/``.tsv`` suffix), any other JSON or YAML, or
    plain text (IDs only). Records are checked as a unit: an ID and a name in the same mapping
    or CSV row are taken to describe the same object.

    Raises
    ------
    DataFileError
        When the file cannot be read or parsed.
    """
    from mlthreat.kb.sources import read_structured

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise DataFileError(path, exc.strerror or str(exc)) from None
    except UnicodeDecodeError:
        raise DataFileError(path, "not UTF-8 text") from None
    checker = _Checker(kb, text)
    if path.suffix.lower() in (".csv", ".tsv"):
        fmt = "csv"
        dialect = "excel-tab" if path.suffix.lower() == ".tsv" else "excel"
        reader = csv.reader(io.StringIO(text), dialect=dialect)
        try:
            header = next(reader, [])
            for row in reader:
                values = {(header[i] if i < len(header) else f"column {i + 1}"): cell
                          for i, cell in enumerate(row)}
                checker.check_group(values, f"row {reader.line_num}", reader.line_num)
        except csv.Error as exc:
            raise DataFileError(path, f"invalid CSV: {exc}", line=reader.line_num) from None
        header_values = {f"column {i + 1}": h for i, h in enumerate(header)}
        checker.check_group(header_values, "header", 1)
    else:
        try:
            data = read_structured(path)
        except DataFileError:
            if path.suffix.lower() in (".json", ".yaml", ".yml", ".layer"):
                raise
            data = text  # prose (Markdown, notes): check the IDs alone
        is_layer = isinstance(data, dict) and isinstance(data.get("techniques"), list) and any(
            isinstance(e, dict) and "techniqueID" in e for e in data["techniques"])
        fmt = "layer" if is_layer else ("text" if isinstance(data, str | None) else "structured")
        for loc, values in _walk(data, ""):
            checker.check_group(values, loc, None)
        if is_layer:
            checker.line_of = _line_finder(text)
            for i, entry in enumerate(data["techniques"]):
                if isinstance(entry, dict) and isinstance(entry.get("tactic"), str):
                    checker.check_layer_tactic(str(entry.get("techniqueID")), entry["tactic"],
                                               f"techniques[{i}].tactic")
    findings = sorted(checker.findings, key=lambda f: (f.line or 0, f.location))
    return CheckReport(str(path), fmt, kb.version, checker.checked, tuple(findings))
