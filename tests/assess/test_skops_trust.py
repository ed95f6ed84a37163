"""The skops trust policy against files whose schema.json lies or is hostile.

Each file here is a real skops dump whose ``schema.json`` is then rewritten the way an attacker
would; the assertion is that the load is refused with the name and why, and that nothing the
user did not trust ran.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mlthreat.assess.errors import TargetError
from mlthreat.assess.targets import load_target
from mlthreat.assess.targets._skops_trust import MAX_SCHEMA_BYTES, decide, name_uses

RAN: list[str] = []


def _boom(x: Any) -> Any:  # a function the attacker wants called; records that it ran
    RAN.append("boom")
    return x


class Marker:  # an ordinary custom type a user may trust with --trust-type
    pass


def _pipeline(marker: bool = False) -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    rng = np.random.default_rng(0)
    x = rng.random((40, 3))
    pipe = make_pipeline(FunctionTransformer(np.abs), LogisticRegression())
    pipe.fit(x, (x[:, 0] > 0.5).astype(int))
    if marker:
        pipe.marker_ = Marker()
    return pipe


def _nodes(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _nodes(value)
    elif isinstance(node, list):
        for value in node:
            yield from _nodes(value)


def _rewrite(tmp_path: Path, edit: Callable[[dict[str, Any]], None], *, marker: bool = False,
             name: str = "evil.skops") -> Path:
    import skops.io as sio

    src = tmp_path / "src.skops"
    sio.dump(_pipeline(marker), src)
    with zipfile.ZipFile(src) as zf:
        files = {n: zf.read(n) for n in zf.namelist()}
    schema = json.loads(files["schema.json"])
    edit(schema)
    files["schema.json"] = json.dumps(schema).encode()
    out = tmp_path / name
    with zipfile.ZipFile(out, "w") as zf:
        for n, data in files.items():
            zf.writestr(n, data)
    return out


def _rename_function(module: str, cls: str, loader: str = "FunctionNode"
                     ) -> Callable[[dict[str, Any]], None]:
    def edit(schema: dict[str, Any]) -> None:
        for node in _nodes(schema):
            if node.get("__loader__") == "FunctionNode":  # the FunctionTransformer's np.abs
                node.update({"__loader__": loader, "__module__": module, "__class__": cls})
    return edit


BOOM = f"{__name__}._boom"


@pytest.mark.parametrize("loader", ["TypeNode", "FunctionNode"])
def test_a_named_outside_function_is_refused_whatever_loader_the_schema_claims(tmp_path, loader):
    # A TypeNode hands out what it names: the FunctionTransformer would call _boom on our rows.
    path = _rewrite(tmp_path, _rename_function(__name__, "_boom", loader))
    RAN.clear()
    for trust in ((), (BOOM,)):
        with pytest.raises(TargetError, match=rf"untrusted type {BOOM} \(a callable outside "):
            load_target(f"sklearn:{path}", trust_types=trust)
    assert RAN == []


def test_a_protocol_0_function_node_names_its_function_in_content(tmp_path):
    def edit(schema: dict[str, Any]) -> None:
        schema["protocol"] = 0
        for node in _nodes(schema):
            if node.get("__loader__") == "FunctionNode":
                node.update({"__module__": "numpy", "__class__": "ufunc",
                             "content": {"module_path": __name__, "function": "_boom"}})

    path = _rewrite(tmp_path, edit)
    assert name_uses(json.loads(zipfile.ZipFile(path).read("schema.json")))[BOOM] == \
        {"FunctionNode"}
    RAN.clear()
    with pytest.raises(TargetError, match=rf"untrusted type {BOOM} \(a callable outside "):
        load_target(f"sklearn:{path}", trust_types=(BOOM,))
    assert RAN == []


@pytest.mark.parametrize(("module", "cls"), [
    ("numpy._core.multiarray", "fromfile"),     # numpy.fromfile under its private path
    ("numpy._core.records", "fromfile"),
    ("numpy.core.multiarray", "fromfile"),      # the numpy 1.x spelling numpy 2 still resolves
    ("scipy.sparse", "load_npz"),
    ("scipy.sparse", "save_npz"),
    ("numpy.lib._npyio_impl", "load"),
    ("numpy", "memmap"),
])
def test_file_readers_are_refused_under_any_path(tmp_path, module, cls):
    path = _rewrite(tmp_path, _rename_function(module, cls))
    with pytest.raises(TargetError, match=rf"untrusted type {module}\.{cls} \(reads or writes "
                                          r"files; pass --trust-type"):
        load_target(f"sklearn:{path}")


def test_library_names_that_do_not_exist_are_refused_and_harmless_ones_trusted():
    uses = {"numpy.nothing_here": {"FunctionNode"},
            "numpy.core.multiarray._reconstruct": {"FunctionNode"},
            "numpy.ndarray.tofile": {"MethodNode"},
            "numpy.conftest.pytest_configure": {"FunctionNode"},
            "sklearn.tests.test_base.T": {"ObjectNode"}}
    decision = decide(uses, uses)
    assert decision.trusted == ("numpy.core.multiarray._reconstruct",)
    assert decision.refused == {
        "numpy.nothing_here": "not found in the installed library",
        "numpy.ndarray.tofile": "reads or writes files; pass --trust-type to accept it",
        "numpy.conftest.pytest_configure": "test code of the library, not part of a model",
        "sklearn.tests.test_base.T": "test code of the library, not part of a model",
    }


def test_a_trusted_outside_type_loads_as_an_object_and_not_as_a_type_node(tmp_path):
    name = f"{__name__}.Marker"
    path = _rewrite(tmp_path, lambda schema: None, marker=True, name="ok.skops")
    target = load_target(f"sklearn:{path}", trust_types=(name,))
    assert name in target.trusted_types
    assert isinstance(target.estimator.marker_, Marker)

    def as_type(schema: dict[str, Any]) -> None:
        for node in _nodes(schema):
            if node.get("__class__") == "Marker":
                node["__loader__"] = "TypeNode"

    lying = _rewrite(tmp_path, as_type, marker=True)
    with pytest.raises(TargetError, match=rf"untrusted type {name} \(a callable outside"):
        load_target(f"sklearn:{lying}", trust_types=(name,))


def test_an_object_node_naming_a_function_never_calls_it(tmp_path):
    # ObjectNode builds with cls.__new__(cls): a function named there fails, it does not run.
    def edit(schema: dict[str, Any]) -> None:
        for node in _nodes(schema):
            if node.get("__class__") == "Marker":
                node["__class__"] = "_boom"

    path = _rewrite(tmp_path, edit, marker=True)
    RAN.clear()
    with pytest.raises(TargetError, match="cannot load skops file"):
        load_target(f"sklearn:{path}", trust_types=(BOOM,))
    assert RAN == []


def test_a_huge_or_malformed_schema_is_refused_before_skops_reads_it(tmp_path):
    huge = tmp_path / "huge.skops"
    with zipfile.ZipFile(huge, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("schema.json", b'{"pad": "' + b"A" * (MAX_SCHEMA_BYTES + 1) + b'"}')
    with pytest.raises(TargetError, match=r"huge\.skops: not a skops file \(schema\.json is "
                                          rf"{MAX_SCHEMA_BYTES + 12} bytes uncompressed, over "
                                          r"the 64 MiB"):
        load_target(f"sklearn:{huge}")
    cases = {"list.skops": ("[1, 2]", "schema.json holds a JSON list, not an object"),
             "deep.skops": ("[" * 100_000 + "]" * 100_000, r"schema.json is not JSON"),
             "bad.skops": ("{not json", r"schema.json is not JSON \(JSONDecodeError\)")}
    for name, (text, why) in cases.items():
        with zipfile.ZipFile(tmp_path / name, "w") as zf:
            zf.writestr("schema.json", text)
        with pytest.raises(TargetError, match=rf"{name}: not a skops file \({why}"):
            load_target(f"sklearn:{tmp_path / name}")
    with zipfile.ZipFile(tmp_path / "none.skops", "w") as zf:
        zf.writestr("other.json", "{}")
    with pytest.raises(TargetError, match=r"not a skops file \(no schema.json in the archive\)"):
        load_target(f"sklearn:{tmp_path / 'none.skops'}")
