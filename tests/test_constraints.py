"""The one parameter vocabulary (mlthreat.constraints) and the one message format, used by
technique runs, detectors, the scanner and the mitigations."""

from __future__ import annotations

from numbers import Integral, Real
from typing import Any

import numpy as np
import pytest

from mlthreat.constraints import (
    Boolean,
    InstanceOf,
    Interval,
    ListOf,
    Null,
    Options,
    Rule,
    validate,
)
from mlthreat.errors import UsageError


def fails(constraints: dict[str, Any], value: Any, rules: tuple[Rule, ...] = ()) -> str:
    with pytest.raises(UsageError) as err:
        validate("owner", {"p": value}, constraints, rules)
    return str(err.value)


@pytest.mark.parametrize("value", [1, 7, np.int64(3), np.int32(1), np.uint8(2)])
def test_integers_python_and_numpy(value: Any) -> None:
    validate("owner", {"p": value}, {"p": Interval(Integral, 1, None)})


@pytest.mark.parametrize("value", [True, False, np.bool_(True), 1.0, np.float64(2.0), "3", None])
def test_integer_never_a_bool_float_or_string(value: Any) -> None:
    assert fails({"p": Interval(Integral, 0, None)}, value) == (
        f"owner: parameter p={value!r}: must be an integer ≥ 0")


@pytest.mark.parametrize("value", [0.5, 1, np.float32(0.25), np.float64(1.0), np.int64(1)])
def test_reals_python_and_numpy(value: Any) -> None:
    validate("owner", {"p": value}, {"p": Interval(Real, 0, 1, closed="right")})


@pytest.mark.parametrize("value", [float("nan"), float("inf"), np.float32("nan"), True, "0.5"])
def test_real_is_finite_and_not_a_bool(value: Any) -> None:
    assert fails({"p": "real"}, value) == f"owner: parameter p={value!r}: must be a finite number"
    assert fails({"p": Interval(Real, 0, None, closed="neither")}, value).endswith(
        "must be a number > 0")


@pytest.mark.parametrize(("interval", "bad", "text"), [
    (Interval(Integral, 1, None), 0, "a positive integer"),
    (Interval(Integral, 0, None, closed="neither"), 0, "a positive integer"),
    (Interval(Integral, 2, None), 1, "an integer ≥ 2"),
    (Interval(Integral, 1, 10), 11, "an integer in [1, 10]"),
    (Interval(Real, 0, 1, closed="neither"), 1.0, "a fraction in (0, 1)"),
    (Interval(Real, 0, 1, closed="right"), 0, "a fraction in (0, 1]"),
    (Interval(Real, 0, 0.5, closed="left"), 0.5, "a number in [0, 0.5)"),
    (Interval(Real, 1, None, closed="neither"), 1, "a number > 1"),
    (Interval(Real, None, 3, closed="neither"), 3, "a number < 3"),
    (Interval(Real, 0, None, closed="neither", note="relative to the feature range"), 0,
     "a number > 0 (relative to the feature range)"),
])
def test_interval_bounds_and_words(interval: Interval, bad: Any, text: str) -> None:
    assert fails({"p": interval}, bad) == f"owner: parameter p={bad!r}: must be {text}"


def test_options_none_lists_and_instances() -> None:
    assert fails({"p": Options("l2", "linf")}, "l1") == (
        "owner: parameter p='l1': must be 'l2' or 'linf'")
    assert fails({"p": Options("a", "b", "c")}, 1).endswith("must be one of 'a', 'b', 'c'")
    assert fails({"p": Options(1, 2)}, True).endswith("must be 1 or 2")
    assert fails({"p": Options("x")}, np.array(["x", "x"])).startswith("owner: parameter p=")
    validate("owner", {"p": None}, {"p": [Null("scaled"), Interval(Integral, 1, None)]})
    assert fails({"p": [Null("scaled"), Interval(Integral, 1, None)]}, 0) == (
        "owner: parameter p=0: must be None (scaled) or a positive integer")
    assert fails({"p": [None, "callable", InstanceOf(str, "a string")]}, 5) == (
        "owner: parameter p=5: must be None, a callable or a string; got int")
    shape = ListOf(Interval(Integral, 1, None), lengths=(3, 2))
    validate("owner", {"p": (8, np.int64(8))}, {"p": shape})
    assert fails({"p": shape}, [8]) == (
        "owner: parameter p=[8]: must be a list of 2 or 3 items, each a positive integer")
    assert fails({"p": ListOf(Interval(Real, 0, 1, closed="right"))}, ()).endswith(
        "must be a non-empty list, each item a fraction in (0, 1]")
    engines = ListOf(Options("a", "b"), empty=True)
    validate("owner", {"p": ()}, {"p": engines})
    assert fails({"p": engines}, ("a", "zz")) == (
        "owner: parameter p=('a', 'zz'): must be a list, each item 'a' or 'b'")
    assert fails({"p": engines}, "a").endswith("must be a list, each item 'a' or 'b'")


def test_booleans() -> None:
    validate("owner", {"p": True, "q": np.bool_(False)}, {"p": "boolean", "q": Boolean()})
    for bad in (0, 1, "true", None):
        assert fails({"p": "boolean"}, bad) == f"owner: parameter p={bad!r}: must be true or false"


def test_cross_parameter_rule_runs_after_each_parameter_is_valid() -> None:
    table = {"init_eval": Interval(Integral, 1, None), "max_eval": Interval(Integral, 1, None)}
    rule = Rule("init_eval", lambda p: p["init_eval"] <= p["max_eval"],
                "at most max_eval ({max_eval!r})")
    validate("run", {"init_eval": 100, "max_eval": 100}, table, [rule])
    with pytest.raises(UsageError) as err:
        validate("run", {"init_eval": 300, "max_eval": 100}, table, [rule])
    assert str(err.value) == "run: parameter init_eval=300: must be at most max_eval (100)"
    with pytest.raises(UsageError) as err:  # the single-parameter check comes first
        validate("run", {"init_eval": 300, "max_eval": "x"}, table, [rule])
    assert str(err.value) == "run: parameter max_eval='x': must be a positive integer"


def test_unknown_parameters_are_named_with_the_known_ones() -> None:
    with pytest.raises(UsageError) as err:
        validate("run", {"a": 1, "zz": 2, "b": 3}, {}, known=("a", "b"))
    assert str(err.value) == "run: unknown parameter(s) zz; known: a, b"


# --- every user speaks it: runs, detectors, the scanner, the mitigations -------------------

def usage_error(check: Any) -> str:
    with pytest.raises(UsageError) as err:
        check()
    return str(err.value)


@pytest.mark.parametrize("params", [{"max_per_window": True}, {"window_seconds": True},
                                    {"margin": False}, {"max_clients": True}])
def test_volume_detector_rejects_bools_as_numbers(params: dict[str, Any]) -> None:
    from mlthreat.detect.detectors.volume import VolumeDetector

    (name, value), = params.items()
    assert usage_error(VolumeDetector(**params).validate).startswith(
        f"volume: parameter {name}={value!r}: must be ")


def test_numpy_scalars_pass_wherever_python_numbers_do() -> None:
    from mlthreat.assess.techniques.evasion import HopSkipJumpEvasion
    from mlthreat.assess.techniques.membership import LiraMembership
    from mlthreat.detect.detectors.knn import KnnDetector
    from mlthreat.detect.detectors.ood import OodDetector
    from mlthreat.detect.detectors.volume import VolumeDetector

    KnnDetector(k=np.int64(5), buffer_size=np.int64(50), threshold=np.float32(0.5)).validate()
    HopSkipJumpEvasion(n_samples=np.int64(3), max_eval=np.int32(50), init_eval=np.int64(5),
                       eps_l2=np.float32(0.5), min_success_rate=np.float64(0.5)).validate()
    LiraMembership(n_shadow=np.int64(4), min_auc=np.float32(0.7)).validate()
    OodDetector(quantile=np.float32(0.95), min_queries=np.int16(10)).validate()
    VolumeDetector(window_seconds=np.float32(60), max_per_window=np.int64(100)).validate()


def test_messages_share_one_format() -> None:
    from mlthreat.assess.techniques.extraction import SurrogateExtraction
    from mlthreat.detect.detectors.blacklight import BlacklightDetector
    from mlthreat.detect.detectors.knn import KnnDetector

    assert usage_error(KnnDetector(k=0).validate) == (
        "knn: parameter k=0: must be a positive integer")
    assert usage_error(KnnDetector(threshold=-1.0).validate) == (
        "knn: parameter threshold=-1.0: must be None (scaled) or a number > 0")
    assert usage_error(SurrogateExtraction(hidden=np.float64(8.0)).validate) == (
        "extraction-surrogate: parameter hidden=np.float64(8.0): must be a positive integer")
    assert usage_error(BlacklightDetector(window=0).validate) == (
        "blacklight: parameter window=0: must be None (scaled) or a positive integer")
    assert usage_error(KnnDetector(nope=1).validate) == (
        "knn: unknown parameter(s) nope; known: buffer_size, k, max_clients, threshold")


def test_cross_parameter_rules_name_the_other_parameter() -> None:
    from mlthreat.assess.techniques.evasion import HopSkipJumpEvasion
    from mlthreat.assess.techniques.membership import LiraMembership
    from mlthreat.detect.detectors.blacklight import BlacklightDetector
    from mlthreat.detect.detectors.knn import KnnDetector

    assert usage_error(HopSkipJumpEvasion(init_eval=300, max_eval=100).validate) == (
        "evasion-hopskipjump: parameter init_eval=300: must be at most max_eval (100)")
    assert usage_error(KnnDetector(k=20, buffer_size=10).validate) == (
        "knn: parameter buffer_size=10: must be at least k (20)")
    assert usage_error(BlacklightDetector(bisection_ratio=(0.6, 0.4)).validate) == (
        "blacklight: parameter bisection_ratio=(0.6, 0.4): must be increasing (low < high)")
    assert usage_error(LiraMembership(n_shadow=5).validate).startswith(
        "membership-lira: parameter n_shadow=5: must be even")


def test_scanner_parameters() -> None:
    from mlthreat.scan.findings import Limits
    from mlthreat.scan.scanner import Scanner

    Scanner(engines=[], max_engine_bytes=np.int64(0)).validate()  # type: ignore[arg-type]
    # a name looked up in a table keeps the lookup message the CLI test pins
    assert usage_error(Scanner(engines=("clamav",)).validate) == (
        "unknown engine(s) clamav; known: fickling, picklescan, modelscan")
    assert usage_error(Scanner(engines="picklescan").validate) == (
        "Scanner: parameter engines='picklescan': must be a list, each item an engine name")
    assert usage_error(Scanner(max_engine_bytes=True).validate) == (
        "Scanner: parameter max_engine_bytes=True: must be an integer ≥ 0")
    assert usage_error(Scanner(limits=Limits(max_members=0)).validate) == (
        "Scanner: parameter limits.max_members=0: must be a positive integer")
    assert usage_error(Scanner(limits=Limits(seconds_per_file=float("nan"))).validate) == (
        "Scanner: parameter limits.seconds_per_file=nan: must be a number ≥ 0")


def test_mitigation_values() -> None:
    from mlthreat.assess.mitigations import parse_mitigation

    assert parse_mitigation("round:1.0").value == 1.0
    assert usage_error(lambda: parse_mitigation("round:1.5")) == (
        "mitigation round: parameter value=1.5: must be an integer ≥ 0 (decimals kept)")
    assert usage_error(lambda: parse_mitigation("round:x")).startswith(
        "mitigation round: parameter value='x': must be an integer ≥ 0")
    # these two used to crash (OverflowError) or pass (NaN noise)
    assert "must be an integer ≥ 0" in usage_error(lambda: parse_mitigation("round:inf"))
    assert usage_error(lambda: parse_mitigation("noise:nan")) == (
        "mitigation noise: parameter value=nan: must be a number ≥ 0 (standard deviation)")
    assert usage_error(lambda: parse_mitigation("query-limit:0")) == (
        "mitigation query-limit: parameter value=0: must be a positive integer (queries per run)")
