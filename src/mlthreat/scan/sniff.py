"""Recognise a model file's format from its bytes and structure, never from its name.

A file named ``weights.safetensors`` that holds a pickle is a pickle; a ``.bin`` that is a zip
with ``data.pkl`` is a PyTorch zip. Only a bounded head of the file is read (at most
:data:`HEAD_BYTES` plus a few small seeks for ONNX and SavedModel protobufs, and the central
directory of a zip), so sniffing a multi-gigabyte file is cheap.

One exception, for text, which has no magic bytes: a file that no binary format claims and
that is UTF-8 text of at most 16 MiB is read whole, and is a ``template-config`` when it is a
JSON or YAML object with a ``chat_template`` key, or a ``jinja`` chat template when its *name*
ends in ``.jinja`` or ``.j2`` (see :mod:`mlthreat.scan.formats.templates`). A name can only
add a text file to the scan, never change the format of binary content.

Formats returned are the keys of :data:`mlthreat.scan.formats.ANALYZERS` plus the container
and compression names the walker opens: ``zip``, ``tar``, ``gzip``, ``bz2``, ``xz``, ``lzma``,
``zlib``. ``None`` means "not a model file" (text, JSON, images …).
"""

from __future__ import annotations

import bz2
import lzma
import pickletools
import re
import struct
import zipfile
import zlib
from typing import IO, Any

from mlthreat.scan.formats.templates import sniff_template

__all__ = ["COMPRESSIONS", "CONTAINERS", "HEAD_BYTES", "is_pickle_head", "sniff",
           "sniff_zip_names"]

HEAD_BYTES = 4096

# Single-stream compressed files (one member: the decompressed bytes).
COMPRESSIONS: frozenset[str] = frozenset({"gzip", "bz2", "xz", "lzma", "zlib"})
# Formats the walker opens as containers of further files.
CONTAINERS: frozenset[str] = frozenset({"zip", "tar", "7z"}) | COMPRESSIONS

_OPCODES: dict[int, pickletools.OpcodeInfo] = {ord(op.code): op for op in pickletools.opcodes}
# Opcodes a protocol 0/1 pickle can plausibly start with (a value, a container, a mark or an
# import). A text file's first character is rarely one of these *and* followed by opcodes.
_DOTTED = re.compile(r"[A-Za-z_][\w.]*\Z")
# Complete opcodes a head without PROTO needs before it is called a pickle.
_P01_MIN_OPCODES = 2
# ModelProto (onnx.proto3) field numbers and their protobuf wire types.
_ONNX_FIELDS = {1: 0, 2: 2, 3: 2, 4: 2, 5: 0, 6: 2, 7: 2, 8: 2, 14: 2, 20: 2, 25: 2, 26: 2}
_ONNX_STRONG = frozenset({2, 7, 8})
_ONNX_MAX_FIELDS = 16
_ONNX_MAX_IR = 64
# SavedModel (tensorflow/core/protobuf/saved_model.proto): schema version 1 (varint) and
# meta_graphs 2; a MetaGraphDef (meta_graph.proto) has fields 1-7, all messages or maps.
_SAVED_MODEL_MAX_FIELDS = 64
_SAVED_MODEL_MAX_VERSION = 16
_META_GRAPH_TAGS = frozenset((n << 3) | 2 for n in range(1, 8))
# keras_metadata.pb (keras/protobuf/saved_metadata.proto): SavedMetadata.nodes 1, each a
# SavedObject of node_id 2 (varint), node_path 3, identifier 4, metadata 5, version 6.
_KERAS_OBJECT_FIELDS = {2: 0, 3: 2, 4: 2, 5: 2, 6: 2}
# 7z signature header (7-Zip 7zFormat.txt, "SignatureHeader"): 6 bytes, then the version.
_7Z_MAGIC = b"7z\xbc\xaf\x27\x1c"
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
# HDF5 allows a user block before the superblock: 0, 512, 1024, 2048 … (HDF5 spec, 3.1).
_HDF5_OFFSETS = (0, 512, 1024, 2048)
# safetensors' reference implementation refuses headers above 100 MB.
_SAFETENSORS_MAX_HEADER = 100_000_000


def sniff(fh: IO[bytes], name: str = "") -> str | None:
    """The format of the file behind ``fh``, decided by its bytes.

    Parameters
    ----------
    fh : binary file object
        Seekable; read from offset 0. Left at an unspecified offset.
    name : str
        The file's name (an archive member's ``archive!member``). Used only for UTF-8 text
        that no binary format claimed, to call a ``.jinja``/``.j2`` file a chat template.

    Returns
    -------
    str or None
        ``pickle``, ``numpy``, ``npz``, ``pytorch-zip``, ``keras-zip``, ``skops``,
        ``keras-h5``, ``savedmodel``, ``keras-metadata``, ``onnx``, ``safetensors``,
        ``gguf``, ``template-config``, ``jinja``, ``zip``, ``tar``, ``gzip``, ``bz2``,
        ``xz``, ``lzma``, ``zlib``; ``None`` for anything else (including an empty file).

    Raises
    ------
    OSError
        When the file cannot be read.
    """
    fh.seek(0)
    head = fh.read(HEAD_BYTES)
    if not head:
        return None
    size = fh.seek(0, 2)
    whole = len(head) == size
    if head.startswith(b"\x93NUMPY"):
        return "numpy"
    if head.startswith(b"GGUF"):
        return "gguf"
    if any(head[o:o + 8] == _HDF5_MAGIC for o in _HDF5_OFFSETS):
        return "keras-h5"
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return sniff_zip(fh)
    if head.startswith(_7Z_MAGIC):
        return "7z"
    compression = _compression(head)
    if compression:
        return compression
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "tar"
    if _is_safetensors(head, size):
        return "safetensors"
    if is_pickle_head(head, whole):
        return "pickle"
    # before ONNX: a SavedModel's first bytes (field 1 = 1, then field 2) also fit a
    # ModelProto's (ir_version, producer_name)
    if _is_saved_model(fh, head, size):
        return "savedmodel"
    if _is_onnx(fh, head, size):
        return "onnx"
    if _is_keras_metadata(head):
        return "keras-metadata"
    return sniff_template(fh, head, size, name)


def sniff_zip(fh: IO[bytes]) -> str:
    """``pytorch-zip``, ``npz``, ``keras-zip``, ``skops`` or ``zip`` from a zip's member
    names (the central directory only; no member is read). A zip whose directory cannot be
    read is ``zip``: the walker reports it as unparseable."""
    try:
        fh.seek(0)
        with zipfile.ZipFile(fh) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError, EOFError,
            RuntimeError, struct.error):
        return "zip"
    return sniff_zip_names(names)


def sniff_zip_names(names: list[str]) -> str:
    """The zip flavour a list of member names says (see :func:`sniff_zip`)."""
    files = [n for n in names if not n.endswith("/")]
    # torch.save writes <archive name>/data.pkl; older writers put data.pkl at the top.
    if any(n == "data.pkl" or (n.endswith("/data.pkl") and n.count("/") == 1) for n in files):
        return "pytorch-zip"
    if files and all(n.endswith(".npy") for n in files):
        return "npz"
    top = set(files)
    if "config.json" in top and ("model.weights.h5" in top or "metadata.json" in top):
        return "keras-zip"
    if "schema.json" in top:
        return "skops"
    return "zip"


def _compression(head: bytes) -> str | None:
    """A compression format, confirmed by inflating the head (bounded output) so that a text
    file starting with ``x^`` is not taken for zlib."""
    if head.startswith(b"\x1f\x8b"):
        make: Any
        kind, make = "gzip", lambda: zlib.decompressobj(16 + zlib.MAX_WBITS)
    elif head.startswith(b"\xfd7zXZ\x00"):
        kind, make = "xz", lambda: lzma.LZMADecompressor(lzma.FORMAT_XZ)
    elif head.startswith(b"BZh") and head[3:4].isdigit() and head[4:10] == b"1AY&SY":
        kind, make = "bz2", bz2.BZ2Decompressor
    elif head.startswith(b"]\x00\x00"):
        # lzma "alone" format (joblib's lzma compressor): properties 0x5d, dict size LE.
        kind, make = "lzma", lambda: lzma.LZMADecompressor(lzma.FORMAT_ALONE)
    elif len(head) >= 2 and head[0] & 0x0F == 8 and head[0] >> 4 <= 7 \
            and ((head[0] << 8) | head[1]) % 31 == 0:
        # RFC 1950 header (joblib's zlib compressor writes plain zlib streams).
        kind, make = "zlib", zlib.decompressobj
    else:
        return None
    try:
        make().decompress(head, 256)
    except (zlib.error, lzma.LZMAError, OSError, EOFError, ValueError):
        return None
    return kind


def _is_safetensors(head: bytes, size: int) -> bool:
    """u64 little-endian header length, then a JSON object starting at byte 8."""
    if len(head) < 10 or head[8:9] != b"{":
        return False
    (n,) = struct.unpack("<Q", head[:8])
    if not 2 <= n <= _SAFETENSORS_MAX_HEADER:
        return False
    # a JSON object's next byte: a key, the closing brace, or whitespace
    return head[9:10] in (b'"', b"}", b" ", b"\n", b"\r", b"\t")


def is_pickle_head(head: bytes, whole: bool) -> bool:
    """Whether the head parses as pickle opcodes (argument readers from :mod:`pickletools`).

    The unpickler runs any opcode whatever PROTO declared (or whether it declared one), so
    neither the first byte nor the protocol number decides: PROTO with a protocol 0-5 and a
    known opcode after it is a pickle; without PROTO, at least :data:`_P01_MIN_OPCODES`
    opcodes must parse and the head must show a pickle's shape (an import, a call, or STOP)
    or run on for :data:`_LONG_RUN` opcodes, so that text files are not taken for pickles.
    Running out of bytes in the head window is fine; an unknown opcode is not."""
    if head[0] == 0x80:
        if len(head) < 2 or head[1] > 5:
            return False
        return len(head) == 2 or head[2] in _OPCODES
    return _parses(head, whole, need=_P01_MIN_OPCODES)


# opcodes that import (or end the pickle): what makes a byte string a pickle rather than text.
# A call (REDUCE, OBJ, BUILD, NEWOBJ) needs something imported before it, so calls alone are
# no shape: the five bytes "hello" parse as BINGET, LIST, LIST, OBJ.
_SHAPE = frozenset({"GLOBAL", "STACK_GLOBAL", "INST", "EXT1", "EXT2", "EXT4", "STOP"})
_LONG_RUN = 8


def _parses(head: bytes, whole: bool, need: int) -> bool:
    import io

    stream = io.BytesIO(head)
    complete, shaped = 0, False
    while True:
        code = stream.read(1)
        if not code:
            return complete >= need and (shaped or complete >= _LONG_RUN)
        op = _OPCODES.get(code[0])
        if op is None:
            return False
        arg = None
        if op.arg is not None:
            try:
                arg = op.arg.reader(stream)
            except (ValueError, UnicodeDecodeError):
                # out of bytes in the head window (or a truncated file): judge what parsed
                return complete >= need and (shaped or complete >= _LONG_RUN) and (
                    stream.tell() >= len(head) - 1 or whole)
        if op.name in ("GLOBAL", "INST") and isinstance(arg, str):
            parts = arg.split(" ")
            if len(parts) != 2 or not all(_DOTTED.match(p) for p in parts):
                return False
        complete += 1
        shaped = shaped or op.name in _SHAPE
        if op.name == "STOP":
            return complete >= need


def _varint(head: bytes, pos: int) -> tuple[int, int] | None:
    value = shift = 0
    for i in range(pos, min(pos + 10, len(head))):
        value |= (head[i] & 0x7F) << shift
        if not head[i] & 0x80:
            return value, i + 1
        shift += 7
    return None


def _is_onnx(fh: IO[bytes], head: bytes, size: int) -> bool:
    """ModelProto: field 1 (ir_version, varint, small) first, then a bounded walk of the
    top-level fields (seeking over length-delimited ones) must find only ModelProto field
    numbers with the right wire types, and at least one of producer_name, graph or
    opset_import."""
    if head[:1] != b"\x08":
        return False
    first = _varint(head, 1)
    if first is None or not 1 <= first[0] <= _ONNX_MAX_IR:
        return False
    pos, strong, fields = first[1], False, 1
    buf, buf_at = head, 0
    while pos < size and fields < _ONNX_MAX_FIELDS:
        if pos + 20 > buf_at + len(buf):
            fh.seek(pos)
            buf, buf_at = fh.read(32), pos
        rel = pos - buf_at
        tag = _varint(buf, rel)
        if tag is None:
            return False
        number, wire = tag[0] >> 3, tag[0] & 7
        if _ONNX_FIELDS.get(number) != wire:
            return False
        value = _varint(buf, tag[1])
        if value is None:
            return False
        pos = buf_at + value[1]
        if wire == 2:
            pos += value[0]
            if pos > size:
                return False
        strong |= number in _ONNX_STRONG
        fields += 1
        if strong and fields >= 2:
            return True
    return strong


def _top_fields(fh: IO[bytes], head: bytes, size: int,
                limit: int) -> tuple[list[tuple[int, int, int, int]], bool] | None:
    """``(field, wire type, value or length, payload offset)`` of the top-level protobuf
    fields, seeking over payloads, and whether the last one runs past the end of the file
    (the walk stops there); None when the walk breaks (a bad varint, a wire type other than
    varint or length-delimited) or finds more than ``limit`` fields."""
    out: list[tuple[int, int, int, int]] = []
    pos, buf, buf_at = 0, head, 0
    while pos < size:
        if len(out) >= limit:
            return None
        if pos + 20 > buf_at + len(buf):
            fh.seek(pos)
            buf, buf_at = fh.read(32), pos
        tag = _varint(buf, pos - buf_at)
        if tag is None:
            return None
        number, wire = tag[0] >> 3, tag[0] & 7
        if number == 0 or wire not in (0, 2):
            return None
        value = _varint(buf, tag[1])
        if value is None:
            return None
        pos = buf_at + value[1]
        out.append((number, wire, value[0], pos))
        if wire == 2:
            pos += value[0]
            if pos > size:
                return out, True
    return out, False


def _is_saved_model(fh: IO[bytes], head: bytes, size: int) -> bool:
    """SavedModel: top-level fields are only a small schema version (1, varint) and
    meta_graphs (2, length-delimited), at least one of them, and the first meta graph starts
    with a MetaGraphDef field whose length fits inside it.

    A file cut short is still a SavedModel (for the analyser to report as unparseable, rather
    than a skipped file) when it opens as TensorFlow writes one: schema version 1, then a meta
    graph."""
    if head[:1] not in (b"\x08", b"\x12"):
        return False
    walked = _top_fields(fh, head, size, _SAVED_MODEL_MAX_FIELDS)
    if not walked or not walked[0]:
        return False
    fields, truncated = walked
    if truncated and not head.startswith(b"\x08\x01\x12"):
        return False
    graphs = [f for f in fields if f[0] == 2 and f[1] == 2]
    if not graphs or any((n, w) not in ((1, 0), (2, 2)) for n, w, _v, _p in fields):
        return False
    if any(n == 1 and v > _SAVED_MODEL_MAX_VERSION for n, _w, v, _p in fields):
        return False
    _n, _w, length, at = graphs[0]
    fh.seek(at)
    inner = fh.read(min(length, 16))
    if not inner or inner[0] not in _META_GRAPH_TAGS:
        return False
    first = _varint(inner, 1)
    return first is not None and first[1] + first[0] <= length


def _is_keras_metadata(head: bytes) -> bool:
    """SavedMetadata: the head opens a ``nodes`` entry (field 1) whose SavedObject fields
    have the declared wire types up to an identifier that starts with ``_tf_keras_``."""
    if head[:1] != b"\x0a":
        return False
    entry = _varint(head, 1)
    if entry is None:
        return False
    pos, end = entry[1], entry[1] + entry[0]
    while pos < min(end, len(head)):
        tag = _varint(head, pos)
        if tag is None:
            return False
        number, wire = tag[0] >> 3, tag[0] & 7
        if _KERAS_OBJECT_FIELDS.get(number) != wire:
            return False
        value = _varint(head, tag[1])
        if value is None:
            return False
        if number == 4:
            start = value[1]
            return value[0] >= 10 and head[start:start + 10] == b"_tf_keras_"
        pos = value[1] + (value[0] if wire == 2 else 0)
    return False
