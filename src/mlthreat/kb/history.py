"""Names and IDs across ATLAS releases, seen from the data that is loaded.

The embedded snapshot records what older releases called each object and which IDs they
dropped (:func:`mlthreat.kb.sources.snapshot.history`). Data newer than the snapshot (a format-6
content release) makes the snapshot itself history: its names become former names and its IDs
missing from the newer data become removed ones (:func:`history_for`). Data older than a
mapping is told by :func:`newer_than_data`, so a valid new ID is never called "unknown" without
saying that the data may be behind (third-party projects checked 2026 IDs against the frozen
legacy file and filed them as bogus).

Version order (:func:`release_key`): legacy versions (``5.6.0``) come before content releases
(``2026.09``, ``2026.09.1``), which started in May 2026.
"""

from __future__ import annotations

import re
from functools import cache
from typing import TYPE_CHECKING, Any

from mlthreat.kb.ids import kind_of, parent_id

if TYPE_CHECKING:
    from mlthreat.kb.model import KnowledgeBase

__all__ = ["LATER_TACTIC_NAMES", "RELEASE", "UPDATE_HINT", "history_for", "newer_than_data",
           "parse_release", "release_key"]

#: Tactic short names published after the embedded snapshot's release: name -> (ID, release).
LATER_TACTIC_NAMES: dict[str, tuple[str, str]] = {
    "ai-attack-adaptation": ("AML.TA0001", "2026.08"),
}
UPDATE_HINT = "run 'mlthreat kb update', or pass --atlas with a newer ATLAS file"

RELEASE = re.compile(r"(\d{4})\.(\d{2})(?:\.(\d{1,4}))?")
"""A content release: year, month (01-12, checked by :func:`parse_release`), optional revision."""
_SEMVER = re.compile(r"(\d+)\.(\d+)(?:\.(\d+))?")


def parse_release(text: str) -> tuple[int, int, int] | None:
    """A content release (``2026.09``, ``2026.09.1``) as a comparable ``(year, month,
    revision)``, or None when ``text`` is not one."""
    m = RELEASE.fullmatch(text)
    if m is None or not 1 <= int(m.group(2)) <= 12:
        return None
    return int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)


def release_key(version: str) -> tuple[int, ...]:
    """A sort key of data versions: ``(0, 5, 6, 0)`` for legacy ``5.6.0``, ``(1, 2026, 9, 0)``
    for the content release ``2026.09``, ``(-1,)`` for a version that is neither (a STIX bundle
    says none). Extension names after the version (``5.6.0 + acme 1``) are ignored."""
    head = version.split()[0] if version.split() else ""
    release = parse_release(head)
    if release is not None:
        return (1, *release)
    m = _SEMVER.fullmatch(head)
    if m:
        return (0, int(m[1]), int(m[2]), int(m[3] or 0))
    return (-1,)


@cache
def _embedded() -> KnowledgeBase:
    """The embedded snapshot, built once (it is immutable)."""
    from mlthreat.kb.sources.snapshot import load_embedded

    return load_embedded()


def history_for(kb: KnowledgeBase) -> dict[str, Any]:
    """``{"releases", "names", "removed", "replaced"}``: the first three as
    :func:`~mlthreat.kb.sources.snapshot.history` gives them, widened, when ``kb`` is newer
    than the embedded snapshot, by the snapshot's own names (where ``kb`` names the object
    otherwise) and IDs (where ``kb`` lacks them) as those of the snapshot's release;
    ``replaced`` maps such a removed ID to the objects of ``kb`` that carry its name or content
    (:func:`mlthreat.kb.diff.replacements`)."""
    from mlthreat.kb.sources.snapshot import history

    hist = history()
    out: dict[str, Any] = {"releases": list(hist.get("releases", [])),
                           "names": {k: list(v) for k, v in hist.get("names", {}).items()},
                           "removed": dict(hist.get("removed", {})), "replaced": {}}
    embedded = _embedded()
    if release_key(kb.version) <= release_key(embedded.version):
        return out
    out["releases"].append(embedded.version)
    for obj in embedded.objects(("tactic", "technique", "sub-technique", "mitigation")):
        if obj.id not in kb:
            out["removed"][obj.id] = [obj.name, embedded.version]
        elif kb.get(obj.id).name != obj.name:
            out["names"].setdefault(obj.id, []).append([obj.name, embedded.version])
    from mlthreat.kb.diff import replacements

    for section in ("tactics", "techniques", "mitigations"):
        out["replaced"].update(replacements(embedded, kb, section))
    return out


def newer_than_data(kb: KnowledgeBase, atlas_id: str) -> str | None:
    """Why ``atlas_id``, which ``kb`` does not hold, may be newer than the data, or None.

    It is when the embedded snapshot, newer than ``kb``, holds it, or when its number is past
    the highest of its kind in ``kb`` (for a sub-technique of a known technique, past that
    technique's highest sub-technique).
    """
    kind = kind_of(atlas_id)
    if kind is None:
        return None
    embedded = _embedded()
    if atlas_id in embedded and release_key(kb.version) < release_key(embedded.version):
        return (f"{atlas_id} ({embedded.get(atlas_id).name}) is in ATLAS {embedded.version}, "
                f"newer than the loaded {kb.version}: {UPDATE_HINT}")
    parent = parent_id(atlas_id)
    if parent is not None and parent in kb:
        siblings = [t.id for t in kb.subtechniques(parent)]
        highest = max(siblings, default=None)
        if highest is not None and atlas_id < highest:
            return None
        what = (f"{parent}'s highest sub-technique is {highest}" if highest
                else f"{parent} has no sub-technique")
    else:
        probe = parent if parent is not None else atlas_id
        pkind = kind_of(probe)
        prefix = probe.split(".", 1)[0]
        same = [o.id for o in kb if o.id.startswith(prefix + ".") and kind_of(o.id) == pkind]
        highest = max(same, default=None)
        if highest is None or probe < highest:
            return None
        label = {"technique": "technique", "tactic": "tactic", "mitigation": "mitigation",
                 "case-study": "case study"}.get(pkind or "", "object")
        what = f"its highest {label} is {highest}"
    return (f"{atlas_id} is past the data: in the loaded ATLAS {kb.version} {what}, so the data "
            f"may be older than this mapping ({UPDATE_HINT})")
