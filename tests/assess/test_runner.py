"""The runner: findings resolved through the knowledge base, crashes recorded, Ctrl-C keeps what
finished, budgets, query logs, determinism, mitigations, and the report files."""

from __future__ import annotations

import json
from typing import ClassVar

import numpy as np
import pytest
from jsonschema import Draft202012Validator

from mlthreat import kb as kbmod
from mlthreat.assess import runner as runner_mod
from mlthreat.assess.mitigations import parse_mitigation
from mlthreat.assess.report import write_report
from mlthreat.assess.runner import Assessment
from mlthreat.assess.techniques import TechniqueRun, run_classes
from mlthreat.events import QueryLog, query_event_schema
from mlthreat.schemas import schema


class _Crash(TechniqueRun):
    name = "crash"
    technique = "AML.T0015"
    title = "always crashes"
    defaults: ClassVar[dict] = {}

    def rule(self) -> str:
        return "never"

    def run(self, ctx):
        with ctx.attack():
            ctx.target.predict(ctx.data.x_pool[:3])
        raise RuntimeError("boom")


class _Interrupt(_Crash):
    name = "interrupt"

    def run(self, ctx):
        raise KeyboardInterrupt


class _Slow(_Crash):
    """Sends one row every 20 ms, without end: only a time limit stops it."""

    name = "slow"

    def run(self, ctx):
        import time

        with ctx.attack():
            while True:
                ctx.target.predict(ctx.data.x_pool[:1])
                time.sleep(0.02)


class _KeepsWhatItHas(_Slow):
    """Stops sending when its queries (or time) run out and measures on the evaluation rows."""

    name = "keeps"

    def run(self, ctx):
        import time

        from mlthreat.assess.errors import QueryBudgetExceeded

        t0 = time.perf_counter()
        try:
            super().run(ctx)
        except QueryBudgetExceeded as exc:
            stopped = str(exc)
        with ctx.evaluation():
            ctx.target.predict(ctx.data.x_eval)
        return self.finding(ctx, "failed", stopped, {}, t0)


def _with_runs(monkeypatch, *classes):
    equations = run_classes(["extraction-equations"])[0]
    monkeypatch.setattr(runner_mod, "run_classes", lambda sel=None: [*classes, equations])


def test_equation_solving_through_the_runner(demo_data, demo_pair, embedded):
    result = Assessment(demo_pair, demo_data, techniques=["extraction-equations"],
                        kb=embedded).run()
    found = result.findings()
    assert [(t, f.status, f.queries) for t, f in found] == [
        ("demo-logreg", "succeeded", 65), ("demo-mlp", "failed", 65)]
    f = found[0][1]
    assert f.tactics == ("AML.TA0010",)
    assert f.mitigations == tuple(m.id for m in embedded.mitigations_of("AML.T0024.002"))
    assert f.metrics["fidelity"].value == 1.0
    assert result.queries_total == 130 and not result.interrupted


def test_a_crashing_run_is_recorded_and_the_rest_go_on(monkeypatch, demo_data, demo_pair,
                                                      embedded):
    _with_runs(monkeypatch, _Crash)
    result = Assessment(demo_pair[:1], demo_data, kb=embedded).run()
    crash, equations = (f for _, f in result.findings())
    assert (crash.status, crash.reason) == ("error", "RuntimeError: boom")
    assert crash.queries == 3  # what it sent before crashing is still counted
    assert equations.status == "succeeded"


def test_ctrl_c_keeps_what_finished(monkeypatch, demo_data, demo_pair, embedded):
    equations = run_classes(["extraction-equations"])[0]
    monkeypatch.setattr(runner_mod, "run_classes", lambda sel=None: [equations, _Interrupt])
    result = Assessment(demo_pair, demo_data, kb=embedded).run()
    assert result.interrupted
    assert [(t, f.run) for t, f in result.findings()] == [("demo-logreg", "extraction-equations")]


def test_total_budget_stops_starting_runs(demo_data, demo_pair, embedded):
    result = Assessment(demo_pair, demo_data, techniques=["extraction-equations"],
                        total_budget=70, kb=embedded).run()
    first, second = (f for _, f in result.findings())
    assert first.status == "succeeded"
    # 5 queries left: the second solve needs 65 and is stopped by the budget
    assert second.status == "failed" and second.queries <= 5
    assert result.queries_total <= 70


def test_run_timeout_stops_the_attack_not_the_measurement(monkeypatch, tmp_path, demo_data,
                                                           demo_pair, embedded):
    import time

    _with_runs(monkeypatch, _Slow, _KeepsWhatItHas)
    t0 = time.monotonic()
    result = Assessment(demo_pair[:1], demo_data, run_timeout=0.3, kb=embedded).run()
    assert time.monotonic() - t0 < 3
    slow, keeps, equations = (f for _, f in result.findings())
    assert slow.status == "error" and 8 <= slow.queries <= 16  # one row per 20 ms for 0.3 s
    assert slow.reason == (f"stopped: time limit of 0.3 s reached after {slow.queries} "
                           "queries (raise run_timeout, or lower the budget)")
    assert keeps.status == "failed" and 8 <= keeps.queries <= 16
    assert keeps.reason.startswith("time limit of 0.3 s reached after")
    assert keeps.evaluation_queries == len(demo_data.x_eval)  # measured past the limit
    assert equations.status == "succeeded"  # each run has its own limit
    report = json.loads(write_report(result, tmp_path, embedded)["json"].read_text())
    Draft202012Validator(schema("mlthreat.assessment")).validate(report)
    assert report["run_timeout"] == 0.3


def test_query_log_holds_every_query(tmp_path, demo_data, demo_pair, embedded):
    log = QueryLog(tmp_path / "q.jsonl", "demo")
    result = Assessment(demo_pair, demo_data, techniques=["extraction-equations"],
                        kb=embedded, query_log=log).run()
    log.close()
    events = [json.loads(line) for line in (tmp_path / "q.jsonl").read_text().splitlines()]
    attack = [e for e in events if e["truth"] == "attack:AML.T0024.002"]
    evaluation = [e for e in events if e["truth"] == "evaluation"]
    findings = [f for _, f in result.findings()]
    assert len(attack) == sum(f.queries for f in findings) == 130
    assert len(evaluation) == sum(f.evaluation_queries for f in findings)
    assert {e["client_id"] for e in attack} == {"demo-logreg-extraction-equations",
                                               "demo-mlp-extraction-equations"}
    # one log holds both targets' queries, each under its own model
    assert {e["client_id"].rsplit("-extraction", 1)[0] for e in events if
            e["model_id"] == "demo-mlp"} == {"demo-mlp"}
    assert len(attack[0]["input"]) == 64 and len(attack[0]["output"]["scores"]) == 10
    validator = Draft202012Validator(query_event_schema())
    for event in events:
        validator.validate(event)
    assert not validator.is_valid({**events[0], "truth": "attack:T1059"})
    assert all(t.attach_log is not None and t._log is None for t in demo_pair)


def test_same_seed_same_metrics(demo_data, demo_pair, embedded):
    def metrics():
        result = Assessment(demo_pair[1:], demo_data, techniques=["extraction-surrogate"],
                            budget=120, seed=3, kb=embedded).run()
        return {k: m.value for k, m in result.findings()[0][1].metrics.items()}

    assert metrics() == metrics()


def test_mitigation_before_and_after(tmp_path, demo_data, demo_pair, embedded):
    result = Assessment(demo_pair[:1], demo_data, techniques=["extraction-equations"],
                        mitigation=parse_mitigation("round:2"), kb=embedded).run()
    (_, before), = result.findings()
    (_, after), = result.findings(mitigated=True)
    assert before.metrics["fidelity"].value == 1.0
    assert after.metrics["fidelity"].value < 0.9 and after.status == "failed"
    paths = write_report(result, tmp_path, embedded)
    report = json.loads(paths["json"].read_text())
    assert report["mitigation"] == "round:2"
    row, = report["comparison"]
    assert (row["metric"], row["before"], row["status_before"], row["status_after"]) == (
        "fidelity", 1.0, "succeeded", "failed")
    Draft202012Validator(schema("mlthreat.assessment")).validate(report)


def test_report_files(tmp_path, demo_data, demo_pair, embedded):
    result = Assessment(demo_pair, demo_data, techniques=["extraction-equations"],
                        kb=embedded).run()
    paths = write_report(result, tmp_path, embedded)
    assert sorted(paths) == ["html", "json", "layer"]
    report = json.loads(paths["json"].read_text())
    Draft202012Validator(schema("mlthreat.assessment")).validate(report)
    assert report["summary"] == {"succeeded": 1, "failed": 1, "not-applicable": 0, "error": 0}
    assert report["atlas_version"] == "5.6.0"
    layer = json.loads(paths["layer"].read_text())
    scores = {e["techniqueID"]: e.get("score") for e in layer["techniques"] if "score" in e}
    assert scores == {"AML.T0024.002": 1.0}
    assert layer["domain"] == "atlas-atlas"
    assert "AML.T0024.002" in paths["html"].read_text()


def test_bad_parameters_fail_before_any_query(demo_data, demo_pair, embedded):
    from mlthreat.errors import UsageError

    before = demo_pair[0].total_queries
    with pytest.raises(UsageError, match="n_samples"):
        Assessment(demo_pair, demo_data, techniques=["evasion-hopskipjump"],
                   params={"evasion-hopskipjump": {"n_samples": -1}}, kb=embedded).run()
    with pytest.raises(UsageError, match=r"no technique run for AML\.T9999"):
        Assessment(demo_pair, demo_data, techniques=["AML.T9999"], kb=embedded).run()
    for bad in (0, -1.0, float("nan"), True, "5"):
        with pytest.raises(UsageError, match=f"run_timeout={bad!r}: must be a number of "
                           "seconds above 0"):
            Assessment(demo_pair, demo_data, run_timeout=bad, kb=embedded).run()
    with pytest.raises(UsageError, match="not selected"):
        Assessment(demo_pair, demo_data, techniques=["extraction-equations"],
                   params={"evasion-boundary": {"n_samples": 2}}, kb=embedded).run()
    assert demo_pair[0].total_queries == before


def test_parent_id_selects_its_subtechniques(demo_data, demo_pair, embedded):
    plan = Assessment(demo_pair[:1], demo_data, techniques=["AML.T0043"], kb=embedded).plan()
    assert {p.run for p in plan} == {"evasion-hopskipjump", "evasion-boundary",
                                     "evasion-whitebox", "evasion-transfer", "evasion-chain"}


def test_a_failing_target_stops_its_suite(demo_data, embedded):
    from mlthreat.assess.errors import TargetError
    from mlthreat.assess.target import Target

    class Broken(Target):
        input_shape, n_classes, clip_values, model_id = (64,), 10, (0.0, 1.0), "broken"

        def _predict(self, x):
            raise TargetError("http://127.0.0.1:9/: connection refused")

    result = Assessment([Broken()], demo_data, techniques=["extraction-equations",
                                                           "extraction-surrogate"],
                        kb=embedded).run()
    first, second = (f for _, f in result.findings())
    assert first.status == "error" and "connection refused" in first.reason
    assert second.status == "error" and second.reason.startswith("not run: the target failed")
    assert result.target_errors == {"broken": "http://127.0.0.1:9/: connection refused"}


def test_plan_lists_applicability(demo_data, demo_pair, embedded):
    plan = Assessment(demo_pair, demo_data, kb=embedded).plan()
    by = {(p.target, p.run): p for p in plan}
    assert by[("demo-mlp", "evasion-whitebox")].applicable is False
    assert "white-box" in by[("demo-mlp", "evasion-whitebox")].reason
    assert by[("demo-logreg", "evasion-whitebox")].applicable is True
    assert by[("demo-logreg", "extraction-equations")].planned_queries == 195  # 3 x (d+1)
    assert by[("demo-logreg", "poisoning-backdoor")].reason.startswith("needs a training")
    assert kbmod.load().version == "5.6.0"


def test_few_rows_each_run_states_its_minimum(tmp_path):
    """One or three rows: the runs that can work on them do, the others say how many rows of
    which role they need and why; none ends in error."""
    from sklearn.datasets import load_digits
    from sklearn.tree import DecisionTreeClassifier

    from mlthreat.assess.data import load_data
    from mlthreat.assess.targets.sklearn import SklearnTarget

    x, y = load_digits(return_X_y=True)
    target = SklearnTarget(DecisionTreeClassifier(random_state=0).fit(x, y), model_id="tree")
    for n in (1, 3):
        path = tmp_path / f"{n}.csv"
        np.savetxt(path, np.column_stack([x[:n], y[:n]]), delimiter=",", fmt="%d",
                   header=",".join([f"p{i}" for i in range(64)] + ["label"]), comments="")
        data = load_data(path, label_column="label", members=path, non_members=path)
        assessment = Assessment([target], data, techniques=[
            "extraction-surrogate", "evasion-boundary", "membership-lira"],
            params={"evasion-boundary": {"n_samples": 1}}, budget=300)
        plan = {p.run: p for p in assessment.plan()}
        assert plan["extraction-surrogate"].minimum == (
            "2 pool rows: the surrogate learns from the answers to pool rows; 1 evaluation "
            "rows: fidelity is agreement with the target on evaluation rows")
        findings = {f.run: f for f in assessment.run().results[0].findings}
        assert "error" not in {f.status for f in findings.values()}
        assert findings["evasion-boundary"].status in ("succeeded", "failed")
        pool = len(data.x_pool)
        assert findings["extraction-surrogate"].reason == (
            f"needs at least 2 pool rows (the surrogate learns from the answers to pool rows); "
            f"the data gives {pool}")
        assert findings["membership-lira"].status == "not-applicable"


# -- --reference-target parity against artifacts that are not the same model ------------------
@pytest.mark.parametrize("reference, expected", [
    # string classes against integer ones: positions agree, classes do not (was rate 1.0)
    ("strings", {"error": "the classes differ: {0, 1} against {'a', 'b'} in the reference"}),
    # a regressor has no labels (was an internal AxisError)
    ("regressor", {"error": "sklearn:reg is a regressor: label agreement needs two "
                            "classifiers"}),
    ("same", {"agree": 6, "rate": 1.0}),
    # a model predicting the other class on every row
    ("swapped", {"agree": 0, "rate": 0.0}),
])
def test_parity_compares_classes_not_column_positions(reference, expected):
    from sklearn.linear_model import LinearRegression, LogisticRegression

    from mlthreat.assess.data import AssessmentData
    from mlthreat.assess.targets.sklearn import SklearnTarget

    rng = np.random.default_rng(0)
    x = rng.random((12, 3)).astype("float32")
    y = (x[:, 0] > 0.5).astype(int)
    model = LogisticRegression().fit(x, y)
    refs = {"strings": LogisticRegression().fit(x, np.array(["a", "b"])[y]),
            "regressor": LinearRegression().fit(x, x[:, 0]),
            "same": model, "swapped": LogisticRegression().fit(x, 1 - y)}
    target = SklearnTarget(model, model_id="m", description="sklearn:m")
    ref = SklearnTarget(refs[reference], model_id="r",
                        description="sklearn:reg" if reference == "regressor" else "sklearn:r")
    data = AssessmentData(x_pool=x[:6], y_pool=y[:6], x_eval=x[6:], y_eval=y[6:],
                          clip_values=(0.0, 1.0))
    parity = Assessment([target], data, reference=ref)._parity(target)
    assert {k: parity[k] for k in expected} == expected
    assert parity["rows"] == 6


def test_numpy_parameters_reach_the_report(tmp_path, demo_data, demo_pair, embedded):
    """Runs accept NumPy scalars as parameters (a notebook passes ``np.int64`` from an array);
    report.json holds them as plain numbers instead of failing to serialise."""
    import json

    import numpy as np

    from mlthreat.assess import write_report

    result = Assessment(demo_pair[1:], demo_data, techniques=["evasion-transfer"],
                        params={"evasion-transfer": {"n_samples": np.int64(4),
                                                     "eps_linf": np.float32(0.25),
                                                     "proxy": "logreg"}},
                        budget=600, kb=embedded).run()
    write_report(result, tmp_path, embedded)
    params = json.loads((tmp_path / "report.json").read_text())["findings"][0]["params"]
    assert params["n_samples"] == 4 and isinstance(params["n_samples"], int)
    assert params["eps_linf"] == 0.25


def test_a_run_leaves_numpy_global_generator_as_it_was(demo_data, demo_pair, embedded):
    """ART draws from numpy's global generator, which the runner seeds for each run; the
    caller's own state is put back afterwards."""
    import numpy as np

    np.random.seed(1234)
    expected = np.random.random(3)
    np.random.seed(1234)
    Assessment(demo_pair[1:], demo_data, techniques=["evasion-hopskipjump"],
               params={"evasion-hopskipjump": {"n_samples": 2}}, budget=400,
               kb=embedded).run()
    assert np.array_equal(np.random.random(3), expected)


def test_mitigations_reach_the_runner_through_the_target_interface(demo_pair):
    """What the runner and the white-box runs need is on Target itself: a per-run limit to
    reset and an optional ART estimator, passed through a mitigation."""
    from mlthreat.assess.mitigations import MitigatedTarget, parse_mitigation

    plain = demo_pair[0]
    wrapped = MitigatedTarget(plain, parse_mitigation("query-limit:5"), 0)
    assert plain.art_estimator() is None and wrapped.art_estimator() is None
    plain.reset_limit()  # a plain target has no per-run limit: nothing happens
    wrapped.run_queries = 4
    wrapped.reset_limit()
    assert wrapped.run_queries == 0
