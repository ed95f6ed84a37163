"""``mlthreat.testing.check_exporter`` over every registered exporter, and over fakes that break
one property each (so the check is known to catch what it claims to)."""

from __future__ import annotations

import contextlib
import functools
import importlib
import itertools
import socket
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

import mlthreat.render
import mlthreat.testing
from mlthreat.detect.batch import EventBatch
from mlthreat.detect.engine import DETECTORS
from mlthreat.kb.export import EXPORTERS, exporter
from mlthreat.testing import check_detector, check_exporter


@pytest.mark.parametrize("name", list(EXPORTERS))
def test_registered_exporter_conforms(name, embedded):
    module = exporter(name)
    assert name == module.FORMAT
    check_exporter(module, embedded)


def test_public_names():
    assert {"check_detector", "check_exporter", "check_target"} <= set(mlthreat.testing.__all__)
    for name in mlthreat.testing.__all__:
        assert callable(getattr(mlthreat.testing, name))


# -- the check catches each broken property -------------------------------------------------------
def _listing(kb: Any) -> str:
    return "".join(f"{t.id}\t{t.name}\n" for t in kb.techniques)


def _fake(name: str = "fake_exporter", **attrs: Any) -> ModuleType:
    module = ModuleType(name)
    module.FORMAT = "fake"
    module.SUFFIX = ".txt"
    module.render = lambda kb: f"data version {kb.version}\n" + _listing(kb)
    for key, value in attrs.items():
        if value is None:
            delattr(module, key)
        else:
            setattr(module, key, value)
    return module


def test_a_good_fake_passes(embedded):
    check_exporter(_fake(), embedded)


def _counter_render() -> Any:
    calls = itertools.count()
    return lambda kb: f"{kb.version} call {next(calls)}\n"


def _reads_file(kb: Any) -> str:
    with open(__file__, encoding="utf-8") as fh:
        return kb.version + fh.read(10)


def _writes_file(kb: Any) -> str:
    Path(tempfile.gettempdir(), "mlthreat-should-not-exist.txt").write_text("x")
    return kb.version


def _hides_io(kb: Any) -> str:
    with contextlib.suppress(Exception):  # a fallback that would hide it from a naive check
        Path(__file__).read_text(encoding="utf-8")
    return kb.version


def _connects(kb: Any) -> str:
    with socket.create_connection(("127.0.0.1", 9), timeout=1):
        pass
    return kb.version


_OWN_TEMPLATE = Path(mlthreat.render.__file__).parent / "templates" / "base.css"


def _reads_own_template_every_call(kb: Any) -> str:
    return kb.version + _OWN_TEMPLATE.read_text(encoding="utf-8")[:0]


def _fragile(kb: Any) -> str:
    for t in kb.techniques:
        if "\n" in t.name:
            raise ValueError("newline in a name")
    return kb.version


def _broken(kb: Any) -> str:
    raise RuntimeError("boom")


BROKEN = {
    "no-format": ({"FORMAT": None}, "FORMAT"),
    "empty-format": ({"FORMAT": ""}, "FORMAT"),
    "suffix-without-dot": ({"SUFFIX": "txt"}, "SUFFIX"),
    "no-render": ({"render": None}, "render"),
    "render-raises": ({"render": _broken}, "render: render\\(kb\\) raised RuntimeError: boom"),
    "returns-bytes": ({"render": lambda kb: kb.version.encode()}, "render returns str"),
    "not-deterministic": ({"render": "counter"}, "deterministic"),
    "no-version": ({"render": _listing}, "names the ATLAS data version"),
    "reads-a-file": ({"render": _reads_file}, "no I/O: .*open"),
    "writes-a-file": ({"render": _writes_file}, "no I/O: .*write_text"),
    "hides-io": ({"render": _hides_io}, "no I/O: .*read_text"),
    "connects": ({"render": _connects}, "no I/O: .*create_connection"),
    "hostile-name-crashes": ({"render": _fragile}, "hostile names: .*ValueError"),
    "reads-own-template-every-call": ({"render": _reads_own_template_every_call},
                                      "no I/O: .*read_text.*only the first call may read"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_check_names_module_and_failed_property(case, embedded):
    attrs, message = BROKEN[case]
    if attrs.get("render") == "counter":
        attrs = {"render": _counter_render()}
    module = _fake(f"broken_{case.replace('-', '_')}", **attrs)
    with pytest.raises(AssertionError, match=f"^exporter broken_{case.replace('-', '_')}: "
                                             f"{message}"):
        check_exporter(module, embedded)


def test_check_leaves_io_working_afterwards(embedded):
    with pytest.raises(AssertionError):
        check_exporter(_fake(render=_reads_file), embedded)
    assert Path(__file__).read_text(encoding="utf-8").startswith('"""')
    with open(__file__, encoding="utf-8") as fh:
        assert fh.read(3) == '"""'


def test_loading_own_templates_once_is_allowed(embedded):
    """The first call may read the package's own files (templates loaded lazily, then kept)."""
    @functools.cache
    def template() -> str:
        return _OWN_TEMPLATE.read_text(encoding="utf-8")

    check_exporter(_fake(render=lambda kb: kb.version + template()[:0]), embedded)


# -- check_detector over every registered detector ------------------------------------------------
def _events(ts: Any, clients: Any, x: Any, labels: Any) -> EventBatch:
    n = len(ts)
    return EventBatch(ts=np.asarray(ts, dtype=np.float64),
                      client_id=np.asarray(clients, dtype=object),
                      model_id=np.full(n, "digits", dtype=object),
                      x=np.asarray(x, dtype=np.float32).reshape(n, -1),
                      label=np.asarray(labels, dtype=np.int64))


@pytest.fixture(scope="module")
def detector_traffic() -> tuple[list[EventBatch], list[EventBatch]]:
    """Benign: 30 clients x 120 queries of digits scaled to [0, 1] (PRADA calibrates on
    clients with 100 distances). Attack: 3 clients sending 150 uniform random queries at 5/s,
    and one probing a row with 150 near-duplicates."""
    from sklearn.datasets import load_digits

    from mlthreat.detect.evaluate import benign_events

    digits = load_digits()
    x = digits.data / 16.0
    events = benign_events(x, n_clients=30, queries=120, model_id="digits", seed=1)
    benign = _events([e["ts"] for e in events], [e["client_id"] for e in events],
                     [e["input"] for e in events], [e["output"]["label"] for e in events])
    rng = np.random.default_rng(2)
    n = 150
    start = events[0]["ts"] + 10.0
    ts = np.concatenate([start + np.arange(n) * 0.2 + 0.01 * c for c in range(3)])
    clients = [f"random-{c}" for c in range(3) for _ in range(n)]
    random = _events(ts, clients, rng.random((3 * n, 64)), rng.integers(0, 10, 3 * n))
    probe = np.clip(x[5] + rng.normal(0.0, 0.01, (n, 64)), 0.0, 1.0)
    near = _events(start + 1.0 + np.arange(n) * 0.5, ["probe"] * n, probe,
                   np.full(n, digits.target[5]))
    size = 500
    return ([benign.take(slice(s, s + size)) for s in range(0, len(benign), size)],
            [random, near])


@pytest.mark.parametrize("name", list(DETECTORS))
def test_registered_detector_conforms(name, detector_traffic):
    module, _, cls_name = DETECTORS[name].partition(":")
    cls = getattr(importlib.import_module(module), cls_name)
    assert cls.name == name
    benign, attack = detector_traffic
    check_detector(cls, benign, attack)
