"""ONNX models: external-data paths that leave the model's folder, and custom operator domains.

An ONNX file is a protobuf ``ModelProto`` (``onnx/onnx.proto``). Loading it with external
data makes ``onnx.load`` open every ``external_data`` ``location`` relative to the model's
folder, so an absolute or ``..`` location reads (and with ``onnx.save`` writes) files
elsewhere; a node in a custom domain needs a native operator library registered before the
session starts. Neither needs the model loaded to be seen.

The reader below walks the protobuf wire format as a stream: it decodes only the messages on
the path to tensors and nodes, and seeks over everything else (``raw_data``, ``float_data``…),
so a multi-GB model costs a few reads, never its size in memory.
"""

from __future__ import annotations

import ntpath
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

from mlthreat.scan.findings import TECHNIQUES, Finding, FormatError, Limits
from mlthreat.scan.policy import Policy

__all__ = ["analyze", "location_escapes"]

FORMAT = "onnx"

# Domains served by the standard runtimes' built-in kernels (no library to load).
STANDARD_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml", "com.microsoft"})

# Field numbers from onnx/onnx.proto (onnx 1.23; stable since IR version 3).
_MODEL_GRAPH, _MODEL_FUNCTIONS, _MODEL_TRAINING_INFO = 7, 25, 20
_TRAINING_INITIALIZATION, _TRAINING_ALGORITHM = 1, 2
_GRAPH_NODE, _GRAPH_INITIALIZER, _GRAPH_SPARSE_INITIALIZER = 1, 5, 15
_NODE_NAME, _NODE_OP_TYPE, _NODE_ATTRIBUTE, _NODE_DOMAIN = 3, 4, 5, 7
_ATTR_NAME, _ATTR_T, _ATTR_G, _ATTR_TENSORS, _ATTR_GRAPHS = 1, 5, 6, 10, 11
_ATTR_SPARSE_TENSOR, _ATTR_SPARSE_TENSORS = 22, 23
_TENSOR_NAME, _TENSOR_EXTERNAL_DATA, _TENSOR_DATA_LOCATION = 8, 13, 14
_SPARSE_VALUES, _SPARSE_INDICES = 1, 2
_ENTRY_KEY, _ENTRY_VALUE = 1, 2
_FUNCTION_NAME, _FUNCTION_NODE, _FUNCTION_DOMAIN = 1, 7, 10
_DATA_LOCATION_EXTERNAL = 1

# Subgraphs (If/Loop/Scan bodies) nest; a hostile file could nest them without end.
_MAX_NESTING = 64
_CHUNK = 1 << 16


class _Stream:
    """A small read buffer over a seekable file: reads varints byte by byte without a system
    call per byte, and skips fields by moving the position (the buffer is refilled lazily)."""

    def __init__(self, fh: BinaryIO, size: int) -> None:
        self.fh, self.size = fh, size
        self.pos = 0
        self._buf, self._start = b"", 0

    def _byte(self) -> int:
        i = self.pos - self._start
        if not 0 <= i < len(self._buf):
            if self.pos >= self.size:
                raise FormatError("truncated protobuf (varint runs past the end of the file)",
                                  f"offset {self.pos}")
            self.fh.seek(self.pos)
            self._buf, self._start, i = self.fh.read(_CHUNK), self.pos, 0
            if not self._buf:
                raise FormatError("truncated protobuf", f"offset {self.pos}")
        self.pos += 1
        return self._buf[i]

    def varint(self) -> int:
        # fast path: the whole varint is in the buffer (nearly always; tree ensembles hold
        # millions of one-byte keys and values)
        buf, i = self._buf, self.pos - self._start
        if i >= 0 and i + 10 <= len(buf):
            b = buf[i]
            if b < 0x80:
                self.pos += 1
                return b
            value, shift, j = b & 0x7F, 7, i + 1
            while shift < 70:
                b = buf[j]
                j += 1
                value |= (b & 0x7F) << shift
                if b < 0x80:
                    self.pos += j - i
                    return value
                shift += 7
            raise FormatError("malformed protobuf varint (longer than 10 bytes)",
                              f"offset {self.pos}")
        start, shift, value = self.pos, 0, 0
        while True:
            b = self._byte()
            value |= (b & 0x7F) << shift
            if not b & 0x80:
                return value
            shift += 7
            if shift >= 70:  # a varint holds at most 64 bits (10 bytes)
                raise FormatError("malformed protobuf varint (longer than 10 bytes)",
                                  f"offset {start}")

    def read(self, n: int) -> bytes:
        if self.pos + n > self.size:
            raise FormatError("truncated protobuf field", f"offset {self.pos}")
        i = self.pos - self._start
        if i >= 0 and i + n <= len(self._buf):
            data = self._buf[i:i + n]
        else:
            self.fh.seek(self.pos)
            data = self.fh.read(n)
            if len(data) != n:
                raise FormatError("truncated protobuf field", f"offset {self.pos}")
        self.pos += n
        return data


def _fields(s: _Stream, end: int) -> Iterator[tuple[int, int, int, int]]:
    """Yield ``(field, wire_type, start, length)`` for each field of the message that ends at
    ``end`` (for a varint, ``start`` is its value). Length-delimited payloads are not read:
    the caller reads, walks or skips them, and the stream is moved past each payload before
    the next field is decoded."""
    while s.pos < end:
        at = s.pos
        key = s.varint()
        number, wire = key >> 3, key & 7
        if number == 0:
            raise FormatError("malformed protobuf (field number 0)", f"offset {at}")
        if wire == 0:
            yield number, wire, s.varint(), 0  # a varint's value rides in the start slot
        elif wire == 1 or wire == 5:
            n = 8 if wire == 1 else 4
            if s.pos + n > end:
                raise FormatError("truncated protobuf fixed-width field", f"offset {at}")
            s.pos += n
            yield number, wire, s.pos - n, n
        elif wire == 2:
            n = s.varint()
            if s.pos + n > end:
                raise FormatError(f"protobuf field {number} (length {n}) runs past its message",
                                  f"offset {at}")
            start = s.pos
            yield number, wire, start, n
            s.pos = start + n  # whatever the caller did, continue after the payload
        else:  # 3/4 are the deprecated groups, 6/7 do not exist: not an ONNX file
            raise FormatError(f"malformed protobuf (wire type {wire} in field {number})",
                              f"offset {at}")
    if s.pos != end:
        raise FormatError("protobuf message overruns its declared length", f"offset {s.pos}")


def _delimited(data: bytes, base: int) -> list[tuple[int, int, int]]:
    """``(field, start, length)`` of the length-delimited fields of one message held in
    ``data`` (which starts at file offset ``base``); other fields are decoded only to be
    skipped. Raises FormatError for a malformed or truncated message."""
    out: list[tuple[int, int, int]] = []
    i, n = 0, len(data)
    try:
        while i < n:
            at = i
            key = shift = 0
            while True:
                b = data[i]
                i += 1
                key |= (b & 0x7F) << shift
                if b < 0x80:
                    break
                shift += 7
                if shift >= 70:
                    raise FormatError("malformed protobuf varint", f"offset {base + at}")
            wire = key & 7
            if key >> 3 == 0:
                raise FormatError("malformed protobuf (field number 0)", f"offset {base + at}")
            if wire == 0:
                while data[i] >= 0x80:
                    i += 1
                i += 1
            elif wire == 5:
                i += 4
            elif wire == 1:
                i += 8
            elif wire == 2:
                length = shift = 0
                while True:
                    b = data[i]
                    i += 1
                    length |= (b & 0x7F) << shift
                    if b < 0x80:
                        break
                    shift += 7
                    if shift >= 70:
                        raise FormatError("malformed protobuf varint", f"offset {base + i}")
                out.append((key >> 3, base + i, length))
                i += length
            else:
                raise FormatError(f"malformed protobuf (wire type {wire} in field {key >> 3})",
                                  f"offset {base + at}")
    except IndexError:
        raise FormatError("truncated protobuf message", f"offset {base + n}") from None
    if i != n:
        raise FormatError("protobuf message overruns its declared length", f"offset {base + n}")
    return out


def _text(s: _Stream, n: int, limits: Limits) -> str:
    if n > limits.max_header_bytes:
        raise FormatError(f"protobuf string of {n} bytes exceeds the header limit",
                          f"offset {s.pos}")
    return s.read(n).decode("utf-8", "replace")


@dataclass
class _Tensor:
    name: str = ""
    external: bool = False
    entries: dict[str, str] = field(default_factory=dict)


@dataclass
class _Walk:
    s: _Stream
    limits: Limits
    tensors: list[tuple[str, _Tensor]] = field(default_factory=list)
    # (domain, op_type) -> (first node's name, count)
    ops: dict[tuple[str, str], tuple[str, int]] = field(default_factory=dict)
    functions: set[tuple[str, str]] = field(default_factory=set)

    def model(self, end: int) -> None:
        for number, wire, start, n in _fields(self.s, end):
            if wire != 2:
                continue
            if number == _MODEL_GRAPH:
                self.graph(start + n, 0)
            elif number == _MODEL_FUNCTIONS:
                self.function(start + n)
            elif number == _MODEL_TRAINING_INFO:
                for num, w, st, ln in _fields(self.s, start + n):
                    if w == 2 and num in (_TRAINING_INITIALIZATION, _TRAINING_ALGORITHM):
                        self.graph(st + ln, 1)

    def graph(self, end: int, depth: int) -> None:
        if depth > _MAX_NESTING:
            raise FormatError(f"subgraphs nested deeper than {_MAX_NESTING}",
                              f"offset {self.s.pos}")
        for number, wire, start, n in _fields(self.s, end):
            if wire != 2:
                continue
            if number == _GRAPH_NODE:
                self.node(start + n, depth)
            elif number == _GRAPH_INITIALIZER:
                t = self.tensor(start + n)
                self.tensors.append((f"initializer '{t.name}'", t))
            elif number == _GRAPH_SPARSE_INITIALIZER:
                for t in self.sparse(start + n):
                    self.tensors.append((f"sparse initializer '{t.name}'", t))

    def function(self, end: int) -> None:
        name = domain = ""
        for number, wire, start, n in _fields(self.s, end):
            if wire != 2:
                continue
            if number == _FUNCTION_NAME:
                name = _text(self.s, n, self.limits)
            elif number == _FUNCTION_DOMAIN:
                domain = _text(self.s, n, self.limits)
            elif number == _FUNCTION_NODE:
                self.node(start + n, 1)
        self.functions.add((domain, name))

    def node(self, end: int, depth: int) -> None:
        name = op_type = domain = ""
        attr_tensors: list[tuple[str, _Tensor]] = []
        for number, wire, start, n in _fields(self.s, end):
            if wire != 2:
                continue
            if number == _NODE_NAME:
                name = _text(self.s, n, self.limits)
            elif number == _NODE_OP_TYPE:
                op_type = _text(self.s, n, self.limits)
            elif number == _NODE_DOMAIN:
                domain = _text(self.s, n, self.limits)
            elif number == _NODE_ATTRIBUTE:
                attr_tensors.extend(self.attribute(start + n, depth))
        for attr, t in attr_tensors:
            self.tensors.append((f"node '{name}' attribute '{attr}'", t))
        first, count = self.ops.get((domain, op_type), (name, 0))
        self.ops[(domain, op_type)] = (first, count + 1)

    def attribute(self, end: int, depth: int) -> list[tuple[str, _Tensor]]:
        name, found = "", []
        start0 = self.s.pos
        if end - start0 <= self.limits.max_header_bytes:
            # an attribute can hold millions of scalars (tree ensembles): decode it from one
            # bytes object in a tight loop instead of a generator step per field
            fields = _delimited(self.s.read(end - start0), start0)
        else:
            fields = [(number, start, n) for number, wire, start, n in _fields(self.s, end)
                      if wire == 2]
        for number, start, n in fields:
            self.s.pos = start
            if number == _ATTR_NAME:
                name = _text(self.s, n, self.limits)
            elif number in (_ATTR_T, _ATTR_TENSORS):
                found.append(self.tensor(start + n))
            elif number in (_ATTR_SPARSE_TENSOR, _ATTR_SPARSE_TENSORS):
                found.extend(self.sparse(start + n))
            elif number in (_ATTR_G, _ATTR_GRAPHS):
                self.graph(start + n, depth + 1)
        return [(name, t) for t in found]

    def sparse(self, end: int) -> list[_Tensor]:
        found = []
        for number, wire, start, n in _fields(self.s, end):
            if wire == 2 and number in (_SPARSE_VALUES, _SPARSE_INDICES):
                found.append(self.tensor(start + n))
        return found

    def tensor(self, end: int) -> _Tensor:
        t = _Tensor()
        for number, wire, start, n in _fields(self.s, end):
            if number == _TENSOR_NAME and wire == 2:
                t.name = _text(self.s, n, self.limits)
            elif number == _TENSOR_DATA_LOCATION and wire == 0:
                t.external = start == _DATA_LOCATION_EXTERNAL
            elif number == _TENSOR_EXTERNAL_DATA and wire == 2:
                key = value = ""
                for num, w, _st, ln in _fields(self.s, start + n):
                    if w == 2 and num == _ENTRY_KEY:
                        key = _text(self.s, ln, self.limits)
                    elif w == 2 and num == _ENTRY_VALUE:
                        value = _text(self.s, ln, self.limits)
                t.entries[key] = value
            # raw_data (9), float_data (4), int64_data (7) … are skipped by _fields
        return t


def location_escapes(location: str, model_dir: str | None = None) -> str | None:
    """Why an ONNX ``external_data`` ``location`` reaches outside the model's folder, or None.

    The ONNX external-data spec (``docs/ExternalData.md``) requires a path relative to the
    model's directory. Refused: an absolute POSIX path, a Windows drive or UNC path, ``~``
    (expanded by some loaders), a NUL byte, ``..`` steps that climb above the folder, and,
    when ``model_dir`` is a real folder on disk, a path whose symlinks resolve outside it.
    """
    if "\x00" in location:
        return "contains a NUL byte"
    if location.startswith(("/", "\\")):
        return "is an absolute path"
    drive, _ = ntpath.splitdrive(location)
    if drive or (len(location) > 1 and location[1] == ":"):
        return "names a drive or network share"
    if location.startswith("~"):
        return "starts with '~' (a home directory)"
    depth = 0
    for part in location.replace("\\", "/").split("/"):
        if part == "..":
            depth -= 1
            if depth < 0:
                return "climbs out of the model's folder with '..'"
        elif part not in ("", "."):
            depth += 1
    if model_dir and os.path.isdir(model_dir):
        base = os.path.realpath(model_dir)
        target = os.path.realpath(os.path.join(model_dir, location))
        if os.path.commonpath([base, target]) != base:
            return "resolves through a symlink to outside the model's folder"
    return None


def analyze(fh: BinaryIO, *, path: str, size: int, limits: Limits,
            policy: Policy) -> list[Finding]:
    """Findings for an ONNX ``ModelProto`` read as a protobuf stream (``onnx/onnx.proto``).

    Reports ``onnx.external-data-escape`` (high) for every tensor, in the graph, in nested
    subgraphs, in node attributes, in training graphs and in local functions, whose
    ``external_data`` ``location`` leaves the model's folder (see :func:`location_escapes`),
    and ``onnx.custom-domain`` (medium) once per operator ``(domain, op_type)`` outside the
    standard domains that no local function of the model defines.

    Raises
    ------
    FormatError
        Malformed or truncated protobuf (location ``offset N``), a string above
        ``limits.max_header_bytes``, or subgraphs nested deeper than 64.
    """
    del policy  # ONNX names no Python globals
    walk = _Walk(_Stream(fh, size), limits)
    walk.model(size)
    # An archive member has no folder on disk to resolve symlinks against.
    model_dir = None if "!" in path else (os.path.dirname(path) or ".")
    findings: list[Finding] = []
    for where, t in walk.tensors:
        if "location" not in t.entries:
            continue
        loc = t.entries["location"]
        why = location_escapes(loc, model_dir)
        if why:
            findings.append(Finding(
                path=path, format=FORMAT, severity="high", rule="onnx.external-data-escape",
                message=f"external data location {loc!r} {why}: loading the model reads "
                        "that file",
                technique=TECHNIQUES["unsafe"], location=where, symbol=loc,
                details={"external_data": dict(t.entries), "data_location_external":
                         t.external}))
    for (domain, op_type), (first, count) in walk.ops.items():
        if domain in STANDARD_DOMAINS or (domain, op_type) in walk.functions:
            continue
        findings.append(Finding(
            path=path, format=FORMAT, severity="medium", rule="onnx.custom-domain",
            message=f"operator {op_type!r} in custom domain {domain!r}: running the model "
                    "needs a native operator library",
            technique=TECHNIQUES["unsafe"], location=f"node '{first}'", symbol=domain,
            details={"op_type": op_type, "nodes": count}))
    return findings
