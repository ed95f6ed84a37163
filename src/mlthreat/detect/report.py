"""The documents a detection run and an evaluation end with: what was read, what was raised,
which clients each detector flagged or could not judge, per ATLAS technique.

``RunReport(...).to_dict()`` is what ``mlthreat detect run --json`` prints (kind
``mlthreat.detect.run``, schema ``mlthreat/schemas/detect.run.schema.json``) and
``EvaluationReport(...).to_dict()`` what ``mlthreat detect evaluate --json`` prints (kind
``mlthreat.detect.evaluation``); the command line is a thin layer over them.

Example::

    from mlthreat import detect, kb

    base = kb.load()
    reader = detect.LogReader("queries.jsonl")
    result = detect.run_detectors(reader, detect.resolve_detectors(), base)
    report = RunReport(result, [reader.stats], base)
    report.check_read()
    print(report.to_dict()["summary"])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from mlthreat.detect.engine import DetectionResult
    from mlthreat.detect.evaluate import DetectorScore
    from mlthreat.detect.summary import TechniqueSummary
    from mlthreat.kb.model import KnowledgeBase

__all__ = ["EvaluationReport", "ReadCounts", "RunReport", "read_summary"]


class ReadCounts(Protocol):
    """What a reader counted (:class:`~mlthreat.detect.readers.ReadStats`, or the follower's
    stats)."""

    source: str
    lines: int
    events: int
    skipped: Mapping[str, int]

    @property
    def skipped_total(self) -> int: ...


def read_summary(stats: Sequence[ReadCounts]) -> list[dict[str, Any]]:
    """Per source read: lines, events, and malformed lines skipped by reason."""
    return [{"source": s.source, "lines": s.lines, "events": s.events,
             "skipped": dict(s.skipped)} for s in stats]


def _envelope(kind: str, kb: KnowledgeBase, payload: dict[str, Any]) -> dict[str, Any]:
    from mlthreat import __version__

    return {"kind": kind, "schema_version": 1, "mlthreat_version": __version__,
            **kb.provenance(), **payload}


@dataclass(frozen=True)
class RunReport:
    """The end of a detection run.

    Attributes
    ----------
    result : DetectionResult
        What :func:`~mlthreat.detect.engine.run_detectors` (or the Spark engines) returned.
    stats : list of ReadStats
        What each source read counted.
    kb : KnowledgeBase
        What the techniques resolve against.
    """

    result: DetectionResult
    stats: Sequence[ReadCounts]
    kb: KnowledgeBase
    _summary: list[TechniqueSummary] = field(default_factory=list, init=False, repr=False,
                                             compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_summary", self.result.summary(self.kb))

    @property
    def skipped(self) -> int:
        """Malformed lines skipped, over every source."""
        return sum(s.skipped_total for s in self.stats)

    @property
    def flagged(self) -> list[tuple[str, str]]:
        """``(detector, client_id)`` pairs whose final verdict is ``flagged``, once each, in
        the order of their ``detector:client_id`` text."""
        return sorted({(s.detector, s.client_id) for s in self.result.statuses
                       if s.verdict == "flagged"}, key=lambda p: f"{p[0]}:{p[1]}")

    @property
    def untested(self) -> list[Any]:
        """Client statuses a detector could not judge (too few queries)."""
        return [s for s in self.result.statuses if s.verdict == "untested"]

    @property
    def techniques(self) -> list[TechniqueSummary]:
        """Per ATLAS technique, the clients flagged and by which detectors."""
        return list(self._summary)

    @property
    def exit_code(self) -> int:
        """1 when any alert was raised, else 0."""
        return 1 if self.result.alerts else 0

    def check_read(self, quarantine: str | None = None,
                   keep_hint: str = "pass quarantine= to keep them") -> None:
        """Raise when every line read was malformed (the wrong file, most likely).

        ``quarantine`` is where the malformed lines went, if anywhere; else the message ends
        with ``keep_hint`` (the command line names its option here).

        Raises
        ------
        LogFormatError
            Naming the sources and the count.
        """
        skipped = self.skipped
        if skipped and not any(s.events for s in self.stats):
            from mlthreat.detect.errors import LogFormatError

            where = f"; they are in {quarantine}" if quarantine else f"; {keep_hint}"
            raise LogFormatError(f"{', '.join(sorted({s.source for s in self.stats}))}: no "
                                 f"valid QueryEvent in {skipped} malformed line(s){where}")

    def to_dict(self) -> dict[str, Any]:
        """The ``mlthreat.detect.run`` document."""
        r = self.result
        return _envelope("mlthreat.detect.run", self.kb, {
            "events": r.events, "ignored": r.ignored, "alerts": len(r.alerts),
            "suppression": r.suppression, "read": read_summary(self.stats),
            "untested": [vars(s) for s in self.untested],
            "flagged": [f"{d}:{c}" for d, c in self.flagged],
            "summary": [t.to_dict() for t in self._summary],
        })


@dataclass(frozen=True)
class EvaluationReport:
    """Detector scores on labelled logs (:func:`~mlthreat.detect.evaluate.evaluate`), with what
    was read."""

    scores: Sequence[DetectorScore]
    stats: Sequence[ReadCounts]
    kb: KnowledgeBase

    @property
    def measured_fpr(self) -> bool:
        """Whether the logs held benign clients, so false-positive rates were measured."""
        return any(s.truth == "benign" for s in self.scores)

    def to_dict(self) -> dict[str, Any]:
        """The ``mlthreat.detect.evaluation`` document."""
        return _envelope("mlthreat.detect.evaluation", self.kb, {
            "read": read_summary(self.stats), "scores": [vars(s) for s in self.scores]})
