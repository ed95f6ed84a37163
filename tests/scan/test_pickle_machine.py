"""The pickle reader's stack machine: one handler per opcode, named as in CPython's
``Lib/pickle.py`` ``_Unpickler.dispatch``, and the underflow checks every popping opcode
shares. Nothing is ever unpickled."""

from __future__ import annotations

import io
import pickle
import pickletools

import pytest

from mlthreat.scan.findings import FormatError, Limits
from mlthreat.scan.formats import pickle as pkfmt
from mlthreat.scan.formats._pickle_machine import DISPATCH, Machine
from mlthreat.scan.policy import Policy

# Handlers that serve several opcodes CPython gives a method each (the argument is decoded
# before dispatch, so one handler does for all of them).
GROUPED = {
    "load_value": {"INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4", "FLOAT",
                   "BINFLOAT", "STRING", "BINSTRING", "SHORT_BINSTRING", "BINBYTES",
                   "SHORT_BINBYTES", "BINBYTES8", "BYTEARRAY8", "UNICODE", "SHORT_BINUNICODE",
                   "BINUNICODE", "BINUNICODE8"},
    "load_constant": {"NONE", "NEWFALSE", "NEWTRUE", "EMPTY_TUPLE", "EMPTY_SET", "NEXT_BUFFER"},
    "load_get": {"GET", "BINGET", "LONG_BINGET"},
    "load_put": {"PUT", "BINPUT", "LONG_BINPUT"},
    "load_ext": {"EXT1", "EXT2", "EXT4"},
}


CODES = {op.name: op.code.encode("latin-1") for op in pickletools.opcodes}


def opcode(name: str) -> bytes:
    return CODES[name]


def analyze(data: bytes) -> None:
    pkfmt.analyze(io.BytesIO(data), path="m.pkl", size=len(data), limits=Limits(),
                  policy=Policy.default())


def test_every_opcode_has_a_handler() -> None:
    assert len(DISPATCH) == len(pickletools.opcodes)
    unsupported = [op.name for op, load in DISPATCH.values() if load is Machine.load_unsupported]
    assert unsupported == []


def test_handlers_are_named_as_cpythons_load_methods() -> None:
    cpython = pickle._Unpickler.dispatch
    for code, (op, load) in DISPATCH.items():
        grouped = [name for name, ops in GROUPED.items() if op.name in ops]
        expected = grouped[0] if grouped else cpython[code].__name__
        assert load.__name__ == expected, op.name


POPS = ["TUPLE1", "TUPLE2", "TUPLE3", "APPEND", "SETITEM", "REDUCE", "NEWOBJ", "NEWOBJ_EX",
        "BUILD", "STACK_GLOBAL", "BINPERSID", "DUP", "MEMOIZE", "STOP"]
POPS_MARK = ["TUPLE", "LIST", "DICT", "FROZENSET", "APPENDS", "SETITEMS", "ADDITEMS", "OBJ",
             "POP_MARK", "POP"]


@pytest.mark.parametrize("name", POPS)
def test_popping_an_empty_stack_is_an_underflow_at_the_opcode(name: str) -> None:
    with pytest.raises(FormatError) as err:
        analyze(b"\x80\x04" + opcode(name) + b".")
    assert (str(err.value), err.value.location) == ("stack underflow", f"offset 2 ({name})")


@pytest.mark.parametrize("name", POPS_MARK)
def test_popping_to_a_missing_mark_is_an_error_at_the_opcode(name: str) -> None:
    with pytest.raises(FormatError) as err:
        analyze(b"\x80\x04" + opcode(name) + b".")
    assert (str(err.value), err.value.location) == ("no MARK on the stack",
                                                    f"offset 2 ({name})")


@pytest.mark.parametrize("name", ["APPENDS", "SETITEMS", "ADDITEMS"])
def test_a_mark_with_nothing_below_it_is_an_underflow(name: str) -> None:
    with pytest.raises(FormatError) as err:
        analyze(b"\x80\x04(" + opcode(name) + b".")
    assert (str(err.value), err.value.location) == ("stack underflow", f"offset 3 ({name})")
