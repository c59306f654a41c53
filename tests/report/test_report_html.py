"""The dashboard is self-contained and shows hostile model text as text."""

from __future__ import annotations

from html.parser import HTMLParser

from builtin_plugins.report.html import render_html
from builtin_plugins.report.synthetic import IMG, SCRIPT


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_startendtag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def _parse(text: str) -> _Collect:
    parser = _Collect()
    parser.feed(text)
    parser.close()
    return parser


def test_hostile_text_is_escaped(report):
    page = _parse(render_html(report, plots={"validation": b"\x89PNG fake"}))
    tags = [t for t, _ in page.tags]
    assert "script" not in tags
    for tag, attrs in page.tags:
        assert not any(name.startswith("on") for name in attrs), (tag, attrs)
        if tag == "img":
            assert attrs["src"].startswith("data:image/png;base64,")
    text = "".join(page.text)
    assert SCRIPT in text and IMG in text  # shown to the reader, as text
    assert "</td></tr></table> &amp;" in text  # a broken-markup output stays one cell


def test_no_network_fetches(rendered):
    html = (rendered / "report.html").read_text()
    page = _parse(html)
    for tag, attrs in page.tags:
        for name in ("src", "href", "srcset", "poster", "data"):
            value = attrs.get(name) or ""
            assert "//" not in value.split("base64,")[0], (tag, name, value[:80])
        if tag == "link":
            assert attrs.get("rel") == "icon" and attrs.get("href", "").startswith("data:")
    assert "@import" not in html and "url(" not in html
    csp = [a for t, a in page.tags if t == "meta" and a.get("http-equiv") == "Content-Security-Policy"]
    assert csp and "default-src 'none'" in csp[0]["content"]


def test_every_section_and_plot(rendered, report):
    page = _parse((rendered / "report.html").read_text())
    ids = {a.get("id") for _, a in page.tags}
    assert {"overview", "plots", "hypotheses", "fdr", "bandit", "changes", "exports"} <= ids
    hyp_sections = [a for t, a in page.tags if t == "section" and (a.get("id") or "").startswith("hyp-")]
    assert len(hyp_sections) == len(report.hypotheses)  # tested and untested
    plots = {a["id"] for t, a in page.tags if t == "figure"}
    assert {"plot-circuit_heatmap", "plot-circuit_network", "plot-validation", "plot-fdr_trace",
            "plot-bandit_pulls", "plot-sample_efficiency"} <= plots
    imgs = [a for t, a in page.tags if t == "img"]
    assert len(imgs) == len(plots) and all(len(a["src"]) > 2000 for a in imgs)
    text = "".join(page.text)
    for needle in ("Pattern", "Features", "Tests", "Evidence", "Decision", "Example prompts and outputs",
                   "Refusal features emerge on harmful requests", "refusal openings", "p = 0.0004",
                   "[0.29, 0.53]", "not tested", "I can't help with that."):
        assert needle in text, needle


def test_empty_report_renders():
    from md_framework.types import AnalysisReport

    page = _parse(render_html(AnalysisReport()))
    assert any(a.get("id") == "overview" for _, a in page.tags)
