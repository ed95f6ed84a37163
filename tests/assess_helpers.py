"""What the assessment tests share: running a technique as the runner does (with or without a
query log), picking a demo target, reading a metric, and a pickle that shows it was unpickled."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mlthreat.assess.finding import Finding
from mlthreat.assess.techniques.base import RunContext, TechniqueRun
from mlthreat.events import QueryLog


def by_id(targets: list[Any], model_id: str) -> Any:
    return next(t for t in targets if t.model_id == model_id)


def value(finding: Finding, name: str) -> Any:
    return finding.metrics[name].value


def execute(run: TechniqueRun, target: Any, data: Any, budget: int = 10_000, seed: int = 0, *,
            attack_only: bool = False, clients_per_run: int = 1) -> Finding:
    """``run`` against ``target``, with ``budget`` attack queries. ``attack_only``: check that
    every query the target counted is one of the attack's, none spent on evaluation."""
    ctx = RunContext(target, data, budget, seed, run_name=run.name, technique=run.technique,
                     clients_per_run=clients_per_run)
    before = target.total_queries
    finding = run.run(ctx)
    if attack_only:
        assert finding.queries == target.total_queries - before
        assert finding.evaluation_queries == 0
    return finding


def execute_logged(run: TechniqueRun, target: Any, data: Any, budget: int, path: Path,
                   clients_per_run: int = 1) -> tuple[Finding, list[dict[str, Any]]]:
    """:func:`execute` with a query log at ``path`` attached to ``target`` (and detached after):
    the finding and the logged events."""
    log = QueryLog(path, target.model_id)
    target.attach_log(log)
    try:
        finding = execute(run, target, data, budget, clients_per_run=clients_per_run)
    finally:
        target.attach_log(None)
        log.close()
    return finding, [json.loads(line) for line in path.read_text().splitlines()]


class UnpickleMarker:
    """Unpickling this creates ``path``: proof that a file was (or was not) unpickled."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.path, "w"))


def broken_fit(x: Any, y: Any, seed: int) -> Any:
    """A training entry point that fails, as a user's can: the poisoning run ends in error."""
    raise RuntimeError("training data loader is not configured")
