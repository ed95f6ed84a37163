"""Shared HTML rendering for every page mlthreat writes (matrix, assessment report, posture).

A leaf package: it takes plain data (dicts, lists, strings, numbers) and imports nothing else from
mlthreat, so any layer may use it. Templates live in ``templates/``; every page extends
``base.html.j2``, which carries the shared CSS, a Content-Security-Policy that forbids every
network load, and the blocks ``header``, ``content`` and ``footer``.

Every template is autoescaped and undefined names are errors, so text from data is always escaped
and a misspelt context key fails loudly instead of rendering empty. A page's own CSS and JS are
files in ``templates/`` inlined at render time: a child template lists them in top-level
``{% set styles = [...] %}`` and ``{% set scripts = [...] %}``, and the base template inlines them
and allows exactly those scripts, by their SHA-256 hash, in the page's policy. Inline event
handlers and any other script are blocked by the browser even if one slipped into the page.

>>> html = render_page("base.html.j2", {"title": "<Demo>", "generator": "mlthreat"})
>>> "<title>&lt;Demo&gt;</title>" in html
True
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from functools import cache
from typing import Any

import jinja2
from markupsafe import Markup

__all__ = ["render_page"]

# What must never occur inside an inlined asset, since it would end the element early.
_ASSET_CLOSERS = {".css": ("</style",), ".js": ("</script", "<!--")}


def render_page(template_name: str, context: Mapping[str, Any]) -> str:
    """Render one of the package templates to a complete HTML document.

    Parameters
    ----------
    template_name : str
        A template in ``mlthreat/render/templates`` (``"matrix.html.j2"``).
    context : mapping
        Plain data for the template. Pages extending ``base.html.j2`` need ``title`` and
        ``generator`` (``"mlthreat 0.1.0"``); ``lang`` is optional (default ``en``).

    Returns
    -------
    str
        The page; the same context always gives the same text.

    Raises
    ------
    jinja2.TemplateNotFound
        When there is no such template.
    jinja2.UndefinedError
        When the template uses a name the context does not provide.
    """
    return _environment().get_template(template_name).render(dict(context))


@cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("mlthreat.render", "templates"),
        autoescape=jinja2.select_autoescape(
            enabled_extensions=("html", "j2"), default_for_string=True, default=True
        ),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.globals["asset"] = _asset
    env.globals["csp_hash"] = _csp_hash
    return env


@cache
def _asset_text(name: str) -> str:
    env = _environment()
    assert env.loader is not None
    text, _, _ = env.loader.get_source(env, name)
    suffix = name[name.rfind(".") :]
    if suffix not in _ASSET_CLOSERS:
        raise ValueError(f"{name}: only .css and .js files can be inlined")
    for closer in _ASSET_CLOSERS[suffix]:
        if closer in text.lower():
            raise ValueError(f"{name}: an inlined asset must not contain {closer!r}")
    return text


def _asset(name: str) -> Markup:
    """The text of a CSS or JS file of ``templates/``, to inline in ``<style>``/``<script>``.

    Marked safe because it is the package's own code, never data.
    """
    return Markup(_asset_text(name))


def _csp_hash(name: str) -> str:
    """The CSP source expression (``sha256-…``) that allows the inlined asset ``name``."""
    digest = hashlib.sha256(_asset_text(name).encode("utf-8")).digest()
    return "sha256-" + base64.b64encode(digest).decode("ascii")
