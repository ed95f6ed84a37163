"""NumPy ``.npy`` / ``.npz`` analyser.

An ``.npy`` file (numpy/lib/format.py, NEP 1) is ``\\x93NUMPY``, a version, a header length,
and a Python-literal header dict ``{'descr', 'fortran_order', 'shape'}``; then raw data, or,
when the dtype holds Python objects, a pickle stream (which ``np.load(allow_pickle=True)``
unpickles). The header is parsed with :func:`ast.literal_eval` only; a pickle is analysed with
the pickle analyser, never loaded. An ``.npz`` file is a zip of ``.npy`` members.
"""

from __future__ import annotations

import ast
import struct
import zipfile
from typing import IO, Any

import numpy as np

from mlthreat.scan.findings import Finding, FormatError, Limits
from mlthreat.scan.formats.pickle import ByteSource, analyze_stream
from mlthreat.scan.formats.torch import open_member
from mlthreat.scan.policy import Policy

__all__ = ["analyze_npy", "analyze_npz"]

_MAGIC = b"\x93NUMPY"


def _read_exact(fh: ByteSource, n: int, what: str) -> bytes:
    data = fh.read(n)
    if len(data) != n:
        raise FormatError(f"truncated .npy: {what} ends early", "")
    return data


def _header(fh: ByteSource, limits: Limits) -> tuple[dict[str, Any], int]:
    """(header dict, offset of the data) of the ``.npy`` at the start of ``fh``."""
    head = _read_exact(fh, 8, "magic")
    if head[:6] != _MAGIC:
        raise FormatError("not a .npy file (no \\x93NUMPY magic)", "offset 0")
    major = head[6]
    if major == 1:
        hlen = int.from_bytes(_read_exact(fh, 2, "header length"), "little")
        start = 10
    elif major in (2, 3):
        hlen = int.from_bytes(_read_exact(fh, 4, "header length"), "little")
        start = 12
    else:
        raise FormatError(f"unknown .npy format version {major}.{head[7]}", "offset 6")
    if hlen > limits.max_header_bytes:
        raise FormatError(f".npy header of {hlen} bytes exceeds the limit", f"offset {start}")
    raw = _read_exact(fh, hlen, "header")
    try:
        text = raw.decode("utf-8" if major == 3 else "latin-1")
        header = ast.literal_eval(text)
    except (UnicodeDecodeError, ValueError, TypeError, SyntaxError, MemoryError,
            RecursionError):
        raise FormatError(".npy header is not a Python literal", f"offset {start}") from None
    if not isinstance(header, dict) or not {"descr", "fortran_order", "shape"} <= set(header):
        raise FormatError(".npy header lacks descr/fortran_order/shape", f"offset {start}")
    shape = header["shape"]
    if not isinstance(shape, tuple) or not all(type(x) is int and x >= 0 for x in shape):
        raise FormatError(f".npy header has a bad shape {shape!r}", f"offset {start}")
    return header, start + hlen


def _dtype(descr: Any) -> np.dtype[Any]:
    try:
        # numpy's own parser of the header's descr: builds a dtype from strings and tuples,
        # imports and unpickles nothing.
        return np.lib.format.descr_to_dtype(descr)
    except (TypeError, ValueError, KeyError, IndexError, AttributeError, SyntaxError):
        raise FormatError(f".npy header has a bad descr {descr!r}", "offset 10") from None


def analyze_npy(fh: ByteSource, *, path: str, size: int, limits: Limits,
                policy: Policy, fmt: str = "numpy") -> list[Finding]:
    """Findings for one ``.npy`` file.

    Parameters
    ----------
    fh : binary file object
        Seekable (forward seeking suffices), at offset 0.
    path : str
        Reported in findings.
    size : int
        Bytes in the file.
    limits, policy
        As for :func:`mlthreat.scan.formats.pickle.analyze`.

    Returns
    -------
    list of Finding
        Numeric dtypes: none. Dtypes holding objects (``|O`` or a structured dtype with an
        object field): the pickle analyser's findings on the data after the header
        (offsets in the file).

    Raises
    ------
    FormatError
        Bad magic or header; a numeric array whose file size is not header +
        ``prod(shape) * itemsize`` bytes (smaller: "truncated"); an unparsable pickle.
    """
    header, data_start = _header(fh, limits)
    dtype = _dtype(header["descr"])
    if dtype.hasobject:
        return analyze_stream(fh, path=path, size=size, limits=limits, policy=policy,
                              start=data_start, base=0, fmt=fmt)
    count = 1
    for x in header["shape"]:
        count *= x
    expected = data_start + count * dtype.itemsize
    if size < expected:
        raise FormatError(f"truncated .npy: {size} bytes, header + data need {expected}",
                          f"offset {size}")
    if size > expected:
        raise FormatError(f".npy size mismatch: {size - expected} bytes after the array data",
                          f"offset {expected}")
    return []


def analyze_npz(fh: IO[bytes], *, path: str, size: int, limits: Limits,
                policy: Policy) -> list[Finding]:
    """Findings for every ``.npy`` member of an ``.npz`` zip (``np.savez`` and
    ``np.savez_compressed``), paths ``archive!member``.

    Members are streamed (64 KiB chunks, inflated on the fly); members that do not start
    with the ``.npy`` magic are returned by ``np.load`` as raw bytes, never unpickled, and
    are skipped.

    Raises
    ------
    FormatError
        Not a zip, more than ``limits.max_members`` members, a zip bomb, or a member that
        fails :func:`analyze_npy` (the message names the member).
    """
    try:
        zf = zipfile.ZipFile(fh)
    except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError, EOFError,
            RuntimeError, struct.error) as exc:
        raise FormatError(f"not a readable zip: {exc}") from None
    findings: list[Finding] = []
    with zf:
        infos = zf.infolist()
        if len(infos) > limits.max_members:
            raise FormatError(f"more than {limits.max_members} zip members")
        unpacked = 0
        for info in infos:
            if info.is_dir():
                continue
            reader = open_member(fh, info, limits)
            if reader.read(len(_MAGIC)) != _MAGIC:
                continue
            unpacked += info.file_size
            if unpacked > limits.max_unpacked_bytes:
                raise FormatError(f"more than {limits.max_unpacked_bytes} bytes to unpack",
                                  f"entry {info.filename}")
            reader.seek(0)
            try:
                findings.extend(analyze_npy(reader, path=f"{path}!{info.filename}",
                                            size=info.file_size, limits=limits, policy=policy))
            except FormatError as exc:
                raise exc.within(info.filename, findings) from None
    return findings
