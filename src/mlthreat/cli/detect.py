"""``mlthreat detect``: find attacks in inference logs; alerts keyed by ATLAS techniques."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from mlthreat.cli._common import (
    AtlasOpt,
    ExtensionOpt,
    JsonOpt,
    console,
    expect_exit,
    load_kb,
    print_json,
)
from mlthreat.detect.alert_formats import FORMATS
from mlthreat.detect.detectors import DEFAULT_DETECTORS, DETECTORS
from mlthreat.errors import UsageError

app = typer.Typer(help="Find attacks in inference logs (QueryEvents or serving logs).",
                  no_args_is_help=True)

LogsArg = Annotated[list[Path], typer.Argument(help="Log files (JSONL, CSV, Parquet), read in "
                                               "the order given.")]
MappingOpt = Annotated[str | None, typer.Option(help="kserve, sagemaker, or a YAML mapping "
                                                "file, for serving logs.")]
_NOT_DEFAULT = [n for n in DETECTORS.names() if n not in DEFAULT_DETECTORS]
DetectorsOpt = Annotated[str | None, typer.Option("--detectors", help=(
    f"Comma-separated: {DETECTORS.choices()} (default: all but {', '.join(_NOT_DEFAULT)}, and "
    "any in --calibration)."))]
CalibrateDetectorsOpt = Annotated[str | None, typer.Option("--detectors", help=(
    f"Comma-separated: {DETECTORS.choices()} (default: all of them; a run with --calibration "
    "then runs each one calibrated)."))]
QuarantineOpt = Annotated[Path | None, typer.Option(help="Where malformed lines go (JSONL).")]
AlertFormatOpt = Annotated[str, typer.Option("--format", "-f",
                                             help=f"{FORMATS.choices(' or ')}.")]
CalibrationOpt = Annotated[Path | None, typer.Option(help="Calibration from "
                                                     "'mlthreat detect calibrate'.")]
AppendOpt = Annotated[bool, typer.Option("--append", help="Add to the -o file's alerts instead "
                                         "of replacing them (refused when the file holds "
                                         "another format).")]


def _batches(logs: list[Path], mapping: str | None, quarantine: Path | None,
             stats: list[Any]) -> Any:
    from mlthreat.detect.readers import LogReader

    for path in logs:
        reader = LogReader(path, mapping=mapping, quarantine=quarantine)
        yield from reader
        stats.append(reader.stats)


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[Callable[[], bool]]:
    """While following: Ctrl-C (SIGINT) or SIGTERM ends the run cleanly at the next poll
    (state written, summary printed) instead of raising mid-batch."""
    import signal

    requested: list[int] = []

    def handler(signum: int, frame: Any) -> None:
        requested.append(signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield lambda: bool(requested)
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _never() -> bool:
    return False


def _then_follow(batches: Any, path: Path, mapping: str | None, quarantine: Path | None,
                 followed: Any, poll_interval: float, max_seconds: float | None,
                 stop: Callable[[], bool], offset: int = 0) -> Iterator[Any]:
    from mlthreat.detect.follow import follow

    yield from batches
    from rich.console import Console

    where = f" from byte {offset}, where the saved state stopped" if offset else ""
    Console(stderr=True).print(f"following {path}{where} (Ctrl-C to stop)", highlight=False,
                               markup=False, soft_wrap=True)
    yield from follow(path, offset=offset, mapping=mapping, quarantine=quarantine,
                      poll_interval=poll_interval, max_seconds=max_seconds, stop=stop,
                      stats=followed)


def _names(detectors: str | None) -> list[str] | None:
    return [d.strip() for d in detectors.split(",") if d.strip()] if detectors else None


def _check_format(fmt: str) -> None:
    FORMATS.check([fmt])


@contextlib.contextmanager
def _delivery(output: str | None, fmt: str, as_json: bool, append: bool = False,
              resuming: str | None = None) -> Iterator[Callable[[Any], None]]:
    """The callback that delivers each alert as it is raised, in ``fmt``, to ``output`` (stdout
    unless --json holds stdout for the summary; a file is replaced unless ``append``, or
    ``resuming`` names the checkpoint or state the run goes on from); the sink is closed
    however the run ends."""
    from mlthreat.detect.sinks import deliver, is_file, open_sink

    if append and output is None:
        raise UsageError("--append needs -o FILE")
    sink = open_sink(output if output is not None else "-", append=append, fmt=fmt,
                     resuming=resuming) if output is not None or not as_json else None
    if resuming is not None and output is not None and is_file(output):
        from rich.console import Console

        Console(stderr=True).print(f"resuming from {resuming}: alerts are added to {output}",
                                   highlight=False, markup=False, soft_wrap=True)

    def on_alert(alert: Any) -> None:
        if sink is not None:
            deliver([alert], sink, fmt)

    try:
        yield on_alert
    finally:
        if sink is not None:
            sink.close()


def _report(result: Any, stats: list[Any], kb: Any, as_json: bool,
            quarantine: Path | None) -> None:
    """The end of a run: JSON envelope or one summary line; exit 1 when alerts were raised.

    Raises LogFormatError when every line read was malformed (the wrong file, most likely)."""
    from mlthreat.detect.report import RunReport

    report = RunReport(result, stats, kb)
    report.check_read(str(quarantine) if quarantine else None,
                      keep_hint="--quarantine FILE keeps them")
    expect_exit(report.exit_code)
    if as_json:
        print_json(report.to_dict())
    else:
        con = console()
        skipped = report.skipped
        con.print(f"{result.events} events"
                  + (f" ({result.ignored} evaluation queries of an assessment ignored)"
                     if result.ignored else "")
                  + f", {len(result.alerts)} alerts, {len(report.flagged)} flagged "
                  f"client/detector pairs, {len(report.untested)} untested (too few queries "
                  f"to judge), {skipped} malformed lines skipped"
                  + (f" (see {quarantine})" if quarantine and skipped else "")
                  + f". ATLAS data {kb.version}.", highlight=False)
        _print_techniques(report.techniques)
    if report.exit_code:
        raise typer.Exit(1)


_MAX_CLIENTS_SHOWN = 20


def _print_techniques(by_technique: list[Any]) -> None:
    """Per ATLAS technique, the clients flagged and by which detectors (``--json`` lists every
    client; the terminal the first 20 of each technique)."""
    from mlthreat.cli._common import plural

    con = console()
    for t in by_technique:
        con.print(f"{t.technique} {t.technique_name}: {plural(len(t.clients), 'client')}, "
                  f"{plural(t.alerts, 'alert')}", highlight=False, markup=False)
        for c in t.clients[:_MAX_CLIENTS_SHOWN]:
            how = ", ".join(f"{d} at query {q}" + (f" ({n} detections)" if n > 1 else "")
                            for d, (n, q) in c.detectors.items())
            con.print(f"  {c.client_id} (model {c.model_id}): {how}; "
                      f"{plural(c.alerts, 'alert')}", highlight=False, markup=False)
        if len(t.clients) > _MAX_CLIENTS_SHOWN:
            con.print(f"  ... and {len(t.clients) - _MAX_CLIENTS_SHOWN} more (--json lists "
                      "them all)", highlight=False, markup=False)


@app.command()
def run(
    logs: LogsArg,
    # text, not a Path: a Path folds syslog://host:port into syslog:/host:port
    output: Annotated[str | None, typer.Option("--output", "-o", help="Alert destination: a "
                                                "file (JSONL, replaced unless --append or "
                                                "resuming from --state), '-' "
                                                "for stdout, syslog://host:port, or an "
                                                "http(s) collector (Splunk HEC; token from "
                                                "MLTHREAT_HEC_TOKEN).")] = None,
    append: AppendOpt = False,
    fmt: AlertFormatOpt = "jsonl",
    detectors: DetectorsOpt = None,
    calibration: CalibrationOpt = None,
    mapping: MappingOpt = None,
    quarantine: QuarantineOpt = None,
    allow: Annotated[list[str] | None, typer.Option(help="Client ID (or glob) never alerted "
                                                    "on, e.g. a known bulk client "
                                                    "(repeatable).")] = None,
    suppress_window: Annotated[float, typer.Option(min=0, help="Seconds: one alert per client "
                                                   "and technique per window.")] = 3600.0,
    include_inputs: Annotated[bool, typer.Option(help="Put raw inputs in alerts (off: "
                                                 "fingerprints and statistics only).")
                              ] = False,
    state: Annotated[Path | None, typer.Option(help="Detector state file: restored before "
                                               "reading when it exists (the -o file is then "
                                               "added to, not replaced), written (atomically) "
                                               "after the run, so a restarted run loses "
                                               "nothing.")] = None,
    follow: Annotated[bool, typer.Option("--follow", help="After reading the logs, keep "
                                         "reading lines appended to the last one (JSONL "
                                         "only) until Ctrl-C.")] = False,
    poll_interval: Annotated[float, typer.Option(min=0.01, help="Seconds between polls "
                                                 "with --follow.")] = 1.0,
    max_seconds: Annotated[float | None, typer.Option(min=0, help="Stop following after "
                                                      "this many seconds.")] = None,
    engine: Annotated[str, typer.Option(help="local (this process) or spark (PySpark; "
                                        "MLTHREAT_SPARK_MASTER picks the cluster, default "
                                        "local[*]).")] = "local",
    atlas: AtlasOpt = None,
    extension: ExtensionOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Run the detectors over logs and deliver alerts as they are raised. Exits 1 when any
    alert was raised."""
    from mlthreat.detect.calibration import resolve_detectors, state_suppression
    from mlthreat.detect.engine import run_detectors, save_state

    _check_format(fmt)
    if engine not in ("local", "spark"):
        raise UsageError(f"unknown engine {engine!r}; choose local or spark")
    if engine == "spark" and (follow or state is not None):
        raise UsageError("--engine spark keeps no --state and cannot --follow; for a live "
                         "feed on Spark use 'mlthreat detect stream FOLDER --checkpoint DIR'")
    if follow:
        from mlthreat.detect.follow import check_followable

        check_followable(logs[-1])
    kb = load_kb(atlas, extension)
    saved_state = None
    if state is not None and state.exists():
        from mlthreat.detect.engine import load_state

        saved_state = load_state(state)
    dets = resolve_detectors(_names(detectors), calibration=calibration, state=saved_state,
                             source=str(state))
    stats: list[Any] = []
    resuming = f"state {state}" if saved_state is not None else None
    with _delivery(output, fmt, as_json, append, resuming) as on_alert, \
            _stop_on_signals() if follow else contextlib.nullcontext(_never) as stop:
        batches = _batches(logs[:-1] if follow else logs, mapping, quarantine, stats)
        if follow:
            from mlthreat.detect.follow import FollowStats, resume_offset

            followed = FollowStats(str(logs[-1]))
            offset = resume_offset(logs[-1], (saved_state or {}).get("follow"))
            batches = _then_follow(batches, logs[-1], mapping, quarantine, followed,
                                   poll_interval, max_seconds, stop, offset)
        if engine == "spark":
            from mlthreat.detect import spark

            result = spark.run(logs, dets, kb, mapping=mapping, quarantine=quarantine,
                               stats=stats, allow_list=allow or (),
                               suppression_window=suppress_window,
                               include_inputs=include_inputs, on_alert=on_alert)
        else:
            result = run_detectors(batches, dets, kb, allow_list=allow or (),
                                   suppression_window=suppress_window,
                                   include_inputs=include_inputs, on_alert=on_alert,
                                   suppression_state=state_suppression(saved_state, state))
    if follow:
        stats.append(followed)
    if state is not None:  # only after a complete (or cleanly stopped) run
        from mlthreat.detect.follow import position

        save_state(state, dets, result.suppression_state,
                   position(logs[-1], followed.offset) if follow else None)
    _report(result, stats, kb, as_json, quarantine)


@app.command()
def stream(
    folder: Annotated[Path, typer.Argument(help="Folder that new QueryEvent JSONL log files "
                                           "arrive in.")],
    checkpoint: Annotated[Path, typer.Option(help="Folder for the stream's state (files read, "
                                             "per-client detector state, fingerprints, "
                                             "suppression windows); reuse it to resume.")],
    output: Annotated[str | None, typer.Option("--output", "-o", help="Alert destination, "
                                                "as for 'detect run'; a file is added to, "
                                                "not replaced, when --checkpoint resumes a "
                                                "stream.")] = None,
    append: AppendOpt = False,
    fmt: AlertFormatOpt = "jsonl",
    detectors: DetectorsOpt = None,
    calibration: CalibrationOpt = None,
    quarantine: QuarantineOpt = None,
    allow: Annotated[list[str] | None, typer.Option(help="Client ID (or glob) never alerted "
                                                    "on (repeatable).")] = None,
    suppress_window: Annotated[float, typer.Option(min=0, help="Seconds: one alert per client "
                                                   "and technique per window.")] = 3600.0,
    files_per_batch: Annotated[int, typer.Option(min=1, help="New files per micro-batch.")
                               ] = 1,
    available_now: Annotated[bool, typer.Option("--available-now", help="Process the files "
                                                "already there, then stop (otherwise run "
                                                "until Ctrl-C).")] = False,
    include_inputs: Annotated[bool, typer.Option(help="Put raw inputs in alerts.")] = False,
    atlas: AtlasOpt = None,
    extension: ExtensionOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Watch a folder of logs with Spark Structured Streaming: each new file is a micro-batch
    through the same detectors as 'detect run', state kept under --checkpoint. Exits 1 when any
    alert was raised."""
    from mlthreat.detect import spark
    from mlthreat.detect.calibration import resolve_detectors

    _check_format(fmt)
    if not folder.is_dir():
        raise UsageError(f"{folder}: " + ("not a folder" if folder.exists() else
                                          "no such folder"))
    kb = load_kb(atlas, extension)
    dets = resolve_detectors(_names(detectors), calibration=calibration)
    stats: list[Any] = []
    resuming = f"checkpoint {checkpoint}" if spark.resumes(checkpoint) else None
    with _delivery(output, fmt, as_json, append, resuming) as on_alert:
        result = spark.stream(
            folder, dets, kb, checkpoint=checkpoint, quarantine=quarantine, stats=stats,
            allow_list=allow or (), suppression_window=suppress_window,
            include_inputs=include_inputs, files_per_batch=files_per_batch,
            available_now=available_now, on_alert=on_alert)
    _report(result, stats, kb, as_json, quarantine)


@app.command()
def calibrate(
    logs: LogsArg,
    output: Annotated[Path, typer.Option("--output", "-o", help="Calibration file to write.")
                      ] = Path("calibration.json"),
    target_fpr: Annotated[float, typer.Option(min=0.0, max=0.5, help="Fraction of benign "
                                              "clients allowed to be flagged.")] = 0.001,
    detectors: CalibrateDetectorsOpt = None,
    mapping: MappingOpt = None,
    quarantine: QuarantineOpt = None,
) -> None:
    """Set detector thresholds from benign traffic and save them."""
    from mlthreat.detect.calibration import calibrate_detectors, save_calibration
    from mlthreat.files import OutputError

    cal = calibrate_detectors(logs, _names(detectors), target_fpr, mapping=mapping,
                              quarantine=quarantine)  # calibrate them all by default
    try:  # whole or not at all: a run reading half a calibration would be mis-tuned
        save_calibration(cal, output)
    except OutputError as exc:
        raise UsageError(str(exc)) from None
    console().print(f"wrote {output} ({', '.join(cal.detectors)})", highlight=False)


@app.command()
def evaluate(
    logs: LogsArg,
    detectors: DetectorsOpt = None,
    calibration: CalibrationOpt = None,
    mapping: MappingOpt = None,
    quarantine: QuarantineOpt = None,
    atlas: AtlasOpt = None,
    extension: ExtensionOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Score detectors on labelled logs (a 'truth' per event): TPR per attack, FPR on benign
    clients, median queries to detection."""
    from mlthreat.detect.calibration import resolve_detectors
    from mlthreat.detect.evaluate import evaluate as run_evaluation
    from mlthreat.detect.report import EvaluationReport

    kb = load_kb(atlas, extension)
    dets = resolve_detectors(_names(detectors), calibration=calibration)
    stats: list[Any] = []
    scores = run_evaluation(_batches(logs, mapping, quarantine, stats), dets, kb)
    report = EvaluationReport(scores, stats, kb)
    if as_json:
        print_json(report.to_dict())
        return
    from rich.table import Table

    table = Table("Detector", "Clients", "n", "Flagged", "Rate", "95 % CI", "Median queries")
    for column in table.columns[:6]:
        column.no_wrap = True
    for s in scores:
        label = "FPR" if s.truth == "benign" else "TPR"
        table.add_row(s.detector, s.truth, str(s.clients), str(s.flagged),
                      f"{label} {s.rate:.3f}", f"{s.ci95[0]:.3f}-{s.ci95[1]:.3f}",
                      "" if s.median_queries is None else f"{s.median_queries:g}")
    con = console()
    con.print(table)
    if not report.measured_fpr:
        con.print("No benign clients in these logs (truth: benign): false-positive rates "
                  "were not measured; add benign traffic to measure them.", highlight=False)
