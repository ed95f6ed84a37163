"""What a technique run is: parameters checked up front, an applicability test, a declared
success rule, and ``run(ctx) -> Finding``.

A run follows scikit-learn's manners: the constructor only stores parameters; ``validate``
checks them against ``_constraints`` (ART's per-attack checking is the model) when the run
starts (one vocabulary and one message for the whole library, :mod:`mlthreat.constraints`);
results are plain :class:`~mlthreat.assess.finding.Finding` objects.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from mlthreat.assess.finding import Finding, Metric
from mlthreat.constraints import Configurable

if TYPE_CHECKING:
    from mlthreat.assess.data import AssessmentData
    from mlthreat.assess.target import QueryAccount, Target

__all__ = ["RunContext", "TechniqueRun"]

_ROLE = {"pool": "pool rows", "eval": "evaluation rows",
         "members": "members and as many non-members"}


@dataclass
class RunContext:
    """Everything a run gets: the target, the data, its query ``budget`` (most queries the
    attack may send), the ``seed``, a folder for evidence files, and a progress callback
    ``progress(queries_used)``."""

    target: Target
    data: AssessmentData
    budget: int
    seed: int = 0
    evidence_dir: Any = None
    progress: Callable[[int], None] = field(default=lambda used: None)
    run_name: str = ""
    technique: str = ""
    clients_per_run: int = 1

    @contextmanager
    def attack(self, client: str = "") -> Iterator[QueryAccount]:
        """Account for the attack's own queries (``truth: attack:<ID>``), within the budget.

        ``client`` names a part of the attack (one evasion sample, say). The query log shows
        the run as one client by default, as one attacker with one API key would appear; with
        ``clients_per_run`` N > 1 the parts are spread round-robin over N clients
        (``RUN-1`` … ``RUN-N``), as an attacker rotating keys would. They share the budget."""
        used_before = self._attack_used
        limit = self.budget - used_before
        client_id = self.run_name
        if client and self.clients_per_run > 1:
            slot = self._clients.setdefault(client, len(self._clients) % self.clients_per_run)
            client_id = f"{self.run_name}-{slot + 1}"
        with self.target.account(client_id, f"attack:{self.technique}", limit) as acc:
            try:
                yield acc
            finally:
                self._attack_used = used_before + acc.used
                self.progress(self._attack_used)

    @contextmanager
    def evaluation(self) -> Iterator[QueryAccount]:
        """Account for queries spent measuring the attack (``truth: evaluation``), kept apart
        from the attack's budget."""
        with self.target.account(f"{self.run_name}-evaluation", "evaluation") as acc:
            try:
                yield acc
            finally:
                self._evaluation_used += acc.used

    _attack_used: int = 0
    _evaluation_used: int = 0
    _clients: dict[str, int] = field(default_factory=dict)

    @property
    def attack_queries(self) -> int:
        return self._attack_used

    @property
    def evaluation_queries(self) -> int:
        return self._evaluation_used


class TechniqueRun(Configurable):
    """Base class of technique runs.

    Class attributes a run declares: ``name`` (the run's name on the command line),
    ``technique`` (the primary, most specific ATLAS ID), ``related`` (other IDs it also
    demonstrates), ``title``, ``needs_access`` (``black-box`` or ``white-box``),
    ``needs_scores`` (whether label-only targets can be attacked), ``tasks``, ``defaults``
    (parameter defaults), ``_constraints`` (parameter name → :data:`~mlthreat.constraints.Spec`)
    and ``_rules`` (cross-parameter :class:`~mlthreat.constraints.Rule` s).
    """

    name: ClassVar[str]
    technique: ClassVar[str]
    related: ClassVar[tuple[str, ...]] = ()
    title: ClassVar[str]
    needs_access: ClassVar[str] = "black-box"
    needs_scores: ClassVar[bool] = False
    needs_membership: ClassVar[bool] = False
    tasks: ClassVar[tuple[str, ...]] = ("classification",)
    default_budget: ClassVar[int] = 10_000
    # fewest rows the run needs by role ("pool", "eval", "members": members and non-members
    # each), with the reason; stated in the plan and checked before the run starts
    min_rows: ClassVar[dict[str, tuple[int, str]]] = {}

    def not_applicable(self, target: Target, data: AssessmentData) -> str | None:
        """Why this run cannot run against ``target`` with ``data`` (None when it can)."""
        if target.task not in self.tasks:
            return f"needs a {' or '.join(self.tasks)} target; this one is a {target.task}"
        if self.needs_access == "white-box" and target.access != "white-box":
            return "needs gradients (white-box access); the target is black-box"
        if self.needs_scores and target.output_kind != "scores":
            return "needs class scores; the target returns labels only"
        if self.needs_membership and not data.has_membership:
            return "needs rows known to be members and non-members (--members/--non-members)"
        have = {"pool": len(data.x_pool), "eval": len(data.x_eval),
                "members": min(len(data.x_members), len(data.x_nonmembers))
                if data.x_members is not None and data.x_nonmembers is not None else 0}
        for role, (least, why) in self.min_rows.items():
            if have[role] < least:
                return (f"needs at least {least} {_ROLE[role]} ({why}); the data gives "
                        f"{have[role]}")
        return None

    def minimum(self) -> str:
        """The fewest rows the run needs, by role, with the reasons ("" when none)."""
        return "; ".join(f"{least} {_ROLE[role]}: {why}"
                         for role, (least, why) in self.min_rows.items())

    def planned_queries(self, target: Target, data: AssessmentData, budget: int) -> int:
        """Upper bound on the queries the attack will send (for ``--dry-run``)."""
        return budget

    def rule(self) -> str:
        """The rule that decides ``succeeded``, in words, with its thresholds."""
        raise NotImplementedError

    def run(self, ctx: RunContext) -> Finding:
        """Attack ``ctx.target``; return a Finding with status, metrics and curves."""
        raise NotImplementedError

    # helpers for subclasses
    def finding(self, ctx: RunContext, status: str, reason: str, metrics: dict[str, Metric],
                started: float, **extra: Any) -> Finding:
        """A Finding filled with this run's identity and the context's query counts."""
        return Finding(
            technique=self.technique, name=self.title, status=status,  # type: ignore[arg-type]
            reason=reason, rule=self.rule(), related_techniques=self.related, metrics=metrics,
            queries=ctx.attack_queries, evaluation_queries=ctx.evaluation_queries,
            seconds=round(time.perf_counter() - started, 3), params=dict(self.params),
            run=self.name, **extra,
        )
