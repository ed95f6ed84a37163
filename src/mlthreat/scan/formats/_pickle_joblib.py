"""What the pickle reader needs to know of ``joblib.dump`` files: where an array's raw bytes are.

``joblib.dump`` writes each NumPy array as a ``NumpyArrayWrapper`` object whose BUILD is
followed, inside the pickle stream, by the array: raw bytes, or for object dtypes a nested
pickle (joblib/numpy_pickle.py, ``NumpyArrayWrapper.write_array``). These helpers read the
simulated wrapper and dtype to find out which, and how many bytes.
"""

from __future__ import annotations

import re
from typing import Any

from mlthreat.scan.formats._pickle_machine import Global, Obj

__all__ = ["dtype_layout", "is_joblib_wrapper"]

_JOBLIB_WRAPPER = ("joblib.numpy_pickle", "NumpyArrayWrapper")
# numpy's NPY_ITEM_REFCOUNT flag (dtype state tuple, index 7): the dtype holds objects.
_NPY_ITEM_REFCOUNT = 0x01


def _is_global(value: Any, module: str, name: str) -> bool:
    return isinstance(value, Global) and value.module == module and value.name == name


def is_joblib_wrapper(inst: Obj) -> bool:
    if _is_global(inst.func, *_JOBLIB_WRAPPER):
        return True
    # Protocols 0-1 build instances with copyreg._reconstructor(cls, base, state).
    return (_is_global(inst.func, "copyreg", "_reconstructor") and isinstance(inst.args, tuple)
            and bool(inst.args) and _is_global(inst.args[0], *_JOBLIB_WRAPPER))


def dtype_layout(dtype: Any) -> tuple[int | None, bool]:
    """(itemsize in bytes, holds Python objects) of a simulated ``numpy.dtype(...)`` call.

    numpy pickles a dtype as ``numpy.dtype(descr, False, True)`` plus a BUILD state tuple
    ``(version, byteorder, subdescr, names, fields, elsize, alignment, flags[, metadata])``;
    ``elsize`` is -1 for fixed-size types, whose size is the digits of ``descr``.
    """
    if not isinstance(dtype, Obj) or not isinstance(dtype.func, Global):
        return None, False
    if (dtype.func.module, dtype.func.name) not in (("numpy", "dtype"),):
        return None, False
    args = dtype.args
    if not isinstance(args, tuple) or not args or not isinstance(args[0], str):
        return None, False
    descr = args[0]
    state = dtype.state if isinstance(dtype.state, tuple) else ()
    flags = state[7] if len(state) > 7 and type(state[7]) is int else 0
    hasobject = descr.startswith("O") or bool(flags & _NPY_ITEM_REFCOUNT)
    elsize = state[5] if len(state) > 5 and type(state[5]) is int else -1
    if elsize > 0:
        return elsize, hasobject
    m = re.fullmatch(r"[a-zA-Z?](\d*)", descr)
    if m is None:
        return None, hasobject
    if m.group(1):
        return int(m.group(1)), hasobject
    if descr in ("M", "m", "?"):
        return (8 if descr != "?" else 1), hasobject
    return None, hasobject
