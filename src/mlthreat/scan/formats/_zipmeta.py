"""Reading one small metadata member (``config.json``, ``schema.json``) of a model zip, bounded
by ``Limits.max_header_bytes`` whatever the zip declares."""

from __future__ import annotations

import zipfile
from typing import BinaryIO

from mlthreat.scan.findings import FormatError, Limits

__all__ = ["read_member"]


def read_member(fh: BinaryIO, name: str, limits: Limits, archive: str) -> bytes:
    """The bytes of member ``name`` of the zip behind ``fh`` (``archive`` names the kind of
    archive in messages).

    Raises
    ------
    FormatError
        Not a zip, no such member, or a member larger than the header limit (by its declared
        size, or by what it really unpacks to: the declared size may lie).
    """
    try:
        zf = zipfile.ZipFile(fh)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise FormatError(f"not a readable zip: {exc}", "offset 0") from None
    where = f"entry {name}"
    with zf:
        try:
            info = zf.getinfo(name)
        except KeyError:
            raise FormatError(f"no {name} in the {archive} archive", where) from None
        if info.file_size > limits.max_header_bytes:
            raise FormatError(f"{name} of {info.file_size} bytes exceeds the header limit",
                              where)
        try:
            with zf.open(info) as member:
                data = member.read(limits.max_header_bytes + 1)
        except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError) as exc:
            raise FormatError(f"{name} cannot be read: {exc}", where) from None
    if len(data) > limits.max_header_bytes:
        raise FormatError(f"{name} exceeds the header limit", where)
    return data
