"""Pickle analyser: every global a pickle stream imports, found without unpickling it.

Covers plain pickles (protocols 0-5), ``joblib.dump`` files (raw array bytes inside the
stream) and legacy ``torch.save(..., _use_new_zipfile_serialization=False)`` files (several
pickles back to back followed by raw storage bytes).

The reader is a streaming opcode interpreter built on the opcode table of
:mod:`pickletools` (names and argument layouts). It follows the semantics of CPython's
``Lib/pickle.py`` ``_Unpickler`` (the ``load_*`` methods), PEP 3154 (protocol 4: framing,
``STACK_GLOBAL``, ``MEMOIZE``) and PEP 574 (protocol 5: out-of-band buffers), simulating the
stack, the mark stack and the memo just far enough to name every imported global. It never
imports or calls anything the stream names.

This module holds the reader: argument decoding, findings, framing, pickles nested in
arguments and the driver over several streams. Its parts live beside it:
``_pickle_machine`` (the stack machine, one handler per opcode as in ``_Unpickler.dispatch``),
``_pickle_input`` (the forward-only byte reader), ``_pickle_nest`` (which arguments may hold
a pickle) and ``_pickle_joblib`` (where ``joblib.dump`` puts an array's bytes).
"""

from __future__ import annotations

import _compat_pickle
import codecs
import io
import pickletools
import struct
from dataclasses import dataclass
from typing import IO, Any

from mlthreat.scan.findings import TECHNIQUES, Finding, FormatError, Limits
from mlthreat.scan.formats import _pickle_nest as nest
from mlthreat.scan.formats._pickle_input import ByteSource, Input, Truncated
from mlthreat.scan.formats._pickle_joblib import dtype_layout, is_joblib_wrapper
from mlthreat.scan.formats._pickle_machine import (
    DISPATCH,
    OPAQUE,
    Blob,
    Global,
    Machine,
    Obj,
    Stop,
    location,
)
from mlthreat.scan.policy import Policy

__all__ = ["ByteSource", "analyze", "analyze_stream"]


FORMAT = "pickle"

# torch/serialization.py: the first pickle of a legacy torch.save file is this integer.
_TORCH_MAGIC = 0x1950A86A20F9469CFC6C
# Legacy torch files hold 5 pickles (magic, protocol, sys info, object, storage keys), then
# raw storage bytes that are not pickle.
_TORCH_LEGACY_STREAMS = 5

# Strings longer than this are never module or attribute names: skip, do not hold them.
_MAX_KEPT_STR = 1 << 20
# Longest LONG1/LONG4 argument decoded to an int; longer ones are skipped.
_MAX_LONG_BYTES = 64

_RULE = {"payload": "pickle.payload-global", "dangerous": "pickle.dangerous-global",
         "unknown": "pickle.global-not-allowed"}
_TECH = {"payload": TECHNIQUES["malware"], "dangerous": TECHNIQUES["unsafe"],
         "unknown": TECHNIQUES["unsafe"]}
_SEVERITY = {"payload": "critical", "dangerous": "critical", "unknown": "high"}
# Opcodes that import or call: inside the part of a stream that inconsistent frames put in
# dispute, one of them makes the frame finding critical (see _Analyzer._flush_frames).
_CALLS = frozenset({"GLOBAL", "STACK_GLOBAL", "INST", "OBJ", "REDUCE", "NEWOBJ", "NEWOBJ_EX"})
# Disputed calls listed in a finding's details (the count is always given).
_MAX_LISTED = 8
# Largest string argument decoded and scanned as a nested pickle (its encoded size).
_MAX_NESTED_BYTES = 16 * 1024 * 1024


@dataclass
class _Hit:
    severity: str
    kind: str
    rule: str
    location: str
    message: str
    count: int = 1
    raw: str = ""


class _Stream(Machine):
    """One pickle stream being read: the stack machine, with its hooks reporting to the reader,
    and what the reader notes about the stream (hits, framing)."""

    def __init__(self, reader: _Analyzer, index: int) -> None:
        super().__init__(reader.base)
        self.reader = reader
        self.index = index
        self.hits: dict[tuple[str, str], _Hit] = {}
        # End offset of the frame being read, -1 outside frames (PEP 3154).
        self.frame_end = -1
        # Framing: the first inconsistency (offset, opcode, why), how many there were, and
        # the import/call opcodes from the first one on (offset, opcode).
        self.frame_issue: tuple[int, str, str] | None = None
        self.frame_issues = 0
        self.frame_calls: list[tuple[int, str]] = []
        self.frame_calls_total = 0

    def find_class(self, module: str, name: str) -> Any:
        return self.reader._check_global(self, module, name, self.offset, self.opname)

    def unresolved(self, what: str) -> None:
        self.reader._unresolved(self, self.offset, self.opname, what)

    def built(self, inst: Obj) -> Any:
        if is_joblib_wrapper(inst):
            self.reader._skip_joblib_array(inst, self.offset)
            return OPAQUE
        return inst

    def frame(self, size: int) -> None:
        reader, offset, pos, base = self.reader, self.offset, self.reader.inp.pos, self.base
        if self.frame_end >= 0:
            reader._frame_issue(self, offset, "FRAME", f"a frame starts at offset "
                                f"{offset - base}, inside the previous frame "
                                f"(which ends at offset {self.frame_end - base})")
        self.frame_end = pos + size
        if self.frame_end > reader.inp.end:
            reader._frame_issue(self, offset, "FRAME", f"the frame at offset {offset - base} "
                                f"declares {size} bytes, only {reader.inp.end - pos} remain")


class _Analyzer:
    def __init__(self, inp: Input, *, path: str, fmt: str, base: int, limits: Limits,
                 policy: Policy, depth: int = 0) -> None:
        self.inp = inp
        self.depth = depth
        self.path = path
        self.fmt = fmt
        self.base = base
        self.limits = limits
        self.policy = policy
        self.keep = min(limits.max_header_bytes, _MAX_KEPT_STR)
        self.findings: list[Finding] = []
        self.streams = 0

    # ---- findings -------------------------------------------------------------------
    def _loc(self, offset: int, opname: str) -> str:
        return location(offset - self.base, opname)

    def _hit(self, st: _Stream, key: tuple[str, str], hit: _Hit) -> None:
        old = st.hits.get(key)
        if old is None:
            st.hits[key] = hit
        else:
            old.count += 1

    def _flush(self, st: _Stream) -> None:
        self._flush_frames(st)
        for (rule, symbol), h in st.hits.items():
            details: dict[str, Any] = {"count": h.count, "stream": st.index}
            if h.raw and h.raw != symbol:
                details["as_written"] = h.raw
            tech = TECHNIQUES["unsafe"] if rule == "pickle.unresolved-global" else _TECH[h.kind]
            self.findings.append(Finding(
                path=self.path, format=self.fmt, severity=h.severity, rule=rule,
                message=h.message, technique=tech, location=h.location, symbol=symbol,
                details=details))
        st.hits.clear()

    # ---- framing (PEP 3154) -----------------------------------------------------------
    def _frame_issue(self, st: _Stream, offset: int, opname: str, why: str) -> None:
        st.frame_issues += 1
        if st.frame_issue is None:
            st.frame_issue = (offset, opname, why)

    def _flush_frames(self, st: _Stream) -> None:
        """One ``pickle.frame-mismatch`` finding per stream with inconsistent frames.

        A pickler writes every opcode whole inside one frame (or, for a large argument,
        outside any frame), and each frame's length ends on an opcode boundary. CPython's
        two unpicklers disagree on anything else: ``_pickle.c`` (``load_frame``) only
        prefetches the frame and reads on across its end, but fails at once on a frame
        longer than the data left; ``Lib/pickle.py`` (``_Unframer``) runs a short final
        frame, but refuses an opcode that crosses a frame's end and a frame that starts
        inside another. So from the first inconsistency on, one of them runs opcodes the
        other refuses, and a scanner modelled on the refusing one reports nothing there.

        This reader walks the opcodes in order, as ``_pickle.c`` and
        :func:`pickletools.genops` do, so it sees every opcode either way: each global is
        judged as usual. The framing finding is ``high``, and ``critical`` when the disputed
        part (from the first inconsistency to the end of the stream) imports or calls
        (:data:`_CALLS`): a layout that puts a call where some readers never look.
        """
        if st.frame_issue is None:
            return
        offset, opname, why = st.frame_issue
        calls = st.frame_calls
        details: dict[str, Any] = {"stream": st.index, "inconsistencies": st.frame_issues,
                                   "calls_after": st.frame_calls_total}
        message = f"inconsistent pickle frames: {why}"
        if calls:
            details["calls"] = [f"offset {o - self.base} ({n})" for o, n in calls]
            message += (f"; the disputed part imports or calls ({st.frame_calls_total} "
                        f"opcodes, first {calls[0][1]} at offset {calls[0][0] - self.base})")
        self.findings.append(Finding(
            path=self.path, format=self.fmt,
            severity="critical" if calls else "high", rule="pickle.frame-mismatch",
            message=message, technique=TECHNIQUES["unsafe" if calls else "tampered"],
            location=self._loc(offset, opname), details=details))
        st.frame_issue = None

    def _check_global(self, st: _Stream, module: str, name: str, offset: int,
                      opname: str) -> Global:
        raw = f"{module}.{name}"
        # find_class in Lib/pickle.py maps Python 2 names for protocols < 3
        # (fix_imports=True by default), so "__builtin__.eval" imports builtins.eval.
        if st.proto < 3:
            if (module, name) in _compat_pickle.NAME_MAPPING:
                module, name = _compat_pickle.NAME_MAPPING[(module, name)]
            elif module in _compat_pickle.IMPORT_MAPPING:
                module = _compat_pickle.IMPORT_MAPPING[module]
        symbol = f"{module}.{name}"
        verdict = self.policy.verdict(module, name)
        if verdict is None and "." in name:
            # Protocol 4+ resolves dotted names attribute by attribute, so an allowed module
            # can be a path to a dangerous one ("sklearn.base" + "os.system").
            parts = name.split(".")
            for i in range(len(parts) - 1):
                v = self.policy.verdict(".".join(parts[i:-1]), parts[-1])
                if v is not None and v[1] in ("payload", "dangerous"):
                    verdict = v
                    break
        if verdict is not None:
            _, kind = verdict
            rule = _RULE[kind]
            what = {"payload": "a global that unpacks hidden code",
                    "dangerous": "a global that runs code",
                    "unknown": "a global not on the allow-list"}[kind]
            self._hit(st, (rule, symbol), _Hit(
                severity=_SEVERITY[kind], kind=kind, rule=rule,
                location=self._loc(offset, opname),
                message=f"pickle imports {symbol}: {what}", raw=raw))
        return Global(module, name)

    def _unresolved(self, st: _Stream, offset: int, opname: str, what: str) -> None:
        rule = "pickle.unresolved-global"
        self._hit(st, (rule, what), _Hit(
            severity="high", kind="unknown", rule=rule, location=self._loc(offset, opname),
            message=f"pickle imports a global whose name cannot be resolved statically "
                    f"({what})"))

    # ---- driver ---------------------------------------------------------------------
    def run(self) -> list[Finding]:
        """Analyse streams until the data ends (or a recognised non-pickle tail)."""
        first = self._stream()
        legacy_torch = type(first) is int and first == _TORCH_MAGIC
        while not self.inp.at_end():
            if legacy_torch and self.streams >= _TORCH_LEGACY_STREAMS:
                break  # raw storage bytes follow the storage-key list
            start = self.inp.pos
            try:
                self._stream()
            except FormatError as exc:
                if legacy_torch:
                    raise
                # Data after a complete pickle that is not a pickle: note it, keep what the
                # partial stream already showed.
                self.findings.append(Finding(
                    path=self.path, format=self.fmt, severity="low",
                    rule="pickle.trailing-data",
                    message=f"{self.inp.end - start} bytes after the end of the pickle are "
                            f"not a complete pickle ({exc})",
                    technique=TECHNIQUES["tampered"],
                    location=f"offset {start - self.base}",
                    details={"bytes": self.inp.end - start}))
                break
        return self.findings

    def _stream(self) -> Any:
        st = _Stream(self, self.streams)
        self.streams += 1
        try:
            return self._loop(st)
        except Truncated:
            raise self._error(st, "truncated pickle: data ends before STOP",
                              self.inp.pos) from None
        except FormatError as exc:
            raise self._error(st, str(exc), self.inp.pos, exc.location) from None
        finally:
            self._flush(st)

    def _error(self, st: _Stream, msg: str, offset: int | None,
               location: str = "") -> FormatError:
        self._flush(st)
        loc = location or (f"offset {offset - self.base}" if offset is not None else "")
        worst = [f for f in self.findings if f.severity in ("critical", "high")]
        if worst:
            msg += " (before that: " + ", ".join(sorted({f.symbol for f in worst})) + ")"
        # findings made before the parse error would otherwise be lost with the exception
        return FormatError(msg, loc, self.findings)

    # ---- argument decoding ----------------------------------------------------------
    def _arg(self, op: pickletools.OpcodeInfo, offset: int) -> Any:
        arg = op.arg
        if arg is None:
            return None
        name = arg.name
        inp = self.inp
        if name == "uint1":
            return inp.read(1)[0]
        if name == "uint2":
            return int.from_bytes(inp.read(2), "little")
        if name == "int4":
            return int.from_bytes(inp.read(4), "little", signed=True)
        if name in ("uint4", "uint8"):
            return int.from_bytes(inp.read(arg.n), "little")
        if name == "float8":
            return struct.unpack(">d", inp.read(8))[0]
        if name in ("long1", "long4"):
            n = (inp.read(1)[0] if name == "long1"
                 else int.from_bytes(inp.read(4), "little", signed=True))
            if n < 0:
                raise FormatError("negative LONG4 length", self._loc(offset, op.name))
            if n > _MAX_LONG_BYTES:
                inp.skip(n)
                return OPAQUE
            return int.from_bytes(inp.read(n), "little", signed=True)
        if name in ("string1", "string4", "bytes1", "bytes4", "bytes8", "bytearray8",
                    "unicodestring1", "unicodestring4", "unicodestring8"):
            width = {"1": 1, "4": 4, "8": 8}[name[-1]]
            n = int.from_bytes(inp.read(width), "little", signed=(name == "string4"))
            if n < 0:
                raise FormatError(f"negative {op.name} length", self._loc(offset, op.name))
            if name.startswith("bytes"):
                if n >= nest.MIN_LEN:
                    self._nested_bytes(offset, op.name, n)
                else:
                    inp.skip(n)
                return Blob("bytes", n)
            if n > self.keep:
                inp.skip(n)
                return Blob("str", n)
            data = inp.read(n)
            if name.startswith("unicode"):
                try:
                    text = data.decode("utf-8", "surrogatepass")
                except UnicodeDecodeError:
                    raise FormatError(f"{op.name} is not UTF-8",
                                      self._loc(offset, op.name)) from None
                if n >= nest.MIN_LEN:
                    self._nested_text(offset, op.name, text)
                return text
            if n >= nest.MIN_LEN:
                self._nested(offset, op.name, data)
            # Python 2 str: the default unpickler decodes it (encoding="ASCII"); latin-1
            # keeps every byte so a non-ASCII name is still reported, never dropped.
            return data.decode("latin-1")
        # Newline-terminated arguments (protocol 0 text opcodes).
        line = inp.readline(self.keep)
        if name == "stringnl_noescape_pair":
            line2 = inp.readline(self.keep)
            return (self._text(line[:-1], op, offset), self._text(line2[:-1], op, offset))
        body = line[:-1]
        if name == "stringnl_noescape":
            return self._text(body, op, offset)
        try:
            if name == "stringnl":
                if len(body) >= 2 and body[:1] == body[-1:] and body[:1] in (b"'", b'"'):
                    raw = codecs.escape_decode(body[1:-1])[0]
                    if len(raw) >= nest.MIN_LEN:
                        self._nested(offset, op.name, raw)
                    return raw.decode("latin-1")
                raise FormatError("STRING argument is not quoted", self._loc(offset, op.name))
            if name == "unicodestringnl":
                text = body.decode("raw-unicode-escape")
                if len(text) >= nest.MIN_LEN:
                    self._nested_text(offset, op.name, text)
                return text
            if name == "decimalnl_short":
                if body == b"00":
                    return False
                if body == b"01":
                    return True
                return int(body)
            if name == "decimalnl_long":
                return int(body[:-1] if body.endswith(b"L") else body)
            if name == "floatnl":
                return float(body)
        except ValueError:  # includes UnicodeDecodeError
            raise FormatError(f"bad {op.name} argument", self._loc(offset, op.name)) from None
        raise FormatError(f"unsupported argument type {name}", self._loc(offset, op.name))

    # ---- pickles inside pickles ------------------------------------------------------
    def _nested_bytes(self, offset: int, opname: str, n: int) -> None:
        """Consume a bytes argument of ``n`` bytes, scanning it when it may be a pickle.

        Array data and other large blobs are only peeked at (their head) and skipped."""
        head = self.inp.peek(min(n, nest.head_bytes()))
        encodings = nest.plausible(head, n == len(head))
        if not encodings or not self._may_nest(offset, opname, n):
            self.inp.skip(n)
            return
        self._nested(offset, opname, self.inp.read(n), encodings)

    def _nested_text(self, offset: int, opname: str, text: str) -> None:
        # Protocol 2 writes bytes as _codecs.encode(text, "latin1"), so a text argument whose
        # characters all fit in a byte is tried as those bytes; anything else as UTF-8.
        try:
            raw = text.encode("latin-1")
        except UnicodeEncodeError:
            raw = text.encode("utf-8", "surrogatepass")
        self._nested(offset, opname, raw)

    def _may_nest(self, offset: int, opname: str, n: int) -> bool:
        """Whether a plausible nested pickle is within the depth and size bounds; when it is
        not, a ``pickle.nested-unscanned`` finding (medium) says so."""
        limit = min(self.limits.max_header_bytes, _MAX_NESTED_BYTES)
        if self.depth < nest.MAX_DEPTH and n <= limit:
            return True
        why = (f"nested deeper than {nest.MAX_DEPTH} pickles" if n <= limit
               else f"{n} bytes, above the {limit}-byte bound")
        self.findings.append(Finding(
            path=self.path, format=self.fmt, severity="medium", rule="pickle.nested-unscanned",
            message=f"a {opname} argument starts like a pickle but was not scanned ({why})",
            technique=TECHNIQUES["malware"], location=self._loc(offset, opname),
            details={"bytes": n, "depth": self.depth}))
        return False

    def _nested(self, offset: int, opname: str, data: bytes,
                encodings: list[str] | None = None) -> None:
        """Scan ``data`` (a string or bytes argument) as a pickle under each encoding its
        head allows. Findings carry the path ``outer#inner[offset N, ENCODING]``, as archive
        members are ``archive!member``; offsets inside are offsets in the decoded bytes. A
        string that only looked like a pickle (it does not parse, nothing found) is dropped
        without a finding."""
        if encodings is None:
            encodings = nest.plausible(data[:nest.head_bytes()],
                                       len(data) <= nest.head_bytes())
            if not encodings or not self._may_nest(offset, opname, len(data)):
                return
        for enc in encodings:
            inner = nest.decode(data, enc)
            if inner is None:
                continue
            sub = _Analyzer(Input(io.BytesIO(inner), 0, len(inner)),
                            path=f"{self.path}#inner[offset {offset - self.base}, {enc}]",
                            fmt=self.fmt, base=0, limits=self.limits, policy=self.policy,
                            depth=self.depth + 1)
            try:
                self.findings.extend(sub.run())
            except FormatError as exc:
                # A payload followed by garbage is still a payload; garbage alone is text.
                self.findings.extend(exc.findings)

    def _text(self, raw: bytes, op: pickletools.OpcodeInfo, offset: int) -> str:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise FormatError(f"{op.name} name is not UTF-8",
                              self._loc(offset, op.name)) from None

    # ---- the interpreter ------------------------------------------------------------
    def _loop(self, st: _Stream) -> Any:
        """Run opcodes until STOP (``_Unpickler.load``): read, decode the argument, dispatch."""
        inp = self.inp
        try:
            for _ in range(self.limits.max_opcodes):
                offset = inp.pos
                code = inp.read(1)[0]
                entry = DISPATCH.get(code)
                if entry is None:
                    raise FormatError(f"unknown pickle opcode 0x{code:02x}",
                                      f"offset {offset - self.base}")
                op, load = entry
                arg = self._arg(op, offset)
                st.offset = offset
                st.opname = name = op.name
                if st.frame_end >= 0 and inp.pos >= st.frame_end:
                    if offset < st.frame_end < inp.pos:
                        self._frame_issue(st, offset, name, f"{name} at offset "
                                          f"{offset - self.base} crosses the end of its frame "
                                          f"at offset {st.frame_end - self.base}")
                    st.frame_end = -1
                if st.frame_issue is not None and name in _CALLS:
                    st.frame_calls_total += 1
                    if len(st.frame_calls) < _MAX_LISTED:
                        st.frame_calls.append((offset, name))
                load(st, arg)
        except Stop as stop:
            return stop.value
        raise FormatError(f"more than {self.limits.max_opcodes} opcodes in one pickle stream",
                          f"offset {inp.pos - self.base}")

    # ---- joblib ---------------------------------------------------------------------
    def _skip_joblib_array(self, wrapper: Obj, offset: int) -> None:
        """Skip the array joblib writes right after a NumpyArrayWrapper BUILD.

        Layout (joblib/numpy_pickle.py, ``NumpyArrayWrapper.write_array``): for object
        dtypes a nested pickle stream; otherwise, when ``numpy_array_alignment_bytes`` is
        set, one byte ``p`` then ``p`` padding bytes, then ``prod(shape) * itemsize`` raw
        bytes.
        """
        loc = self._loc(offset, "BUILD")
        state = wrapper.state
        if not isinstance(state, dict):
            raise FormatError("joblib array wrapper without a state dict", loc)
        shape = state.get("shape")
        if not isinstance(shape, tuple) or not all(
                type(x) is int and x >= 0 for x in shape):
            raise FormatError("joblib array wrapper with an unreadable shape", loc)
        itemsize, hasobject = dtype_layout(state.get("dtype"))
        if itemsize is None:
            raise FormatError("joblib array wrapper with an unreadable dtype", loc)
        if hasobject:
            nested = _Analyzer(self.inp, path=self.path, fmt=self.fmt, base=self.base,
                               limits=self.limits, policy=self.policy, depth=self.depth)
            nested.streams = self.streams
            try:
                nested._stream()
            finally:
                self.streams = nested.streams
                self.findings.extend(nested.findings)
            return
        align = state.get("numpy_array_alignment_bytes")
        if align is not None:
            pad = self.inp.read(1)[0]
            # joblib writes 1..alignment padding bytes; any other value (a valid opcode, for
            # one) means the bytes are meant for another reader, so do not skip them.
            if type(align) is not int or not 1 <= pad <= align <= 256:
                raise FormatError(f"joblib padding length {pad} does not fit alignment "
                                  f"{align!r}", self._loc(self.inp.pos - 1, "BUILD"))
            self.inp.skip(pad)
        count = 1
        for x in shape:
            count *= x
        self.inp.skip(count * itemsize)


def analyze_stream(fh: ByteSource, *, path: str, size: int, limits: Limits, policy: Policy,
                   start: int = 0, base: int | None = None,
                   fmt: str = FORMAT) -> list[Finding]:
    """Analyse the pickle stream(s) in ``fh[start:size]``; offsets in findings are relative
    to ``base`` (default ``start``).

    Used by the numpy analyser (object arrays: a pickle after the ``.npy`` header) and the
    PyTorch zip analyser (``data.pkl`` members). See :func:`analyze` for findings and errors.
    """
    inp = Input(fh, start, size)
    return _Analyzer(inp, path=path, fmt=fmt, base=start if base is None else base,
                     limits=limits, policy=policy).run()


def analyze(fh: IO[bytes], *, path: str, size: int, limits: Limits,
            policy: Policy) -> list[Finding]:
    """Every global a pickle file imports, judged by ``policy``; the file is never unpickled.

    Parameters
    ----------
    fh : binary file object
        Seekable, at offset 0; read forward in chunks of at most 64 KiB or one argument
        (never more than ``limits.max_header_bytes``); large byte arguments are skipped by
        seeking.
    path : str
        Reported in findings.
    size : int
        Bytes in the file.
    limits : Limits
        ``max_opcodes`` per pickle stream; ``max_header_bytes`` for the largest argument read.
    policy : Policy
        Decides each global: allowed (no finding), ``payload`` (critical,
        ``pickle.payload-global``, AML.T0018.002), ``dangerous`` (critical,
        ``pickle.dangerous-global``, AML.T0011.000) or ``unknown`` (high,
        ``pickle.global-not-allowed``, AML.T0011.000).

    Returns
    -------
    list of Finding
        One per distinct (rule, global) per stream, ``details["count"]`` occurrences,
        ``location`` ``offset N (OPCODE)`` of the first. A ``STACK_GLOBAL`` whose operands
        are not strings gives ``pickle.unresolved-global`` (high). Several pickles back to
        back are each analysed; data after the last one that is not a pickle gives
        ``pickle.trailing-data`` (low), except the raw storage bytes of a legacy
        ``torch.save`` file and the raw array bytes of a ``joblib.dump`` file, which are
        skipped.

    Raises
    ------
    FormatError
        Truncated or corrupt first stream, unknown opcode, stack or memo misuse, more than
        ``limits.max_opcodes`` opcodes; ``location`` gives the offset. Findings made before
        the error are attached as ``exc.findings`` (list of Finding).

    Notes
    -----
    Opcode semantics follow CPython ``Lib/pickle.py`` (``_Unpickler``), PEP 3154 and
    PEP 574, including Python 2 name mapping (``_compat_pickle``) for protocols < 3.
    """
    return analyze_stream(fh, path=path, size=size, limits=limits, policy=policy)
