"""Stale-mapping check: every ATLAS ID in a layer, CSV, JSON or YAML file, against current data.

Mappings to the matrix rot: IDs are retired, techniques renamed (the "ML" → "AI" renames of
ATLAS 5.0), tactics renamed (``ml-attack-staging`` became ``ai-attack-staging``), and a hand-kept
sheet pairs an ID with the wrong name. Findings, each with the current ID and name to use:

``unknown-id``
    A well-formed ID the data does not hold (with the ID it was retired from, or a close match
    of the same kind).
``newer-id``
    An ID the data does not hold but a newer release may: the embedded snapshot has it, or its
    number is past the highest of its kind in the data (:mod:`mlthreat.kb.history`); the data
    may be older than the mapping.
``outdated-name``
    An ID written next to the name it had in an older release.
``name-mismatch``
    An ID written next to the name of a different object.
``legacy-tactic``
    A layer's ``tactic`` short name from an older release.
``newer-tactic``
    A layer's ``tactic`` short name from a release newer than the data, for the tactic the
    data names otherwise (``ai-attack-adaptation`` under 5.6.0): a notice that the entry is
    read, under the data's name.
``wrong-tactic``
    A layer entry placing a technique under a tactic it does not belong to.
``revoked``, ``dangling-relationship``, ``parent-inferred``… (a STIX bundle)
    What loading the bundle reads past, with the codes of
    :mod:`mlthreat.kb.sources.stix_bundle`.
``malformed-entry``
    A layer entry that is not a mapping, has no ``techniqueID``, or whose ``techniqueID`` or
    ``tactic`` is not a string (a number, null, a list); ``id`` is empty when there is no
    technique ID to name.

Hostile files stay cheap: each JSON/YAML container is walked once however often YAML aliases
repeat it, at most ``MAX_NODES`` values are walked, and no step is quadratic in the file size.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlthreat.kb._scan import MAX_NODES, Lines, walk
from mlthreat.kb.errors import DataFileError, DataWarning
from mlthreat.kb.history import LATER_TACTIC_NAMES, newer_than_data
from mlthreat.kb.ids import ID_PATTERN, find_ids, kind_of, parent_id
from mlthreat.kb.model import KnowledgeBase
from mlthreat.kb.names import could_be_name, has_ml_words, name_key, similarity

__all__ = ["MAX_NODES", "CheckFinding", "CheckReport", "check_file"]


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
    """Current and former names of every object (loosely keyed, see :mod:`mlthreat.kb.names`),
    IDs dropped from older releases, and legacy tactic short names."""

    def __init__(self, kb: KnowledgeBase) -> None:
        from mlthreat.kb.names import NameIndex
        from mlthreat.kb.sources.atlas_yaml import shortname

        self.kb = kb
        self.index = NameIndex(kb)
        hist = self.index.history
        self.removed: dict[str, list[str]] = hist.get("removed", {})
        self.replaced: dict[str, list[str]] = hist.get("replaced", {})
        self.legacy_tactics: dict[str, str] = {}
        for atlas_id, entries in hist.get("names", {}).items():
            if atlas_id in kb and kb.kind(atlas_id) == "tactic":
                for name, _ in entries:
                    self.legacy_tactics[shortname(name)] = atlas_id
        self.prefixes = {ID_PATTERN.match(o.id)["prefix"] for o in kb}  # type: ignore[index]

    def owner(self, text: str, family: str, besides: tuple[str, ...] = ()) -> str | None:
        """The object of ``family`` whose name ``text`` is (loosely), other than ``besides``."""
        return next((o for o in self.index.owners(text) if o not in besides
                     and _family(self.kb.kind(o)) == family), None)


def _family(kind: str) -> str:
    return "technique" if kind == "sub-technique" else kind


def _what(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return {int: "a number", float: "a number", str: "a string", list: "a list",
            dict: "a mapping"}.get(type(value), f"a {type(value).__name__}")


def _show(value: Any) -> str:
    """The ``found`` text of a malformed value, short however large the value is."""
    small = not isinstance(value, list | dict) or (len(value) <= 3 and not any(
        isinstance(v, list | dict) for v in (value.values() if isinstance(value, dict) else value)))
    if small:
        try:
            return json.dumps(value[:60] if isinstance(value, str) else value, default=str)[:80]
        except (ValueError, TypeError):
            pass
    size = f" of {len(value)}" if isinstance(value, list | dict) else ""
    return f"<{_what(value)}{size}>"


class _Checker:
    def __init__(self, kb: KnowledgeBase, text: str) -> None:
        self.kb = kb
        self.names = _Names(kb)
        self.lines = Lines(text)
        self.findings: list[CheckFinding] = []
        self.checked = 0
        self._tactics: dict[str, dict[str, str]] = {}
        self._newer: dict[str, str | None] = {}

    def add(self, kind: str, line: int | None, loc: str, atlas_id: str, found: str, msg: str,
            suggestion: str | None = None) -> None:
        name = self.kb.get(suggestion).name if suggestion and suggestion in self.kb else None
        self.findings.append(CheckFinding(kind, line, loc, atlas_id, found, msg, suggestion, name))

    def check_group(self, values: dict[str, str], loc: str, line_hint: int | None) -> None:
        """Check the IDs in one record (a JSON/YAML mapping, a CSV row) and the names beside
        them."""
        id_keys: list[str] = []
        unknown: list[tuple[str, int | None, str]] = []
        for key, value in values.items():
            for atlas_id in find_ids(value):
                prefix = atlas_id.split(".", 1)[0]
                if prefix not in self.names.prefixes:
                    continue
                line = self.lines.find(atlas_id) or line_hint
                self.checked += 1
                if not id_keys or id_keys[-1] != key:
                    id_keys.append(key)
                if atlas_id not in self.kb:
                    unknown.append((atlas_id, line, f"{loc}.{key}" if key else loc))
        # A value that is exactly a known ID pairs with the names beside it.
        present = [v for v in (values[k].strip() for k in id_keys) if v in self.kb]
        if not present and not unknown:
            return
        skip = set(id_keys)
        names = [(key, text) for key, text in ((k, v.strip()) for k, v in values.items()
                                               if k not in skip and v) if could_be_name(text)]
        for atlas_id, line, where in unknown:
            self._unknown(atlas_id, line, where, [text for _, text in names])
        for key, text in names if present else ():
            self._pair(present, text, f"{loc}.{key}" if key else loc, line_hint)

    def _unknown(self, atlas_id: str, line: int | None, loc: str, names: list[str]) -> None:
        """An ID the data does not hold: the ID it was retired from, or one newer than the data,
        or the object the name beside it names, or its parent; never a near number, which
        names an unrelated object."""
        if atlas_id in self.names.removed:
            name, release = self.names.removed[atlas_id]
            msg = f"{atlas_id} ({name}) was last in ATLAS {release} and is gone from " \
                  f"{self.kb.version}"
            heirs = self.names.replaced.get(atlas_id, [])
            if heirs:
                msg += "; replaced by " + ", ".join(f"{h} ({self.kb.get(h).name})"
                                                    for h in heirs)
            self.add("unknown-id", line, loc, atlas_id, atlas_id, msg,
                     heirs[0] if len(heirs) == 1 else None)
            return
        # an ID past the data says so first; a name beside it may still point at an object
        if atlas_id not in self._newer:  # a file may repeat one ID thousands of times
            self._newer[atlas_id] = newer_than_data(self.kb, atlas_id)
        newer = self._newer[atlas_id]
        kind, msg = ("newer-id", newer) if newer is not None else \
            ("unknown-id", f"{atlas_id} is not in ATLAS {self.kb.version}")
        family = _family(kind_of(atlas_id) or "")
        for text in names:
            owner = self.names.owner(text, family)
            if owner is not None:
                self.add(kind, line, loc, atlas_id, atlas_id,
                         f"{msg}; the name beside it, '{text}', is {owner}'s", owner)
                return
        if newer is not None:
            parent = parent_id(atlas_id)
            self.add(kind, line, loc, atlas_id, atlas_id, msg,
                     parent if parent is not None and parent in self.kb else None)
            return
        parent = parent_id(atlas_id)
        if parent is not None and parent in self.kb:
            self.add("unknown-id", line, loc, atlas_id, atlas_id,
                     f"{msg}; its parent technique {parent} is", parent)
            return
        self.add("unknown-id", line, loc, atlas_id, atlas_id, msg)

    def _pair(self, present: list[str], text: str, loc: str, line_hint: int | None) -> None:
        """A name beside known IDs: theirs (exactly, or loosely: word forms, ML → AI), one they
        had in an older release, or another object's."""
        folded = text.casefold()
        if any(folded == self.kb.get(i).name.casefold() for i in present):
            return
        key = name_key(text)
        # (score, the ID, its name matched, the release of that name or None for current)
        best: tuple[float, str, str, str | None] | None = None
        for i in present:
            now = self.kb.get(i).name
            candidates = [(now, None), *self.names.index.former_of.get(i, {}).values()]
            for name, release in candidates:
                if folded == name.casefold():
                    score = 2.0  # an exact former name
                else:
                    k = name_key(name)
                    score = 1.0 if k == key else similarity(k, key)
                    # a name written with "ML" is closer to the name that had it
                    score += 0.01 if release and has_ml_words(name) == has_ml_words(text) else 0
                if best is None or score > best[0]:
                    best = (score, i, name, release)
        # A CSV row knows its line; in JSON/YAML the name's own occurrence is searched for.
        line = line_hint or self.lines.find(text)
        if best is None or best[0] < 1.0:
            other = self.names.owner(text, _family(self.kb.kind(present[0])), tuple(present))
            if other is not None and len(present) == 1:
                atlas_id = present[0]
                self.add("name-mismatch", line, loc, atlas_id, text,
                         f"{atlas_id} is '{self.kb.get(atlas_id).name}', but the name beside "
                         f"it, '{text}', belongs to {other}", other)
                return
            if best is None or best[0] < _LOOSE_MATCH:
                return  # a tactic name beside a technique ID is a column, not a pairing
        score, atlas_id, name, release = best
        now = self.kb.get(atlas_id).name
        if release is None and has_ml_words(text) and not has_ml_words(now):
            self.add("outdated-name", line, loc, atlas_id, text,
                     f"'{text}' is '{now}' ({atlas_id}) as named before the ML → AI renames",
                     atlas_id)
        elif release is not None and score >= 2.0:
            self.add("outdated-name", line, loc, atlas_id, text,
                     f"'{text}' is the ATLAS {release} name of {atlas_id}; it is now '{now}'",
                     atlas_id)
        elif release is not None:
            self.add("outdated-name", line, loc, atlas_id, text,
                     f"'{text}' matches '{name}', the ATLAS {release} name of {atlas_id}; it "
                     f"is now '{now}'", atlas_id)
        # else: the current name written loosely (word forms, case, punctuation) is accepted

    def check_layer_tactic(self, technique_id: str, tactic: str, loc: str,
                           line: int | None) -> None:
        if technique_id not in self.kb or self.kb.kind(technique_id) not in (
                "technique", "sub-technique"):
            return
        valid = self._tactics.get(technique_id)
        if valid is None:
            valid = {t.shortname: t.id for t in self.kb.tactics_of(technique_id)}
            self._tactics[technique_id] = valid
        if tactic in valid:
            return
        self.checked += 1
        legacy = self.names.legacy_tactics.get(tactic)
        later = LATER_TACTIC_NAMES.get(tactic)
        if later is not None and later[0] in valid.values():
            now = self.kb.tactic(later[0]).shortname
            self.add("newer-tactic", line, loc, technique_id, tactic,
                     f"'{tactic}' is what ATLAS {later[1]} calls {later[0]}, newer than the "
                     f"loaded {self.kb.version}, where it is '{now}': read as {later[0]}",
                     later[0])
        elif legacy:
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

    def check_layer(self, entries: list[Any]) -> None:
        """The ``tactic`` of every layer entry, and entries of the wrong shape. Lines are found
        walking forward: each entry's ``techniqueID`` key after the previous entry's, its tactic
        after the previous entry's key and tactic."""
        lines = self.lines
        anchor = after = 0
        for i, entry in enumerate(entries):
            loc = f"techniques[{i}]"
            if not isinstance(entry, dict):
                self.add("malformed-entry", None, loc, "", _show(entry),
                         f"a layer entry must be a mapping with a techniqueID, not {_what(entry)}")
                continue
            prev, tid = anchor, entry.get("techniqueID")
            key = lines.search("techniqueID", anchor) if "techniqueID" in entry else None
            anchor = anchor if key is None else key + 1
            at = lines.next_at(tid, anchor) if isinstance(tid, str) else key
            if "techniqueID" not in entry:
                self.add("malformed-entry", None, loc, "", _show(entry),
                         "the layer entry has no techniqueID")
            elif not isinstance(tid, str):
                self.add("malformed-entry", lines.line(at), f"{loc}.techniqueID", "", _show(tid),
                         f"techniqueID must be a string such as 'AML.T0043', not {_what(tid)}")
            tactic = entry.get("tactic")
            if tactic is None or tactic == "":  # no tactic: the technique under every one
                continue
            found = lines.search(tactic if isinstance(tactic, str) else "tactic",
                                 max(prev, after))
            if found is not None:
                after = found + 1
            line = lines.line(found if found is not None else at)
            if not isinstance(tactic, str):
                self.add("malformed-entry", line, f"{loc}.tactic",
                         tid if isinstance(tid, str) and kind_of(tid) else "", _show(tactic),
                         "tactic must be a tactic short name (a string) such as "
                         f"'ai-attack-staging', not {_what(tactic)}")
            elif isinstance(tid, str):
                self.check_layer_tactic(tid, tactic, f"{loc}.tactic", line)


    def check_bundle(self, warnings: tuple[DataWarning, ...], objects: list[Any]) -> None:
        """What the STIX loader reads past (see :mod:`mlthreat.kb.sources.stix_bundle`), one
        finding per warning, at the line of the object's ``id``."""
        index = {o.get("id"): i for i, o in enumerate(objects) if isinstance(o, dict)}
        for w in warnings:
            stix_id = (w.entry or "").split(" ", 1)[0]
            loc = f"objects[{index[stix_id]}]" if stix_id in index else stix_id
            line = self.lines.line(self.lines.search(f'"{stix_id}"', 0))
            self.add(w.code, line, f"{loc}.{w.field}" if w.field else loc, w.atlas_id, stix_id,
                     w.message)


# How alike (0 to 1) a name must be to an ID's own name to be read as that name misspelt.
_LOOSE_MATCH = 0.9

# Suffixes of documents read as text whatever they parse as.
_PROSE = frozenset({".md", ".markdown", ".txt", ".text", ".rst", ".adoc", ".org"})


def check_file(kb: KnowledgeBase, path: str | Path) -> CheckReport:
    """Check every ATLAS ID reference in ``path`` against ``kb``.

    The format is read from the content: a Navigator layer (JSON with ``techniques`` entries
    holding ``techniqueID``), CSV (by ``.csv``/``.tsv`` suffix), any other JSON or YAML, or
    plain text (IDs only; always for Markdown, ``.txt``, ``.rst`` and similar). Records are
    checked as a unit: an ID and a name in the same mapping or CSV row are taken to describe
    the same object.

    Raises
    ------
    DataFileError
        When the file cannot be read or parsed, or holds more than ``MAX_NODES`` values.
    """
    from mlthreat.kb.sources import read_structured, read_text

    path = Path(path)
    text = read_text(path, "utf-8-sig")
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
            if path.suffix.lower() in _PROSE:
                # a line of prose with a colon is valid YAML: never read notes as a mapping
                raise ValueError("prose")
            data = read_structured(path)
        except (DataFileError, RecursionError, ValueError) as exc:
            # RecursionError (nesting) and ValueError (an integer too long to convert) come
            # from the parsers themselves, past read_structured's own checks.
            if path.suffix.lower() in (".json", ".yaml", ".yml", ".layer"):
                if isinstance(exc, DataFileError):
                    raise
                why = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
                raise DataFileError(path, f"cannot be parsed: {why}") from None
            data = text  # prose (Markdown, notes): check the IDs alone
        is_layer = isinstance(data, dict) and isinstance(data.get("techniques"), list) and any(
            isinstance(e, dict) and "techniqueID" in e for e in data["techniques"])
        fmt = "layer" if is_layer else ("text" if isinstance(data, str | None) else "structured")
        for loc, values in walk(data, path, 4 * len(text) + (16 << 20)):
            checker.check_group(values, loc, None)
        if is_layer:
            checker.lines.reset()
            checker.check_layer(data["techniques"])
        from mlthreat.kb.sources import stix_bundle

        if stix_bundle.sniff(data):
            fmt = "stix-bundle"
            checker.lines.reset()
            checker.check_bundle(stix_bundle.load(data, path).warnings, data["objects"])
    findings = sorted(checker.findings, key=lambda f: (f.line or 0, f.location))
    return CheckReport(str(path), fmt, kb.version, checker.checked, tuple(findings))
