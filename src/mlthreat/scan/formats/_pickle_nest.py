"""Which byte or text arguments of a pickle may hold another pickle, and how it is encoded.

A payload can hide a whole second pickle inside a string of the first, to be unpickled later by
code the first one calls (``pickle.loads(b"...")``, ``base64``-decoded by a gadget, or by the
loading program itself). The reader hands every long enough string argument here; only those whose
first bytes can start a pickle (the sniffer's test, :func:`mlthreat.scan.sniff.is_pickle_head`) are
kept, raw or after hex or base64 decoding. Hex and base64 are decoded only when the whole argument
is of that alphabet (base64 may carry MIME line breaks, as ``base64.encodebytes`` writes them), so
plain text and array bytes cost one look at their head.

References: :mod:`pickletools` (opcode table), RFC 4648 (base16, base64 and base64url).
"""

from __future__ import annotations

import base64
import binascii
import re

from mlthreat.scan.sniff import is_pickle_head

__all__ = ["ENCODINGS", "MAX_DEPTH", "MIN_LEN", "decode", "head_bytes", "plausible"]

# Shortest argument worth a look: "cos\nsystem\n(S'x'\ntR." is 20 bytes; shorter strings are
# dictionary keys and names, and trying each would cost more than it could find.
MIN_LEN = 16
# Pickles inside pickles inside pickles: three levels deep is far past any honest file.
MAX_DEPTH = 3
# How much of an argument's head is decoded to decide (raw bytes; hex and base64 need more).
_HEAD = 64
ENCODINGS = ("raw", "hex", "base64")

_HEX = re.compile(rb"[0-9A-Fa-f]+")
# Standard and URL-safe alphabets (RFC 4648 sections 4 and 5), padding only at the end.
_B64 = re.compile(rb"[A-Za-z0-9+/]+={0,2}|[A-Za-z0-9_-]+={0,2}")
_B64_BREAKS = re.compile(rb"\r?\n")


def head_bytes() -> int:
    """How many leading bytes of an argument :func:`plausible` needs to see."""
    return _HEAD * 2


def _pickle_head(head: bytes, whole: bool) -> bool:
    return bool(head) and is_pickle_head(head, whole)


def plausible(head: bytes, whole: bool) -> list[str]:
    """The encodings (of :data:`ENCODINGS`) under which ``head`` can start a pickle.

    ``head`` is the first :func:`head_bytes` bytes of the argument (all of it when ``whole``).
    Cheap by design: a few dozen bytes are decoded, never the argument.
    """
    found = []
    if _pickle_head(head[:_HEAD], whole and len(head) <= _HEAD):
        found.append("raw")
    h = head[:_HEAD * 2]
    h = h[:len(h) - len(h) % 2]
    if h and _HEX.fullmatch(h) and _pickle_head(bytes.fromhex(h.decode("ascii")),
                                                whole and len(h) == len(head)):
        found.append("hex")
    b = _B64_BREAKS.sub(b"", head[:_HEAD * 2])
    # Only whole 4-character groups decode; padding inside the head means the end is near.
    b = b[:len(b) - len(b) % 4]
    if b and _B64.fullmatch(b):
        try:
            decoded = base64.b64decode(b.replace(b"-", b"+").replace(b"_", b"/"),
                                       validate=True)
        except (binascii.Error, ValueError):
            decoded = b""
        if _pickle_head(decoded, whole and len(b) == len(head)):
            found.append("base64")
    return found


def decode(data: bytes, encoding: str) -> bytes | None:
    """``data`` decoded as ``encoding``, or None when it is not entirely of that alphabet."""
    if encoding == "raw":
        return data
    if encoding == "hex":
        if len(data) % 2 or not _HEX.fullmatch(data):
            return None
        return bytes.fromhex(data.decode("ascii"))
    flat = _B64_BREAKS.sub(b"", data.rstrip(b"\r\n"))
    if len(flat) % 4 or not _B64.fullmatch(flat):
        return None
    try:
        return base64.b64decode(flat.replace(b"-", b"+").replace(b"_", b"/"), validate=True)
    except (binascii.Error, ValueError):
        return None
