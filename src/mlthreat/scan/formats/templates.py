"""Chat templates: Jinja that reaches Python internals (server-side template injection), in
GGUF metadata and in the files of a Hugging Face model folder.

A chat template is Jinja source that a runtime renders to turn messages into a prompt
(transformers' ``apply_chat_template``, llama-cpp-python, vLLM, TGI). Rendered outside Jinja's
sandbox, a template that walks from a Jinja object to Python internals
(``cycler.__init__.__globals__.os.popen``) runs commands the moment a chat is formatted.

Where a template lives, besides GGUF (``formats/gguf.py``), per the transformers chat
templating documentation ("Chat templates", ``docs/source/en/chat_templating*.md``):

* ``tokenizer_config.json``: key ``chat_template``, a string or a list of
  ``{"name": ..., "template": ...}`` objects (named templates such as ``tool_use``, ``rag``);
* ``chat_template.json``: ``{"chat_template": ...}`` (processors of multimodal models);
* ``chat_template.jinja`` and ``additional_chat_templates/<name>.jinja``: the bare template;
* YAML configs of serving and fine-tuning tools with a ``chat_template`` key (or axolotl's
  ``chat_template_jinja``, an inline template).

Every template is checked by :func:`template_problem`: it is parsed (never compiled, never
rendered) by ``jinja2.sandbox.SandboxedEnvironment`` (Jinja, "Sandbox",
https://jinja.palletsprojects.com/en/stable/sandbox/) and its syntax tree searched. Parsing
is enough: the sandbox's protections apply at render time, and the renderers that matter here
do not all use it, so what the template *reaches* is what is reported.

Recognition (called from :func:`mlthreat.scan.sniff.sniff`): a JSON or YAML file is a
``template-config`` when it is at most :data:`MAX_TEMPLATE_FILE` bytes of UTF-8 text holding
an object with a ``chat_template`` key (at any depth of nested objects); a ``.jinja`` or
``.j2`` file is ``jinja`` when it is UTF-8 text of at most that size. Text has no magic
bytes, so the Jinja case is the one place the scan trusts a file name.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import IO, Any, BinaryIO

from mlthreat.scan.findings import TECHNIQUES, Finding, FormatError, Limits
from mlthreat.scan.policy import Policy

__all__ = ["MAX_TEMPLATE_FILE", "SUSPICIOUS_ATTRIBUTES", "SUSPICIOUS_NAMES",
           "TEMPLATE_SUFFIXES", "analyze_config", "analyze_jinja", "sniff_template",
           "template_findings", "template_problem"]

# Template files are small (a tokenizer_config.json with its added tokens is a few MB at
# most); anything bigger is not read as one.
MAX_TEMPLATE_FILE = 16 * 1024 * 1024
TEMPLATE_SUFFIXES = (".jinja", ".j2")
# ``chat_template``; ``chat_template_jinja`` is axolotl's key for a template given inline.
_KEYS = frozenset({"chat_template", "chat_template_jinja"})
# A YAML line opening a key (quoted or not): a cheap test before parsing any text file.
_YAML_KEY = re.compile(rb"""(?m)^[ \t-]*["']?chat_template(?:_jinja)?["']?[ \t]*:""")
# Nested objects searched for the key, and nodes visited (YAML aliases can make a small file a
# huge tree: each node is visited once).
_MAX_DEPTH = 16
_MAX_NODES = 200_000

# Jinja globals and Python names a chat template never needs: the classic SSTI starting points
# (``cycler``/``joiner``/``lipsum``/``self`` lead to ``__globals__``) and what payloads call.
SUSPICIOUS_NAMES = frozenset({
    "cycler", "joiner", "lipsum", "self", "config", "request", "url_for",
    "get_flashed_messages", "os", "subprocess", "sys", "builtins", "eval", "exec",
    "compile", "open", "getattr", "__import__", "importlib",
})
# Attributes and item keys: anything starting with "_" (dunders, private state) plus these.
SUSPICIOUS_ATTRIBUTES = frozenset({
    "mro", "popen", "system", "spawn", "load_module", "func_globals", "f_globals",
    "f_builtins", "f_locals", "gi_frame", "gi_code", "co_code", "subprocess", "os",
    "eval", "exec", "import_module", "getattr",
})
# Fallback for templates Jinja cannot parse (a broken template may still be rendered by a
# more lenient engine, e.g. minja in llama.cpp): plain substrings of the source.
_TOKENS = ("__class__", "__globals__", "__subclasses__", "__builtins__", "__import__",
           "__init__", "__mro__", "__base__", "__dict__", "__getattribute__", ".mro",
           "os.", "popen", "subprocess", "eval(", "exec(", "cycler", "joiner", "lipsum",
           "namespace.__", "self.", "|attr", "request.", "config.")


def _suspicious_attr(attr: str) -> bool:
    return attr.startswith("_") or attr in SUSPICIOUS_ATTRIBUTES


def _walk(node: Any, hits: list[str]) -> None:
    """Post-order over a Jinja AST (inner expressions first, so hits read in the order a
    payload chains them: ``cycler`` before ``__init__`` before ``__globals__``)."""
    from jinja2 import nodes

    for child in node.iter_child_nodes():
        _walk(child, hits)
    if isinstance(node, nodes.Name) and (node.name in SUSPICIOUS_NAMES
                                         or node.name.startswith("_")):
        hits.append(node.name)
    elif isinstance(node, nodes.Getattr) and _suspicious_attr(node.attr):
        hits.append(node.attr)
    elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const) \
            and isinstance(node.arg.value, str) and _suspicious_attr(node.arg.value):
        hits.append(node.arg.value)
    elif isinstance(node, nodes.Filter) and node.name == "attr":
        # ``x|attr('__class__')`` is how payloads get past a filter on dots
        arg = node.args[0] if node.args else None
        if isinstance(arg, nodes.Const) and isinstance(arg.value, str):
            if _suspicious_attr(arg.value):
                hits.append(arg.value)
        else:
            hits.append("|attr")  # a computed attribute name: hides what it reaches
    elif isinstance(node, nodes.Const) and isinstance(node.value, str) \
            and re.fullmatch(r"__\w*", node.value):
        # a bare string such as '__globals__' is an attribute name in waiting
        hits.append(node.value)


def template_problem(template: str) -> tuple[str, str] | None:
    """``("code", token)`` when a Jinja chat template reaches Python internals,
    ``("unparseable", message)`` when Jinja cannot parse it, else None.

    The check parses with ``jinja2.sandbox.SandboxedEnvironment().parse`` (no compilation, no
    rendering) and walks the syntax tree for names in :data:`SUSPICIOUS_NAMES`, attributes or
    constant item keys starting with ``_`` or in :data:`SUSPICIOUS_ATTRIBUTES`, and
    ``|attr(...)`` filters. A template that does not parse is searched as text instead.
    """
    from jinja2 import TemplateSyntaxError
    from jinja2.sandbox import SandboxedEnvironment

    try:
        tree = SandboxedEnvironment().parse(template)
    except TemplateSyntaxError as exc:
        low = template.lower().replace(" ", "")
        for token in _TOKENS:
            if token in low:
                return ("code", token)
        return ("unparseable", f"line {exc.lineno}: {exc.message}")
    hits: list[str] = []
    _walk(tree, hits)
    return ("code", hits[0]) if hits else None


def template_findings(template: str, *, path: str, fmt: str, rule_prefix: str, name: str,
                      location: str, details: dict[str, Any]) -> list[Finding]:
    """The finding (none or one) for one chat template, worded alike wherever it was found.

    Returns ``<rule_prefix>.template-code`` (critical, ``TECHNIQUES["unsafe"]``, symbol the
    first suspicious token) for a template reaching Python internals, and
    ``<rule_prefix>.template-unparseable`` (medium) for one Jinja cannot parse; ``name``
    is how the message names the template (a GGUF key, ``chat_template``, a template's name).
    """
    problem = template_problem(template)
    if problem is None:
        return []
    kind, what = problem
    if kind == "code":
        return [Finding(
            path=path, format=fmt, severity="critical", rule=f"{rule_prefix}.template-code",
            message=f"chat template {name!r} reaches Python internals ({what!r}): "
                    "rendering it can run code",
            technique=TECHNIQUES["unsafe"], location=location, symbol=what,
            details={**details, "template_bytes": len(template.encode("utf-8",
                                                                      "surrogatepass"))})]
    return [Finding(
        path=path, format=fmt, severity="medium", rule=f"{rule_prefix}.template-unparseable",
        message=f"chat template {name!r} is not valid Jinja ({what}): it cannot be checked",
        technique=TECHNIQUES["unsafe"], location=location, details=dict(details))]


# --- recognition ---------------------------------------------------------------------------

def _text(data: bytes, cut: bool = False) -> str | None:
    """``data`` as text when it is UTF-8 (a BOM allowed) without NUL bytes, else None.
    ``cut``: ``data`` is a head window, which may end inside a character."""
    if b"\x00" in data:
        return None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        # a head window may end inside a character: that is still text
        return "" if cut and exc.reason == "unexpected end of data" else None


def _load(text: str) -> Any:
    """The JSON value of ``text``, else its YAML value (PyYAML's safe loader: plain data
    only); None when it is neither."""
    if text.lstrip()[:1] in ("{", "["):
        try:
            return json.loads(text)
        except ValueError:
            pass  # YAML flow style also starts with a brace
    import yaml

    try:
        return yaml.safe_load(text)
    except (yaml.YAMLError, RecursionError, ValueError):
        return None


def _holders(value: Any) -> Iterator[tuple[str, Any]]:
    """``(dotted key path, value)`` of every ``chat_template`` (or ``chat_template_jinja``)
    key in nested objects (lists
    are searched too), within :data:`_MAX_DEPTH` levels and :data:`_MAX_NODES` nodes."""
    seen: set[int] = set()
    stack: list[tuple[str, Any, int]] = [("", value, 0)]
    while stack and len(seen) < _MAX_NODES:
        where, node, depth = stack.pop()
        if id(node) in seen or depth > _MAX_DEPTH:
            continue
        seen.add(id(node))
        if isinstance(node, dict):
            for key, child in node.items():
                if not isinstance(key, str):
                    continue
                path = f"{where}.{key}" if where else key
                if key in _KEYS:
                    yield path, child
                elif isinstance(child, (dict, list)):
                    stack.append((path, child, depth + 1))
        elif isinstance(node, list):
            for i, child in enumerate(node):
                if isinstance(child, (dict, list)):
                    stack.append((f"{where}[{i}]", child, depth + 1))


def sniff_template(fh: IO[bytes], head: bytes, size: int, name: str) -> str | None:
    """``template-config``, ``jinja`` or None for a file no binary format claimed (see the
    module docstring). Reads at most :data:`MAX_TEMPLATE_FILE` bytes, and only when the head
    is text that could qualify."""
    if size > MAX_TEMPLATE_FILE or _text(head, cut=len(head) < size) is None:
        return None
    base = name.replace("\\", "/").rsplit("!", 1)[-1].rsplit("/", 1)[-1].lower()
    is_jinja = base.endswith(TEMPLATE_SUFFIXES)
    fh.seek(0)
    data = fh.read(MAX_TEMPLATE_FILE + 1)
    if len(data) > MAX_TEMPLATE_FILE:
        return None
    # a key as JSON writes it or as a YAML mapping line, before decoding or parsing anything
    if not is_jinja and b'"chat_template' not in data and not _YAML_KEY.search(data):
        return None
    text = _text(data)
    if text is None:
        return None
    if is_jinja:
        return "jinja"
    value = _load(text)
    return "template-config" if any(True for _ in _holders(value)) else None


# --- analysers -----------------------------------------------------------------------------

def _read_text(fh: BinaryIO, size: int, what: str) -> str:
    if size > MAX_TEMPLATE_FILE:
        raise FormatError(f"{what} of {size} bytes is over the {MAX_TEMPLATE_FILE}-byte limit",
                          "offset 0")
    data = fh.read(MAX_TEMPLATE_FILE + 1)
    text = _text(data)
    if text is None:
        raise FormatError(f"{what} is not UTF-8 text", "offset 0")
    return text


def _named(key: str, value: Any) -> Iterator[tuple[str, str, str]]:
    """``(name, location, template)`` for one ``chat_template`` value: a string, a list of
    ``{"name", "template"}`` objects (tokenizer_config.json's form for named templates) or a
    name -> template object (the form the tokenizer holds in memory)."""
    if value is None:
        return
    if isinstance(value, str):
        yield key, f"key '{key}'", value
        return
    if isinstance(value, dict):
        # not a transformers file form; tools nest other settings here too: only strings
        items = [(str(k), v) for k, v in value.items() if isinstance(v, str)]
    elif isinstance(value, list):
        items = []
        for i, entry in enumerate(value):
            if not (isinstance(entry, dict) and isinstance(entry.get("template"), str)):
                raise FormatError(f"{key}[{i}] is not a {{\"name\", \"template\"}} object",
                                  f"key '{key}[{i}]'")
            items.append((str(entry.get("name", i)), entry["template"]))
    else:
        raise FormatError(f"{key} is a {type(value).__name__}, not a template",
                          f"key '{key}'")
    for name, template in items:
        if not isinstance(template, str):
            raise FormatError(f"{key} template {name!r} is not a string",
                              f"key '{key}' template '{name}'")
        yield name, f"key '{key}' template '{name}'", template


def analyze_config(fh: BinaryIO, *, path: str, size: int, limits: Limits,
                   policy: Policy) -> list[Finding]:
    """Check every chat template of a JSON or YAML config (``tokenizer_config.json``,
    ``chat_template.json``, a serving config): rules ``template.template-code`` (critical)
    and ``template.template-unparseable`` (medium), as :func:`template_findings`.

    Raises
    ------
    FormatError
        A file over :data:`MAX_TEMPLATE_FILE`, not UTF-8, not JSON or YAML, or a
        ``chat_template`` value that is not a string, a list of named templates or a mapping.
    """
    del limits, policy  # the file is bounded by MAX_TEMPLATE_FILE; no Python globals here
    text = _read_text(fh, size, "config")
    value = _load(text)
    if value is None:
        raise FormatError("neither JSON nor YAML", "offset 0")
    findings: list[Finding] = []
    for key, holder in _holders(value):
        for name, where, template in _named(key, holder):
            findings.extend(template_findings(
                template, path=path, fmt="template-config", rule_prefix="template", name=name,
                location=where, details={"key": key}))
    return findings


def analyze_jinja(fh: BinaryIO, *, path: str, size: int, limits: Limits,
                  policy: Policy) -> list[Finding]:
    """Check a bare template file (``chat_template.jinja``, ``additional_chat_templates/*``):
    same rules as :func:`analyze_config`, location ``file``.

    Raises
    ------
    FormatError
        A file over :data:`MAX_TEMPLATE_FILE` or not UTF-8 text.
    """
    del limits, policy
    template = _read_text(fh, size, "template file")
    name = path.rsplit("!", 1)[-1].replace("\\", "/").rsplit("/", 1)[-1]
    return template_findings(template, path=path, fmt="jinja", rule_prefix="template",
                             name=name, location="file", details={})
