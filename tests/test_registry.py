"""The one registry shape: names in order, lazy loading, one unknown-name message, plug-ins."""

from __future__ import annotations

import json
import subprocess
import sys
from types import ModuleType

import pytest

from mlthreat.assess.targets import ADAPTERS
from mlthreat.assess.techniques import RUNS, run_class, run_classes
from mlthreat.detect.alerts import FORMATS, format_of
from mlthreat.detect.detectors import DETECTORS
from mlthreat.errors import UsageError
from mlthreat.kb.export import EXPORTERS, exporter
from mlthreat.registry import Registry, load_spec
from mlthreat.scan.formats import ANALYZERS

REGISTRIES: dict[str, tuple[Registry[object], tuple[str, ...]]] = {
    "runs": (RUNS, ("extraction-equations", "extraction-surrogate", "evasion-hopskipjump",
                    "evasion-boundary", "evasion-whitebox", "evasion-transfer", "evasion-chain",
                    "membership-blackbox", "membership-lira", "inversion-miface",
                    "poisoning-backdoor")),
    "targets": (ADAPTERS, ("sklearn", "onnx", "torch", "http", "https", "python")),
    "detectors": (DETECTORS, ("prada", "blacklight", "ood", "volume", "knn", "repeat",
                              "coverage")),
    "analysers": (ANALYZERS, ("pickle", "pytorch-zip", "numpy", "npz", "keras-h5", "keras-zip",
                              "skops", "onnx", "safetensors", "gguf", "savedmodel",
                              "keras-metadata", "template-config", "jinja")),
    "exporters": (EXPORTERS, ("navigator", "stix", "markdown", "csv", "html")),
    "alert formats": (FORMATS, ("jsonl", "ocsf", "ecs", "stix")),
}


@pytest.mark.parametrize("which", list(REGISTRIES))
def test_names_in_order_and_read_as_a_mapping(which: str) -> None:
    registry, names = REGISTRIES[which]
    assert registry.names() == names
    assert list(registry) == list(names) and len(registry) == len(names)
    assert all(":" in registry[n] or registry[n].startswith("mlthreat.") for n in names)


def test_choices_phrase_for_help_texts() -> None:
    assert FORMATS.choices(" or ") == "jsonl, ocsf, ecs or stix"
    assert EXPORTERS.choices(" or ") == "navigator, stix, markdown, csv or html"
    assert DETECTORS.choices() == "prada, blacklight, ood, volume, knn, repeat, coverage"
    assert Registry("thing", {"one": "json"}).choices(" or ") == "one"
    assert Registry("thing", {}).choices() == ""


def test_each_run_is_registered_under_its_name() -> None:
    # loads only the pure-Python run modules: every run class names itself as its key
    assert [c.name for c in run_classes()] == list(RUNS.names())


def test_modules_and_attributes_load() -> None:
    from mlthreat.kb.export import csv
    from mlthreat.scan.formats.numpy import analyze_npz

    assert exporter("csv") is csv and EXPORTERS.load("csv") is csv
    assert ANALYZERS.load("npz") is analyze_npz
    assert [m.FORMAT for m in FORMATS.load_all()] == ["jsonl", "ocsf", "ecs", "stix"]
    assert load_spec("json:decoder.JSONDecoder") is json.decoder.JSONDecoder
    assert run_class("mlthreat.assess.techniques.inversion:ModelInversion").name == \
        "inversion-miface"


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(UsageError) as exc:
        DETECTORS.load("magic")
    assert str(exc.value) == ("unknown detector magic; choose one of prada, blacklight, ood, "
                              "volume, knn, repeat, coverage")
    with pytest.raises(UsageError) as exc:
        exporter("pdf")
    assert str(exc.value) == ("unknown export format pdf; choose one of navigator, stix, "
                              "markdown, csv, html")
    with pytest.raises(UsageError) as exc:
        DETECTORS.check(["prada", "x", "y"])
    assert str(exc.value).startswith("unknown detector x, y; choose one of prada, ")
    DETECTORS.check(["prada", "knn"])  # all known: quiet


def test_a_bad_entry_is_refused() -> None:
    registry: Registry[object] = Registry("thing", {})
    with pytest.raises(ValueError, match="thing 'x': expected 'module:attr'"):
        registry["x"] = ":attr"


def _fresh(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip()


def test_mlthreat_kb_imports_no_detector() -> None:
    out = _fresh("import sys, mlthreat.kb, mlthreat.kb.export\n"
                 "print(sorted(m for m in sys.modules if m.startswith('mlthreat.detect')))")
    assert out == "[]"


def test_the_command_line_starts_without_numpy() -> None:
    """Help texts list registry names; building them must not import what the names name (nor
    numpy, through a package's ``__init__``), so ``mlthreat kb`` starts fast."""
    out = _fresh("import sys, mlthreat.cli\n"
                 "print(sorted(m for m in ('numpy', 'pandas', 'torch', 'stix2') "
                 "if m in sys.modules))")
    assert out == "[]"


def test_listing_imports_nothing_registered() -> None:
    """Reading a registry's names imports none of its entries (the target adapters aside: the
    ``mlthreat.assess`` package imports the sklearn adapter for its demo)."""
    out = _fresh(
        "import sys\n"
        "from mlthreat.kb.export import EXPORTERS\n"
        "from mlthreat.detect.detectors import DETECTORS\n"
        "from mlthreat.detect.alert_formats import FORMATS\n"
        "from mlthreat.scan.formats import ANALYZERS\n"
        "from mlthreat.assess.techniques import RUNS\n"
        "regs = [EXPORTERS, DETECTORS, FORMATS, ANALYZERS, RUNS]\n"
        "names = [r.names() for r in regs]\n"
        "print(sorted(r[n] for r in regs for n in r if r[n].partition(':')[0] in sys.modules)"
        " + sorted(m for m in ('torch', 'stix2', 'art') if m in sys.modules))\n"
    )
    assert out == "[]"


def test_an_entry_added_at_run_time_is_found(monkeypatch: pytest.MonkeyPatch) -> None:
    """A plug-in registers one line; every path through the registry then finds it."""
    from mlthreat.detect.alert_formats import jsonl

    fake = ModuleType("fake_format")
    fake.FORMAT = "fake"  # type: ignore[attr-defined]
    fake.render = lambda alert: {"fake": alert}  # type: ignore[attr-defined]
    fake.recognises = lambda record: "fake" in record  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "fake_format", fake)
    monkeypatch.setitem(FORMATS, "fake", "fake_format")

    from mlthreat.detect.alerts import render

    assert FORMATS.names()[-1] == "fake" and FORMATS.choices(" or ").endswith(", stix or fake")
    assert render("an alert", "fake") == {"fake": "an alert"}  # type: ignore[arg-type]
    assert format_of({"fake": 1}) == "fake"
    assert format_of({"kind": jsonl.KIND}) == "jsonl"
    monkeypatch.setitem(DETECTORS, "volume2", DETECTORS["volume"])
    DETECTORS.check(["prada", "volume2"])
    assert DETECTORS.load("volume2") is DETECTORS.load("volume")


def test_registered_entries_are_gone_after_the_test() -> None:
    assert "fake" not in FORMATS and "volume2" not in DETECTORS
