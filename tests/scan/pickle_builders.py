"""Hand-assembled pickle bytes and model files for the pickle-format scan tests.

Opcodes as in CPython ``Lib/pickle.py`` / ``pickletools``; every builder only writes bytes,
nothing here unpickles anything.
"""

from __future__ import annotations

import base64
import io
import pickle
import struct
import zipfile

# ---- single opcodes -------------------------------------------------------------------

MARK = b"("
STOP = b"."
POP = b"0"
TUPLE = b"t"
TUPLE1 = b"\x85"
TUPLE2 = b"\x86"
REDUCE = b"R"
STACK_GLOBAL = b"\x93"
MEMOIZE = b"\x94"
EMPTY_DICT = b"}"


def proto(n: int) -> bytes:
    """PROTO n (protocol 2+ header)."""
    return b"\x80" + bytes([n])


def global_op(module: str, name: str) -> bytes:
    """GLOBAL (protocol 0-1): ``c module\\n name\\n``."""
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def ustr(s: str) -> bytes:
    """SHORT_BINUNICODE (< 256 bytes) or BINUNICODE."""
    raw = s.encode()
    if len(raw) < 256:
        return b"\x8c" + bytes([len(raw)]) + raw
    return b"X" + struct.pack("<I", len(raw)) + raw


def string0(s: str) -> bytes:
    """STRING (protocol 0): a quoted repr line."""
    return b"S'" + s.encode() + b"'\n"


def binbytes(data: bytes) -> bytes:
    """SHORT_BINBYTES or BINBYTES."""
    if len(data) < 256:
        return b"C" + bytes([len(data)]) + data
    return b"B" + struct.pack("<I", len(data)) + data


def binput(i: int) -> bytes:
    """BINPUT i: memo[i] = top of stack."""
    return b"q" + bytes([i])


def binget(i: int) -> bytes:
    """BINGET i: push memo[i]."""
    return b"h" + bytes([i])


def stack_global(module: str, name: str) -> bytes:
    """Protocol 4 import: two strings, then STACK_GLOBAL."""
    return ustr(module) + ustr(name) + STACK_GLOBAL


# ---- whole pickles --------------------------------------------------------------------


def call_p0(module: str, name: str, arg: str) -> bytes:
    """Protocol 0: ``module.name(arg)`` via GLOBAL, MARK, STRING, TUPLE, REDUCE."""
    return global_op(module, name) + MARK + string0(arg) + TUPLE + REDUCE + STOP


def call_p4(module: str, name: str, arg: str) -> bytes:
    """Protocol 4: ``module.name(arg)`` via STACK_GLOBAL."""
    return proto(4) + stack_global(module, name) + ustr(arg) + TUPLE1 + REDUCE + STOP


def memo_confusion() -> bytes:
    """Imports ``os.system`` for a real unpickler, ``builtins.set`` for a naive reader.

    MEMOIZE stores at ``len(memo)``; a reader that instead numbers MEMOIZEs with its own
    counter (0, 1, …) ignores the slots BINPUT filled, and reads the wrong strings back.
    Real memo: {1: 'os', 2: 'system'}; naive: {0: 'os', 1: 'system', 2: 'set'}.
    """
    return (proto(4)
            + ustr("builtins") + binput(1)   # memo[1] = 'builtins'
            + ustr("os") + MEMOIZE           # real: memo[len(memo) == 1] = 'os'
            + POP + POP
            + binget(1)                      # real 'os', naive 'builtins'
            + ustr("set") + binput(2)        # memo[2] = 'set'
            + ustr("system") + MEMOIZE       # real: memo[len(memo) == 2] = 'system'
            + POP + POP
            + binget(2)                      # real 'system', naive 'set'
            + STACK_GLOBAL
            + ustr("echo pwned") + TUPLE1 + REDUCE + STOP)


def naive_memo_globals(data: bytes) -> list[str]:
    """The globals a reader with a MEMOIZE counter would see (the scanner bug the bypass
    targets); only for showing :func:`memo_confusion` fools it."""
    import pickletools

    memo: dict[int, object] = {}
    stack: list[object] = []
    counter = 0
    out: list[str] = []
    for op, arg, _ in pickletools.genops(data):
        if op.name in ("SHORT_BINUNICODE", "BINUNICODE"):
            stack.append(arg)
        elif op.name == "BINPUT":
            memo[arg] = stack[-1]
        elif op.name == "MEMOIZE":
            memo[counter] = stack[-1]
            counter += 1
        elif op.name == "BINGET":
            stack.append(memo[arg])
        elif op.name == "POP":
            stack.pop()
        elif op.name == "STACK_GLOBAL":
            name, module = stack.pop(), stack.pop()
            out.append(f"{module}.{name}")
            stack.append(None)
    return out


def nested_loads(inner: bytes) -> bytes:
    """Protocol 2: ``pickle.loads(inner)`` with ``inner`` hidden as a bytes argument."""
    return proto(2) + global_op("pickle", "loads") + binbytes(inner) + TUPLE1 + REDUCE + STOP


def import_module_getattr(module: str, attr: str, arg: str) -> bytes:
    """``getattr(importlib.import_module(module), attr)(arg)``: no dangerous name written."""
    return (proto(2)
            + global_op("builtins", "getattr")
            + global_op("importlib", "import_module") + ustr(module) + TUPLE1 + REDUCE
            + ustr(attr) + TUPLE2 + REDUCE
            + ustr(arg) + TUPLE1 + REDUCE + STOP)


def marshal_function(code_bytes: bytes) -> bytes:
    """``types.FunctionType(marshal.loads(code_bytes), {})()``."""
    return (proto(2)
            + global_op("types", "FunctionType")
            + global_op("marshal", "loads") + binbytes(code_bytes) + TUPLE1 + REDUCE
            + EMPTY_DICT + TUPLE2 + REDUCE
            + b")" + REDUCE + STOP)


# ---- containers -----------------------------------------------------------------------


def replace_member(zip_bytes: bytes, suffix: str, new: bytes) -> bytes:
    """The zip with the member ending in ``suffix`` replaced by ``new`` (all stored)."""
    src = zipfile.ZipFile(io.BytesIO(zip_bytes))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            data = new if info.filename.endswith(suffix) else src.read(info.filename)
            dst.writestr(info.filename, data)
    return out.getvalue()


def corrupt_stored(zip_bytes: bytes, old: bytes, new: bytes) -> bytes:
    """Replace ``old`` with same-length ``new`` in the raw archive (stored member data),
    leaving the CRC-32 in the headers stale."""
    assert len(old) == len(new) and zip_bytes.count(old) == 1
    return zip_bytes.replace(old, new)


def npy_with_pickle(payload: bytes) -> bytes:
    """A version 1.0 ``.npy`` of shape (1,) and dtype ``|O`` whose data is ``payload``."""
    header = "{'descr': '|O', 'fortran_order': False, 'shape': (1,), }"
    # numpy pads the header with spaces and a newline so the data is 64-byte aligned.
    total = 10 + len(header) + 1
    header += " " * (-total % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + payload


def long_binput(i: int) -> bytes:
    """LONG_BINPUT i (4-byte index)."""
    return b"r" + struct.pack("<I", i)


def long_binget(i: int) -> bytes:
    """LONG_BINGET i (4-byte index)."""
    return b"j" + struct.pack("<I", i)


def put0(i: int) -> bytes:
    """PUT i (protocol 0, decimal text)."""
    return b"p" + str(i).encode() + b"\n"


def get0(i: int) -> bytes:
    """GET i (protocol 0, decimal text)."""
    return b"g" + str(i).encode() + b"\n"


def legacy_torch(obj_pickle: bytes, raw_tail: bytes) -> bytes:
    """The legacy ``torch.save`` layout: magic, protocol version, sys info, the object,
    storage keys (each its own pickle), then raw storage bytes."""
    return (pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2) + pickle.dumps(1001, protocol=2)
            + pickle.dumps({"protocol_version": 1001, "little_endian": True}, protocol=2)
            + obj_pickle + pickle.dumps(["0"], protocol=2) + raw_tail)


# ---- framing (PEP 3154) ---------------------------------------------------------------


def frame(n: int) -> bytes:
    """FRAME n: the next ``n`` bytes are one frame (8-byte little-endian length)."""
    return b"\x95" + struct.pack("<Q", n)


def framed(body: bytes, length: int | None = None) -> bytes:
    """Protocol 4: PROTO, one FRAME declaring ``length`` (default: all of ``body``), body."""
    return proto(4) + frame(len(body) if length is None else length) + body


def frame_straddle_call() -> bytes:
    """``os.system('x')`` whose frame ends inside the SHORT_BINUNICODE 'system': the C
    unpickler reads on across the frame's end, ``Lib/pickle.py`` refuses the opcode."""
    body = stack_global("os", "system") + ustr("x") + TUPLE1 + REDUCE + STOP
    return framed(body, len(ustr("os")) + 3)


# ---- pickles inside pickles -----------------------------------------------------------

ENCODERS = {
    "raw": lambda b: b,
    "hex": lambda b: b.hex(),
    "base64": lambda b: base64.b64encode(b).decode(),
}


def nested_pickle(inner: bytes, encoding: str, protocol: int = 4) -> bytes:
    """A plain dict pickled with ``protocol`` whose value holds ``inner`` as bytes (``raw``),
    a hex string or a base64 string: no loader global, only the nesting shows ``inner``."""
    return pickle.dumps({"weights": [1.0, 2.0], "extra": ENCODERS[encoding](inner)},
                        protocol=protocol)


def wrap(data: bytes, times: int) -> bytes:
    """``data`` as the value of a dict pickle, ``times`` deep."""
    for _ in range(times):
        data = pickle.dumps({"x": data}, protocol=4)
    return data
