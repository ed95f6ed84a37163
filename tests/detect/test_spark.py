"""The Spark engine against the local one on real traffic: mlthreat's own HopSkipJump and
extraction query logs against the digits demo models, mixed with benign clients; batch runs,
Structured Streaming micro-batches, a resumed stream, bad lines and the command line.

One local Spark session (2 cores) serves the whole test process (the ``spark`` fixture of
tests/detect/conftest.py); the command line runs in this process on it, so a stream "restarted
from its checkpoint" is a second run over the same checkpoint folder, not a second JVM."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("pyspark")

from mlthreat import kb as kb_module
from mlthreat.detect import spark as engine
from mlthreat.detect.engine import build_detectors, run_detectors
from mlthreat.detect.errors import DetectError
from mlthreat.detect.evaluate import benign_events
from mlthreat.detect.readers import LogReader

# end to end: a JVM, Structured Streaming, the command line (run by default and in CI)
pytestmark = pytest.mark.slow

DETECTORS = ["prada", "blacklight", "volume", "knn", "ood", "repeat"]


@pytest.fixture(scope="module")
def kb() -> Any:
    return kb_module.load()


@pytest.fixture(scope="module")
def traffic(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Benign clients (40, 80 queries each) and the assessment's own attack queries, in time
    order; ``truth: evaluation`` rows are in the log and must be ignored by both engines."""
    from mlthreat.assess import Assessment, demo_targets, digits_demo
    from mlthreat.events import QueryLog

    data = digits_demo()
    workdir = tmp_path_factory.mktemp("spark")
    path = workdir / "assess.jsonl"
    targets = demo_targets(data)[:2]  # logreg and MLP: the forest adds time, not coverage
    with QueryLog(path, "demo") as log:
        Assessment(targets, data, techniques=["evasion-hopskipjump"],
                   params={"evasion-hopskipjump": {"n_samples": 3}}, query_log=log,
                   clients_per_run=3).run()
        Assessment([t for t in targets if "mlp" in t.model_id], data,
                   techniques=["extraction-surrogate"], query_log=log).run()
    attack = [json.loads(line) for line in path.read_text("utf-8").splitlines()]
    benign = benign_events(data.x_nonmembers, n_clients=40, queries=80, model_id="demo-mlp",
                           seed=5)
    first = min(e["ts"] for e in attack)
    start = min(e["ts"] for e in benign)
    for e in attack:
        e["ts"] = round(e["ts"] - first + start + 30.0, 6)
    # label-only membership probing by augmentation: 25 records, each then 10 noisy copies
    rng = np.random.default_rng(4)
    probe = []
    for r in data.x_members[:25]:
        probe.append(r)
        probe.extend(np.clip(r + rng.normal(0, 0.02, (10, r.shape[0])), 0, 1))
    members = [{"ts": start + 60.0 + 0.5 * i, "client_id": "aug-prober", "model_id": "demo-mlp",
                "input": [round(float(v), 6) for v in row], "output": {"label": 0},
                "truth": "attack:AML.T0024.000"} for i, row in enumerate(probe)]
    # a replay loop: one identical query 150 times, every 2 s (AML.T0029, repeat detector)
    replay = [{"ts": start + 45.0 + 2.0 * i, "client_id": "replayer", "model_id": "demo-mlp",
               "input": [round(float(v), 6) for v in data.x_members[40]],
               "output": {"label": 4}, "truth": "attack:AML.T0029"} for i in range(150)]
    events = sorted(benign + attack + members + replay, key=lambda e: e["ts"])
    calibration = workdir / "benign-calibration.jsonl"
    calibration.write_text("".join(
        json.dumps(e) + "\n" for e in benign_events(data.x_nonmembers, n_clients=60, queries=60,
                                                    model_id="demo-mlp", seed=11)), "utf-8")
    return {"events": events, "calibration": calibration}


def write_parts(events: list[dict[str, Any]], folder: Path, parts: int,
                garbage: bool = True) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    size = -(-len(events) // parts)
    paths = []
    for i in range(parts):
        lines = [json.dumps(e) for e in events[i * size:(i + 1) * size]]
        if garbage and i == 0:
            lines.insert(5, '{"ts": 1, "client_id": "x"')  # malformed: quarantined
        path = folder / f"part-{i}.jsonl"
        path.write_text("\n".join(lines) + "\n", "utf-8")
        paths.append(path)
    return paths


def detectors(traffic: dict[str, Any]) -> list[Any]:
    dets = build_detectors(DETECTORS)
    for d in dets:
        if d.name == "ood":
            d.calibrate(LogReader(traffic["calibration"]), 0.01)
    return dets


def _rounded(value: Any) -> Any:
    # distances come from BLAS, whose summation order depends on how many rows it is given
    # at once: the engines batch differently, so statistics agree to about 1e-12, not bitwise
    if isinstance(value, float):
        return float(f"{value:.9g}")
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def canon(alerts: list[Any]) -> list[str]:
    return sorted(json.dumps(_rounded(a.to_dict()), sort_keys=True, default=str)
                  for a in alerts)


def local(paths: list[Path], dets: list[Any], kb: Any, quarantine: Path | None = None) -> Any:
    stats: list[Any] = []

    def batches() -> Any:
        for p in paths:
            reader = LogReader(p, batch_size=211, quarantine=quarantine)
            yield from reader
            stats.append(reader.stats)

    return run_detectors(batches(), dets, kb), stats


def test_batch_engines_agree_on_attack_and_benign_traffic(spark, kb, traffic, tmp_path):
    paths = write_parts(traffic["events"], tmp_path / "logs", 3)
    mine, mine_stats = local(paths, detectors(traffic), kb, tmp_path / "q-local.jsonl")
    spark_stats: list[Any] = []
    theirs = engine.run(paths, detectors(traffic), kb, spark=spark, stats=spark_stats,
                        quarantine=tmp_path / "q-spark.jsonl")
    assert canon(theirs.alerts) == canon(mine.alerts)
    assert sorted(map(repr, theirs.statuses)) == sorted(map(repr, mine.statuses))
    assert theirs.events == mine.events
    assert theirs.suppression == mine.suppression
    # the same malformed line, quarantined once by each
    assert [s.skipped_total for s in spark_stats] == [s.skipped_total for s in mine_stats] \
        == [1, 0, 0]
    assert (tmp_path / "q-spark.jsonl").read_text() == (tmp_path / "q-local.jsonl").read_text()
    flagged = {(a.detector, a.client_id) for a in theirs.alerts}
    clients = {a.client_id for a in theirs.alerts}
    # every HopSkipJump client caught by Blacklight, the augmentation prober reported for
    # membership inference too, no benign client flagged
    hsj = {e["client_id"] for e in traffic["events"]
           if str(e.get("truth", "")).startswith("attack:AML.T0043")}
    steal = {e["client_id"] for e in traffic["events"]
             if str(e.get("truth", "")).startswith("attack:AML.T0024")}
    assert hsj and steal
    assert hsj <= {c for d, c in flagged if d == "blacklight"}
    assert [(a.detector, a.technique) for a in theirs.alerts
            if a.client_id == "aug-prober" and a.detector == "blacklight"] == \
        [("blacklight", "AML.T0043.001"), ("blacklight", "AML.T0024.000")]
    assert not {c for c in clients if c.startswith("benign")}
    # the replay loop: reported by the repeat detector alone, at its 17th query, by both
    assert [(a.detector, a.technique, a.queries_observed) for a in theirs.alerts
            if a.client_id == "replayer"] == [("repeat", "AML.T0029", 17)]
    assert [a.client_id for a in theirs.alerts if a.detector == "repeat"] == ["replayer"]
    # and the same per-technique summary
    assert [t.to_dict() for t in theirs.summary(kb)] == [t.to_dict() for t in mine.summary(kb)]


def test_stream_micro_batches_and_resume_equal_one_local_run(spark, kb, traffic, tmp_path):
    events = traffic["events"]
    cut = len(events) * 3 // 4
    folder = tmp_path / "incoming"
    # two files, two micro-batches: the second already goes on from the first one's state
    first = write_parts(events[:cut], folder, 2, garbage=False)
    ckpt = tmp_path / "ckpt"
    got = engine.stream(folder, detectors(traffic), kb, checkpoint=ckpt, spark=spark,
                        available_now=True)
    want_first, _ = local(first, detectors(traffic), kb)
    assert canon(got.alerts) == canon(want_first.alerts)
    assert got.events == want_first.events
    # a new file arrives; a restarted stream with the same checkpoint goes on from its state
    rest = folder / "part-9.jsonl"
    rest.write_text("".join(json.dumps(e) + "\n" for e in events[cut:]), "utf-8")
    more = engine.stream(folder, detectors(traffic), kb, checkpoint=ckpt, spark=spark,
                         available_now=True)
    want_all, _ = local([*first, rest], detectors(traffic), kb)
    assert more.events == want_all.events - want_first.events
    assert canon(got.alerts + more.alerts) == canon(want_all.alerts)
    assert sorted(map(repr, more.statuses)) == sorted(map(repr, want_all.statuses))


def test_wrong_dimension_for_calibration_is_an_error_naming_the_line(spark, kb, traffic,
                                                                      tmp_path):
    path = tmp_path / "short.jsonl"
    path.write_text(json.dumps({"ts": 1.0, "client_id": "c", "model_id": "demo-mlp",
                                "input": [0.5] * 10, "output": {"label": 1}}) + "\n", "utf-8")
    dets = [d for d in detectors(traffic) if d.name == "ood"]
    with pytest.raises(DetectError, match=r"input dimension 10 .*line 1 of .*short\.jsonl"):
        engine.run([path], dets, kb, spark=spark)


@dataclass
class Ran:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Any:
    """``mlthreat detect ARGS`` through the entry point ``python -m mlthreat`` calls
    (:func:`mlthreat.cli.main`: exit codes, one-line errors), in this process: with the
    ``spark`` fixture active, ``--engine spark`` and ``stream`` use that session
    (``get_session`` returns the active one) instead of starting a JVM per command.

    Nothing here needs a process of its own: a stream's state (Spark's record of the files
    read, per-client detector state, fingerprints, suppression windows) lives under
    ``--checkpoint`` and each command builds a new query and driver from it, so a second
    in-process run over the same checkpoint folder is a restart."""
    from mlthreat.cli import main

    monkeypatch.setenv("COLUMNS", "160")

    def run(*args: str) -> Ran:
        capsys.readouterr()  # drop what earlier commands printed
        monkeypatch.setattr(sys, "argv", ["mlthreat", "detect", *args])
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
        out = capsys.readouterr()
        return Ran(code, out.out, out.err)

    return run


def test_cli_spark_engine_matches_local(spark, cli, traffic, tmp_path):
    paths = [str(p) for p in write_parts(traffic["events"], tmp_path / "logs", 2)]
    outs = {}
    for name in ("local", "spark"):
        out = tmp_path / f"{name}.jsonl"
        proc = cli("run", *paths, "--engine", name, "-o", str(out), "--json",
                   "--detectors", "prada,blacklight,volume,repeat")
        assert proc.returncode == 1, proc.stderr[-2000:]
        outs[name] = (json.loads(proc.stdout), sorted(out.read_text().splitlines()))
    (lj, la), (sj, sa) = outs["local"], outs["spark"]
    assert sa == la and len(la) == lj["alerts"] > 0
    assert sj["flagged"] == lj["flagged"] and sj["events"] == lj["events"]
    assert sj["read"] == lj["read"]
    assert sj["summary"] == lj["summary"]
    assert [c["client_id"] for t in sj["summary"] if t["technique"] == "AML.T0029"
            for c in t["clients"]] == ["replayer"]


def test_cli_spark_refuses_state_and_follow(cli, tmp_path):
    log = tmp_path / "q.jsonl"
    log.write_text("", "utf-8")
    proc = cli("run", str(log), "--engine", "spark", "--state", str(tmp_path / "s.json"))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "mlthreat: error: --engine spark keeps no --state and cannot --follow; for a live feed on "
        "Spark use 'mlthreat detect stream FOLDER --checkpoint DIR'"]
    proc = cli("run", str(log), "--engine", "flink")
    assert proc.returncode == 2 and "unknown engine 'flink'" in proc.stderr


def test_cli_stream_restarted_from_checkpoint_adds_to_its_alerts_once_each(spark, cli, traffic,
                                                                           tmp_path):
    """Run a stream, stop it, restart it with the same --checkpoint and -o (no --append): the
    file holds the first run's alerts and the second's, once each, the alerts of one run over
    every file; only a checkpoint with a finished micro-batch resumes."""
    events = traffic["events"]
    cut = len(events) * 2 // 3
    folder, ckpt, alerts = tmp_path / "incoming", tmp_path / "ckpt", tmp_path / "alerts.jsonl"
    parts = write_parts(events[:cut], folder, 2, garbage=False)
    command = ("stream", str(folder), "--checkpoint", str(ckpt), "-o", str(alerts),
               "--available-now", "--json", "--detectors", "prada,blacklight,volume,repeat")
    first = cli(*command)
    assert first.returncode == 1, first.stderr[-2000:]
    first_lines = alerts.read_text().splitlines()
    assert len(first_lines) == json.loads(first.stdout)["alerts"] > 0
    assert "resuming" not in first.stderr

    rest = folder / "part-9.jsonl"
    rest.write_text("".join(json.dumps(e) + "\n" for e in events[cut:]), "utf-8")
    second = cli(*command)
    assert second.returncode == 1, second.stderr[-2000:]
    assert f"resuming from checkpoint {ckpt}: alerts are added to {alerts}" in second.stderr
    both = alerts.read_text().splitlines()
    added = json.loads(second.stdout)["alerts"]
    assert added > 0 and both == first_lines + both[len(first_lines):]
    assert len(both) == len(first_lines) + added

    def key(line: str) -> tuple[Any, ...]:
        a = json.loads(line)
        return (a["client_id"], a["detector"], a["technique"], a["queries_observed"])

    once = tmp_path / "once.jsonl"
    proc = cli("run", *map(str, [*parts, rest]), "-o", str(once),
               "--detectors", "prada,blacklight,volume,repeat")
    assert proc.returncode == 1, proc.stderr[-2000:]
    want = sorted(map(key, once.read_text().splitlines()))
    assert sorted(map(key, both)) == want and len(set(want)) == len(want)

    # resuming into a file of another format is refused, naming why it appends
    proc = cli(*command, "--format", "ecs")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        f"mlthreat: error: cannot append ecs alerts to {alerts}: it holds jsonl alerts, added "
        f"to on resuming from checkpoint {ckpt} (use --format jsonl or another file)")
    assert alerts.read_text().splitlines() == both

    # a new checkpoint is a fresh stream, whose sink replaces the file as `detect run -o` does
    # (tests/detect/test_alerts.py)
    assert engine.resumes(ckpt) and not engine.resumes(tmp_path / "ckpt2")
