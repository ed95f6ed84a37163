"""safetensors files: a header that does not describe its data.

Layout (https://github.com/huggingface/safetensors, "Format"): an unsigned little-endian
64-bit header length ``N``, ``N`` bytes of UTF-8 JSON (an object, possibly padded with
spaces), then the data area. Each header entry except ``__metadata__`` is
``{"dtype": ..., "shape": [...], "data_offsets": [begin, end]}`` with offsets relative to the
data area; ``__metadata__`` maps strings to strings.

The format cannot run code, so a clean file has no findings. What is checked, and how:

* A file that cannot be read as safetensors at all raises :class:`FormatError`: header length
  above ``limits.max_header_bytes`` or beyond the file, header not UTF-8 JSON, or not an
  object.
* A header that parses but lies about the data is a ``safetensors.bad-header`` finding
  (medium, tampered artifact), one per problem: duplicate keys (two parsers may disagree on
  which one wins), an entry that is not an object, unknown dtype, a shape that is not a list
  of non-negative ints, offsets outside the data area or reversed, a byte length that does
  not match ``prod(shape) * dtype size``, overlapping tensors, bytes no tensor covers (gaps
  or a tail: room for a hidden payload), and ``__metadata__`` that is not ``str -> str``.
"""

from __future__ import annotations

import json
import math
import struct
from typing import Any, BinaryIO

from mlthreat.scan.findings import TECHNIQUES, Finding, FormatError, Limits
from mlthreat.scan.policy import Policy

__all__ = ["DTYPE_BITS", "analyze"]

FORMAT = "safetensors"
RULE = "safetensors.bad-header"

# Element sizes in bits (safetensors' Dtype enum; F4/F6 pack below a byte).
DTYPE_BITS: dict[str, int] = {
    "BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8,
    "I16": 16, "U16": 16, "F16": 16, "BF16": 16,
    "I32": 32, "U32": 32, "F32": 32, "C64": 64,
    "I64": 64, "U64": 64, "F64": 64,
    "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
}

# Report at most this many problems of one file: a hostile header can hold millions.
_MAX_FINDINGS = 100


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def analyze(fh: BinaryIO, *, path: str, size: int, limits: Limits,
            policy: Policy) -> list[Finding]:
    """Check a safetensors header against its data area (format from the safetensors README).

    Returns one ``safetensors.bad-header`` finding (medium, ``TECHNIQUES["tampered"]``) per
    inconsistency; none for a well-formed file.

    Raises
    ------
    FormatError
        Fewer than 8 bytes, header length above ``limits.max_header_bytes`` or the file, a
        header that is not a UTF-8 JSON object.
    """
    del policy  # safetensors names no code
    head = fh.read(8)
    if len(head) != 8:
        raise FormatError("truncated safetensors file (no 8-byte header length)", "offset 0")
    (n,) = struct.unpack("<Q", head)
    if n > limits.max_header_bytes:
        raise FormatError(f"header length {n} exceeds the limit of {limits.max_header_bytes}",
                          "offset 0")
    if n > size - 8:
        raise FormatError(f"header length {n} runs past the end of the file ({size} bytes)",
                          "offset 0")
    raw = fh.read(n)
    if len(raw) != n:
        raise FormatError("truncated safetensors header", "offset 8")
    dupes: list[str] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in items:
            if k in out:
                dupes.append(k)
            out[k] = v
        return out

    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=pairs)
    except (UnicodeDecodeError, ValueError) as exc:
        raise FormatError(f"header is not UTF-8 JSON: {exc}", "offset 8") from None
    if not isinstance(header, dict):
        raise FormatError("header is not a JSON object", "offset 8")

    problems: list[tuple[str, str, dict[str, Any]]] = []  # (location, message, details)

    def bad(where: str, message: str, **details: Any) -> None:
        problems.append((where, message, details))

    if raw[:1] != b"{":
        bad("header", "header does not start with '{' (the format forbids leading bytes)")
    if dupes:
        bad("header", f"duplicate keys {sorted(set(dupes))[:5]}: parsers may disagree on "
            "which entry wins", keys=sorted(set(dupes)))
    data_size = size - 8 - n
    spans: list[tuple[int, int, str]] = []
    offsets_ok = True  # coverage is only meaningful when every tensor's span is valid
    for name, entry in header.items():
        where = f"tensor '{name}'"
        if name == "__metadata__":
            if not isinstance(entry, dict) or not all(
                    isinstance(v, str) for v in entry.values()):
                bad("__metadata__", "__metadata__ is not a mapping of strings to strings")
            continue
        if not isinstance(entry, dict):
            bad(where, "entry is not an object")
            continue
        extra = set(entry) - {"dtype", "shape", "data_offsets"}
        if extra:
            bad(where, f"unexpected fields {sorted(extra)}", fields=sorted(extra))
        dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
        bits = DTYPE_BITS.get(dtype) if isinstance(dtype, str) else None
        if bits is None:
            bad(where, f"unknown dtype {dtype!r}")
        shape_ok = isinstance(shape, list) and all(_is_int(d) and d >= 0 for d in shape)
        if not shape_ok:
            bad(where, f"shape {shape!r} is not a list of non-negative integers")
        if not (isinstance(offsets, list) and len(offsets) == 2
                and all(_is_int(o) for o in offsets)):
            bad(where, f"data_offsets {offsets!r} is not [begin, end]")
            offsets_ok = False
            continue
        begin, end = offsets
        if not 0 <= begin <= end <= data_size:
            bad(where, f"data_offsets [{begin}, {end}] are reversed or outside the data area "
                f"(0..{data_size})", begin=begin, end=end, data_size=data_size)
            offsets_ok = False
            continue
        spans.append((begin, end, name))
        if bits is not None and isinstance(shape, list) and shape_ok:
            total_bits = math.prod(shape) * bits
            if total_bits % 8 or total_bits // 8 != end - begin:
                bad(where, f"holds {end - begin} bytes but {dtype}{shape} needs "
                    f"{total_bits / 8:g}", expected_bits=total_bits, actual=end - begin)
    spans.sort()
    covered = 0
    for begin, end, name in spans:
        if begin < covered:
            bad(f"tensor '{name}'", f"data [{begin}, {end}] overlaps another tensor's bytes "
                f"(ending at {covered})", begin=begin, end=end)
        elif begin > covered:
            bad(f"tensor '{name}'", f"{begin - covered} bytes before it belong to no tensor "
                f"(gap at data offset {covered})", gap_begin=covered, gap_end=begin)
        covered = max(covered, end)
    if covered < data_size and offsets_ok:
        bad("data area", f"{data_size - covered} trailing bytes belong to no tensor",
            gap_begin=covered, gap_end=data_size)

    return [Finding(path=path, format=FORMAT, severity="medium", rule=RULE,
                    message=message, technique=TECHNIQUES["tampered"], location=where,
                    details=details)
            for where, message, details in problems[:_MAX_FINDINGS]]
