"""The pickle reader's stack machine: one small handler per opcode, found in a dispatch table.

Mirrors CPython ``Lib/pickle.py`` ``_Unpickler.dispatch``: each handler is named after the
``load_*`` method it stands for and is registered under the opcode names it serves, so the two
can be read side by side. ``pop``, ``top`` and ``pop_mark`` are the only places that check for
stack underflow or a missing MARK.

What differs from the reference, and why:

- Arguments are decoded before dispatch, from :mod:`pickletools`' table of argument layouts,
  and passed to the handler (``Lib/pickle.py`` reads them inside each ``load_*``).
- Nothing is imported or called. ``find_class``, ``persistent_load`` and ``get_extension`` are
  hooks that return simulated values (:class:`Global`, :data:`OPAQUE`); a call (``REDUCE``,
  ``NEWOBJ``, ``INST``, ``OBJ``) pushes an :class:`Obj` recording what would be called with what.
- Containers keep at most :data:`MAX_ITEMS` items, and sets, frozensets and buffers are not
  modelled: what the reader needs is names, not data.
- ``STOP`` raises :class:`Stop` with the result, as ``_Unpickler`` raises ``_Stop``.
"""

from __future__ import annotations

import pickletools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mlthreat.scan.findings import FormatError

__all__ = ["DISPATCH", "MAX_ITEMS", "OPAQUE", "Blob", "Global", "Machine", "Obj", "Stop",
           "describe", "location"]

# Containers keep at most this many simulated items (memory bound on hostile streams).
MAX_ITEMS = 4096


@dataclass(eq=False)
class Global:
    """What ``find_class`` would have returned: the name, never the object."""

    module: str
    name: str


@dataclass(eq=False)
class Obj:
    """Result of calling something (REDUCE, NEWOBJ, INST, OBJ); ``state`` set by BUILD."""

    func: Any
    args: Any
    state: Any = None


@dataclass(eq=False)
class Blob:
    """An argument that was skipped, not read (bytes, or a string too long to be a name)."""

    kind: str
    size: int


class _Opaque:
    """A value the simulation does not model (persistent IDs, buffers, sets)."""


OPAQUE = _Opaque()


class Stop(Exception):
    """Raised by ``load_stop`` with the value the pickle returns (``_Unpickler``'s ``_Stop``)."""

    def __init__(self, value: Any) -> None:
        super().__init__()
        self.value = value


def location(offset: int, opname: str) -> str:
    """How findings and errors name an opcode: ``offset N (OPCODE)``."""
    return f"offset {offset} ({opname})"


def describe(value: Any) -> str:
    """A simulated value as a short text (for a global whose name is not a string)."""
    if isinstance(value, str):
        return value
    if isinstance(value, Blob):
        return f"<{value.kind} of {value.size} bytes>"
    if isinstance(value, Global):
        return f"<{value.module}.{value.name}>"
    return f"<{type(value).__name__.lstrip('_').lower()}>"


def _set_pairs(d: dict[Any, Any], items: list[Any]) -> None:
    for i in range(0, len(items) - 1, 2):
        if len(d) >= MAX_ITEMS:
            return
        try:
            d[items[i]] = items[i + 1]
        except TypeError:  # unhashable simulated key: the value is not needed
            continue


_CONSTANTS: dict[str, Any] = {"NONE": None, "NEWFALSE": False, "NEWTRUE": True,
                              "EMPTY_TUPLE": (), "EMPTY_SET": OPAQUE, "NEXT_BUFFER": OPAQUE}

Handler = Callable[["Machine", Any], None]
_BY_NAME: dict[str, Handler] = {}


def _loads(*names: str) -> Callable[[Handler], Handler]:
    """Register a handler for the opcodes ``names`` (``dispatch[OPCODE[0]] = load_x``)."""
    def register(fn: Handler) -> Handler:
        for name in names:
            _BY_NAME[name] = fn
        return fn
    return register


class Machine:
    """The stack, the mark stack (``metastack``) and the memo of one pickle stream.

    ``offset`` (in the byte source) and ``opname`` are those of the opcode being run;
    errors name it by its offset from ``base``, the start of the data findings describe.
    """

    def __init__(self, base: int = 0) -> None:
        self.stack: list[Any] = []
        self.metastack: list[list[Any]] = []
        self.memo: dict[int, Any] = {}
        self.proto = 0
        self.base = base
        self.offset = base
        self.opname = ""

    # ---- hooks (overridden by the reader) ----------------------------------------------
    def find_class(self, module: str, name: str) -> Any:
        return Global(module, name)

    def unresolved(self, what: str) -> None:
        """A global whose name cannot be known statically (``what`` describes it)."""

    def persistent_load(self, pid: Any) -> Any:
        return OPAQUE

    def built(self, inst: Obj) -> Any:
        """What replaces ``inst`` on the stack once BUILD has set its state."""
        return inst

    def frame(self, size: int) -> None:
        """A FRAME of ``size`` bytes starts after its argument (PEP 3154)."""

    # ---- the stack, with the underflow checks written once ------------------------------
    def error(self, message: str) -> FormatError:
        return FormatError(message, location(self.offset - self.base, self.opname))

    def pop(self) -> Any:
        if not self.stack:
            raise self.error("stack underflow")
        return self.stack.pop()

    def top(self) -> Any:
        if not self.stack:
            raise self.error("stack underflow")
        return self.stack[-1]

    def pop_mark(self) -> list[Any]:
        """The items above the last MARK; the stack below it becomes the stack again."""
        if not self.metastack:
            raise self.error("no MARK on the stack")
        items = self.stack
        self.stack = self.metastack.pop()
        return items

    def push(self, value: Any) -> None:
        self.stack.append(value)

    def call(self) -> None:
        """Pop the arguments, then what they are passed to; push the simulated result."""
        args = self.pop()
        self.push(Obj(self.pop(), args))

    # ---- handlers, in the order of Lib/pickle.py's _Unpickler ---------------------------
    @_loads("PROTO")
    def load_proto(self, proto: int) -> None:
        self.proto = proto

    @_loads("FRAME")
    def load_frame(self, size: int) -> None:
        self.frame(size)

    @_loads("PERSID")
    def load_persid(self, pid: str) -> None:
        self.push(self.persistent_load(pid))

    @_loads("BINPERSID")
    def load_binpersid(self, _: None) -> None:
        self.push(self.persistent_load(self.pop()))

    # load_none, load_false, load_true, load_empty_tuple, load_empty_set, load_next_buffer:
    # an immutable value (OPAQUE for what is not modelled) fixed by the opcode.
    @_loads(*_CONSTANTS)
    def load_constant(self, _: None) -> None:
        self.push(_CONSTANTS[self.opname])

    # load_int, load_binint*, load_long*, load_float, load_binfloat, load_string,
    # load_binstring, load_*bytes*, load_*unicode*: the decoded argument is the value.
    @_loads("INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4", "FLOAT",
            "BINFLOAT", "STRING", "BINSTRING", "SHORT_BINSTRING", "BINBYTES", "SHORT_BINBYTES",
            "BINBYTES8", "BYTEARRAY8", "UNICODE", "SHORT_BINUNICODE", "BINUNICODE",
            "BINUNICODE8")
    def load_value(self, value: Any) -> None:
        self.push(value)

    @_loads("READONLY_BUFFER")
    def load_readonly_buffer(self, _: None) -> None:
        pass  # a read-only flag on a buffer that is not modelled changes nothing

    @_loads("TUPLE")
    def load_tuple(self, _: None) -> None:
        self.push(tuple(self.pop_mark()))

    @_loads("TUPLE1")
    def load_tuple1(self, _: None) -> None:
        self.push((self.pop(),))

    @_loads("TUPLE2")
    def load_tuple2(self, _: None) -> None:
        second = self.pop()
        self.push((self.pop(), second))

    @_loads("TUPLE3")
    def load_tuple3(self, _: None) -> None:
        third = self.pop()
        second = self.pop()
        self.push((self.pop(), second, third))

    @_loads("EMPTY_LIST")
    def load_empty_list(self, _: None) -> None:
        self.push([])

    @_loads("EMPTY_DICT")
    def load_empty_dictionary(self, _: None) -> None:
        self.push({})

    @_loads("FROZENSET")
    def load_frozenset(self, _: None) -> None:
        self.pop_mark()
        self.push(OPAQUE)

    @_loads("LIST")
    def load_list(self, _: None) -> None:
        self.push(self.pop_mark()[:MAX_ITEMS])

    @_loads("DICT")
    def load_dict(self, _: None) -> None:
        d: dict[Any, Any] = {}
        _set_pairs(d, self.pop_mark())
        self.push(d)

    @_loads("INST")
    def load_inst(self, name: tuple[str, str]) -> None:
        args = tuple(self.pop_mark())
        self.push(Obj(self.find_class(*name), args))

    @_loads("OBJ")
    def load_obj(self, _: None) -> None:
        items = self.pop_mark()
        if not items:
            raise self.error("OBJ without a class")
        self.push(Obj(items[0], tuple(items[1:])))

    @_loads("NEWOBJ")
    def load_newobj(self, _: None) -> None:
        self.call()

    @_loads("NEWOBJ_EX")
    def load_newobj_ex(self, _: None) -> None:
        self.pop()  # kwargs
        self.call()

    @_loads("GLOBAL")
    def load_global(self, name: tuple[str, str]) -> None:
        self.push(self.find_class(*name))

    @_loads("STACK_GLOBAL")
    def load_stack_global(self, _: None) -> None:
        name = self.pop()
        module = self.pop()
        if isinstance(module, str) and isinstance(name, str):
            self.push(self.find_class(module, name))
        else:
            self.unresolved(f"{describe(module)}.{describe(name)}")
            self.push(OPAQUE)

    @_loads("EXT1", "EXT2", "EXT4")
    def load_ext(self, code: int) -> None:
        # copyreg's extension registry is empty unless the loading program fills it; what
        # the code names depends on that program (get_extension in Lib/pickle.py).
        self.unresolved(f"extension code {code}")
        self.push(OPAQUE)

    @_loads("REDUCE")
    def load_reduce(self, _: None) -> None:
        self.call()

    @_loads("POP")
    def load_pop(self, _: None) -> None:
        if self.stack:
            self.stack.pop()
        else:
            self.pop_mark()

    @_loads("POP_MARK")
    def load_pop_mark(self, _: None) -> None:
        self.pop_mark()

    @_loads("DUP")
    def load_dup(self, _: None) -> None:
        self.push(self.top())

    @_loads("GET", "BINGET", "LONG_BINGET")
    def load_get(self, index: int) -> None:
        index = int(index)  # GET's text argument may read as a bool ("01")
        if index not in self.memo:
            raise self.error(f"memo index {index} was never stored")
        self.push(self.memo[index])

    @_loads("PUT", "BINPUT", "LONG_BINPUT")
    def load_put(self, index: int) -> None:
        index = int(index)
        if index < 0:
            raise self.error("negative memo index")
        self.memo[index] = self.top()

    @_loads("MEMOIZE")
    def load_memoize(self, _: None) -> None:
        # The index is len(memo), not a counter: a stream that mixes BINPUT and MEMOIZE
        # relies on exactly this.
        self.memo[len(self.memo)] = self.top()

    @_loads("APPEND")
    def load_append(self, _: None) -> None:
        value = self.pop()
        target = self.top()
        if isinstance(target, list) and len(target) < MAX_ITEMS:
            target.append(value)

    @_loads("APPENDS")
    def load_appends(self, _: None) -> None:
        items = self.pop_mark()
        target = self.top()
        if isinstance(target, list):
            target.extend(items[:max(0, MAX_ITEMS - len(target))])

    @_loads("SETITEM")
    def load_setitem(self, _: None) -> None:
        value = self.pop()
        key = self.pop()
        target = self.top()
        if isinstance(target, dict):
            _set_pairs(target, [key, value])

    @_loads("SETITEMS")
    def load_setitems(self, _: None) -> None:
        items = self.pop_mark()
        target = self.top()
        if isinstance(target, dict):
            _set_pairs(target, items)

    @_loads("ADDITEMS")
    def load_additems(self, _: None) -> None:
        self.pop_mark()
        self.top()  # the set is not modelled; only its presence is checked

    @_loads("BUILD")
    def load_build(self, _: None) -> None:
        state = self.pop()
        inst = self.top()
        if isinstance(inst, Obj):
            inst.state = state
            self.stack[-1] = self.built(inst)

    @_loads("MARK")
    def load_mark(self, _: None) -> None:
        self.metastack.append(self.stack)
        self.stack = []

    @_loads("STOP")
    def load_stop(self, _: None) -> None:
        raise Stop(self.pop())

    def load_unsupported(self, _: Any) -> None:
        raise self.error(f"unsupported opcode {self.opname}")


# Opcode byte -> (pickletools' description, handler), as Lib/pickle.py keys dispatch by byte.
DISPATCH: dict[int, tuple[pickletools.OpcodeInfo, Handler]] = {
    ord(op.code): (op, _BY_NAME.get(op.name, Machine.load_unsupported))
    for op in pickletools.opcodes}
