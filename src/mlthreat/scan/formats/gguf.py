"""GGUF files: chat templates that reach Python internals (Jinja server-side template
injection).

GGUF (ggml's ``docs/gguf.md``) starts with the magic ``GGUF``, a ``uint32`` version (2 or 3;
version 1 used 32-bit counts and is not accepted), ``uint64`` tensor count, ``uint64``
metadata count, then that many key/value pairs: a ``gguf_string`` key (``uint64`` length +
UTF-8 bytes), a ``uint32`` value type and the value. Little-endian, unless the version reads
byte-swapped (big-endian files from ``gguf-py --bigendian``).

``tokenizer.chat_template`` (and ``tokenizer.chat_template.<name>``) is a Jinja2 template
that runtimes such as llama-cpp-python and transformers render when the model is used. A
template that walks from a Jinja object to Python internals
(``cycler.__init__.__globals__.os.popen``) runs commands in a renderer that is not
sandboxed. Templates are checked by :func:`mlthreat.scan.formats.templates.template_problem`
(the one check for chat templates wherever they are found): parsed with Jinja's sandboxed
environment (parsing compiles nothing and runs nothing) and their syntax tree searched.
"""

from __future__ import annotations

import struct
from typing import BinaryIO

from mlthreat.scan.findings import Finding, FormatError, Limits
from mlthreat.scan.formats.templates import (
    SUSPICIOUS_ATTRIBUTES,
    SUSPICIOUS_NAMES,
    template_findings,
    template_problem,
)
from mlthreat.scan.policy import Policy

__all__ = ["SUSPICIOUS_ATTRIBUTES", "SUSPICIOUS_NAMES", "analyze", "template_problem"]

FORMAT = "gguf"

# GGUF value types (ggml docs/gguf.md, gguf_metadata_value_type) -> fixed size in bytes.
_FIXED = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_STRING, _ARRAY = 8, 9
_MAX_KEY = 65535  # the spec's limit on a key's length
_MAX_ARRAY_NESTING = 8

class _Reader:
    def __init__(self, fh: BinaryIO, size: int, limits: Limits) -> None:
        self.fh, self.size, self.limits = fh, size, limits
        self.pos = 0
        self.order = "<"

    def take(self, n: int, what: str) -> bytes:
        if n > self.size - self.pos:
            raise FormatError(f"truncated GGUF file (reading {what})", f"offset {self.pos}")
        data = self.fh.read(n)
        if len(data) != n:
            raise FormatError(f"truncated GGUF file (reading {what})", f"offset {self.pos}")
        self.pos += n
        return data

    def skip(self, n: int, what: str) -> None:
        if n > self.size - self.pos:
            raise FormatError(f"truncated GGUF file ({what} runs past the end)",
                              f"offset {self.pos}")
        self.pos += n
        self.fh.seek(self.pos)

    def u32(self, what: str) -> int:
        return int(struct.unpack(self.order + "I", self.take(4, what))[0])

    def u64(self, what: str) -> int:
        return int(struct.unpack(self.order + "Q", self.take(8, what))[0])

    def string_length(self, what: str, limit: int) -> int:
        at = self.pos
        n = self.u64(what)
        if n > limit:
            raise FormatError(f"{what} of {n} bytes exceeds the limit of {limit}",
                              f"offset {at}")
        return n

    def string(self, what: str, limit: int) -> str:
        n = self.string_length(what, limit)
        at = self.pos
        try:
            return self.take(n, what).decode("utf-8")
        except UnicodeDecodeError:
            raise FormatError(f"{what} is not UTF-8", f"offset {at}") from None

    def skip_value(self, vtype: int, what: str, depth: int = 0) -> None:
        if vtype in _FIXED:
            self.skip(_FIXED[vtype], what)
        elif vtype == _STRING:
            self.skip(self.string_length(what, self.limits.max_header_bytes), what)
        elif vtype == _ARRAY:
            at = self.pos
            if depth >= _MAX_ARRAY_NESTING:
                raise FormatError(f"{what}: arrays nested deeper than {_MAX_ARRAY_NESTING}",
                                  f"offset {at}")
            etype, count = self.u32(what), self.u64(what)
            if etype in _FIXED:
                self.skip(count * _FIXED[etype], what)  # checked against the file size
                return
            if etype not in (_STRING, _ARRAY):
                raise FormatError(f"{what}: unknown array element type {etype}", f"offset {at}")
            # every string or array element takes at least 8 bytes: refuse an impossible count
            # before looping over it
            if count * 8 > self.size - self.pos:
                raise FormatError(f"{what}: array of {count} elements cannot fit in the file",
                                  f"offset {at}")
            for _ in range(count):
                self.skip_value(etype, what, depth + 1)
        else:
            raise FormatError(f"{what}: unknown value type {vtype}", f"offset {self.pos - 4}")


def _is_template_key(key: str) -> bool:
    return key == "tokenizer.chat_template" or key.startswith("tokenizer.chat_template.")


def analyze(fh: BinaryIO, *, path: str, size: int, limits: Limits,
            policy: Policy) -> list[Finding]:
    """Read a GGUF header's metadata (ggml ``docs/gguf.md``) and check its chat templates.

    Returns ``gguf.template-code`` (critical, ``TECHNIQUES["unsafe"]``, symbol the first
    suspicious token) for a template reaching Python internals, ``gguf.template-unparseable``
    (medium) for one Jinja cannot parse; nothing else (tensor data is not read).

    Raises
    ------
    FormatError
        Bad magic or version, truncation, a key above 65535 bytes, a string above
        ``limits.max_header_bytes``, an array that cannot fit in the file, an unknown type.
    """
    del policy  # GGUF names no Python globals
    r = _Reader(fh, size, limits)
    if r.take(4, "magic") != b"GGUF":
        raise FormatError("not a GGUF file (bad magic)", "offset 0")
    raw_version = r.take(4, "version")
    version = struct.unpack("<I", raw_version)[0]
    if version not in (2, 3) and struct.unpack(">I", raw_version)[0] in (2, 3):
        r.order, version = ">", struct.unpack(">I", raw_version)[0]
    if version not in (2, 3):
        raise FormatError(f"unsupported GGUF version {version}", "offset 4")
    r.u64("tensor count")
    kv_count = r.u64("metadata count")
    # each pair needs at least a key length (8), a type (4) and a one-byte value
    if kv_count * 13 > size - r.pos:
        raise FormatError(f"{kv_count} metadata pairs cannot fit in the file", "offset 16")
    findings: list[Finding] = []
    for _ in range(kv_count):
        key_at = r.pos
        key = r.string("metadata key", min(_MAX_KEY, limits.max_header_bytes))
        vtype = r.u32(f"type of {key!r}")
        if not (_is_template_key(key) and vtype == _STRING):
            r.skip_value(vtype, f"value of {key!r}")
            continue
        template = r.string(f"value of {key!r}", limits.max_header_bytes)
        findings.extend(template_findings(
            template, path=path, fmt=FORMAT, rule_prefix="gguf", name=key,
            location=f"metadata '{key}' (offset {key_at})", details={"key": key}))
    return findings
