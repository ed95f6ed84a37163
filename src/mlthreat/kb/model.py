"""The threat-matrix model: tactics, techniques, mitigations, case studies, and the knowledge base.

Objects are frozen dataclasses so a loaded knowledge base can be shared freely; every index is
built once when the :class:`KnowledgeBase` is constructed. Dates are ISO 8601 strings
(``YYYY-MM-DD``) exactly as the source data gives them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Literal

from mlthreat.kb.errors import DataWarning, UnknownIdError, WrongKindError
from mlthreat.kb.ids import Kind

__all__ = [
    "AttackReference",
    "CaseStudy",
    "KnowledgeBase",
    "Mitigation",
    "MitigationUse",
    "ProcedureStep",
    "Reference",
    "Retired",
    "Tactic",
    "Technique",
]

Maturity = Literal["feasible", "demonstrated", "realized", ""]


@dataclass(frozen=True)
class AttackReference:
    """The ATT&CK Enterprise object an ATLAS object adapts (``id`` such as ``TA0043``, ``url``)."""

    id: str
    url: str = ""


@dataclass(frozen=True)
class Reference:
    """A cited source: a title (may be empty in the official data) and a URL."""

    title: str = ""
    url: str = ""


@dataclass(frozen=True)
class Tactic:
    """A column of the matrix: the adversary's goal at one stage of an attack.

    ``shortname`` is the lower-case hyphenated name Navigator layers and STIX kill-chain phases
    use (``ai-attack-staging``).
    """

    id: str
    name: str
    description: str = ""
    shortname: str = ""
    attack_reference: AttackReference | None = None
    created: str = ""
    modified: str = ""


@dataclass(frozen=True)
class Technique:
    """A technique or sub-technique.

    ``tactics`` are the tactic IDs the data lists for it; sub-techniques usually list none and
    inherit their parent's (use :meth:`KnowledgeBase.tactics_of`). ``maturity`` is the strongest
    evidence that the technique works: ``feasible`` (shown in research), ``demonstrated`` (shown
    against a real system) or ``realized`` (used in a real attack). ``platforms`` are the kinds
    of AI system it applies to (``Predictive AI``, ``Generative AI``, ``Agentic AI``,
    ``Enterprise``); format-6 data gives them, the legacy layout does not.
    """

    id: str
    name: str
    description: str = ""
    tactics: tuple[str, ...] = ()
    parent: str | None = None
    maturity: Maturity = ""
    attack_reference: AttackReference | None = None
    references: tuple[Reference, ...] = ()
    created: str = ""
    modified: str = ""
    platforms: tuple[str, ...] = ()

    @property
    def is_subtechnique(self) -> bool:
        return self.parent is not None


@dataclass(frozen=True)
class MitigationUse:
    """One link from a mitigation to a technique, with the text on how it applies there."""

    technique: str
    use: str = ""


@dataclass(frozen=True)
class Mitigation:
    """A defence, linked to the techniques it addresses.

    ``category`` is the official grouping (``Policy``, ``Technical - ML``, ``Technical - Cyber``);
    ``lifecycle`` lists the ML lifecycle stages where it applies.
    """

    id: str
    name: str
    description: str = ""
    techniques: tuple[MitigationUse, ...] = ()
    category: tuple[str, ...] = ()
    lifecycle: tuple[str, ...] = ()
    attack_reference: AttackReference | None = None
    created: str = ""
    modified: str = ""


@dataclass(frozen=True)
class ProcedureStep:
    """One step of a case study's procedure: the tactic served and the technique used."""

    tactic: str
    technique: str
    description: str = ""


@dataclass(frozen=True)
class CaseStudy:
    """A real incident or red-team exercise, told as an ordered procedure.

    ``incident_date`` is ``YYYY-MM-DD``; ``date_granularity`` (``YEAR``, ``MONTH`` or ``DATE``)
    says how much of it is meaningful. ``case_study_type`` is ``incident`` or ``exercise``.
    """

    id: str
    name: str
    summary: str = ""
    incident_date: str = ""
    date_granularity: str = "DATE"
    case_study_type: str = ""
    target: str = ""
    actor: str = ""
    reporter: str = ""
    references: tuple[Reference, ...] = ()
    procedure: tuple[ProcedureStep, ...] = ()

    @property
    def techniques(self) -> tuple[str, ...]:
        """The distinct technique IDs of the procedure, in first-use order."""
        return tuple(dict.fromkeys(step.technique for step in self.procedure))

    @property
    def date_label(self) -> str:
        """The incident date cut to its granularity: ``2020``, ``2020-03`` or ``2020-03-14``."""
        cut = {"YEAR": 4, "MONTH": 7}.get(self.date_granularity.upper(), 10)
        return self.incident_date[:cut]


AtlasObject = Tactic | Technique | Mitigation | CaseStudy
Status = Literal["active", "revoked", "deprecated"]


@dataclass(frozen=True)
class Retired:
    """An object the data marks ``revoked`` (replaced, ``replaced_by`` when the data says by
    what) or ``deprecated`` (withdrawn): still resolvable by ID, no longer in the matrix."""

    object: AtlasObject
    status: Literal["revoked", "deprecated"]
    replaced_by: str | None = None


@dataclass(frozen=True)
class SearchHit:
    """A full-text search result: the object, its kind, and a relevance score (higher is better)."""

    id: str
    kind: Kind
    name: str
    score: float


@dataclass(frozen=True)
class KnowledgeBase:
    """One version of the matrix, with its relations indexed for look-up.

    Parameters
    ----------
    version : str
        The ATLAS data version: the content release (``"2026.09"``) for format-6 data, the
        legacy data version (``"5.6.0"``) before it; plus extension names when extended.
    tactics, techniques, mitigations, case_studies : sequence
        In matrix order: tactics left to right, techniques in the order the source lists them.
    source : str
        Where the data came from (``embedded snapshot``, a file path), for every output to cite.
    retired : sequence of Retired
        Revoked and deprecated objects: :meth:`get` finds them, but they are in no section,
        not iterated, and not under any tactic.
    warnings : sequence of DataWarning
        What the loader read past (dangling links, inferred parents, retired objects...).
    format_version : str
        The data file's format (``"6.0.0"``); empty for the legacy layout, whose ``version``
        names the data and the format at once.

    Raises
    ------
    UnknownIdError
        From every look-up, when the ID is not in this knowledge base.
    """

    version: str
    tactics: tuple[Tactic, ...]
    techniques: tuple[Technique, ...]
    mitigations: tuple[Mitigation, ...]
    case_studies: tuple[CaseStudy, ...]
    source: str = "embedded snapshot"
    name: str = "ATLAS"
    retired: tuple[Retired, ...] = ()
    warnings: tuple[DataWarning, ...] = field(default=(), compare=False)
    format_version: str = ""
    _index: dict[str, AtlasObject] = field(init=False, repr=False, compare=False)
    _matrix: tuple[AtlasObject, ...] = field(init=False, repr=False, compare=False)
    _retired: dict[str, Retired] = field(init=False, repr=False, compare=False)
    _children: dict[str, tuple[str, ...]] = field(init=False, repr=False, compare=False)
    _mitigations_of: dict[str, tuple[str, ...]] = field(init=False, repr=False, compare=False)
    _case_studies_of: dict[str, tuple[str, ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        index: dict[str, AtlasObject] = {}
        objects: tuple[AtlasObject, ...] = (
            *self.tactics, *self.techniques, *self.mitigations, *self.case_studies
        )
        for obj in objects:
            index[obj.id] = obj
        retired = {r.object.id: r for r in self.retired if r.object.id not in index}
        for r in retired.values():
            index.setdefault(r.object.id, r.object)
        children: dict[str, list[str]] = {}
        for t in self.techniques:
            if t.parent:
                children.setdefault(t.parent, []).append(t.id)
        mits: dict[str, list[str]] = {}
        for m in self.mitigations:
            for use in m.techniques:
                ids = mits.setdefault(use.technique, [])
                if m.id not in ids:  # the official data links some pairs twice
                    ids.append(m.id)
        uses: dict[str, list[str]] = {}
        for cs in self.case_studies:
            for tid in cs.techniques:
                uses.setdefault(tid, []).append(cs.id)
        object.__setattr__(self, "_index", index)
        object.__setattr__(self, "_matrix", tuple(index[o.id] for o in objects
                                                  if index[o.id] is o))
        object.__setattr__(self, "_retired", retired)
        object.__setattr__(self, "_children", {k: tuple(v) for k, v in children.items()})
        object.__setattr__(self, "_mitigations_of", {k: tuple(v) for k, v in mits.items()})
        object.__setattr__(self, "_case_studies_of", {k: tuple(v) for k, v in uses.items()})

    def provenance(self) -> dict[str, str]:
        """What every output resolved against this data cites: ``atlas_version`` (the content
        release or legacy version), ``atlas_source``, and ``atlas_format_version`` when the
        file's format is known apart from the version (format-6 data)."""
        out = {"atlas_version": self.version, "atlas_source": self.source}
        if self.format_version:
            out["atlas_format_version"] = self.format_version
        return out

    # -- look-ups -------------------------------------------------------------------------------
    def __contains__(self, atlas_id: object) -> bool:
        """Whether :meth:`get` resolves the ID (retired objects included)."""
        return atlas_id in self._index

    def __iter__(self) -> Iterator[AtlasObject]:
        """The objects of the matrix, in matrix order (retired objects left out)."""
        return iter(self._matrix)

    def __len__(self) -> int:
        return len(self._matrix)

    def get(self, atlas_id: str) -> AtlasObject:
        """The object with this ID, whatever its kind. Raises :class:`UnknownIdError`."""
        try:
            return self._index[atlas_id]
        except KeyError:
            raise UnknownIdError(atlas_id, self.version, self._suggest(atlas_id)) from None

    def status(self, atlas_id: str) -> Status:
        """``active``, or ``revoked``/``deprecated`` for an object left out of the matrix.
        Raises :class:`UnknownIdError`."""
        self.get(atlas_id)
        r = self._retired.get(atlas_id)
        return "active" if r is None else r.status

    def _typed(self, atlas_id: str, cls: type) -> AtlasObject:
        obj = self.get(atlas_id)
        if not isinstance(obj, cls):
            wanted = {Tactic: "tactic", Technique: "technique", Mitigation: "mitigation",
                      CaseStudy: "case study"}[cls]
            raise WrongKindError(atlas_id, self.kind(atlas_id), wanted)
        return obj

    def tactic(self, atlas_id: str) -> Tactic:
        return self._typed(atlas_id, Tactic)  # type: ignore[return-value]

    def technique(self, atlas_id: str) -> Technique:
        """A technique or sub-technique by ID (``kb.technique("AML.T0043.001")``)."""
        return self._typed(atlas_id, Technique)  # type: ignore[return-value]

    def mitigation(self, atlas_id: str) -> Mitigation:
        return self._typed(atlas_id, Mitigation)  # type: ignore[return-value]

    def case_study(self, atlas_id: str) -> CaseStudy:
        return self._typed(atlas_id, CaseStudy)  # type: ignore[return-value]

    def kind(self, atlas_id: str) -> Kind:
        """``tactic``, ``technique``, ``sub-technique``, ``mitigation`` or ``case-study``."""
        obj = self.get(atlas_id)
        if isinstance(obj, Technique):
            return "sub-technique" if obj.parent else "technique"
        if isinstance(obj, Tactic):
            return "tactic"
        return "mitigation" if isinstance(obj, Mitigation) else "case-study"

    def _suggest(self, atlas_id: str) -> str | None:
        from mlthreat.kb.names import suggest_id

        return suggest_id(self, atlas_id)

    def tactic_by_shortname(self, shortname: str) -> Tactic | None:
        """The tactic whose Navigator/STIX short name is ``shortname``, if any."""
        for t in self.tactics:
            if t.shortname == shortname:
                return t
        return None

    # -- relations ------------------------------------------------------------------------------
    def tactics_of(self, technique_id: str) -> tuple[Tactic, ...]:
        """The tactics a technique serves; a sub-technique inherits its parent's."""
        t = self.technique(technique_id)
        ids = t.tactics
        if not ids and t.parent:
            ids = self.technique(t.parent).tactics
        return tuple(self.tactic(i) for i in ids if i in self._index)

    def techniques_of(
        self, tactic_id: str, *, subtechniques: bool = False
    ) -> tuple[Technique, ...]:
        """Techniques of a tactic in matrix order; with ``subtechniques``, each followed by its
        own."""
        self.tactic(tactic_id)
        out: list[Technique] = []
        for t in self.techniques:
            if t.parent is None and tactic_id in t.tactics:
                out.append(t)
                if subtechniques:
                    out.extend(self.subtechniques(t.id))
        return tuple(out)

    def subtechniques(self, technique_id: str) -> tuple[Technique, ...]:
        """The sub-techniques of a technique, in source order."""
        self.technique(technique_id)
        return tuple(self.technique(i) for i in self._children.get(technique_id, ()))

    def mitigations_of(self, technique_id: str, *, inherit: bool = True) -> tuple[Mitigation, ...]:
        """Mitigations linked to a technique. With ``inherit`` (the default) a sub-technique also
        gets its parent's, since a defence against the technique covers its variants."""
        t = self.technique(technique_id)
        ids = list(self._mitigations_of.get(t.id, ()))
        if inherit and t.parent:
            ids += [i for i in self._mitigations_of.get(t.parent, ()) if i not in ids]
        return tuple(self.mitigation(i) for i in ids)

    def uses_of(self, mitigation_id: str, technique_id: str) -> tuple[str, ...]:
        """The "use" texts of the links from a mitigation to a technique (empty in the snapshot)."""
        return tuple(
            u.use for u in self.mitigation(mitigation_id).techniques if u.technique == technique_id
        )

    def case_studies_using(
        self, technique_id: str, *, subtechniques: bool = True
    ) -> tuple[CaseStudy, ...]:
        """Case studies whose procedure uses the technique (or, by default, one of its
        sub-techniques), in case-study order."""
        self.technique(technique_id)
        ids = set(self._case_studies_of.get(technique_id, ()))
        if subtechniques:
            for child in self._children.get(technique_id, ()):
                ids.update(self._case_studies_of.get(child, ()))
        return tuple(cs for cs in self.case_studies if cs.id in ids)

    def technique_frequency(self) -> Counter[str]:
        """How many case studies use each technique ID (each case study counted once per
        technique). Parents are not credited for their sub-techniques' uses."""
        return Counter({k: len(v) for k, v in self._case_studies_of.items()})

    def search(self, text: str, *, limit: int = 20) -> list[SearchHit]:
        """Full-text search over IDs, names and descriptions (and case-study fields).

        Every word of ``text`` must occur (case-insensitive) as the start of a word of the object,
        or, without a common suffix, start one (``inference`` matches ``infer``).
        Scores weight a match in the ID or name above one in the description, so ``"extract"``
        ranks *Extract AI Model* above techniques that only mention extraction.
        """
        from mlthreat.kb.search import search

        return search(self, text, limit=limit)

    def objects(self, kinds: Iterable[Kind] | None = None) -> list[AtlasObject]:
        """All objects, in matrix order, optionally only those of the given kinds."""
        wanted = set(kinds) if kinds is not None else None
        return [o for o in self._matrix if wanted is None or self.kind(o.id) in wanted]
