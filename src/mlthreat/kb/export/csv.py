"""The matrix as CSV: one row per technique placement (a technique under each of its tactics)."""

from __future__ import annotations

import csv
import io

from mlthreat.kb.model import KnowledgeBase

__all__ = ["COLUMNS", "FORMAT", "SUFFIX", "render"]

FORMAT = "csv"
SUFFIX = ".csv"
COLUMNS = ("tactic_id", "tactic", "technique_id", "technique", "parent_id", "maturity",
           "mitigations", "case_studies", "atlas_version")


def _cell(value: object) -> object:
    # A cell starting with = + - @ is a formula to a spreadsheet: quote it so that data
    # (an extension's names, say) cannot run one when the file is opened.
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def render(kb: KnowledgeBase) -> str:
    """CSV text with the header :data:`COLUMNS`; ``mitigations`` lists IDs separated by ``;``
    (a sub-technique's include its parent's), ``case_studies`` counts the case studies that use
    the technique or, for a parent, any of its sub-techniques. Text that a spreadsheet would
    read as a formula is prefixed with ``'``."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for tactic in kb.tactics:
        for t in kb.techniques_of(tactic.id, subtechniques=True):
            writer.writerow([_cell(v) for v in (
                tactic.id, tactic.name, t.id, t.name, t.parent or "", t.maturity,
                ";".join(m.id for m in kb.mitigations_of(t.id)),
                len(kb.case_studies_using(t.id)), kb.version,
            )])
    return out.getvalue()
