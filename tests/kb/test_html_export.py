"""The HTML matrix page: structure, escaping, self-containment, scores (no browser needed)."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import re
import subprocess
import sys
from html.parser import HTMLParser

import pytest

from mlthreat import __version__
from mlthreat.errors import UsageError
from mlthreat.kb import KnowledgeBase, Reference, UnknownIdError
from mlthreat.kb.export import exporter, html
from mlthreat.render import render_page

HOSTILE_NAME = '<script>alert(1)</script>"onmouseover="alert(2)" \'x=\'<img src=x onerror=alert(3)>'
HOSTILE_TEXT = "</p><svg onload=alert(4)>&amp;"


class _Page(HTMLParser):
    """Every start tag with its attributes, the text of each element kind we check, and the
    text content of the inline scripts and styles."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.scripts: list[str] = []
        self.styles: list[str] = []
        self.headers: list[str] = []  # text of each .tactic-name, in document order
        self.columns: list[tuple[str, list[str]]] = []  # (tactic ID, cell IDs) per <td>
        self._raw: list[str] | None = None
        self._in_header = False
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tags.append((tag, a))
        classes = (a.get("class") or "").split()
        if tag in ("script", "style"):
            self._raw = []
        elif tag == "a" and "tactic-name" in classes:
            self._in_header = True
            self.headers.append("")
        elif tag == "td" and a.get("data-tactic"):
            self.columns.append((a["data-tactic"] or "", []))
        elif tag == "a" and "cell" in classes:
            self.columns[-1][1].append(a.get("data-id") or "")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style") and self._raw is not None:
            (self.scripts if tag == "script" else self.styles).append("".join(self._raw))
            self._raw = None
        elif tag == "a":
            self._in_header = False

    def handle_data(self, data: str) -> None:
        if self._raw is not None:
            self._raw.append(data)
        elif self._in_header:
            self.headers[-1] += data

    def with_attr(self, name: str) -> list[tuple[str, dict[str, str | None]]]:
        return [(t, a) for t, a in self.tags if name in a]


@pytest.fixture(scope="module")
def page(embedded: KnowledgeBase) -> str:
    return html.render(embedded)


@pytest.fixture(scope="module")
def parsed(page: str) -> _Page:
    return _Page(page)


def _hostile(kb: KnowledgeBase) -> KnowledgeBase:
    """``kb`` with hostile text in a technique, a mitigation, a case study and the source."""
    techniques = tuple(
        dataclasses.replace(
            t,
            name=HOSTILE_NAME,
            description=HOSTILE_TEXT,
            references=(Reference(title=HOSTILE_TEXT, url="javascript:alert(5)"),),
        )
        if t.id == "AML.T0043"
        else t
        for t in kb.techniques
    )
    mitigations = (dataclasses.replace(kb.mitigations[0], name=HOSTILE_NAME), *kb.mitigations[1:])
    case_studies = (dataclasses.replace(kb.case_studies[0], summary=HOSTILE_TEXT),
                    *kb.case_studies[1:])
    return dataclasses.replace(kb, techniques=techniques, mitigations=mitigations,
                               case_studies=case_studies, source=HOSTILE_NAME)


def test_registered_as_html_exporter() -> None:
    assert exporter("html") is html
    assert (html.FORMAT, html.SUFFIX) == ("html", ".html")


def test_tactic_names_are_the_column_headers_in_matrix_order(
    embedded: KnowledgeBase, parsed: _Page
) -> None:
    assert len(embedded.tactics) == 16
    assert parsed.headers == [t.name for t in embedded.tactics]
    assert [tid for tid, _ in parsed.columns] == [t.id for t in embedded.tactics]


def test_each_column_holds_its_techniques_in_matrix_order(
    embedded: KnowledgeBase, parsed: _Page
) -> None:
    for tactic_id, cells in parsed.columns:
        expected = [t.id for t in embedded.techniques_of(tactic_id, subtechniques=True)]
        assert cells == expected, tactic_id


def test_every_id_has_a_detail_view_and_every_technique_a_cell(
    embedded: KnowledgeBase, page: str, parsed: _Page
) -> None:
    in_cells = {cid for _, cells in parsed.columns for cid in cells}
    ids = [a["id"] for _, a in parsed.with_attr("id")]
    assert len(ids) == len(set(ids)), "element ids must be unique"
    for t in embedded.techniques:
        assert t.id in in_cells, t.id
        assert f'href="#{t.id}"' in page
    for obj in embedded:
        assert obj.id in ids, obj.id


def test_names_data_version_source_and_generator(embedded: KnowledgeBase, page: str) -> None:
    assert f"data version <strong>{embedded.version}</strong>" in page
    assert embedded.source in page
    assert f"generated by mlthreat {__version__}" in page


def test_detail_view_of_a_technique(embedded: KnowledgeBase, page: str) -> None:
    detail = re.search(r'<article class="detail" id="AML\.T0024\.002".*?</article>', page, re.S)
    assert detail
    text = detail.group(0)
    assert "Extract AI Model" in text and "realized" in text
    for m in embedded.mitigations_of("AML.T0024.002"):
        assert f'href="#{m.id}"' in text
    for cs in embedded.case_studies_using("AML.T0024.002"):
        assert f'href="#{cs.id}"' in text


def test_case_study_procedure_is_ordered_tactic_then_technique(
    embedded: KnowledgeBase, page: str
) -> None:
    cs = embedded.case_studies[0]
    detail = re.search(rf'<article class="detail" id="{re.escape(cs.id)}".*?</article>', page,
                       re.S)
    assert detail
    steps = re.findall(r'<li><span class="step-tactic"><a href="#([^"]+)">.*?'
                       r'<span class="step-technique"><a href="#([^"]+)">', detail.group(0))
    assert steps == [(s.tactic, s.technique) for s in cs.procedure]


def test_hostile_text_is_escaped(embedded: KnowledgeBase) -> None:
    out = html.render(_hostile(embedded), title=HOSTILE_NAME)
    for raw in ("<script>alert", "<img src=x", "<svg", '"onmouseover="', "javascript:"):
        assert raw not in out
    escaped_name = ("&lt;script&gt;alert(1)&lt;/script&gt;&#34;onmouseover=&#34;alert(2)&#34; "
                    "&#39;x=&#39;&lt;img src=x onerror=alert(3)&gt;")
    assert escaped_name in out
    assert "&lt;/p&gt;&lt;svg onload=alert(4)&gt;&amp;amp;" in out
    parsed = _Page(out)
    # No event-handler attribute and no script beyond the page's own anywhere in the page.
    assert not [(t, a) for t, a in parsed.tags for k in a if k.startswith("on")]
    assert len(parsed.scripts) == 1
    # The hostile name survives intact as text: in the cell's data attribute and its header.
    cells = [a for t, a in parsed.tags if t == "a" and a.get("data-id") == "AML.T0043"]
    assert cells and all(a["data-name"] == HOSTILE_NAME for a in cells)


def test_unsafe_reference_urls_are_not_links(embedded: KnowledgeBase) -> None:
    out = html.render(_hostile(embedded))
    hrefs = [a["href"] or "" for _, a in _Page(out).with_attr("href")]
    assert all(h.startswith(("#", "https://", "http://", "data:")) for h in hrefs)


def test_loads_nothing_from_the_network(page: str, parsed: _Page) -> None:
    for tag, attrs in parsed.tags:
        assert tag not in ("img", "iframe", "object", "embed", "video", "audio", "source",
                           "base", "frame"), tag
        assert "src" not in attrs, (tag, attrs)
        if tag == "link":
            assert (attrs.get("href") or "").startswith("data:"), attrs
        if tag == "script":
            assert attrs.get("type") in (None, "application/json"), attrs
    for css in parsed.styles:
        assert "url(" not in css and "@import" not in css
    for script in parsed.scripts:
        assert not re.search(r"fetch|XMLHttpRequest|import\(|https?:", script)
    # Only plain anchors point off the page.
    external = [(t, a) for t, a in parsed.with_attr("href") if "//" in (a["href"] or "")]
    assert external and all(t == "a" for t, _ in external)


def test_content_security_policy_allows_exactly_the_inline_script(parsed: _Page) -> None:
    (policy,) = [a["content"] or "" for t, a in parsed.tags
                 if t == "meta" and a.get("http-equiv") == "Content-Security-Policy"]
    assert "default-src 'none'" in policy
    (script,) = parsed.scripts
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    assert re.search(r"script-src 'sha256-[^']+' ;", policy)
    assert f"'sha256-{digest}'" in policy


def test_scores_colour_their_cells_and_add_a_legend(embedded: KnowledgeBase) -> None:
    out = html.render(embedded, scores={"AML.T0043": 0.9, "AML.T0024.002": 0.0,
                                        "AML.T0051": 3.0})
    cells = {a["data-id"]: a for t, a in _Page(out).tags if t == "a" and "data-id" in a}
    top = cells["AML.T0051"].get("style") or ""
    assert f"background-color: {html.GRADIENT[-1]}" in top and "color: #ffffff" in top
    assert f"background-color: {html.GRADIENT[0]}" in (cells["AML.T0024.002"].get("style") or "")
    middle = cells["AML.T0043"].get("style") or ""
    assert "background-color: #" in middle
    assert not set(html.GRADIENT) & set(re.findall(r"#[0-9a-f]{6}", middle))
    assert "style" not in cells["AML.T0000"]
    assert "0.9</span>" in out and "linear-gradient(to right, #ffffcc 0%" in out
    assert 'class="legend"' in out and 'class="legend"' not in html.render(embedded)


def test_bad_scores_are_refused(embedded: KnowledgeBase) -> None:
    with pytest.raises(UnknownIdError):
        html.render(embedded, scores={"AML.T9999": 1.0})
    with pytest.raises(UnknownIdError):
        html.render(embedded, scores={"AML.TA0002": 1.0})
    with pytest.raises(UsageError, match="finite"):
        html.render(embedded, scores={"AML.T0043": float("nan")})


def test_output_is_deterministic(embedded: KnowledgeBase, page: str) -> None:
    assert html.render(embedded) == page
    scores = {"AML.T0043": 0.5, "AML.T0051": 1.0}
    assert html.render(embedded, scores=scores) == html.render(embedded, scores=dict(scores))


def test_title(embedded: KnowledgeBase, page: str) -> None:
    assert f"<title>{embedded.name}</title>" in page
    assert "<title>My matrix</title>" in html.render(embedded, title="My matrix")


def test_official_data_renders(official: KnowledgeBase) -> None:
    out = html.render(official)
    parsed = _Page(out)
    assert parsed.headers == [t.name for t in official.tactics]
    assert all(f'id="{t.id}"' in out for t in official.techniques)


# -- the shared renderer (mlthreat.render) ----------------------------------------------------
def test_render_is_a_leaf_package() -> None:
    code = ("import sys, mlthreat.render; "
            "print(sorted(m for m in sys.modules if m.startswith('mlthreat')))")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True).stdout
    assert out.strip() == "['mlthreat', 'mlthreat.render']"


def test_render_page_escapes_and_refuses_undefined_names() -> None:
    import jinja2

    out = render_page("base.html.j2", {"title": "<b>&", "generator": "mlthreat x"})
    assert "<title>&lt;b&gt;&amp;</title>" in out and '<html lang="en">' in out
    assert "script-src 'none'" in out
    with pytest.raises(jinja2.UndefinedError):
        render_page("base.html.j2", {"title": "t"})
