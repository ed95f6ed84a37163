"""``mlthreat assess``: run ATLAS techniques against a model and write the report folder."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from mlthreat.cli._common import AtlasOpt, ExtensionOpt, JsonOpt, console, load_kb, print_json
from mlthreat.errors import UsageError

if TYPE_CHECKING:
    from collections.abc import Callable

    from mlthreat.assess.finding import Finding

STATUS_STYLE = {"succeeded": "bold red", "failed": "green", "not-applicable": "dim",
                "error": "yellow"}


def _parse_params(items: list[str]) -> dict[str, dict[str, Any]]:
    """``run.key=value`` (value parsed as JSON when it can be) into {run: {key: value}}."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        run, dot, name = key.partition(".")
        if not sep or not dot or not run or not name:
            raise UsageError(f"--param {item!r}: expected RUN.PARAM=VALUE, e.g. "
                             "evasion-hopskipjump.n_samples=10")
        try:
            value: Any = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out.setdefault(run, {})[name] = value
    return out


def _parse_clip(text: str | None) -> tuple[float, float] | None:
    if text is None:
        return None
    low, sep, high = text.partition(",")
    try:
        lo, hi = float(low), float(high)
    except ValueError:
        raise UsageError(f"--clip {text!r}: expected LOW,HIGH such as 0,1") from None
    if not sep or not lo < hi:
        raise UsageError(f"--clip {text!r}: expected LOW,HIGH with LOW < HIGH")
    return lo, hi


class _TermAsInterrupt:
    """While the block runs, SIGTERM stops the assessment as Ctrl-C does (the runs that
    finished are kept and the report is written); ``signalled`` says it came."""

    signalled = False

    def __enter__(self) -> _TermAsInterrupt:
        import signal

        def stop(signum: int, frame: object) -> None:
            self.signalled = True
            raise KeyboardInterrupt

        self._previous = signal.signal(signal.SIGTERM, stop)
        return self

    def __exit__(self, *exc: object) -> None:
        import signal

        signal.signal(signal.SIGTERM, self._previous)


class _Progress:
    """One progress bar per technique run, counting the queries it spends."""

    def __init__(self, quiet: bool) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.quiet = quiet
        self._bar = Progress(TextColumn("{task.description}"), BarColumn(bar_width=16),
                                 MofNCompleteColumn(), TextColumn("queries"),
                                 TimeElapsedColumn(), console=console(), transient=False,
                                 disable=quiet)
        self.task: Any = None

    def __enter__(self) -> _Progress:
        self._bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._bar.__exit__(None, None, None)

    def run_started(self, target: str, run: str, technique: str, budget: int, *,
                    index: int = 0, total: int = 0) -> None:
        from rich.markup import escape

        step = f"run {index} of {total} " if index and total else ""
        self.task = self._bar.add_task(escape(f"{step}{target} {run}"), total=budget)

    def progress(self, queries_used: int) -> None:
        if self.task is not None:
            self._bar.update(self.task, completed=queries_used)

    def run_finished(self, finding: Finding) -> None:
        if self.task is not None:
            style = STATUS_STYLE.get(finding.status, "")
            self._bar.update(self.task, completed=max(finding.queries, 1),
                             total=max(finding.queries, 1),
                             description=self._bar.tasks[-1].description
                             + f" [{style}]{finding.status}[/{style}]")
            self._bar.stop_task(self.task)  # the clock stops with the run
            self.task = None


def assess(
    target: Annotated[str | None, typer.Option(help="Model to test: sklearn:PATH, onnx:PATH, "
                                               "torch:PATH, http(s)://URL, "
                                               "python:module:function. Default: the demo "
                                               "models.")] = None,
    data: Annotated[Path | None, typer.Option(help="Data rows (CSV, NPY, Parquet).")] = None,
    label_column: Annotated[str | None, typer.Option(help="Label column in --data.")] = None,
    members: Annotated[Path | None, typer.Option(help="Rows known to be training members.")
                       ] = None,
    non_members: Annotated[Path | None, typer.Option(help="Rows known not to be.")] = None,
    feature_spec: Annotated[Path | None, typer.Option(help="Feature domain (YAML/JSON): "
                                                      "kinds, bounds, one-hot groups; the "
                                                      "rest is inferred from the data.")
                            ] = None,
    techniques: Annotated[str | None, typer.Option(help="Comma-separated ATLAS IDs or run "
                                                   "names (default: all).")] = None,
    budget: Annotated[int | None, typer.Option(min=1, help="Most queries per technique "
                                               "run.")] = None,
    total_budget: Annotated[int | None, typer.Option(min=1, help="Most attack queries in "
                                                     "all.")] = None,
    run_timeout: Annotated[float | None, typer.Option(min=0.001, help="Seconds each run's "
                                                      "attack may take; past it, it sends "
                                                      "no more queries.")] = None,
    seed: Annotated[int, typer.Option(help="Seed for every random choice.")] = 0,
    clients_per_run: Annotated[int, typer.Option(min=1, help="Clients each run's queries "
                                                 "appear under in queries.jsonl (1: one "
                                                 "attacker per run).")] = 1,
    out: Annotated[Path, typer.Option("--out", "-o", help="Report folder.")] = Path(
        "mlthreat-report"),
    mitigation: Annotated[str | None, typer.Option(help="Also run behind a mitigation: "
                                                   "round:2, top1, noise:0.05, "
                                                   "reverse-sigmoid:0.5, query-limit:1000.")
                          ] = None,
    reference_target: Annotated[str | None, typer.Option(help="Another artifact of the same "
                                                        "model (e.g. the sklearn original of "
                                                        "an ONNX export): label agreement is "
                                                        "reported.")] = None,
    fit: Annotated[str | None, typer.Option(help="Training entry point for poisoning: "
                                            "python:module:function, fit(X, y, seed).")
                   ] = None,
    param: Annotated[list[str] | None, typer.Option(help="Run parameter RUN.PARAM=VALUE "
                                                    "(repeatable).")] = None,
    trust_pickle: Annotated[bool, typer.Option(help="Allow pickle/joblib model files (they "
                                               "run code when loaded).")] = False,
    trust_type: Annotated[list[str] | None, typer.Option(help="Trust this type in a skops "
                                                        "file, beyond scikit-learn, NumPy and "
                                                        "SciPy (repeatable; never builtins or "
                                                        "callables).")] = None,
    n_features: Annotated[int | None, typer.Option(help="Input features (http/python "
                                                   "targets).")] = None,
    n_classes: Annotated[int | None, typer.Option(help="Classes (when the target cannot "
                                                  "say).")] = None,
    clip: Annotated[str | None, typer.Option(help="Valid feature range LOW,HIGH (default: "
                                             "from the data).")] = None,
    timeout: Annotated[float, typer.Option(help="HTTP timeout per request, seconds (the "
                                                "whole answer, not one read).")] = 30.0,
    retries: Annotated[int, typer.Option(help="HTTP retries on errors.")] = 3,
    max_rps: Annotated[float | None, typer.Option(help="HTTP requests per second at most.")
                       ] = None,
    batch_size: Annotated[int, typer.Option(help="Rows per HTTP request.")] = 64,
    request_template: Annotated[str | None, typer.Option(help="HTTP request JSON template.")
                                ] = None,
    response_path: Annotated[str | None, typer.Option(help="Dotted path to scores or labels "
                                                      "in the HTTP answer.")] = None,
    list_runs: Annotated[bool, typer.Option("--list", help="List the technique runs and "
                                            "whether each applies, then exit.")] = False,
    dry_run: Annotated[bool, typer.Option(help="Print the plan and the queries each run "
                                          "would send, then exit.")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask before attacking an "
                                      "http(s) target.")] = False,
    fail_on: Annotated[str | None, typer.Option(help="'succeeded': exit 1 when any technique "
                                                "succeeded (behind --mitigation when one is "
                                                "given).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
    atlas: AtlasOpt = None,
    extension: ExtensionOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Run ATLAS techniques against a model (default: demo models on scikit-learn's digits)
    and write report.json, report.html, layer.json and queries.jsonl."""
    from mlthreat import assess as api
    from mlthreat.events import QueryLog

    if fail_on not in (None, "succeeded"):
        raise UsageError("--fail-on takes 'succeeded'")
    kb = load_kb(atlas, extension)
    fit_fn: Callable[..., Any] | None = None
    user_params = _parse_params(param or [])
    # ATLAS IDs in any case; run names as written
    selection = [t.strip().upper() if t.strip().upper().startswith("AML.") else t.strip()
                 for t in techniques.split(",") if t.strip()] if techniques else None
    clip_values = _parse_clip(clip)
    if fit is not None:
        from mlthreat.assess.targets.python import load_callable

        scheme, _, rest = fit.partition(":")
        if scheme != "python" or not rest:
            raise UsageError("--fit takes python:module:function")
        fit_fn = load_callable(rest)
    mit = api.parse_mitigation(mitigation) if mitigation else None
    common: dict[str, Any] = dict(
        techniques=selection, seed=seed, params=user_params, fit=fit_fn, budget=budget,
        total_budget=total_budget, mitigation=mit, kb=kb, clients_per_run=clients_per_run,
        run_timeout=run_timeout)
    if target is None:
        if data is not None or feature_spec is not None or reference_target is not None:
            raise UsageError("--data, --feature-spec and --reference-target need --target (the "
                             "demo uses its own models and data)")
        assessment = api.Assessment.demo(**common)
    else:
        if data is None:
            raise UsageError("--target needs --data (rows to attack with and evaluate on)")
        dataset = api.load_data(data, label_column=label_column, members=members,
                                non_members=non_members, feature_spec=feature_spec, seed=seed)
        options: dict[str, Any] = dict(
            trust_pickle=trust_pickle, trust_types=tuple(trust_type or ()),
            n_features=n_features, n_classes=n_classes, clip_values=clip_values,
            timeout=timeout, retries=retries, max_rps=max_rps,
            batch_size=batch_size, request_template=request_template,
            response_path=response_path)
        loaded = api.load_target_for(target, dataset, label_column=label_column,
                                     label_option="--label-column", **options)
        reference = api.load_target_for(reference_target, dataset, check=False, **options) \
            if reference_target else None
        assessment = api.Assessment([loaded], dataset, reference=reference, **common)
    targets = assessment.targets
    if list_runs or dry_run:
        plan = assessment.plan()
        if as_json:
            from mlthreat.assess.report import plan_data

            print_json(plan_data(plan, targets, kb))
            return
        _print_plan(plan, targets)
        if dry_run:
            total = sum(p.planned_queries for p in plan)
            console().print(f"At most {total} queries in all; nothing was sent.")
        return
    if target is not None and target.startswith(("http://", "https://")) and not yes:
        if not sys.stdin.isatty():
            raise UsageError("attacking an http(s) endpoint needs confirmation: pass --yes")
        if not typer.confirm(f"Send attack traffic to {target}?", default=False):
            raise typer.Exit(2)
    if reference_target is not None and reference_target.startswith(("http://", "https://")) \
            and not yes:
        if not sys.stdin.isatty():
            raise UsageError("querying an http(s) --reference-target needs confirmation: pass "
                             "--yes")
        if not typer.confirm(f"Send the evaluation rows to {reference_target}?", default=False):
            raise typer.Exit(2)
    from mlthreat.files import staging_path

    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create {out}: {exc.strerror or exc}") from None
    # the run's queries go to a hidden staging file; the previous report stays whole until
    # the new one is written as a set
    queries_path = staging_path(out / "queries.jsonl")
    log = QueryLog(queries_path, targets[0].model_id)
    assessment.query_log = log
    try:
        with _TermAsInterrupt() as term, _Progress(quiet or as_json) as reporter:
            try:
                result = assessment.run(reporter)
            finally:
                log.close()
        paths = api.write_report(result, out, kb, queries=queries_path)
    finally:
        queries_path.unlink(missing_ok=True)
    report = api.report_data(result, kb)
    # With --mitigation the question is whether the mitigated deployment holds.
    succeeded = result.counts(mitigated=mit is not None)["succeeded"]
    if as_json:
        print_json(report)
    else:
        _print_summary(report, paths, kb)
        for t in report["targets"]:
            for note in t.get("notes") or []:
                console().print(f"[yellow]{t['model_id']}:[/yellow] {note}", highlight=False)
            parity = t.get("parity")
            if parity:
                console().print(_parity_line(t["model_id"], parity), highlight=False)
    if result.target_errors:
        model, cause = next(iter(result.target_errors.items()))
        raise api.TargetError(f"{model}: {cause} (the report in {out} holds what ran)")
    if result.interrupted:
        raise typer.Exit(143 if term.signalled else 130)
    errors = result.errors()
    if errors:
        model, first = errors[0]
        raise api.AssessError(
            f"{len(errors)} run(s) ended in error, first {model} {first.run}: "
            f"{first.reason}; the report in {out} holds every run. Next: rerun it alone "
            f"with --techniques {first.run} and MLTHREAT_DEBUG=1 set, and report the "
            "traceback if the cause is not in your model or data")
    if fail_on == "succeeded" and succeeded:
        raise typer.Exit(1)


def _print_plan(plan: list[Any], targets: list[Any]) -> None:
    """The plan as a table, or as a list on a narrow terminal (ATLAS IDs never cut)."""
    from rich.table import Table

    con = console()
    if con.width < _NARROW:
        for p in plan:
            what = (f"applies, at most {p.planned_queries} queries" if p.applicable
                    else f"not applicable: {p.reason}")
            con.print(f"{p.target} {p.run} {p.technique}: {what}", highlight=False)
    else:
        # below 110 columns the reasons go under the table instead of a squeezed column
        wide = con.width >= 110
        table = Table("Target", "Run", "Technique", "Applies", "Max queries",
                      *(["Why not"] if wide else []))
        for column, least in zip(table.columns[:5], (6, 12, 13, 3, 5), strict=True):
            column.no_wrap, column.min_width = True, least
        for p in plan:
            table.add_row(p.target, p.run, p.technique,
                          "yes" if p.applicable else "no",
                          str(p.planned_queries) if p.applicable else "",
                          *([p.reason] if wide else []))
        con.print(table)
        if not wide:
            for p in plan:
                if not p.applicable:
                    con.print(f"{p.target} {p.run}: {p.reason}", highlight=False)
    for t in targets:
        if getattr(t, "trusted_types", ()):
            con.print(f"{t.description}: trusted beyond skops' defaults: "
                      + ", ".join(t.trusted_types), highlight=False)


def _parity_line(model_id: str, parity: dict[str, Any]) -> str:
    from rich.markup import escape

    ref = escape(parity["reference"])
    if "error" in parity:
        return f"[yellow]{model_id}:[/yellow] parity with {ref} not measured: " \
            f"{escape(parity['error'])}"
    style = "green" if parity["agree"] == parity["rows"] else "yellow"
    return (f"[{style}]{model_id}:[/{style}] {parity['agree']} of {parity['rows']} evaluation "
            f"rows get the same label from {ref} ({parity['rate']:.2%}); every finding is "
            "measured on the target under test")


#: What each status means, printed under the summary tables.
STATUS_MEANING = ("succeeded = the attack worked against the model; failed = the model resisted "
                  "it; inconclusive = the 95 % interval of the metric crosses the rule's "
                  "threshold, so more samples could turn the verdict.")
_NARROW = 72  # below this many columns the runs are listed, not tabled


def _status_text(f: dict[str, Any]) -> str:
    style = STATUS_STYLE.get(f["status"], "")
    text = f"[{style}]{f['status']}[/{style}]"
    if (f.get("verdict") or {}).get("inconclusive"):
        text += "\n[yellow]inconclusive[/yellow]"
    return text


def _headline(f: dict[str, Any]) -> str:
    from rich.markup import escape

    first = next(iter(f["metrics"].items()), None)
    return escape(f"{first[0]} = {_fmt(first[1]['value'])}" if first else f["reason"])


def _print_summary(report: dict[str, Any], paths: dict[str, Path], kb: Any) -> None:
    """The report on the terminal: per target a table of runs (a list on a narrow terminal, so
    that no column squeezes an ATLAS ID), what the statuses mean, the next step of every run
    that ended in error, and the mitigations the tool can verify."""
    from rich.markup import escape
    from rich.table import Table

    from mlthreat.assess.report import ranked_mitigations

    con = console()
    groups: dict[tuple[str, str | None], list[dict[str, Any]]] = {}
    for f in report["findings"]:
        groups.setdefault((f["target"], f["mitigation"]), []).append(f)
    wide = con.width >= 120
    for (target, mitigation), findings in groups.items():
        title = target if not mitigation else f"{target} behind {mitigation}"
        if con.width < _NARROW:
            con.print(f"[bold]{escape(title)}[/bold]")
            for f in findings:
                # the ID starts the line and is shorter than any terminal: it never breaks
                con.print(f"  {f['technique']}  {_status_text(f).replace(chr(10), ', ')}")
                con.print(f"      {escape(f['run'])}: {_headline(f)}")
            continue
        narrow = con.width < 96  # below this the query counts stay in report.json/html only
        table = Table("Run", "Technique", "Status", "Headline", *([] if narrow else ["Queries"]),
                      title=escape(title), title_justify="left", title_style="bold")
        # identifiers never wrap; the headline gives way (the full text is in report.html)
        for column, width in zip(table.columns, (20, 13, 14, 0, 7), strict=False):
            column.no_wrap = width > 0
            column.min_width = width or None
        for f in findings:
            name = kb.get(f["technique"]).name if f["technique"] in kb else ""
            technique = (f"{f['technique']} [dim]{escape(name)}[/dim]" if wide
                         else f["technique"])
            table.add_row(escape(f["run"]), technique, _status_text(f), _headline(f),
                          *([] if narrow else [str(f["queries"])]))
        con.print(table)
    if report["comparison"]:
        cmp = Table("Target", "Run", "Metric", "Before", "After", "Status before → after")
        for row in report["comparison"]:
            cmp.add_row(escape(row["target"]), escape(row["run"]), escape(row["metric"] or ""),
                        _fmt(row["before"]), _fmt(row["after"]),
                        f"{row['status_before']} → {row['status_after']}")
        con.print(cmp)
    s = report["summary"]
    where = " (as deployed, without the mitigation)" if report["mitigation"] else ""
    doubtful = sum(1 for f in report["findings"] if not f["mitigation"]
                   and (f.get("verdict") or {}).get("inconclusive"))
    con.print(f"{s['succeeded']} succeeded, {s['failed']} failed, {s['not-applicable']} not "
              f"applicable, {s['error']} errors{where}"
              + (f", {doubtful} of the verdicts inconclusive" if doubtful else "")
              + f"; {report['queries_total']} attack queries in all in {report['seconds']:.0f} "
              f"s. ATLAS data {report['atlas_version']}.")
    con.print(STATUS_MEANING, highlight=False)
    for f in report["findings"]:
        if f["status"] == "error":
            con.print(f"[yellow]error[/yellow] {escape(f['target'])} {escape(f['run'])}: "
                      f"{escape(f['reason'])}", highlight=False)
            if f.get("next_step"):
                con.print(f"  Next step: {escape(f['next_step'])}", highlight=False)
    # the first verifiable mitigation this report did not already run behind
    untried = [(m, v) for m in ranked_mitigations(report, kb) for v in m["verify"]
               if v["mitigation"] != report["mitigation"]]
    if untried:
        m, v = untried[0]
        other = " another" if report["mitigation"] else " a"
        con.print(f"To verify{other} mitigation of what succeeded ({m['id']} "
                  f"{escape(m['name'])}; report.html ranks them all):", highlight=False)
        # one line however long, so that it copies whole
        con.print(escape(v["command"]), highlight=False, soft_wrap=True)
    if report["interrupted"]:
        con.print("[yellow]Interrupted: the report holds the runs that finished.[/yellow]")
    con.print("Report: " + ", ".join(escape(str(p)) for p in paths.values()))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return "" if value is None else str(value)
