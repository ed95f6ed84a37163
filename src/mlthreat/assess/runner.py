"""Orchestration: plan the technique runs for each target, run them, collect the Findings.

A crashing run is recorded as ``status: error`` with its cause and the others go on, except
when the target itself fails (unreachable, answering garbage): the rest of that target's runs
are recorded as not run, and ``target_errors`` says why. Ctrl-C
stops the suite but keeps what finished (``interrupted`` is set on the result). Every query is
logged to the query log when one is given. With a mitigation, the suite runs twice (as is, and
behind the mitigation) and the result carries both.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol

from mlthreat.assess.errors import QueryBudgetExceeded, RunTimeLimit, TargetError
from mlthreat.assess.finding import Finding
from mlthreat.assess.techniques import RunContext, TechniqueRun, run_classes

if TYPE_CHECKING:
    from mlthreat.assess.data import AssessmentData
    from mlthreat.assess.mitigations import Mitigation
    from mlthreat.assess.target import Target
    from mlthreat.events import QueryLog
    from mlthreat.kb.model import KnowledgeBase

__all__ = ["STATUSES", "Assessment", "AssessmentResult", "PlannedRun", "Reporter"]

#: The statuses a Finding can have, in report order.
STATUSES: tuple[str, ...] = ("succeeded", "failed", "not-applicable", "error")


class Reporter(Protocol):
    """Progress callbacks (the CLI draws progress bars from them; the core never prints).
    ``run_started`` gets the run's place in the suite: run ``index`` of ``total`` (from 1)."""

    def run_started(self, target: str, run: str, technique: str, budget: int, *,
                    index: int = 0, total: int = 0) -> None: ...

    def progress(self, queries_used: int) -> None: ...

    def run_finished(self, finding: Finding) -> None: ...


class _Silent:
    def run_started(self, target: str, run: str, technique: str, budget: int, *,
                    index: int = 0, total: int = 0) -> None:
        pass

    def progress(self, queries_used: int) -> None:
        pass

    def run_finished(self, finding: Finding) -> None:
        pass


@dataclass(frozen=True)
class PlannedRun:
    """One run the plan holds: which target, which run, whether it applies (``reason`` when
    not), the most queries it will send, and the fewest rows it needs (``minimum``, with
    why)."""

    target: str
    run: str
    technique: str
    title: str
    applicable: bool
    reason: str
    planned_queries: int
    minimum: str = ""


@dataclass(frozen=True)
class TargetFindings:
    """The Findings of one suite against one target (``mitigation`` label when wrapped)."""

    target: dict[str, Any]
    findings: tuple[Finding, ...]
    mitigation: str | None = None


@dataclass(frozen=True)
class AssessmentResult:
    """Everything an assessment produced, before it is written as a report."""

    results: tuple[TargetFindings, ...]
    data: dict[str, Any]
    seed: int
    budget: int | None
    total_budget: int | None
    atlas_version: str
    interrupted: bool = False
    mitigation: str | None = None
    started: float = 0.0
    seconds: float = 0.0
    queries_total: int = 0
    target_errors: dict[str, str] = field(default_factory=dict)
    run_timeout: float | None = None

    def findings(self, *, mitigated: bool = False) -> list[tuple[str, Finding]]:
        """(model_id, Finding) pairs from the plain runs, or the mitigated ones."""
        return [(r.target["model_id"], f) for r in self.results
                if (r.mitigation is not None) == mitigated for f in r.findings]

    def counts(self, *, mitigated: bool = False) -> dict[str, int]:
        """Runs per status (``succeeded``, ``failed``, ``not-applicable``, ``error``, each
        present) among the plain runs, or the mitigated ones: with a mitigation, the question
        is whether the mitigated deployment holds. The plain counts are the report's
        ``summary``."""
        out = dict.fromkeys(STATUSES, 0)
        for _, f in self.findings(mitigated=mitigated):
            out[f.status] = out.get(f.status, 0) + 1
        return out

    def errors(self) -> list[tuple[str, Finding]]:
        """(model_id, Finding) of every run that ended in error, plain and mitigated, in
        report order."""
        return [(r.target["model_id"], f) for r in self.results for f in r.findings
                if f.status == "error"]


class Assessment:
    """Run ATLAS technique runs against targets.

    Parameters
    ----------
    targets : list of Target
    data : AssessmentData
    techniques : list of str, optional
        Run names or ATLAS technique IDs to run (default: every run in the suite).
    budget : int, optional
        Most queries each run may send (default: each run's own ``default_budget``).
    total_budget : int, optional
        Most attack queries in all; runs stop being started once it is spent.
    seed : int
        Seeds every random choice; the same seed gives the same metrics.
    params : dict, optional
        Per-run parameters, ``{run name: {param: value}}``.
    target_params : dict, optional
        Per-target parameters over ``params``, ``{model_id: {run name: {param: value}}}``
        (the demo attacks its random forest, whose every query is a slow call, with fewer
        label-only samples).
    mitigation : Mitigation, optional
        Also run the suite behind this mitigation, for a before/after comparison.
    fit : callable, optional
        Training entry point ``fit(X, y, seed) -> estimator`` for poisoning runs.
    kb : KnowledgeBase, optional
        Resolves tactics and mitigations of each technique (default: ``mlthreat.kb.load()``).
    query_log : QueryLog, optional
        Where every query is written as a QueryEvent.
    reference : Target, optional
        A second artifact of the same model (the scikit-learn original of an ONNX export, say):
        the labels both give on the evaluation rows are compared and reported as the target's
        ``parity``; every finding is still measured on the target under test.
    clients_per_run : int
        Clients each run's attack queries appear under in the query log (1: the run is one
        client, as one attacker with one key; more spread the parts of a run, such as evasion
        samples, round-robin, as an attacker rotating keys).
    run_timeout : float, optional
        Seconds each run's attack may take (None: no limit). Past it the attack sends no more
        queries; a run that keeps what it measured when its queries run out reports on that
        (measured on the target, which is not time-limited), any other ends in ``error``
        saying so.

    The constructor only stores parameters; :meth:`plan` and :meth:`run` validate them.
    """

    def __init__(self, targets: Sequence[Target], data: AssessmentData, *,
                 techniques: list[str] | None = None, budget: int | None = None,
                 total_budget: int | None = None, seed: int = 0,
                 params: dict[str, dict[str, Any]] | None = None,
                 target_params: dict[str, dict[str, dict[str, Any]]] | None = None,
                 mitigation: Mitigation | None = None, fit: Callable[..., Any] | None = None,
                 kb: KnowledgeBase | None = None, query_log: QueryLog | None = None,
                 clients_per_run: int = 1, reference: Target | None = None,
                 run_timeout: float | None = None) -> None:
        self.targets = list(targets)
        self.data = data
        self.techniques = techniques
        self.budget = budget
        self.total_budget = total_budget
        self.seed = seed
        self.params = params or {}
        self.target_params = target_params or {}
        self.mitigation = mitigation
        self.fit = fit
        self.kb = kb
        self.query_log = query_log
        self.clients_per_run = clients_per_run
        self.reference = reference
        self.run_timeout = run_timeout

    @classmethod
    def demo(cls, seed: int = 0, *, techniques: list[str] | None = None,
             params: dict[str, dict[str, Any]] | None = None, fit: Callable[..., Any] | None = None,
             **options: Any) -> Assessment:
        """The demo assessment: the demo models (:func:`mlthreat.assess.demo_targets`) on
        scikit-learn's digits (:func:`mlthreat.assess.digits_demo`), with the demo's
        parameters for the selected runs under the ones given.

        Parameters
        ----------
        seed : int
            Seeds the data split, the models and every run.
        techniques : list of str, optional
            Run names or ATLAS technique IDs (default: every run).
        params : dict, optional
            ``{run name: {param: value}}``, over the demo's own
            (:data:`~mlthreat.assess.demo.DEMO_PARAMS`, and for each target
            :data:`~mlthreat.assess.demo.DEMO_TARGET_PARAMS`).
        fit : callable, optional
            Training entry point for poisoning; without one, each demo model is poisoned as
            itself (a clone retrained).
        **options
            The other :class:`Assessment` parameters (``budget``, ``kb``, ``mitigation``…).

        Raises
        ------
        UsageError
            For an unknown run name or technique.

        Examples
        --------
        >>> from mlthreat.assess import Assessment
        >>> demo = Assessment.demo(0, techniques=["evasion-hopskipjump"])
        >>> [t.model_id for t in demo.targets]
        ['demo-logreg', 'demo-mlp', 'demo-forest']
        >>> demo.target_params["demo-forest"]
        {'evasion-hopskipjump': {'n_samples': 3}}
        """
        from mlthreat.assess.data import digits_demo
        from mlthreat.assess.demo import DEMO_PARAMS, demo_target_params, demo_targets

        given = params or {}
        chosen = {c.name for c in run_classes(techniques)}
        defaults = {k: v for k, v in DEMO_PARAMS.items()
                    if fit is None or k != "poisoning-backdoor"}
        merged = {run: dict(p) for run, p in defaults.items() if run in chosen}
        for run, p in given.items():
            merged.setdefault(run, {}).update(p)
        data = digits_demo(seed)
        return cls(demo_targets(data, seed), data, techniques=techniques, seed=seed,
                   params=merged, target_params=demo_target_params(chosen, given), fit=fit,
                   **options)

    def _runs(self, model_id: str | None = None) -> list[TechniqueRun]:
        """The runs, validated, with ``model_id``'s parameters over the common ones."""
        from mlthreat.errors import UsageError

        runs = []
        classes = run_classes(self.techniques)
        names = {c.name for c in classes}
        unknown = set(self.params) - names
        if unknown:
            raise UsageError(f"parameters for runs not selected: {', '.join(sorted(unknown))}")
        targets = {t.model_id for t in self.targets}
        for target_id, per_run in self.target_params.items():
            if target_id not in targets:
                raise UsageError(f"parameters for a target not assessed: {target_id}")
            if set(per_run) - names:
                raise UsageError(f"parameters for runs not selected on {target_id}: "
                                 f"{', '.join(sorted(set(per_run) - names))}")
        own = self.target_params.get(model_id, {}) if model_id is not None else {}
        for cls in classes:
            params = {**self.params.get(cls.name, {}), **own.get(cls.name, {})}
            if "fit" in cls.defaults and "fit" not in params:
                params["fit"] = self.fit
            run = cls(**params)
            run.validate()
            runs.append(run)
        if self.budget is not None and self.budget < 1:
            raise UsageError("--budget must be at least 1")
        if isinstance(self.clients_per_run, bool) or not isinstance(self.clients_per_run, int) \
                or self.clients_per_run < 1:
            raise UsageError(f"clients_per_run={self.clients_per_run!r}: must be an integer "
                             "of at least 1")
        limit = self.run_timeout
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int | float)
                                  or not 0 < limit < float("inf")):
            raise UsageError(f"run_timeout={limit!r}: must be a number of seconds above 0")
        return runs

    def _tell_labels(self) -> None:
        """Let each target know the labels of the data (see ``Target.use_data_labels``)."""
        import numpy as np

        known = [y for y in (self.data.y_pool, self.data.y_eval) if y is not None]
        if known:
            for target in self.targets:
                target.use_data_labels(np.concatenate(known))

    def _parity(self, target: Target) -> dict[str, Any]:
        """Label agreement of ``target`` with :attr:`reference` on the evaluation rows (the
        target's queries are evaluation queries of client ``MODEL-parity``), with a 95 %
        Clopper-Pearson interval; or the reason it could not be measured."""
        import numpy as np

        from mlthreat.stats import clopper_pearson

        assert self.reference is not None
        x = np.asarray(self.data.x_eval)
        out: dict[str, Any] = {"reference": self.reference.description or
                               self.reference.model_id, "rows": len(x)}
        ref = self.reference
        for t in (target, ref):
            if t.task == "regression":
                return {**out, "error": f"{t.description or t.model_id} is a regressor: "
                                        "label agreement needs two classifiers"}
        try:
            with target.account(f"{target.model_id}-parity", "evaluation"):
                mine = _class_values(target, target.labels(x))
            theirs = _class_values(ref, ref.labels(x))
        except (TargetError, QueryBudgetExceeded) as exc:
            return {**out, "error": str(exc)}
        except Exception as exc:  # the reference is the user's artifact; its crash is data
            return {**out, "error": f"{type(exc).__name__}: {exc}"}
        if isinstance(mine[0] if len(mine) else None, int) != \
                isinstance(theirs[0] if len(theirs) else None, int) or \
                (target.classes and ref.classes and
                 {str(c) for c in target.classes} != {str(c) for c in ref.classes}):
            return {**out, "error": f"the classes differ: {_classes_text(target)} against "
                                    f"{_classes_text(ref)} in the reference"}
        agree = sum(str(a) == str(b) for a, b in zip(mine, theirs, strict=True))
        low, high = clopper_pearson(agree, len(x))
        return {**out, "agree": agree, "rate": round(agree / max(len(x), 1), 6),
                "ci95": [round(low, 4), round(high, 4)]}

    def _budget(self, run: TechniqueRun) -> int:
        return self.budget if self.budget is not None else run.default_budget

    def plan(self) -> list[PlannedRun]:
        """What :meth:`run` would do, without sending a query."""
        self._tell_labels()
        out = []
        for target in self.targets:
            for run in self._runs(target.model_id):
                reason = run.not_applicable(target, self.data)
                planned = 0 if reason else run.planned_queries(target, self.data,
                                                               self._budget(run))
                out.append(PlannedRun(target.model_id, run.name, run.technique, run.title,
                                      reason is None, reason or "", planned, run.minimum()))
        return out

    def run(self, reporter: Reporter | None = None) -> AssessmentResult:
        """Run the suite (twice with a mitigation) and return every Finding.

        Raises
        ------
        UsageError
            For bad run parameters or selections (before any query is sent).
        """
        from threadpoolctl import threadpool_limits

        from mlthreat.kb import load as load_kb

        reporter = reporter or _Silent()
        runs = {t.model_id: self._runs(t.model_id) for t in self.targets}
        n_runs = len(run_classes(self.techniques))  # the same runs on every target
        self._tell_labels()
        kb = self.kb or load_kb()
        started = time.time()
        results: list[TargetFindings] = []
        interrupted = False
        spent = 0
        target_errors: dict[str, str] = {}
        suites: list[tuple[Target, str | None]] = [(t, None) for t in self.targets]
        if self.mitigation is not None:
            from mlthreat.assess.mitigations import MitigatedTarget

            suites += [(MitigatedTarget(t, self.mitigation, self.seed), self.mitigation.label)
                       for t in self.targets]
        # Small models fit fastest on one BLAS thread; many threads crawl on busy cores.
        with threadpool_limits(limits=1), warnings.catch_warnings():
            # ART announces at import that its torch-only verifiers are unavailable: not ours
            warnings.filterwarnings("ignore", message=".*PyTorch not found.*")
            for target, label in suites:
                findings: list[Finding] = []
                target.attach_log(self.query_log)
                try:
                    for run in runs[target.model_id]:
                        failed = target_errors.get(target.model_id)
                        if failed is not None:  # an unreachable or broken target: stop asking
                            findings.append(Finding(
                                technique=run.technique, name=run.title, status="error",
                                reason=f"not run: the target failed earlier ({failed})",
                                rule=run.rule(), related_techniques=run.related,
                                params=_plain(run.params), run=run.name))
                            continue
                        budget = self._budget(run)
                        if self.total_budget is not None:
                            budget = min(budget, max(self.total_budget - spent, 0))
                        finding = self._one(target, run, budget, kb, reporter,
                                            (len(results) * n_runs + len(findings) + 1,
                                             len(suites) * n_runs))
                        if finding.status == "error" and finding.reason.startswith(_TARGET):
                            target_errors[target.model_id] = finding.reason[len(_TARGET):]
                        spent += finding.queries
                        findings.append(finding)
                except KeyboardInterrupt:
                    interrupted = True
                finally:
                    target.attach_log(None)
                described = target.describe()
                if self.reference is not None and label is None and not interrupted:
                    described["parity"] = self._parity(target)
                results.append(TargetFindings(described, tuple(findings), label))
                if interrupted:
                    break
        return AssessmentResult(
            results=tuple(results), data=self.data.describe(), seed=self.seed,
            budget=self.budget, total_budget=self.total_budget, atlas_version=kb.version,
            interrupted=interrupted, mitigation=self.mitigation.label if self.mitigation else None,
            started=started, seconds=round(time.time() - started, 3), queries_total=spent,
            target_errors=target_errors, run_timeout=self.run_timeout,
        )

    def _one(self, target: Target, run: TechniqueRun, budget: int, kb: KnowledgeBase,
             reporter: Reporter, place: tuple[int, int] = (0, 0)) -> Finding:
        import numpy as np

        reason = run.not_applicable(target, self.data)
        reporter.run_started(target.model_id, run.name, run.technique, budget,
                             index=place[0], total=place[1])
        t0 = time.perf_counter()
        if reason is None and budget <= 0:
            reason = "the total query budget is spent"
        if reason is not None:
            finding = Finding(technique=run.technique, name=run.title, status="not-applicable",
                              reason=reason, rule=run.rule(), related_techniques=run.related,
                              params=_plain(run.params), run=run.name)
        else:
            target.reset_limit()
            ctx = RunContext(target=target, data=self.data, budget=budget, seed=self.seed,
                             progress=reporter.progress, run_name=f"{target.model_id}-{run.name}",
                             technique=run.technique, clients_per_run=self.clients_per_run)
            # ART draws from numpy's global generator: seeded for the run, the caller's own
            # state put back afterwards
            state = np.random.get_state()
            np.random.seed(self.seed)
            try:
                with target.time_limit(self.run_timeout):
                    finding = run.run(ctx)
            except KeyboardInterrupt:
                raise
            except RunTimeLimit as exc:  # it measured nothing it could keep
                finding = run.finding(ctx, "error", f"stopped: {exc} (raise run_timeout, or "
                                      "lower the budget)", {}, t0)
            except QueryBudgetExceeded as exc:
                finding = run.finding(ctx, "failed", f"stopped: {exc}", {}, t0)
            except TargetError as exc:  # the model itself failed: later runs would too
                finding = run.finding(ctx, "error", f"{_TARGET}{exc}", {}, t0)
            except Exception as exc:  # a crashing run is recorded; the suite goes on
                finding = run.finding(ctx, "error", f"{type(exc).__name__}: {exc}", {}, t0)
            finally:
                np.random.set_state(state)
            if run.needs_scores and target.output_kind != "scores" and \
                    finding.status in ("succeeded", "failed"):
                # an endpoint says it answers labels only with its first answer, which this
                # run asked for: its verdict on labels would be meaningless
                finding = replace(finding, status="not-applicable", metrics={}, curves={},
                                  reason="needs class scores; the target answered labels only "
                                  f"({finding.queries} queries sent before that was known)")
        finding = replace(
            finding,
            params=_plain(finding.params),
            tactics=tuple(t.id for t in kb.tactics_of(run.technique)) if run.technique in kb
            else (),
            mitigations=tuple(m.id for m in kb.mitigations_of(run.technique))
            if run.technique in kb else (),
            seconds=round(time.perf_counter() - t0, 3),
        )
        reporter.run_finished(finding)
        return finding


_TARGET = "target failed: "


def _plain(params: dict[str, Any]) -> dict[str, Any]:
    """Parameters as JSON-ready values (callables by their qualified name, NumPy scalars as
    Python numbers: runs accept ``np.int64(20)`` wherever they accept 20)."""
    import numbers

    def plain(value: Any) -> Any:
        if callable(value):
            return f"{getattr(value, '__module__', '?')}:{getattr(value, '__qualname__', '?')}"
        if isinstance(value, tuple | list):
            return [plain(v) for v in value]
        if isinstance(value, numbers.Number) and hasattr(value, "item"):
            return value.item()
        return value

    return {key: plain(value) for key, value in params.items()}


def _class_values(target: Target, indices: Any) -> list[Any]:
    """The predicted classes of ``target`` (its class values when it names them, else the
    indices) for score-column ``indices`` [n], so two artifacts are compared by class, not by
    column position."""
    from mlthreat.assess.target import _plain

    classes = list(target.classes or [])
    if classes:
        return [_plain(classes[int(i)]) for i in indices]
    return [int(i) for i in indices]


def _classes_text(target: Target) -> str:
    from mlthreat.assess.target import _plain, _show

    if target.classes:
        return _show([_plain(c) for c in target.classes])
    return f"{target.n_classes} unnamed classes"
