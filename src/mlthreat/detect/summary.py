"""The end of a run in ATLAS terms: which clients were flagged for which technique, by which
detectors, with counts.

Alerts are suppressed (one per client and technique per window, across detectors), so the
alert stream alone does not say that two detectors agreed. Every engine records each
detection that passed the allow list with :meth:`Tally.add`, whether or not it became an
alert; :func:`summarise` then groups them by technique (resolved in the knowledge base) and
client. The command line prints it after ``detect run`` and puts it in ``--json`` as
``summary``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlthreat.detect.detectors.base import Detection
    from mlthreat.kb.model import KnowledgeBase

__all__ = ["FlaggedClient", "Tally", "TechniqueSummary", "summarise"]


@dataclass(frozen=True)
class FlaggedClient:
    """One client flagged for one technique: ``detectors`` maps each detector that flagged it
    to ``(detections, queries)``, its number of detections and the client's query count at the
    first of them; ``alerts`` counts the alerts raised (after suppression)."""

    client_id: str
    model_id: str
    detectors: dict[str, tuple[int, int]]
    alerts: int

    def to_dict(self) -> dict[str, Any]:
        return {"client_id": self.client_id, "model_id": self.model_id, "alerts": self.alerts,
                "detectors": [{"detector": d, "detections": n, "queries_observed": q}
                              for d, (n, q) in self.detectors.items()]}


@dataclass(frozen=True)
class TechniqueSummary:
    """The clients flagged for one ATLAS technique, sorted by model then client."""

    technique: str
    technique_name: str
    tactics: tuple[str, ...]
    clients: tuple[FlaggedClient, ...]

    @property
    def alerts(self) -> int:
        return sum(c.alerts for c in self.clients)

    def to_dict(self) -> dict[str, Any]:
        return {"technique": self.technique, "technique_name": self.technique_name,
                "tactics": list(self.tactics), "alerts": self.alerts,
                "clients": [c.to_dict() for c in self.clients]}


@dataclass
class Tally:
    """Detections counted per (technique, model, client, detector), and alerts per (technique,
    model, client)."""

    detections: dict[tuple[str, str, str, str], list[int]] = field(default_factory=dict)
    alerts: dict[tuple[str, str, str], int] = field(default_factory=dict)

    def add(self, detection: Detection, alerted: bool) -> None:
        """Count one detection that passed the allow list; ``alerted`` when it raised an
        alert (it was not suppressed)."""
        key = (detection.technique, detection.model_id, detection.client_id)
        entry = self.detections.setdefault((*key, detection.detector),
                                           [0, int(detection.queries_observed)])
        entry[0] += 1
        entry[1] = min(entry[1], int(detection.queries_observed))
        self.alerts[key] = self.alerts.get(key, 0) + int(alerted)


def summarise(tally: Tally, kb: KnowledgeBase) -> list[TechniqueSummary]:
    """Per technique (sorted by ID), the clients flagged and by which detectors (sorted by
    name)."""
    grouped: dict[str, dict[tuple[str, str], dict[str, tuple[int, int]]]] = {}
    for (technique, model, client, detector), (n, queries) in sorted(tally.detections.items()):
        grouped.setdefault(technique, {}).setdefault((model, client), {})[detector] = (n,
                                                                                      queries)
    out = []
    for technique, clients in grouped.items():
        tech = kb.technique(technique)
        out.append(TechniqueSummary(
            technique=tech.id, technique_name=tech.name,
            tactics=tuple(t.id for t in kb.tactics_of(tech.id)),
            clients=tuple(FlaggedClient(client, model, dets,
                                        tally.alerts.get((technique, model, client), 0))
                          for (model, client), dets in clients.items())))
    return out
