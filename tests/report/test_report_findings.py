"""The dashboard leads with what changed: validated changes (claim, effect with interval,
example prompts with both models' answers, escaped), then the not-validated hypotheses with
their reasons, then plots; the configuration is collapsed at the end; models are named by
their source, hashes second."""

from __future__ import annotations

import re
from html.parser import HTMLParser

from builtin_plugins.report.html import render_html
from builtin_plugins.report.synthetic import SCRIPT, synthetic_report


class _Ids(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: list[str] = []
        self.details: list[dict] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if attrs.get("id"):
            self.ids.append(attrs["id"])
        if tag == "details":
            self.details.append(attrs)


def _page(report=None) -> tuple[str, _Ids]:
    report = report or synthetic_report(hostile=True)
    html = render_html(report, plots={"validation": b"\x89PNG fake"})
    parser = _Ids()
    parser.feed(html)
    return html, parser


def test_findings_come_first_and_configuration_last() -> None:
    _, page = _page()
    order = [i for i in page.ids if i in {"findings", "not-validated", "plots", "overview",
                                           "hypotheses", "fdr", "config"}]
    assert order == ["findings", "not-validated", "plots", "overview", "hypotheses", "fdr", "config"]
    assert page.ids.index("finding-1") < page.ids.index("not-validated")
    # the configuration is collapsed (a <details> without "open") and only at the end
    assert page.details and all("open" not in d for d in page.details)


def test_one_card_per_validated_change_with_effect_interval_and_answers() -> None:
    report = synthetic_report(hostile=True)
    html, page = _page(report)
    cards = [i for i in page.ids if i.startswith("finding-")]
    assert len(cards) == len(report.validated()) > 0
    for index, result in enumerate(report.validated(), start=1):
        card = html.split(f'id="finding-{index}"', 1)[1].split("</section>", 1)[0]
        es = result.effect_size
        assert f"{es.estimate:+.2f} [{es.ci_low:+.2f}, {es.ci_high:+.2f}]" in card
        assert f"n = {result.n}" in card and "p = " in card
        shown = [o for o in result.examples if o.base_output or o.intervention_output][:3]
        assert 2 <= card.count('class="pair"') <= 3 or card.count('class="pair"') == len(result.examples[:3])
        for o in shown[:2]:  # both models' answers side by side, escaped
            for text in (o.base_output, o.intervention_output):
                if text:
                    escaped = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
                    assert escaped.replace('"', "&#34;").replace("'", "&#39;")[:40] in card
    assert "<script>alert" not in html and SCRIPT.replace("<", "&lt;").replace(">", "&gt;") in html


def test_not_validated_hypotheses_show_their_reasons() -> None:
    report = synthetic_report()
    html, _ = _page(report)
    section = html.split('id="not-validated"', 1)[1].split("</section>", 1)[0]
    rejected = [r for r in report.validation_results if not r.decision]
    assert rejected and section.count("<li>") == len(rejected)
    assert re.search(r"p = [0-9.e-]+ above its level|below the smallest effect|other way", section)
    # a result carrying its own reason (a field other developers add) is shown verbatim
    first = rejected[0]
    try:
        object.__setattr__(first, "reason", "budget ran out before the planned n")
    except (AttributeError, TypeError):
        return
    html, _ = _page(report)
    assert "budget ran out before the planned n" in html


def test_models_named_by_source_hashes_second() -> None:
    report = synthetic_report()
    report.config = {**report.config, "base_model": {"source": "organism:toy-multi#base"},
                     "intervention_model": "organism:toy-multi#intervention"}
    html, _ = _page(report)
    head = html.split("</header>", 1)[0]
    h1 = head.split("<h1>", 1)[1].split("</h1>", 1)[0]
    assert "organism:toy-multi#base" in h1 and "organism:toy-multi#intervention" in h1
    assert report.base_model_id not in h1 and report.base_model_id in head  # smaller line


def test_default_universe_is_stated() -> None:
    report = synthetic_report()
    report.config = {**report.config, "universe": {"default_used": "builtin English families (x)"}}
    html, _ = _page(report)
    assert "none was given, so the default was used: builtin English families (x)" in html
